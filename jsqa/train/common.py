"""Pieces the training loops share: seeding, thread count, a per-epoch callback type."""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import torch

EpochCallback = Callable[[int, dict[str, float]], None]


def seed_everything(seed: int, threads: int | None = None) -> np.random.Generator:
    """Seed Python, NumPy and torch; set torch's CPU threads; return a NumPy generator."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)
    return np.random.default_rng(seed)


def no_callback(epoch: int, metrics: dict[str, float]) -> None:
    """Default per-epoch callback: do nothing."""
