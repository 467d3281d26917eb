"""Pieces the training loops share: seeding, thread count, device and precision, callback types."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Callable

import numpy as np
import torch

from jsqa.errors import JsqaError

EpochCallback = Callable[[int, dict[str, float]], None]
StepCallback = Callable[[int, dict[str, float]], None]


def seed_everything(seed: int, threads: int | None = None) -> np.random.Generator:
    """Seed Python, NumPy and torch; set torch's CPU threads; return a NumPy generator."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)
    return np.random.default_rng(seed)


# cuBLAS picks its reduction order per workspace; a fixed workspace makes GPU matmuls repeatable
# (https://docs.nvidia.com/cuda/cublas/#results-reproducibility). Read when cuBLAS starts.
CUBLAS_WORKSPACE = ":4096:8"


def set_determinism(enabled: bool) -> None:
    """Make training repeatable bit for bit (``train.deterministic``), or let torch pick kernels.

    On: torch raises on any op that has only a nondeterministic kernel
    (``use_deterministic_algorithms(True)``, not warn-only), cuDNN uses deterministic
    convolution algorithms and never benchmarks for the fastest one, and cuBLAS gets a fixed
    workspace (``CUBLAS_WORKSPACE_CONFIG``, set only when the user has not, and effective only
    when set before the process's first cuBLAS call: training sets it before the model goes to
    the device). The CPU kernels used here are deterministic already, so on a CPU this costs
    nothing and changes no number; on a GPU it costs speed (docs/determinism.md). No loader
    here uses worker processes (pair batches are read ahead in one thread, in a fixed order),
    so there are no workers to seed. Off restores torch's defaults (cuDNN benchmarking stays
    off: scoring sees many input lengths, each of which it would benchmark anew). Process-wide:
    the last call wins.
    """
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(enabled, warn_only=False)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = enabled


def pick_device(name: str) -> torch.device:
    """'auto' is the GPU when one is visible, else the CPU; 'cuda' without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise JsqaError("device 'cuda' was asked for, but torch sees no GPU (use device: auto or cpu)")
    return torch.device(name)


def no_callback(epoch: int, metrics: dict[str, float]) -> None:
    """Default per-epoch callback: do nothing."""


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a precision setting: None means plain fp32.

    'auto' is bf16 on a GPU that supports it and fp32 elsewhere (bf16 on CPUs is slower than
    fp32 on most of them); 'bf16' forces it on any device.
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    raise JsqaError(f"unknown precision '{precision}' (choose auto, fp32 or bf16)")


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Mixed-precision context for the forward pass; a no-op for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """A torch seed for one optimizer step of one rank, so dropout is reproducible on resume."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1, dtype=np.uint64)[0] >> 1)
