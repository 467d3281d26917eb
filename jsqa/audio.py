"""Audio I/O: soundfile for reading and writing, torchaudio for resampling.

Every reader in the project goes through :func:`load_audio`, which returns mono float32 at the
requested rate and turns every way a file can be unusable into an :class:`AudioError` naming it.
Audio from untrusted callers (``jsqa predict``, the served model) goes through
:func:`load_scoring_audio` or :func:`scoring_waveform` instead, which add limits on rate, length,
channels, dtype and amplitude, checked before decoding where a header allows.
"""

from __future__ import annotations

import functools
import io
import logging
import math
import os
from dataclasses import dataclass
from fractions import Fraction
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


# torchaudio's sinc kernel has about new * orig taps after reducing the rates by their gcd: a
# co-prime pair such as 47999 -> 16000 would need gigabytes. Beyond this denominator the ratio is
# approximated (relative error < 1e-6, far below what a listener or the model can tell).
_MAX_RATIO_TERMS = 1000


@functools.lru_cache(maxsize=16)
def _kernel(orig: int, new: int) -> tuple[int, int]:
    ratio = Fraction(new, orig)
    if ratio.denominator > _MAX_RATIO_TERMS or ratio.numerator > _MAX_RATIO_TERMS:
        # Bound the larger of the two terms: the smaller follows from the ratio.
        ratio = ratio.limit_denominator(_MAX_RATIO_TERMS) if ratio <= 1 else 1 / (1 / ratio).limit_denominator(_MAX_RATIO_TERMS)
    return ratio.denominator, ratio.numerator


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

    o, n = _kernel(int(orig_sr), int(target_sr))
    y = AF.resample(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), o, n)
    return y.numpy()


# Subtypes whose samples are integers: decoded to float they are always finite.
INTEGER_SUBTYPES = frozenset({"PCM_S8", "PCM_U8", "PCM_16", "PCM_24", "PCM_32", "ULAW", "ALAW"})


def check_signal(x: np.ndarray, name: str, finite: bool = False) -> np.ndarray:
    """Reject empty or non-finite signals with a message naming the source.

    ``finite=True`` says the samples cannot be NaN or infinite (decoded from integer PCM):
    only emptiness is checked then, saving a pass over every sample.
    """
    if x.size == 0:
        raise AudioError(f"{name}: audio is empty (0 samples)")
    if finite:
        return x
    # A NaN or inf sample makes the sum non-finite; a finite sum proves every sample finite.
    # One reduction, no boolean temporary; the full test only when the sum says "maybe".
    if not math.isfinite(float(np.add.reduce(x, axis=None))) and not np.all(np.isfinite(x)):
        raise AudioError(f"{name}: audio contains NaN or infinite samples")
    return x


def _open(source: str | Path | BinaryIO, name: str) -> sf.SoundFile:
    """Open ``source`` for reading; AudioError naming ``name`` if it is missing or unreadable."""
    try:
        return sf.SoundFile(source if not isinstance(source, Path) else str(source))
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as exc:
        # Checked only on failure: a stat per file costs as much as a short decode's overhead.
        if isinstance(source, (str, Path)) and not os.path.isfile(source):
            raise AudioError(f"{name}: no such file") from None
        raise AudioError(f"{name}: not readable as audio ({exc})") from exc


def _read_rest(f: sf.SoundFile, name: str) -> np.ndarray:
    """An open file read from where it stands to its end, as checked mono float32 (integer
    PCM skips the finite check: it cannot hold NaN or inf)."""
    try:
        data = f.read(dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as exc:
        raise AudioError(f"{name}: not readable as audio ({exc})") from exc
    x = to_mono(np.asarray(data))
    return check_signal(x, name, finite=f.subtype in INTEGER_SUBTYPES)


def decode_audio(
    source: str | Path | BinaryIO, name: str, target_sr: int | None = 16000
) -> tuple[np.ndarray, int]:
    """Decode a file or file-like object to mono float32 at ``target_sr`` (None keeps its rate).

    ``name`` is what error messages call the source. Raises AudioError for unreadable, empty
    or non-finite audio.
    """
    with _open(source, name) as f:
        x, sr = _read_rest(f, name), f.samplerate
    if target_sr is not None and sr != target_sr:
        x = resample(x, sr, target_sr)
        sr = target_sr
    return np.ascontiguousarray(x, dtype=np.float32), int(sr)


def load_audio(path: str | Path, target_sr: int | None = 16000) -> tuple[np.ndarray, int]:
    """Read ``path`` as mono float32, resampled to ``target_sr`` (None keeps the file's rate).

    Raises AudioError for a missing, unreadable, empty or non-finite file.
    """
    return decode_audio(str(path), str(path), target_sr)


# Formats whose samples decode identically whether a file is read whole or from a seek
# (uncompressed PCM/float, and FLAC, which is lossless): only these are read segment by segment.
_SEEK_EXACT_FORMATS = frozenset({"WAV", "WAVEX", "W64", "RF64", "AIFF", "CAF", "FLAC"})


class LoopedSegments:
    """Segments of one audio file, looping past its end, as mono float32 at ``target_sr``:
    what :func:`load_audio` followed by wrap-around slicing gives, sample for sample.

    A file in a seek-exact format at ``target_sr`` is read one segment at a time, so mixing a
    second from a long noise recording costs a second of decoding, not the recording's
    length; any other file, or one of which the caller ``expected`` to read at least half
    (in samples), is decoded whole, once. Use as a context manager (or call :meth:`close`).
    Raises AudioError naming the file for a missing, unreadable or empty file, and for a
    segment with non-finite samples.
    """

    def __init__(
        self, path: str | Path, target_sr: int, name: str | None = None, expected: int = 0
    ) -> None:
        self.name = str(path) if name is None else name
        self._file: sf.SoundFile | None = None
        self._whole: np.ndarray | None = None
        f = _open(str(path), self.name)
        if f.frames <= 0:
            f.close()
            raise AudioError(f"{self.name}: audio is empty (0 samples)")
        self.frames = int(f.frames)
        self._file = f
        if f.samplerate != target_sr:
            self._close_file()
            self._whole = decode_audio(str(path), self.name, target_sr)[0]
            self.frames = self._whole.size
        elif f.format not in _SEEK_EXACT_FORMATS or not f.seekable() or 2 * expected >= self.frames:
            # Decoded whole (to its end, as load_audio does) from the handle already open.
            try:
                self._whole = np.ascontiguousarray(_read_rest(f, self.name), dtype=np.float32)
            finally:
                self._close_file()
            self.frames = self._whole.size

    def segment(self, offset: int, length: int) -> np.ndarray:
        """``length`` samples from ``offset`` (modulo the file's length), wrapping round."""
        if self._file is None or length >= self.frames:
            if self._whole is None:
                self._whole = self._read(0, self.frames)
                self._close_file()
            offset %= self.frames
            if offset + length <= self.frames:
                return self._whole[offset : offset + length]
            return self._whole[(offset + np.arange(length)) % self.frames]
        offset %= self.frames
        head = self._read(offset, min(length, self.frames - offset))
        if head.size == length:
            return head
        return np.concatenate([head, self._read(0, length - head.size)])

    def _read(self, offset: int, n: int) -> np.ndarray:
        assert self._file is not None
        try:
            self._file.seek(offset)
            data = self._file.read(n, dtype="float32", always_2d=False)
        except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
            raise AudioError(f"{self.name}: not readable as audio ({exc})") from exc
        x = to_mono(np.asarray(data))
        if x.size != n:
            raise AudioError(f"{self.name}: ends early (read {x.size} of {n} samples at {offset})")
        check_signal(x, self.name, finite=self._file.subtype in INTEGER_SUBTYPES)
        return np.ascontiguousarray(x, dtype=np.float32)

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def close(self) -> None:
        """Release the file handle (segments already returned stay valid)."""
        self._close_file()

    def __enter__(self) -> LoopedSegments:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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


# ---------------------------------------------------------------------------------------------
# Audio from untrusted callers (`jsqa predict`, the served model): limits checked before decoding


@dataclass(frozen=True)
class ScoringLimits:
    """What the scoring path accepts; anything outside is an AudioError saying which limit.

    The duration limit is checked from the header before a file is decoded, so memory stays
    bounded by ``max_seconds * max_sample_rate * max_channels`` samples, whatever a file claims.
    """

    min_seconds: float = 0.05
    max_seconds: float = 600.0
    min_sample_rate: int = 8000
    max_sample_rate: int = 192000
    max_channels: int = 64
    # Float audio is nominally within [-1, 1]; peaks far beyond mean int-scaled PCM sent as
    # floats (and values near float32's range overflow the network to NaN).
    max_abs_sample: float = 10.0


LIMITS = ScoringLimits()


def _check_rate(sample_rate: object, name: str, limits: ScoringLimits) -> int:
    if isinstance(sample_rate, (bool, np.bool_)) or not isinstance(sample_rate, (int, np.integer, float, np.floating)):
        raise AudioError(f"{name}: sample rate must be a number, got {type(sample_rate).__name__}")
    if not np.isfinite(sample_rate) or float(sample_rate) != int(sample_rate):
        raise AudioError(f"{name}: sample rate must be a whole number of Hz, got {sample_rate}")
    sr = int(sample_rate)
    if not limits.min_sample_rate <= sr <= limits.max_sample_rate:
        raise AudioError(
            f"{name}: sample rate {sr} Hz is outside {limits.min_sample_rate}..{limits.max_sample_rate} Hz"
        )
    return sr


def _check_extent(frames: int, channels: int, sr: int, name: str, limits: ScoringLimits) -> None:
    if channels < 1 or channels > limits.max_channels:
        raise AudioError(f"{name}: {channels} channels (at most {limits.max_channels} accepted)")
    if frames == 0:
        raise AudioError(f"{name}: audio is empty (0 samples)")
    seconds = frames / sr
    if seconds > limits.max_seconds:
        raise AudioError(f"{name}: {seconds:.1f} s long, over the {limits.max_seconds:g} s limit")
    if seconds < limits.min_seconds:
        raise AudioError(
            f"{name}: {frames} samples ({seconds * 1000:.2f} ms) is too short to score "
            f"(at least {limits.min_seconds * 1000:g} ms)"
        )


def validate_waveform(samples: object, sample_rate: object, name: str,
                      limits: ScoringLimits = LIMITS) -> tuple[np.ndarray, int]:
    """Check caller-supplied samples and return them as mono float32 with the rate as an int.

    Accepts float arrays (or lists) shaped (n,) or (n, channels); rejects, with an AudioError
    naming ``name`` and the reason: non-float dtypes (ints, bools, strings, objects), other
    shapes, a bad rate, too few or too many samples or channels, NaN/inf, out-of-range peaks.
    """
    sr = _check_rate(sample_rate, name, limits)
    try:
        x = np.asarray(samples)
    except (ValueError, TypeError) as exc:  # ragged nested lists
        raise AudioError(f"{name}: samples are not a rectangular array ({exc})") from exc
    if x.dtype.kind != "f":
        hint = " (scale integer PCM to floats in [-1, 1])" if x.dtype.kind in "iu" else ""
        raise AudioError(f"{name}: samples must be floats, got dtype {x.dtype}{hint}")
    if x.ndim not in (1, 2):
        raise AudioError(f"{name}: expected samples shaped (n,) or (n, channels), got shape {x.shape}")
    _check_extent(x.shape[0], x.shape[1] if x.ndim == 2 else 1, sr, name, limits)
    with np.errstate(over="ignore", invalid="ignore"):
        x = x.astype(np.float32, copy=False)  # float64 beyond float32's range becomes inf here
    if not np.all(np.isfinite(x)):
        raise AudioError(f"{name}: audio contains NaN or infinite samples")
    peak = float(np.max(np.abs(x)))
    if peak > limits.max_abs_sample:
        raise AudioError(
            f"{name}: peak sample {peak:.3g} is beyond ±{limits.max_abs_sample:g} "
            "(float audio belongs in [-1, 1])"
        )
    return np.ascontiguousarray(to_mono(x), dtype=np.float32), sr


def scoring_waveform(samples: object, sample_rate: object, name: str, target_sr: int = 16000,
                     limits: ScoringLimits = LIMITS) -> np.ndarray:
    """Caller-supplied samples, validated (see :func:`validate_waveform`), mono at ``target_sr``."""
    x, sr = validate_waveform(samples, sample_rate, name, limits)
    return np.ascontiguousarray(resample(x, sr, target_sr), dtype=np.float32)


def load_scoring_audio(source: str | Path | bytes, name: str | None = None, target_sr: int = 16000,
                       limits: ScoringLimits = LIMITS) -> np.ndarray:
    """A file path or encoded bytes (WAV, FLAC, ...) as validated mono float32 at ``target_sr``.

    The header is checked against ``limits`` before any sample is decoded; then the samples go
    through the same checks as :func:`validate_waveform`. Every failure is an AudioError.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        name = name or "audio bytes"
        if len(source) == 0:
            raise AudioError(f"{name}: no bytes (empty payload)")

        def opener():
            return io.BytesIO(source)
    else:
        path = Path(source)
        name = name or str(path)
        if not path.is_file():
            # Devices and pipes (/dev/zero, a FIFO) would never end: only regular files are read.
            raise AudioError(f"{name}: not a regular file" if path.exists() else f"{name}: no such file")

        def opener():
            return str(path)
    try:
        with sf.SoundFile(opener()) as f:
            sr, channels, frames = int(f.samplerate), int(f.channels), int(f.frames)
            _check_rate(sr, name, limits)
            _check_extent(frames, channels, sr, name, limits)
            data = f.read(frames, dtype="float32", always_2d=True)
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError, OSError, MemoryError) as exc:
        raise AudioError(f"{name}: not readable as audio ({_one_line(exc)})") from exc
    # A truncated file reads fewer frames than its header promised; score what is there only
    # if it still passes every check.
    return scoring_waveform(data, sr, name, target_sr, limits)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
