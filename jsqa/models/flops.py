"""Model FLOPs counted from the architecture, for FLOP-utilisation figures.

A multiply-accumulate (MAC) counts as 2 FLOPs; only convolutions and linear layers are counted
(BatchNorm, activations, pooling and the loss are a rounding error beside them, and
``torch.utils.flop_counter.FlopCounterMode`` leaves them out too). A training step costs about
:data:`TRAIN_FACTOR` forwards: the forward, then the gradients with respect to inputs and weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from jsqa.models.encoder import EncoderSpec
from jsqa.models.mos import projection_dims

# Forward + backward (input gradients + weight gradients) ≈ 3 forwards.
TRAIN_FACTOR = 3


def conv1d_out_len(n: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a Conv1d (dilation 1) on ``n`` input frames."""
    return (n + 2 * padding - kernel) // stride + 1


def encoder_flops(spec: EncoderSpec, n_samples: int) -> int:
    """Forward FLOPs of the encoder for one waveform of ``n_samples`` samples (2 × conv MACs),
    following :class:`jsqa.models.encoder.Encoder`: a strided stem, 'same' padding, every other
    frame kept after every ``downsample_every``-th layer but the last."""
    if n_samples < 1:
        raise ValueError(f"n_samples must be positive, got {n_samples}")
    macs = 0
    n, in_ch = int(n_samples), 1
    channels = spec.channels()
    for i, out_ch in enumerate(channels):
        stride = spec.stem_stride if i == 0 else 1
        n = conv1d_out_len(n, spec.kernel_size, stride, spec.kernel_size // 2)
        macs += in_ch * out_ch * spec.kernel_size * n
        in_ch = out_ch
        if (i + 1) % spec.downsample_every == 0 and i + 1 < len(channels):
            n = (n + 1) // 2  # x[:, :, ::2]
    return 2 * macs


def mlp_flops(dims: Sequence[int]) -> int:
    """Forward FLOPs of a chain of linear layers ``dims[0] -> dims[1] -> ...`` for one input."""
    return 2 * sum(a * b for a, b in pairwise(dims))


def mos_model_flops(spec: EncoderSpec, n_samples: int, hidden: int = 64, projection: bool = False) -> int:
    """Forward FLOPs of :class:`jsqa.models.mos.MOSModel` for one waveform."""
    d = spec.embedding_dim
    head_in = d
    flops = encoder_flops(spec, n_samples)
    if projection:
        proj_hidden, head_in = projection_dims(spec)
        flops += mlp_flops([d, proj_hidden, head_in])
    return flops + mlp_flops([head_in, hidden, 1])


def pretrain_model_flops(spec: EncoderSpec, n_samples: int, projection_head: bool = True) -> int:
    """Forward FLOPs of :class:`jsqa.models.mos.PretrainModel` for one waveform (a pair is two)."""
    flops = encoder_flops(spec, n_samples)
    if projection_head:
        hidden, out = projection_dims(spec)
        flops += mlp_flops([spec.embedding_dim, hidden, out])
    return flops
