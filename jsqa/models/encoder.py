"""Waveform encoder in the CDPAM style: a stack of Conv1d + BatchNorm + LeakyReLU on raw audio.

The ``paper`` size follows the CDPAM base encoder (Manocha et al., 2021), our best reading of the
26M-parameter JSQA encoder: 16 layers, kernel 15, 64 channels doubling every 4th layer up to
1024, time decimated by 2 after every 4th layer, global average pooling over time. It has
26,065,920 parameters. ``small`` is the same code with fewer, narrower layers and a strided
first layer, sized for CPU runs and tests.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

# The input rate of a model that does not say otherwise (and of checkpoints written before
# they recorded theirs).
DEFAULT_SAMPLE_RATE = 16000


@dataclass(frozen=True)
class EncoderSpec:
    n_layers: int
    base_channels: int
    max_channels: int
    kernel_size: int = 15
    downsample_every: int = 4
    stem_stride: int = 1
    negative_slope: float = 0.1

    def channels(self) -> list[int]:
        """Output channels per layer: doubling after every 4th layer, capped at ``max_channels``."""
        return [min(self.base_channels * 2 ** ((i + 1) // 4), self.max_channels) for i in range(self.n_layers)]

    @property
    def embedding_dim(self) -> int:
        return self.channels()[-1]

    def to_dict(self) -> dict:
        return asdict(self)


ENCODER_SIZES: dict[str, EncoderSpec] = {
    "paper": EncoderSpec(n_layers=16, base_channels=64, max_channels=1024),
    "small": EncoderSpec(n_layers=8, base_channels=16, max_channels=128, downsample_every=1, stem_stride=4),
}


class Encoder(nn.Module):
    """Raw waveform [B, T] (or [B, 1, T]) -> embedding [B, D] by average pooling over time."""

    def __init__(self, spec: EncoderSpec, sample_rate: int = DEFAULT_SAMPLE_RATE) -> None:
        super().__init__()
        self.spec = spec
        # The input rate it is trained for (saved in checkpoints; scoring resamples to it).
        self.sample_rate = int(sample_rate)
        layers: list[nn.Module] = []
        in_ch = 1
        for i, out_ch in enumerate(spec.channels()):
            stride = spec.stem_stride if i == 0 else 1
            layers.append(
                nn.Sequential(
                    nn.Conv1d(in_ch, out_ch, spec.kernel_size, stride=stride, padding=spec.kernel_size // 2),
                    nn.BatchNorm1d(out_ch),
                    nn.LeakyReLU(spec.negative_slope),
                )
            )
            in_ch = out_ch
        self.layers = nn.ModuleList(layers)

    @property
    def embedding_dim(self) -> int:
        return self.spec.embedding_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Frame-level features [B, D, T'] before pooling."""
        if x.dim() == 2:
            x = x.unsqueeze(1)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            # Decimation without parameters, as in CDPAM: keep every other frame.
            if (i + 1) % self.spec.downsample_every == 0 and i + 1 < len(self.layers):
                x = x[:, :, ::2]
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=-1)


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
