"""Audio from untrusted callers (`jsqa predict`, the served model): limits checked before decoding.

Both scoring paths validate through this module, so a clip is accepted or refused the same way
whether it arrives as a file, encoded bytes or raw samples.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from jsqa.audio import BlockResampler, resample, to_mono, wav_data_frames
from jsqa.errors import AudioError

log = logging.getLogger(__name__)

# Frames decoded per read: about 1.4 s at 48 kHz, so memory stays flat in a file's length.
BLOCK_FRAMES = 1 << 16


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
    # How the caller raises max_seconds, for the refusal message.
    raise_hint: str = "raise it with --max-seconds"


LIMITS = ScoringLimits()

# What every score of a model fine-tuned under ``data.profile: demo`` carries (`jsqa predict`,
# serving, the model card): its speech is synthetic and its labels are proxies.
DEMO_NOTE = "trained on synthetic demo speech: scores on real recordings are not meaningful"

# Rates recordings usually come at: resampling from one of these is routine and goes unremarked.
COMMON_RATES = frozenset({8000, 16000, 22050, 24000, 32000, 44100, 48000})
# The words of a truncation warning (:attr:`ScoringAudio.truncation`), which fails `jsqa predict`.
TRUNCATED = "truncated: read"


def conversion_notes(sample_rate: int, channels: int, target_sr: int) -> list[str]:
    """What scoring did to a clip that its caller may not expect (informational, never a
    failure): resampling from a rate outside :data:`COMMON_RATES`, averaging channels to mono."""
    notes = []
    if sample_rate != target_sr and sample_rate not in COMMON_RATES:
        notes.append(f"resampled from {sample_rate} Hz to {target_sr} Hz")
    if channels > 1:
        notes.append(f"{channels} channels averaged to mono")
    return notes


def row_warning(name: str, parts: list[str]) -> str | None:
    """One warning line naming the clip, its parts joined with "; "; None without parts."""
    return f"{name}: {'; '.join(parts)}" if parts else None


def mentions_truncation(warning: str | None) -> bool:
    """Whether a score row's ``warning`` says its file held less than its header promised (the
    only warning that changes `jsqa predict`'s exit status)."""
    return bool(warning) and f": {TRUNCATED} " in str(warning)


def training_note(checkpoint: Mapping[str, Any]) -> str | None:
    """The note that goes with every score of the model in ``checkpoint`` (a payload):
    :data:`DEMO_NOTE` when it records ``data_profile: demo``; None for other profiles and for
    checkpoints that record none (older ones)."""
    return DEMO_NOTE if checkpoint.get("data_profile") == "demo" else None


def _check_rate(sample_rate: object, name: str, limits: ScoringLimits) -> int:
    if isinstance(sample_rate, (bool, np.bool_)) or not isinstance(sample_rate, (int, np.integer, float, np.floating)):
        raise AudioError(f"{name}: sample rate must be a number, got {type(sample_rate).__name__}")
    # Integers are whole already (and one beyond int64 would overflow np.isfinite).
    if not isinstance(sample_rate, (int, np.integer)) and (
        not np.isfinite(sample_rate) or float(sample_rate) != int(sample_rate)
    ):
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
        raise AudioError(f"{name}: {seconds:.1f} s long, over the {limits.max_seconds:g} s limit ({limits.raise_hint})")
    if seconds < limits.min_seconds:
        raise AudioError(
            f"{name}: {frames} samples ({seconds * 1000:.2f} ms) is too short to score "
            f"(at least {limits.min_seconds * 1000:g} ms)"
        )


def validate_waveform(
    samples: object, sample_rate: object, name: str, limits: ScoringLimits = LIMITS
) -> tuple[np.ndarray, int]:
    """Check caller-supplied samples and return them as mono float32 with the rate as an int.

    Accepts float arrays (or lists) shaped (n,) or (n, channels); rejects, with an AudioError
    naming ``name`` and the reason: non-float dtypes (ints, bools, strings, objects), other
    shapes, a bad rate, too few or too many samples or channels, NaN/inf, out-of-range peaks.
    """
    x, sr, _ = _validated(samples, sample_rate, name, limits)
    return x, sr


def _validated(samples: object, sample_rate: object, name: str, limits: ScoringLimits) -> tuple[np.ndarray, int, int]:
    """:func:`validate_waveform`'s mono samples and rate, and how many channels there were."""
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
    channels = x.shape[1] if x.ndim == 2 else 1
    _check_extent(x.shape[0], channels, sr, name, limits)
    with np.errstate(over="ignore", invalid="ignore"):
        x = x.astype(np.float32, copy=False)  # float64 beyond float32's range becomes inf here
    return _check_samples(x, name, limits), sr, channels


def _check_samples(x: np.ndarray, name: str, limits: ScoringLimits) -> np.ndarray:
    """Float32 samples (n,) or (n, channels) checked for NaN/inf and peak, as mono."""
    if not np.all(np.isfinite(x)):
        raise AudioError(f"{name}: audio contains NaN or infinite samples")
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak > limits.max_abs_sample:
        raise AudioError(
            f"{name}: peak sample {peak:.3g} is beyond ±{limits.max_abs_sample:g} (float audio belongs in [-1, 1])"
        )
    return np.ascontiguousarray(to_mono(x), dtype=np.float32)


def scoring_waveform(
    samples: object, sample_rate: object, name: str, target_sr: int = 16000, limits: ScoringLimits = LIMITS
) -> np.ndarray:
    """Caller-supplied samples, validated (see :func:`validate_waveform`), mono at ``target_sr``."""
    return checked_waveform(samples, sample_rate, name, target_sr, limits)[0]


def checked_waveform(
    samples: object, sample_rate: object, name: str, target_sr: int = 16000, limits: ScoringLimits = LIMITS
) -> tuple[np.ndarray, str | None]:
    """:func:`scoring_waveform`'s samples and the warning that goes with them (an unusual rate,
    channels averaged: :func:`conversion_notes`; None when there is nothing to say)."""
    x, sr, channels = _validated(samples, sample_rate, name, limits)
    y = np.ascontiguousarray(resample(x, sr, target_sr), dtype=np.float32)
    return y, row_warning(name, conversion_notes(sr, channels, target_sr))


class ScoringAudio:
    """A file path or encoded bytes (WAV, FLAC, ...) opened for scoring: the header is checked
    against ``limits`` on opening, before any sample is decoded; :meth:`blocks` then decodes,
    checks and resamples it block by block, so memory does not grow with the file's length.

    Every failure is an AudioError naming ``name``. Use as a context manager.
    """

    def __init__(self, source: str | Path | bytes, name: str | None = None, limits: ScoringLimits = LIMITS) -> None:
        self.limits = limits
        if isinstance(source, (bytes, bytearray, memoryview)):
            self.name = name or "audio bytes"
            if len(source) == 0:
                raise AudioError(f"{self.name}: empty file (0 bytes)")
            opened: str | io.BytesIO = io.BytesIO(source)
        else:
            path = Path(source)
            self.name = name or str(path)
            if not path.is_file():
                # Devices and pipes (/dev/zero, a FIFO) would never end: only regular files are read.
                raise AudioError(f"{self.name}: not a regular file" if path.exists() else f"{self.name}: no such file")
            if path.stat().st_size == 0:
                raise AudioError(f"{self.name}: empty file (0 bytes)")
            opened = str(path)
        try:
            self._file = sf.SoundFile(opened)
        except (sf.LibsndfileError, RuntimeError, ValueError, TypeError, OSError) as exc:
            raise AudioError(f"{self.name}: not readable as audio ({_one_line(exc)})") from exc
        try:
            self.sample_rate = _check_rate(int(self._file.samplerate), self.name, limits)
            self.frames = int(self._file.frames)
            self.channels = int(self._file.channels)
            _check_extent(self.frames, self.channels, self.sample_rate, self.name, limits)
            # A second reader for the header: libsndfile owns the first one's position.
            header = io.BytesIO(source) if isinstance(opened, io.BytesIO) else opened  # type: ignore[arg-type]
            self._promised = wav_data_frames(header) if self._file.format == "WAV" else None
        except BaseException:
            self._file.close()
            raise
        self.frames_read = 0
        self._target_sr: int | None = None

    def blocks(self, target_sr: int) -> Iterator[np.ndarray]:
        """Consecutive mono float32 blocks at ``target_sr``; together, what decoding the whole
        file and resampling it gives (to float rounding)."""
        self._target_sr = target_sr
        resampler = BlockResampler(self.sample_rate, target_sr)
        while True:
            try:
                data = self._file.read(BLOCK_FRAMES, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError, ValueError, TypeError, OSError, MemoryError) as exc:
                raise AudioError(f"{self.name}: not readable as audio ({_one_line(exc)})") from exc
            if len(data) == 0:
                break
            self.frames_read += len(data)
            yield resampler.push(_check_samples(data, self.name, self.limits))
        yield resampler.finish()

    @property
    def truncation(self) -> str | None:
        """Why the file is short of what its header promised, once :meth:`blocks` has run; None
        when it is whole."""
        return row_warning(self.name, self._truncation())

    def _truncation(self) -> list[str]:
        promised = max(self.frames, self._promised or 0)
        return [f"{TRUNCATED} {self.frames_read} of {promised} frames"] if self.frames_read < promised else []

    @property
    def warning(self) -> str | None:
        """The row's warning once :meth:`blocks` has run: the truncation, then what was done to
        the audio (:func:`conversion_notes`), in one line; None when there is nothing to say."""
        notes = conversion_notes(self.sample_rate, self.channels, self._target_sr) if self._target_sr else []
        return row_warning(self.name, self._truncation() + notes)

    def close(self) -> None:
        """Release the file."""
        self._file.close()

    def __enter__(self) -> ScoringAudio:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_scoring_audio(
    source: str | Path | bytes, name: str | None = None, target_sr: int = 16000, limits: ScoringLimits = LIMITS
) -> np.ndarray:
    """A file path or encoded bytes, checked as :class:`ScoringAudio` does, decoded whole as
    mono float32 at ``target_sr`` (a truncated file gives what it holds)."""
    with ScoringAudio(source, name, limits) as audio:
        return np.concatenate(list(audio.blocks(target_sr)))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
