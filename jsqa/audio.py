"""Audio I/O: soundfile for reading and writing, torchaudio for resampling.

Every reader in the project goes through :func:`load_audio`, which returns mono float32 at the
requested rate and turns every way a file can be unusable into an :class:`AudioError` naming it.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

from jsqa.errors import AudioError
from jsqa.io import atomic_path

log = logging.getLogger(__name__)


def to_mono(x: np.ndarray) -> np.ndarray:
    """Average channels: (n,) stays, (n, c) becomes (n,)."""
    if x.ndim == 1:
        return x
    if x.ndim != 2:
        raise AudioError(f"expected 1-D or 2-D audio, got shape {x.shape}")
    return x.mean(axis=1)


@functools.lru_cache(maxsize=16)
def _kernel(orig: int, new: int) -> tuple[int, int]:
    g = np.gcd(orig, new)
    return orig // g, new // g


def resample(x: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Band-limited resampling of a 1-D signal (torchaudio's windowed sinc)."""
    if orig_sr == target_sr:
        return x.astype(np.float32, copy=False)
    if orig_sr <= 0 or target_sr <= 0:
        raise AudioError(f"sample rates must be positive, got {orig_sr} -> {target_sr}")
    # torch is imported on first use: readers that never resample (the pair workers, say)
    # then start without paying for it.
    import torch
    import torchaudio.functional as AF

    o, n = _kernel(orig_sr, target_sr)
    y = AF.resample(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), o, n)
    return y.numpy()


def check_signal(x: np.ndarray, name: str) -> np.ndarray:
    """Reject empty or non-finite signals with a message naming the source."""
    if x.size == 0:
        raise AudioError(f"{name}: audio is empty (0 samples)")
    if not np.all(np.isfinite(x)):
        raise AudioError(f"{name}: audio contains NaN or infinite samples")
    return x


def decode_audio(
    source: str | Path | BinaryIO, name: str, target_sr: int | None = 16000
) -> tuple[np.ndarray, int]:
    """Decode a file or file-like object to mono float32 at ``target_sr`` (None keeps its rate).

    ``name`` is what error messages call the source. Raises AudioError for unreadable, empty
    or non-finite audio.
    """
    try:
        data, sr = sf.read(source if not isinstance(source, Path) else str(source), dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as exc:
        raise AudioError(f"{name}: not readable as audio ({exc})") from exc
    x = check_signal(to_mono(np.asarray(data)), name)
    if target_sr is not None and sr != target_sr:
        x = resample(x, sr, target_sr)
        sr = target_sr
    return np.ascontiguousarray(x, dtype=np.float32), int(sr)


def load_audio(path: str | Path, target_sr: int | None = 16000) -> tuple[np.ndarray, int]:
    """Read ``path`` as mono float32, resampled to ``target_sr`` (None keeps the file's rate).

    Raises AudioError for a missing, unreadable, empty or non-finite file.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    return decode_audio(path, str(path), target_sr)


def write_audio(path: str | Path, x: np.ndarray, sr: int, subtype: str = "PCM_16") -> None:
    """Write a WAV/FLAC atomically; float input is clipped to [-1, 1] for integer subtypes."""
    x = np.asarray(x)
    if subtype.startswith("PCM"):
        x = np.clip(x, -1.0, 1.0)
    with atomic_path(path) as tmp:
        sf.write(str(tmp), x, sr, subtype=subtype)


def audio_info(path: str | Path) -> dict:
    """Header facts without decoding: duration (s), sample rate, channels, frames."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioError(f"{path}: not readable as audio ({exc})") from exc
    return {
        "duration": info.frames / info.samplerate if info.samplerate else 0.0,
        "sample_rate": int(info.samplerate),
        "channels": int(info.channels),
        "frames": int(info.frames),
    }
