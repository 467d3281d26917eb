"""Audio I/O: soundfile for reading and writing, torchaudio for resampling.

Every reader in the project goes through :func:`load_audio`, which returns mono float32 at the
requested rate and turns every way a file can be unusable into an :class:`AudioError` naming it.
Audio from untrusted callers (``jsqa predict``, the served model) goes through
:mod:`jsqa.scoring.limits` instead, which adds limits on rate, length, channels, dtype and
amplitude, checked before decoding where a header allows.
"""

from __future__ import annotations

import functools
import logging
import math
import os
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
        ratio = (
            ratio.limit_denominator(_MAX_RATIO_TERMS)
            if ratio <= 1
            else 1 / (1 / ratio).limit_denominator(_MAX_RATIO_TERMS)
        )
    return ratio.denominator, ratio.numerator


def resample(x: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Band-limited resampling of a 1-D signal (torchaudio's windowed sinc)."""
    if orig_sr == target_sr:
        return x.astype(np.float32, copy=False)
    if orig_sr <= 0 or target_sr <= 0:
        raise AudioError(f"sample rates must be positive, got {orig_sr} -> {target_sr}")
    # torch is imported on first use (in _resample_reduced): readers that never resample
    # (the pair workers, say) then start without paying for it.
    o, n = _kernel(int(orig_sr), int(target_sr))
    return _resample_reduced(x, o, n)


def _resample_reduced(x: np.ndarray, o: int, n: int) -> np.ndarray:
    """``x`` resampled by ``n / o`` (the reduced terms :func:`_kernel` gives)."""
    import torch
    import torchaudio.functional as AF

    y = AF.resample(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), o, n)
    return y.numpy()


class BlockResampler:
    """:func:`resample` for a signal that arrives in blocks: the concatenated outputs equal
    resampling the whole signal at once (to float rounding), with memory for one block.

    torchaudio's resampler is a strided convolution: every ``o`` input samples give ``n``
    outputs from a kernel reaching ``width`` samples either side. Each step therefore resamples
    the new samples with ``pad`` samples of real context on both sides (zeros only at the
    signal's true ends, as whole-signal resampling pads) and keeps the outputs of the middle.
    """

    def __init__(self, orig_sr: int, target_sr: int) -> None:
        if orig_sr <= 0 or target_sr <= 0:
            raise AudioError(f"sample rates must be positive, got {orig_sr} -> {target_sr}")
        self._same = orig_sr == target_sr
        self._o, self._n = _kernel(int(orig_sr), int(target_sr))
        # torchaudio's kernel half-width (lowpass_filter_width=6, rolloff=0.99), rounded up to
        # whole strides with one stride to spare.
        width = math.ceil(6 * self._o / (0.99 * min(self._o, self._n)))
        self._pad = self._o * (math.ceil(width / self._o) + 2)
        self._buf = np.zeros(0, dtype=np.float32)
        self._buf_start = 0  # input index of _buf[0]
        self._pos = 0  # input index from which no output has been produced (a multiple of o)
        self._seen = 0
        self._emitted = 0

    def push(self, x: np.ndarray) -> np.ndarray:
        """Outputs that ``x`` (the next mono block) completes; often fewer than its length."""
        x = np.asarray(x, dtype=np.float32)
        if self._same:
            return x
        self._buf = np.concatenate([self._buf, x])
        self._seen += x.size
        end = (self._seen - self._pad) // self._o * self._o
        return self._run(end, final=False) if end > self._pos else np.zeros(0, dtype=np.float32)

    def finish(self) -> np.ndarray:
        """The remaining outputs, once the signal has ended."""
        if self._same or self._seen == self._pos:
            return np.zeros(0, dtype=np.float32)
        return self._run(self._seen, final=True)

    def _run(self, end: int, final: bool) -> np.ndarray:
        o, n = self._o, self._n
        left = min(self._pad, self._pos)
        seg_end = self._seen if final else end + self._pad
        seg = self._buf[self._pos - left - self._buf_start : seg_end - self._buf_start]
        y = _resample_reduced(seg, o, n)
        first = left // o * n
        count = math.ceil(n * self._seen / o) - self._emitted if final else (end - self._pos) // o * n
        out = y[first : first + count]
        self._emitted += out.size
        self._pos = end
        keep = max(end - self._pad, 0)
        self._buf = self._buf[keep - self._buf_start :].copy()
        self._buf_start = keep
        return out


def wav_data_frames(source: str | Path | BinaryIO) -> int | None:
    """Frames a RIFF/WAVE file's 'data' chunk header promises; None for other formats.

    libsndfile quietly shortens a file whose data ends early, so truncation is only visible
    by comparing this with the frames it reads. A file object is read from its start and left
    at an arbitrary position: give one that nothing else is reading.
    """
    if isinstance(source, (str, Path)):
        with open(source, "rb") as f:
            return _wav_data_frames(f)
    return _wav_data_frames(source)


def _wav_data_frames(f: BinaryIO) -> int | None:
    f.seek(0)
    if f.read(4) != b"RIFF" or (f.read(4), f.read(4))[1] != b"WAVE":
        return None
    block_align = 0
    while len(head := f.read(8)) == 8:
        chunk, size = head[:4], int.from_bytes(head[4:], "little")
        if chunk == b"fmt ":
            fmt = f.read(size)
            block_align = int.from_bytes(fmt[12:14], "little")
            size -= len(fmt)
        elif chunk == b"data":
            return size // block_align if block_align else None
        f.seek(size + (size & 1), os.SEEK_CUR)  # chunks are padded to even sizes
    return None


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


def decode_audio(source: str | Path | BinaryIO, name: str, target_sr: int | None = 16000) -> tuple[np.ndarray, int]:
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

    def __init__(self, path: str | Path, target_sr: int, name: str | None = None, expected: int = 0) -> None:
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
        if not os.path.isfile(path):  # checked only on failure, as in _open
            raise AudioError(f"{path}: no such file") from None
        raise AudioError(f"{path}: not readable as audio ({exc})") from exc
    return {
        "duration": info.frames / info.samplerate if info.samplerate else 0.0,
        "sample_rate": int(info.samplerate),
        "channels": int(info.channels),
        "frames": int(info.frames),
    }
