"""Heads on top of the encoder embedding: projection for contrastive pretraining, MLP for MOS."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ProjectionHead(nn.Module):
    """SimCLR/CDPAM-style projection: Linear-BN-LeakyReLU-Dropout-Linear, then L2 normalisation."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.BatchNorm1d(hidden),
            nn.LeakyReLU(0.1),
            nn.Dropout(dropout),
            nn.Linear(hidden, out_dim),
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The projection before L2 normalisation: what a MOS head reads when fine-tuning on it."""
        return self.net(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=-1)


class MOSHead(nn.Module):
    """Regression head: embedding -> ``n_out`` raw outputs [B, n_out] (column 0 is MOS, unbounded
    during training, clamped to [1, 5] at inference; :class:`jsqa.models.mos.MOSModel` maps the
    others). ``init_bias`` starts each output's bias (default: ``init_mos`` for all)."""

    def __init__(
        self,
        in_dim: int,
        hidden: int = 64,
        dropout: float = 0.1,
        init_mos: float = 3.0,
        n_out: int = 1,
        init_bias: list[float] | None = None,
    ) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.LeakyReLU(0.1),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_out),
        )
        # Starting at the training mean spares the first epochs from learning the offset.
        last = self.net[-1]
        assert isinstance(last, nn.Linear)
        with torch.no_grad():
            last.bias.copy_(torch.tensor(init_bias if init_bias is not None else [init_mos] * n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
