"""Scoring waveforms with a MOS model: windowed for long clips, windows batched in bounded chunks."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch

from jsqa.errors import AudioError
from jsqa.models.encoder import DEFAULT_SAMPLE_RATE
from jsqa.models.mos import is_std
from jsqa.mos_scale import clamp_mos
from jsqa.signal.speech import SpeechCheck, check_speech, level_gain, no_speech_error, normalise_window, scaled

log = logging.getLogger(__name__)


def windows(n: int, window: int, hop: int) -> list[tuple[int, int]]:
    """Start/end of windows covering [0, n).

    Overlapping (hop < window): full windows, the last one aligned to the end. Tiling
    (hop >= window): consecutive windows, each sample in exactly one; a remainder shorter than
    half a window joins the last window instead of being scored alone.
    """
    if n <= window:
        return [(0, n)]
    if hop < window:
        starts = list(range(0, n - window + 1, hop))
        if starts[-1] + window < n:
            starts.append(n - window)
        return [(s, s + window) for s in starts]
    spans = [(s, min(s + window, n)) for s in range(0, n, window)]
    if len(spans) > 1 and spans[-1][1] - spans[-1][0] < window / 2:
        spans[-2:] = [(spans[-2][0], n)]
    return spans


WINDOW_S = 8.0
# Tiling windows: every sample is scored once, so scoring costs what the audio's length does
# (50% overlap, used before, doubled the cost of long files, and a 10 s clip cost 16 s).
HOP_S = 8.0
# Windows per forward pass: bounds memory (a 1-hour file is 450 windows) while still batching.
CHUNK_WINDOWS = 8


class WindowStream:
    """The spans of :func:`windows` cut from a signal that arrives in blocks, each released as
    soon as it is certain to be one of them; memory holds about two windows, whatever the length.

    A span is final once the signal reaches past it: its own end for overlapping windows, one
    window further for tiling ones (a short remainder would merge into the last window).
    """

    def __init__(self, window: int, hop: int) -> None:
        self.window, self.hop = window, hop
        self._step = hop if hop < window else window
        self._lookahead = 0 if hop < window else window
        self._buf = np.zeros(0, dtype=np.float32)
        self._buf_start = 0  # sample index of _buf[0]
        self._next = 0  # start of the next span to release
        self._released = 0
        self.length = 0

    def push(self, x: np.ndarray) -> list[np.ndarray]:
        """The spans that block ``x`` completes."""
        self._buf = np.concatenate([self._buf, np.asarray(x, dtype=np.float32)])
        self.length += len(x)
        out = []
        while self._next + self.window + self._lookahead <= self.length:
            out.append(self._take(self._next, self._next + self.window))
            self._next += self._step
        self._trim()
        return out

    def finish(self) -> list[np.ndarray]:
        """The remaining spans, once the signal has ended (the same as :func:`windows` gives)."""
        spans = windows(self.length, self.window, self.hop)[self._released :]
        return [self._take(a, b) for a, b in spans]

    def _take(self, a: int, b: int) -> np.ndarray:
        self._released += 1
        return self._buf[a - self._buf_start : b - self._buf_start]

    def _trim(self) -> None:
        # Keep from the next span's start; an end-aligned last span reaches back one window.
        keep = min(self._next, max(self.length - self.window, 0))
        if keep > self._buf_start:
            self._buf = self._buf[keep - self._buf_start :].copy()
            self._buf_start = keep


def input_level(model: torch.nn.Module) -> float | None:
    """The active speech level (dBov) a MOS model's windows are normalised to; None: as they come."""
    level = getattr(model, "input_level_dbov", None)
    return None if level is None else float(level)


def model_device(model: torch.nn.Module) -> torch.device:
    """Where a module's weights are (the CPU for a module without any)."""
    params = next(model.parameters(), None)
    return params.device if params is not None else torch.device("cpu")


@torch.inference_mode()
def windowed_mean_blocks(
    fn: Callable[[torch.Tensor], torch.Tensor],
    blocks: Iterable[np.ndarray],
    sample_rate: int | None = None,
    window_s: float = WINDOW_S,
    hop_s: float = HOP_S,
    chunk: int = CHUNK_WINDOWS,
    *,
    level_dbov: float | None = None,
) -> torch.Tensor:
    """``fn`` over the windows of a mono signal given as consecutive blocks at ``sample_rate``
    (default: ``fn``'s input rate, as a model records it), averaged with weights by window length.

    ``fn`` maps a batch [B, T] to [B, ...]; windows are scored as the blocks arrive, ``chunk``
    at a time (runs of equal length), so memory is one chunk of windows, not the signal.
    ``level_dbov``: each window is scaled to that active speech level first, and windows
    without speech (:mod:`jsqa.signal.speech`) are left out; NoSpeechError when none has any.
    """
    sample_rate = sample_rate or int(getattr(fn, "sample_rate", DEFAULT_SAMPLE_RATE))
    stream = WindowStream(int(window_s * sample_rate), int(hop_s * sample_rate))
    # Inputs go where the module's weights are (the GPU during GPU training).
    device = model_device(fn) if isinstance(fn, torch.nn.Module) else torch.device("cpu")
    total: torch.Tensor | None = None
    weight = 0
    pending: list[np.ndarray] = []
    no_speech: list[SpeechCheck] = []

    def flush() -> None:
        nonlocal total, weight
        if pending:
            out = fn(torch.from_numpy(np.stack(pending)).to(device)).cpu().double()
            step = out.sum(0) * len(pending[0])  # a batch's windows share one length
            total = step if total is None else total + step
            weight += len(pending) * len(pending[0])
            pending.clear()

    def add(spans: list[np.ndarray]) -> None:
        for span in spans:
            w = normalise_window(span, sample_rate, level_dbov)
            if isinstance(w, SpeechCheck):
                no_speech.append(w)
                continue
            if pending and (len(pending) >= max(chunk, 1) or len(pending[0]) != len(w)):
                flush()
            pending.append(w)

    for block in blocks:
        add(stream.push(block))
    add(stream.finish())
    flush()
    if total is None:
        raise no_speech_error(no_speech) if no_speech else AudioError("audio is empty (0 samples)")
    return total / weight


def windowed_mean(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: np.ndarray,
    sample_rate: int | None = None,
    window_s: float = WINDOW_S,
    hop_s: float = HOP_S,
    chunk: int = CHUNK_WINDOWS,
    *,
    level_dbov: float | None = None,
) -> torch.Tensor:
    """:func:`windowed_mean_blocks` of one clip held in memory."""
    return windowed_mean_blocks(fn, [x], sample_rate, window_s, hop_s, chunk, level_dbov=level_dbov)


def score_blocks(model: torch.nn.Module, blocks: Iterable[np.ndarray], sample_rate: int | None = None) -> float:
    """MOS of one mono signal given as consecutive blocks at ``sample_rate`` (default: the
    model's rate), scored as it arrives; clamped to the MOS scale. A model with an
    ``input_level_dbov`` scores level-normalised windows with speech only (NoSpeechError when
    none has any: :func:`windowed_mean_blocks`)."""
    return score_blocks_all(model, blocks, sample_rate)["mos"]


def model_outputs(model: torch.nn.Module) -> tuple[str, ...]:
    """The names of a model's outputs (:attr:`jsqa.models.mos.MOSModel.outputs`); ("mos",) for a
    module that gives MOS alone."""
    return tuple(getattr(model, "outputs", ("mos",)))


class _Accumulable(torch.nn.Module):
    """A model's outputs [B, K] ready for a weighted mean over windows: standard deviations
    squared (variances average; their root is taken after), the rest as they are."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.sample_rate = getattr(model, "sample_rate", DEFAULT_SAMPLE_RATE)
        self.std = torch.tensor([is_std(o) for o in model_outputs(model)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        all_outputs = getattr(self.model, "all_outputs", None)
        out = all_outputs(x) if all_outputs is not None else self.model(x).reshape(len(x), 1)
        return torch.where(self.std.to(out.device), out**2, out) if bool(self.std.any()) else out


def _finish(mean: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Window means [..., K] to scores: the root of averaged variances, the rest clamped to the MOS scale."""
    std = np.asarray([is_std(n) for n in names])
    return np.where(std, np.sqrt(np.abs(mean)), clamp_mos(np.asarray(mean, dtype=np.float64)))


def score_blocks_all(
    model: torch.nn.Module,
    blocks: Iterable[np.ndarray],
    sample_rate: int | None = None,
) -> dict[str, float]:
    """Every output of :func:`model_outputs` for one mono signal given as blocks (as
    :func:`score_blocks`): the length-weighted mean over windows, clamped to the MOS scale,
    except ``*_std`` outputs: the root of the weighted mean of the variances."""
    model.eval()
    names = model_outputs(model)
    acc = windowed_mean_blocks(_Accumulable(model), blocks, sample_rate, level_dbov=input_level(model))
    mean = acc.reshape(-1).numpy()
    return {n: float(v) for n, v in zip(names, _finish(mean, names))}


def score_waveform(
    model: torch.nn.Module,
    x: np.ndarray,
    sample_rate: int | None = None,
    window_s: float = WINDOW_S,
    hop_s: float = HOP_S,
) -> float:
    """MOS of one mono clip at ``sample_rate`` (default: the model's rate): the mean over windows, so
    length is unbounded; clamped to the MOS scale. Level and speech as in :func:`score_blocks`."""
    model.eval()
    return clamp_mos(windowed_mean(model, x, sample_rate, window_s, hop_s, level_dbov=input_level(model)).item())


# Audio per forward pass when windows of many clips are batched together: what CHUNK_WINDOWS
# full windows hold (64 s), so short clips go many to a pass and memory stays bounded.
BATCH_SECONDS = CHUNK_WINDOWS * WINDOW_S


def score_waveforms(
    model: torch.nn.Module,
    clips: Sequence[np.ndarray],
    sample_rate: int | None = None,
    *,
    device: torch.device | str | None = None,
    batch_seconds: float = BATCH_SECONDS,
) -> np.ndarray:
    """MOS for each clip: :func:`score_waveform` of each (equal within float rounding), batched.

    The "mos" column of :func:`score_waveforms_all`, whose docstring says how windows are
    batched. AudioError for an empty clip.
    """
    all_outputs = score_waveforms_all(model, clips, sample_rate, device=device, batch_seconds=batch_seconds)
    return np.ascontiguousarray(all_outputs[:, 0])


@torch.inference_mode()
def score_waveforms_all(
    model: torch.nn.Module,
    clips: Sequence[np.ndarray],
    sample_rate: int | None = None,
    *,
    device: torch.device | str | None = None,
    batch_seconds: float = BATCH_SECONDS,
) -> np.ndarray:
    """Every output of :func:`model_outputs` for each clip, [N, K] ("mos" first).

    The windows of all clips are sorted by length and those of one length scored together,
    at most ``batch_seconds`` of audio per forward pass (at least one window), whichever clip
    they come from: test sets have many clips of one length, and every window of a long clip
    is 8 s. Each clip's outputs are its windows' means weighted by length, clamped to the MOS
    scale, except ``*_std`` outputs: the root of the weighted mean of the variances.
    ``device``: where to score (default: where the model is); the model is moved there for
    the call and back after. AudioError for an empty clip.

    A model with an ``input_level_dbov`` scores each window scaled to that active speech level,
    leaving out windows without speech; a clip with no speech in any window is scored as it is
    (evaluation and validation score every clip; logged once per call).
    """
    sample_rate = sample_rate or int(getattr(model, "sample_rate", DEFAULT_SAMPLE_RATE))
    window, hop = int(WINDOW_S * sample_rate), int(HOP_S * sample_rate)
    spans: list[tuple[int, int, int]] = []  # (length, clip, start)
    for i, clip in enumerate(clips):
        if len(clip) == 0:
            raise AudioError(f"clip {i}: audio is empty (0 samples)")
        spans.extend((b - a, i, a) for a, b in windows(len(clip), window, hop))
    gains = _window_gains(clips, spans, sample_rate, input_level(model))
    spans.sort()
    names = model_outputs(model)
    fn = _Accumulable(model)
    total = np.zeros((len(clips), len(names)), dtype=np.float64)
    weight = np.zeros((len(clips), 1), dtype=np.float64)
    home = model_device(model)
    target = torch.device(device) if device is not None else home
    model.eval()
    model.to(target)
    try:
        start = 0
        while start < len(spans):
            length = spans[start][0]
            per_pass = max(1, int(batch_seconds * sample_rate) // length)
            end = start
            while end < len(spans) and end - start < per_pass and spans[end][0] == length:
                end += 1
            batch = spans[start:end]
            x = np.stack([_window(clips, i, a, n, gains) for n, i, a in batch])
            out = fn(torch.from_numpy(x).to(target)).reshape(len(batch), len(names)).double().cpu().numpy()
            idx = np.asarray([i for _, i, _ in batch])
            np.add.at(total, idx, out * length)
            np.add.at(weight, idx, float(length))
            start = end
    finally:
        model.to(home)
    return _finish(total / weight, names)


def _window_gains(
    clips: Sequence[np.ndarray], spans: list[tuple[int, int, int]], sample_rate: int, level_dbov: float | None
) -> dict[tuple[int, int], float] | None:
    """Gain of each window (clip, start) kept for scoring, for a level-normalised model; ``spans``
    loses the windows without speech of clips that have some. None: no normalisation."""
    if level_dbov is None:
        return None
    checks = check_speech([clips[i][a : a + n] for n, i, a in spans], sample_rate)
    with_speech = {i for (_, i, _), c in zip(spans, checks) if c.has_speech}
    gains: dict[tuple[int, int], float] = {}
    kept = []
    for span, check in zip(spans, checks):
        _, i, a = span
        if check.has_speech:
            gains[(i, a)] = level_gain(check, level_dbov)
        elif i not in with_speech:
            gains[(i, a)] = 1.0
        else:
            continue
        kept.append(span)
    spans[:] = kept
    silent = sorted({i for _, i, _ in spans} - with_speech)
    if silent:
        log.warning(
            "%d of %d clips have no active speech (first: clip %d); scored without level normalisation",
            len(silent),
            len(clips),
            silent[0],
        )
    return gains


def _window(
    clips: Sequence[np.ndarray], i: int, start: int, n: int, gains: dict[tuple[int, int], float] | None
) -> np.ndarray:
    """Window [start, start + n) of clip ``i`` as the model sees it: float32, scaled by its gain
    when normalising."""
    w = clips[i][start : start + n]
    return np.asarray(w, dtype=np.float32) if gains is None else scaled(w, gains[(i, start)])
