"""Pieces the training loops share: seeding, thread count, a per-epoch callback type."""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import torch

from jsqa.errors import JsqaError

EpochCallback = Callable[[int, dict[str, float]], None]


def seed_everything(seed: int, threads: int | None = None) -> np.random.Generator:
    """Seed Python, NumPy and torch; set torch's CPU threads; return a NumPy generator."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)
    return np.random.default_rng(seed)


def pick_device(name: str) -> torch.device:
    """'auto' is the GPU when one is visible, else the CPU; 'cuda' without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise JsqaError("device 'cuda' was asked for, but torch sees no GPU (use device: auto or cpu)")
    return torch.device(name)


def no_callback(epoch: int, metrics: dict[str, float]) -> None:
    """Default per-epoch callback: do nothing."""
