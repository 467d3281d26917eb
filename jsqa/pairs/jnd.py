"""The JND rule: when two pair recipes are heard alike (the one place it lives).

A *positive pair* mixes one clean speech segment with one noise segment at two SNRs a listener
cannot tell apart: ``|snr_a - snr_b| < jnd_db`` (about 3 dB for speech in noise, McShefferty et
al. 2015). :func:`same_percept` extends that to whole recipes (segment, distortion realisation
and parameters); the planner, the pretraining loss's negative masking and the tests all use it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from jsqa.errors import ConfigError
from jsqa.signal import distortions


def within_jnd(snr_a: float | np.ndarray, snr_b: float | np.ndarray, jnd_db: float) -> bool | np.ndarray:
    """True where two SNRs are less than one JND apart; two +inf (clean) count as within.

    Works elementwise on arrays (broadcasting), returning a bool array; on scalars a bool.
    """
    if not jnd_db > 0:
        raise ConfigError(f"pairs.jnd_db: must be positive, got {jnd_db}")
    a = np.asarray(snr_a, dtype=np.float64)
    b = np.asarray(snr_b, dtype=np.float64)
    with np.errstate(invalid="ignore"):  # inf - inf is NaN, which compares False
        out = (np.abs(a - b) < jnd_db) | (np.isposinf(a) & np.isposinf(b))
    return bool(out) if out.ndim == 0 else out


# Recipe columns two pairs must share to be heard alike: one utterance, crop and noise segment,
# and (when distortions are on) one distortion realisation.
SEGMENT_KEYS = ("utterance_id", "crop_offset", "noise_id", "noise_offset")
REALISATION_KEYS = ("distortion", "dist_seed", "rir_path")


def same_percept(
    a: Mapping[str, np.ndarray],
    b: Mapping[str, np.ndarray],
    jnd_db: float,
    steps: Mapping[str, float] | None = None,
) -> np.ndarray:
    """Elementwise (broadcasting): are recipes ``a`` and ``b`` (columns as arrays) within one JND?

    They are when they share utterance, crop, noise file and offset, their a-member SNRs
    satisfy :func:`within_jnd`, and, where distortion columns are present, they share the
    distortion kind and realisation (seed, room response) with a-member parameters within
    that kind's step (:func:`jsqa.signal.distortions.within_step`; ``steps`` per kind, default
    :data:`jsqa.signal.distortions.DEFAULT_STEPS`). A clean (undistorted) and a distorted recipe
    never are. Recipes without distortion columns count as undistorted.
    """
    steps = {**distortions.DEFAULT_STEPS, **(steps or {})}
    out = np.asarray(within_jnd(a["snr_a"], b["snr_a"], jnd_db))
    for key in SEGMENT_KEYS:
        out = out & (np.asarray(a[key]) == np.asarray(b[key]))
    # What an undistorted recipe (no distortion columns) holds in each realisation column.
    plain = {"distortion": np.array(distortions.NONE, dtype=object), "dist_seed": 0, "rir_path": ""}
    for key in REALISATION_KEYS:
        if key in a or key in b:
            out = out & (np.asarray(a.get(key, plain[key])) == np.asarray(b.get(key, plain[key])))
    kind_a, kind_b = (
        np.asarray(a.get("distortion", plain["distortion"])),
        np.asarray(b.get("distortion", plain["distortion"])),
    )
    if "dist_param_a" in a and "dist_param_a" in b:
        params = np.ones(out.shape, dtype=bool)
        for kind in set(np.unique(kind_a).tolist()) - {distortions.NONE}:
            both = (kind_a == kind) & (kind_b == kind)
            close = distortions.within_step(kind, a["dist_param_a"], b["dist_param_a"], steps[kind])
            params &= ~both | close
        out = out & params
    return out
