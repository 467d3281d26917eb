"""The demo corpus's random streams.

Every file draws from its own generator keyed by (seed, stream, index...), so any file can be
regenerated alone and the clean talkers never share a stream with babble. A stream's number
is part of its files' content: they are fixed, and a new stream takes a new number.
"""

from __future__ import annotations

import numpy as np

TALKER, UTTERANCE, NOISE, SPLIT, CLIP, MOS_NOISE = range(1, 7)


def stream_rng(seed: int, *key: int) -> np.random.Generator:
    """The generator of stream ``key`` (the stream's number, then the indices of the file) of run ``seed``."""
    return np.random.default_rng([seed, *key])
