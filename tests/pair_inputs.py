"""Small pair-test inputs shared by the pairs, distortion and Dask tests: a paper-profile pairs
config, speech-like signals, and clean/noise manifests without audio behind them."""

from __future__ import annotations

import numpy as np
import pandas as pd

from jsqa.config import PairsConfig
from jsqa.data.manifests import CLEAN_COLUMNS, NOISE_COLUMNS
from jsqa.pairs.render import segment_samples

SR = 16000
CFG = PairsConfig(
    jnd_db=3.0,
    snr_db=(-5.0, 40.0),
    clean_anchor_prob=0.25,
    pairs_per_utterance=4,
    segment_seconds=0.5,
    speech_level_dbov=-26.0,
    shard_size=6,
    workers=1,
).for_profile("paper")  # additive noise only
T = segment_samples(CFG, SR)


def speech_like(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Harmonic tone with a syllable-rate envelope and pauses between 'words'."""
    t = np.arange(int(seconds * SR)) / SR
    f0 = rng.uniform(100, 220) + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    tone = sum(np.sin(h * phase) / h for h in range(1, 8))
    syllables = 0.5 * (1 - np.cos(2 * np.pi * rng.uniform(3, 5) * t))
    words = ((t % 0.6) < 0.4).astype(float)
    return rng.uniform(0.05, 0.4) * tone * syllables * words


def clean_frame(n: int, seconds: float = 2.0) -> pd.DataFrame:
    """A clean manifest without audio behind it (planning reads only the table)."""
    return pd.DataFrame(
        {
            "id": [f"u{i:03d}" for i in range(n)],
            "path": [f"clean/u{i:03d}.wav" for i in range(n)],
            "duration": [seconds + 0.01 * i for i in range(n)],
            "sample_rate": SR,
            "channels": 1,
            "speaker": [f"s{i % 3}" for i in range(n)],
        }
    )[CLEAN_COLUMNS]


def noise_frame(n: int, seconds: float = 3.0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [f"n{i}" for i in range(n)],
            "path": [f"noise/n{i}.wav" for i in range(n)],
            "duration": seconds,
            "sample_rate": SR,
            "channels": 1,
            "environment": "lab",
        }
    )[NOISE_COLUMNS]
