"""The MOS scale (ACR, 1 to 5) and the one clamp onto it.

Its own small module: the demo corpus's labels, training, scoring and export all clamp, and the
demo generator must not depend on the model code (nor import torch) to do so.
"""

from __future__ import annotations

from typing import Any, TypeVar, cast

import numpy as np

MOS_RANGE = (1.0, 5.0)

MOS = TypeVar("MOS", bound=Any)


def clamp_mos(mos: MOS) -> MOS:
    """``mos`` limited to :data:`MOS_RANGE`: a tensor, an array or a number, the same kind out;
    NaN stays NaN so callers can still tell a broken score."""
    lo, hi = MOS_RANGE
    if hasattr(mos, "clamp"):  # a torch tensor, without importing torch here
        return mos.clamp(lo, hi)
    if isinstance(mos, np.ndarray):
        return cast(MOS, np.clip(mos, lo, hi))
    return cast(MOS, float(np.clip(mos, lo, hi)))
