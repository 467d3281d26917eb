"""Scoring waveforms with a MOS model: windowed for long clips, batched for equal lengths."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from jsqa.models.mos import MOSModel


def windows(n: int, window: int, hop: int) -> list[tuple[int, int]]:
    """Start/end of windows covering [0, n); the last one is aligned to the end."""
    if n <= window:
        return [(0, n)]
    starts = list(range(0, n - window + 1, hop))
    if starts[-1] + window < n:
        starts.append(n - window)
    return [(s, s + window) for s in starts]


@torch.inference_mode()
def windowed_mean(
    fn: Callable[[torch.Tensor], torch.Tensor], x: np.ndarray, sample_rate: int = 16000,
    window_s: float = 8.0, hop_s: float = 4.0,
) -> torch.Tensor:
    """``fn`` over overlapping windows of a mono clip, averaged with weights by window length.

    ``fn`` maps a batch [B, T] to [B, ...]; equal-length windows go through in one batch, so
    a clip of any length costs memory for one batch of windows only.
    """
    win, hop = int(window_s * sample_rate), int(hop_s * sample_rate)
    spans = windows(len(x), win, hop)
    # Inputs go where the module's weights are (the GPU during GPU training).
    params = next(fn.parameters(), None) if isinstance(fn, torch.nn.Module) else None
    device = params.device if params is not None else torch.device("cpu")
    if len(spans) > 1 and all(b - a == win for a, b in spans):
        out = fn(torch.from_numpy(np.stack([x[a:b] for a, b in spans])).to(device))
    else:
        out = torch.cat([fn(torch.from_numpy(np.ascontiguousarray(x[a:b]))[None].to(device)) for a, b in spans])
    out = out.cpu()
    w = torch.tensor([b - a for a, b in spans], dtype=torch.float64)
    w = w.reshape(-1, *([1] * (out.dim() - 1)))
    return (out.double() * w).sum(0) / w.sum()


def score_waveform(model: MOSModel, x: np.ndarray, sample_rate: int = 16000, window_s: float = 8.0, hop_s: float = 4.0) -> float:
    """MOS of one mono 16 kHz clip: the mean over overlapping windows, so length is unbounded."""
    model.eval()
    return float(np.clip(windowed_mean(model, x, sample_rate, window_s, hop_s).item(), 1.0, 5.0))


def score_waveforms(model: MOSModel, clips: Sequence[np.ndarray], sample_rate: int = 16000) -> np.ndarray:
    """MOS for each clip (see :func:`score_waveform`)."""
    return np.asarray([score_waveform(model, c, sample_rate) for c in clips], dtype=np.float64)
