"""The scoring rules of :mod:`jsqa.signal.speech` in torch ops, for exported models.

:class:`SpeechRule` measures each row of a waveform batch [B, T] the way
:func:`jsqa.signal.speech.check_speech` does (the ITU-T P.56 active level of
:func:`jsqa.signal.levels.active_speech_levels`, the -60 dBov floor, the Welch tonality test) and
gives the gain that brings it to the model's input level. It is written for both exporters:
TorchScript scripts it, ``torch.export`` (ONNX) traces it with symbolic batch and time sizes, so
there is no data-dependent Python control flow and no shape-dependent branch.

Same arithmetic as the numpy routine, with two differences that cannot move a decision: the
signal's energy is summed in float64 (numpy: float32, within 2e-6 relative), and the envelope's
recursion is restarted every ``CHUNK_TIME_CONSTANTS`` time constants with only the previous
chunk's own last value carried in (what is dropped is below e**-100 of the envelope's peak).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from jsqa.signal.levels import (
    BLOCK_S,
    HANGOVER_S,
    MARGIN_DB,
    SILENCE_FLOOR_DBOV,
    THRESHOLD_SPAN_DB,
    THRESHOLD_STEP_DB,
    TIME_CONSTANT_S,
    db_to_gain,
)
from jsqa.signal.speech import MIN_ACTIVE_LEVEL_DBOV, TONAL_POWER_SHARE, TONAL_TOP_BINS, WELCH_SEGMENT_S

# Envelope recursion chunks span this many time constants: weights g**-k stay below e**100.
CHUNK_TIME_CONSTANTS = 100.0


class SpeechRule(nn.Module):
    """Waveform batch [B, T] float32 at ``sample_rate`` -> (gain [B] float64, speech [B] bool).

    ``speech``: the row holds speech to score (:func:`jsqa.signal.speech.check_speech`);
    ``gain``: the linear gain that brings its active level to ``target_dbov`` (1.0 where
    ``speech`` is False). Each row is one signal; rows do not affect each other.
    """

    def __init__(self, sample_rate: int, target_dbov: float) -> None:
        super().__init__()
        self.weights: torch.Tensor
        self.up: torch.Tensor
        self.down: torch.Tensor
        self.ladder_db: torch.Tensor
        self.ladder: torch.Tensor
        self.hann: torch.Tensor
        sr = int(sample_rate)
        self.sample_rate = sr
        self.target_dbov = float(target_dbov)
        self.block = max(1, int(round(BLOCK_S * sr)))
        g = math.exp(-1.0 / (sr * TIME_CONSTANT_S))
        beta = 1.0 - g
        self.g_block = g**self.block
        self.carry = beta * self.block * self.g_block
        j = torch.arange(self.block, dtype=torch.float64)
        w1 = beta * g ** (self.block - 1 - j)
        w2 = beta * beta * (self.block - j) * g ** (self.block - 1 - j)
        self.register_buffer("weights", torch.stack([w1, w2], dim=1).float(), persistent=False)
        self.chunk = max(1, int(CHUNK_TIME_CONSTANTS / -math.log(self.g_block)))
        up = torch.exp(-math.log(self.g_block) * torch.arange(self.chunk, dtype=torch.float64))
        self.register_buffer("up", up, persistent=False)
        self.register_buffer("down", 1.0 / up, persistent=False)
        self.hang_width = int(round(HANGOVER_S * sr / self.block)) + 1
        n_steps = int(round(THRESHOLD_SPAN_DB / THRESHOLD_STEP_DB))
        ladder_db = THRESHOLD_STEP_DB * torch.arange(n_steps, -1, -1, dtype=torch.float64)
        self.register_buffer("ladder_db", ladder_db, persistent=False)
        self.register_buffer("ladder", torch.from_numpy(db_to_gain(-ladder_db.numpy())), persistent=False)
        self.floor = float(db_to_gain(SILENCE_FLOOR_DBOV))
        # As attributes: TorchScript reads no module-level floats.
        self.margin_db, self.min_level_dbov, self.tonal_share_max = MARGIN_DB, MIN_ACTIVE_LEVEL_DBOV, TONAL_POWER_SHARE
        self.top_bins = TONAL_TOP_BINS
        self.n_fft = max(16, int(round(WELCH_SEGMENT_S * sr)))
        self.register_buffer(
            "hann", torch.hann_window(self.n_fft, periodic=False, dtype=torch.float64), persistent=False
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        level = self.active_level(x)
        share = self.tonal_share(x)
        speech = (level >= self.min_level_dbov) & (share < self.tonal_share_max)
        gain = torch.pow(10.0, (self.target_dbov - level) / 20.0)
        return torch.where(speech, gain, torch.ones_like(gain)), speech

    def recursive(self, u: torch.Tensor) -> torch.Tensor:
        """``y[:, n] = g_block * y[:, n-1] + u[:, n]`` from rest, per row of float64 ``u`` >= 0."""
        rows, n = u.shape[0], u.shape[1]
        chunks = (n + self.chunk - 1) // self.chunk
        v = F.pad(u, [0, chunks * self.chunk - n]).reshape(rows, chunks, self.chunk)
        y = torch.cumsum(v * self.up, dim=2) * self.down
        # Each chunk starts from the previous one's last value (decayed by g_block ** (k + 1)).
        last = F.pad(y[:, :, -1:], [0, 0, 1, 0])[:, :-1, :]
        y = y + last * (self.g_block * self.down)
        return y.reshape(rows, chunks * self.chunk)[:, :n]

    def envelope(self, x: torch.Tensor) -> torch.Tensor:
        """The P.56 envelope at the end of every ``block`` samples, [B, blocks] float64."""
        rows, n = x.shape[0], x.shape[1]
        blocks = (n + self.block - 1) // self.block
        a = F.pad(x.abs().float(), [0, blocks * self.block - n]).reshape(rows, blocks, self.block)
        sums = torch.matmul(a, self.weights)
        q1 = self.recursive(sums[:, :, 0].double())
        drive = sums[:, :, 1].double() + F.pad(self.carry * q1[:, :-1], [1, 0])
        return self.recursive(drive)

    def active_level(self, x: torch.Tensor) -> torch.Tensor:
        """P.56 active level (dBov) of each row, float64; NaN where it has none (silent, not finite)."""
        n = x.shape[1]
        q = self.envelope(x)
        short = q.shape[1] * self.block - n
        peak = q.amax(dim=1)
        width = self.hang_width
        hang = F.max_pool1d(F.pad(q.clamp(min=0.0).float().unsqueeze(1), [width - 1, 0]), width, 1).squeeze(1)
        c_lin = (peak.unsqueeze(1) * self.ladder).float()
        above = (hang.unsqueeze(1) >= c_lin.unsqueeze(2)).to(torch.int64).sum(dim=2)
        last_on = hang[:, -1:] >= c_lin
        active = above * self.block - torch.where(last_on, torch.full_like(above, short), torch.zeros_like(above))
        energy = x.double().square().sum(dim=1)
        level_db = 10.0 * torch.log10(energy.unsqueeze(1) / active.double())
        excess = level_db - (20.0 * torch.log10(peak).unsqueeze(1) - self.ladder_db)
        level = crossing(level_db, excess, self.margin_db)
        ok = torch.isfinite(energy) & (peak > self.floor)
        return torch.where(ok, level, torch.full_like(level, float("nan")))

    def tonal_share(self, x: torch.Tensor) -> torch.Tensor:
        """Share of each row's Welch power in its ``TONAL_TOP_BINS`` strongest bins, float64."""
        n, hop = self.n_fft, self.n_fft // 2
        # Padded by a whole segment: the frames numpy takes (at least one) come first, the rest are masked.
        frames = F.pad(x.double(), [0, n]).unfold(1, n, hop)
        used = (x.shape[1] - n) // hop + 1
        index = torch.arange(frames.shape[1], device=x.device)
        keep = ((index < used) | (index == 0)).to(torch.float64)
        frames = (frames - frames.mean(dim=2, keepdim=True)) * self.hann
        spectrum = torch.fft.rfft(frames, dim=2)
        power = (spectrum.real.square() + spectrum.imag.square()) * keep.unsqueeze(1)
        psd = power.sum(dim=1)
        total = psd.sum(dim=1)
        top = psd.topk(self.top_bins, dim=1).values.sum(dim=1)
        return torch.where(total > 0.0, top / total, torch.ones_like(total))


def crossing(level_db: torch.Tensor, excess: torch.Tensor, margin_db: float) -> torch.Tensor:
    """Per row, the level where ``excess`` (falling as the threshold rises) crosses ``margin_db``,
    interpolated between the thresholds either side (as :mod:`jsqa.signal.levels` does)."""
    below = excess <= margin_db
    j = torch.argmax(below.float(), dim=1, keepdim=True)
    prev = (j - 1).clamp(min=0)
    e0, e1 = excess.gather(1, prev), excess.gather(1, j)
    l0, l1 = level_db.gather(1, prev), level_db.gather(1, j)
    crossed = (l0 + (e0 - margin_db) / (e0 - e1) * (l1 - l0)).squeeze(1)
    first = torch.where(j.squeeze(1) == 0, level_db[:, 0], crossed)
    return torch.where(below.any(dim=1), first, level_db[:, -1])
