"""Scoring waveforms with a MOS model: windowed for long clips, windows batched in bounded chunks."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from jsqa.models.encoder import DEFAULT_SAMPLE_RATE
from jsqa.mos_scale import clamp_mos


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


@torch.inference_mode()
def windowed_mean(
    fn: Callable[[torch.Tensor], torch.Tensor], x: np.ndarray, sample_rate: int | None = None,
    window_s: float = WINDOW_S, hop_s: float = HOP_S, chunk: int = CHUNK_WINDOWS,
) -> torch.Tensor:
    """``fn`` over windows of a mono clip at ``sample_rate`` (default: ``fn``'s input rate, as a
    model records it), averaged with weights by window length.

    ``fn`` maps a batch [B, T] to [B, ...]; windows go through ``chunk`` at a time, so a clip of
    any length costs memory for one chunk of windows only.
    """
    sample_rate = sample_rate or int(getattr(fn, "sample_rate", DEFAULT_SAMPLE_RATE))
    win, hop = int(window_s * sample_rate), int(hop_s * sample_rate)
    spans = windows(len(x), win, hop)
    # Inputs go where the module's weights are (the GPU during GPU training).
    params = next(fn.parameters(), None) if isinstance(fn, torch.nn.Module) else None
    device = params.device if params is not None else torch.device("cpu")
    total: torch.Tensor | None = None
    for part in _batches(spans, max(chunk, 1)):
        batch = torch.from_numpy(np.stack([x[a:b] for a, b in part])).to(device)
        out = fn(batch).cpu().double()
        w = torch.tensor([b - a for a, b in part], dtype=torch.float64).reshape(-1, *([1] * (out.dim() - 1)))
        step = (out * w).sum(0)
        total = step if total is None else total + step
    assert total is not None
    return total / sum(b - a for a, b in spans)


def _batches(spans: list[tuple[int, int]], chunk: int) -> list[list[tuple[int, int]]]:
    """Runs of at most ``chunk`` consecutive spans of one length (a batch needs equal lengths)."""
    out: list[list[tuple[int, int]]] = []
    for span in spans:
        if out and len(out[-1]) < chunk and out[-1][0][1] - out[-1][0][0] == span[1] - span[0]:
            out[-1].append(span)
        else:
            out.append([span])
    return out


def score_waveform(
    model: torch.nn.Module, x: np.ndarray, sample_rate: int | None = None, window_s: float = WINDOW_S,
    hop_s: float = HOP_S,
) -> float:
    """MOS of one mono clip at ``sample_rate`` (default: the model's rate): the mean over windows, so
    length is unbounded; clamped to the MOS scale."""
    model.eval()
    return clamp_mos(windowed_mean(model, x, sample_rate, window_s, hop_s).item())


def score_waveforms(
    model: torch.nn.Module, clips: Sequence[np.ndarray], sample_rate: int | None = None
) -> np.ndarray:
    """MOS for each clip (see :func:`score_waveform`)."""
    return np.asarray([score_waveform(model, c, sample_rate) for c in clips], dtype=np.float64)
