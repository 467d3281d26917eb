"""Resumable training state: one atomic file holding everything a run needs to continue exactly.

The file is a dict of primitives and tensors (loaded with ``weights_only=True``): model,
optimizer and scheduler state, the step/epoch/position counters, every RNG state (Python,
NumPy's global and the data-order generator as JSON strings, since PCG64 states are 128-bit
integers; torch's as tensors) and a hash of the parameters that shape the run, so resuming
under different parameters is refused instead of silently mixing two runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from jsqa.errors import JsqaError
from jsqa.io import save_torch

log = logging.getLogger(__name__)

TRAIN_STATE_FORMAT = "jsqa-train-state-v1"
LAST = "last.pt"
# How a run treats an earlier run's checkpoint: continue it when the parameters match / must
# continue it / ignore it (see starting_state).
ResumeMode = Literal["auto", "resume", "fresh"]
RESUME_MODES: tuple[str, ...] = ("auto", "resume", "fresh")


class TrainingInterrupted(JsqaError):
    """A run stopped on a signal after saving a checkpoint; running it again continues it."""

    def __init__(self, message: str, signum: int, step: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.step = step


def checkpoint_dir_for(out_path: Path) -> Path:
    """The default run directory of an output: ``models/encoder.pt`` -> ``models/encoder.pt.ckpt``."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.name + ".ckpt")


def params_hash(params: dict[str, Any]) -> str:
    """A stable hash of JSON-able parameters (key order does not matter)."""
    blob = json.dumps(params, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def generator_state(rng: np.random.Generator) -> str:
    """A NumPy Generator's state as a JSON string (its integers exceed 64 bits)."""
    return json.dumps(rng.bit_generator.state)


def set_generator_state(rng: np.random.Generator, state: str) -> None:
    """Put a NumPy Generator back into a state from :func:`generator_state`."""
    rng.bit_generator.state = json.loads(state)


def capture_rng() -> dict[str, Any]:
    """Python, NumPy (global) and torch (CPU and every CUDA device) RNG states."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "python": json.dumps([version, list(internal), gauss]),
        "numpy": json.dumps([name, np.asarray(keys).tolist(), int(pos), int(has_gauss), float(cached)]),
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng` (CUDA states only when the same number of GPUs is visible)."""
    version, internal, gauss = json.loads(state["python"])
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = json.loads(state["numpy"])
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def save_train_state(ckpt_dir: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` as the run directory's last checkpoint, atomically; return its path."""
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    path = ckpt_dir / LAST
    save_torch(path, {"format": TRAIN_STATE_FORMAT, **state})
    return path


def load_train_state(ckpt_dir: Path, expected_hash: str, expected_params: dict[str, Any]) -> dict[str, Any]:
    """The last checkpoint of a run directory; JsqaError when missing, unreadable or made with other params."""
    path = Path(ckpt_dir) / LAST
    if not path.exists():
        raise JsqaError(f"{path}: no checkpoint to resume from (run without --resume to start afresh)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise JsqaError(f"{path}: not a readable training checkpoint ({exc})") from exc
    if not isinstance(state, dict) or state.get("format") != TRAIN_STATE_FORMAT:
        raise JsqaError(f"{path}: not a jsqa training checkpoint ({TRAIN_STATE_FORMAT} expected)")
    if state.get("params_hash") != expected_hash:
        saved = json.loads(state.get("params", "{}"))
        changed = sorted(k for k in set(saved) | set(expected_params) if saved.get(k) != expected_params.get(k))
        raise JsqaError(
            f"{path}: made with different parameters (changed: {', '.join(changed) or 'unknown'}); "
            "restore them to continue it, or run without --resume to start afresh"
        )
    return state


def starting_state(
    ckpt_dir: Path,
    expected_hash: str,
    expected_params: dict[str, Any],
    mode: ResumeMode,
    writer: bool = True,
) -> dict[str, Any] | None:
    """The training state a run continues from, or None when it starts at step 0.

    ``mode`` "auto" continues a checkpoint made with the same parameters, so that rerunning an
    interrupted stage (``dvc repro``, a Prefect retry) picks up where it stopped, and starts
    afresh, saying why, from one made with other parameters or unreadable; "resume" must
    continue (JsqaError otherwise); "fresh" always starts afresh. Starting afresh removes the
    old checkpoints when ``writer`` (rank 0 under torchrun: the one process that writes).
    """
    if mode not in RESUME_MODES:
        raise ValueError(f"resume mode '{mode}' is not one of {', '.join(RESUME_MODES)}")
    if mode == "resume":
        return load_train_state(ckpt_dir, expected_hash, expected_params)
    why = "--fresh"
    if mode == "auto":
        if not (Path(ckpt_dir) / LAST).exists():
            return None
        try:
            return load_train_state(ckpt_dir, expected_hash, expected_params)
        except JsqaError as exc:
            why = str(exc).split(";")[0]
    if writer and clear_checkpoints(ckpt_dir):
        log.info("starting afresh (%s): removed the checkpoints of an earlier run in %s", why, ckpt_dir)
    return None


def clear_checkpoints(ckpt_dir: Path) -> bool:
    """Remove a run directory left by an earlier run; True when there was one."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.exists():
        return False
    shutil.rmtree(ckpt_dir)
    return True
