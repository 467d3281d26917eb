"""Scoring waveforms with a MOS model: windowed for long clips, windows batched in bounded chunks."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch



def windows(n: int, window: int, hop: int) -> list[tuple[int, int]]:
    """Start/end of windows covering [0, n); the last one is aligned to the end."""
    if n <= window:
        return [(0, n)]
    starts = list(range(0, n - window + 1, hop))
    if starts[-1] + window < n:
        starts.append(n - window)
    return [(s, s + window) for s in starts]


WINDOW_S = 8.0
# Non-overlapping windows (the last one aligned to the end): every sample is scored about once,
# so a long file costs about what its length does; 50% overlap doubled the cost for no change
# in what the mean over windows measures.
HOP_S = 8.0
# Windows per forward pass: bounds memory (a 1-hour file is 450 windows) while still batching.
CHUNK_WINDOWS = 8


@torch.inference_mode()
def windowed_mean(
    fn: Callable[[torch.Tensor], torch.Tensor], x: np.ndarray, sample_rate: int = 16000,
    window_s: float = WINDOW_S, hop_s: float = HOP_S, chunk: int = CHUNK_WINDOWS,
) -> torch.Tensor:
    """``fn`` over windows of a mono clip, averaged with weights by window length.

    ``fn`` maps a batch [B, T] to [B, ...]; windows go through ``chunk`` at a time, so a clip of
    any length costs memory for one chunk of windows only.
    """
    win, hop = int(window_s * sample_rate), int(hop_s * sample_rate)
    spans = windows(len(x), win, hop)
    # Inputs go where the module's weights are (the GPU during GPU training).
    params = next(fn.parameters(), None) if isinstance(fn, torch.nn.Module) else None
    device = params.device if params is not None else torch.device("cpu")
    total: torch.Tensor | None = None
    for i in range(0, len(spans), max(chunk, 1)):
        part = spans[i : i + max(chunk, 1)]
        # All windows are full length except a lone one of a short clip; each chunk is one batch.
        batch = torch.from_numpy(np.stack([x[a:b] for a, b in part])).to(device)
        out = fn(batch).cpu().double()
        w = torch.tensor([b - a for a, b in part], dtype=torch.float64).reshape(-1, *([1] * (out.dim() - 1)))
        step = (out * w).sum(0)
        total = step if total is None else total + step
    assert total is not None
    return total / sum(b - a for a, b in spans)


def score_waveform(
    model: torch.nn.Module, x: np.ndarray, sample_rate: int = 16000, window_s: float = WINDOW_S,
    hop_s: float = HOP_S,
) -> float:
    """MOS of one mono 16 kHz clip: the mean over windows, so length is unbounded."""
    model.eval()
    return float(np.clip(windowed_mean(model, x, sample_rate, window_s, hop_s).item(), 1.0, 5.0))


def score_waveforms(model: torch.nn.Module, clips: Sequence[np.ndarray], sample_rate: int = 16000) -> np.ndarray:
    """MOS for each clip (see :func:`score_waveform`)."""
    return np.asarray([score_waveform(model, c, sample_rate) for c in clips], dtype=np.float64)
