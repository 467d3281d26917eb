"""Scoring waveforms with a MOS model: windowed for long clips, batched for equal lengths."""

from __future__ import annotations

from collections.abc import Sequence

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
def score_waveform(model: MOSModel, x: np.ndarray, sample_rate: int = 16000, window_s: float = 8.0, hop_s: float = 4.0) -> float:
    """MOS of one mono 16 kHz clip: the mean over overlapping windows, so length is unbounded."""
    model.eval()
    win, hop = int(window_s * sample_rate), int(hop_s * sample_rate)
    spans = windows(len(x), win, hop)
    full = [s for s in spans if s[1] - s[0] == win]
    preds: list[torch.Tensor] = []
    weights: list[int] = []
    # Equal-length windows go through in one batch; a short clip is a single window.
    if len(full) == len(spans) and len(spans) > 1:
        batch = torch.from_numpy(np.stack([x[a:b] for a, b in spans]))
        preds.append(model(batch))
        weights += [win] * len(spans)
    else:
        for a, b in spans:
            preds.append(model(torch.from_numpy(np.ascontiguousarray(x[a:b]))[None]))
            weights.append(b - a)
    p = torch.cat(preds).float().numpy()
    w = np.asarray(weights, dtype=np.float64)
    return float(np.clip((p * w).sum() / w.sum(), 1.0, 5.0))


def score_waveforms(model: MOSModel, clips: Sequence[np.ndarray], sample_rate: int = 16000) -> np.ndarray:
    """MOS for each clip (see :func:`score_waveform`)."""
    return np.asarray([score_waveform(model, c, sample_rate) for c in clips], dtype=np.float64)
