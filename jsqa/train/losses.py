"""Contrastive loss: NT-Xent (SimCLR) with an optional perceptual mask on in-batch negatives."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nt_xent(
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    temperature: float = 0.1,
    same_percept: torch.Tensor | None = None,
) -> torch.Tensor:
    """NT-Xent over B positive pairs (z_a[i], z_b[i]); the other 2B-2 views are negatives.

    ``same_percept`` is an optional [B, B] boolean matrix: True where pairs i and j lie within
    one JND of each other. Those views are dropped from the negatives of i, so the loss never
    pushes apart what a listener cannot tell apart. The diagonal is ignored.
    """
    if z_a.shape != z_b.shape or z_a.dim() != 2:
        raise ValueError(f"expected two [B, D] tensors of one shape, got {tuple(z_a.shape)} and {tuple(z_b.shape)}")
    b = z_a.shape[0]
    z = F.normalize(torch.cat([z_a, z_b]), dim=-1)
    logits = z @ z.t() / temperature
    idx = torch.arange(2 * b, device=z.device)
    excluded = idx[:, None] == idx[None, :]
    if same_percept is not None:
        m = same_percept.to(device=z.device, dtype=torch.bool)
        m = m & ~torch.eye(b, dtype=torch.bool, device=z.device)
        excluded = excluded | m.repeat(2, 2)
    positive = (idx + b) % (2 * b)
    # A positive is never excluded, whatever the mask says.
    excluded[idx, positive] = False
    logits = logits.masked_fill(excluded, float("-inf"))
    return F.cross_entropy(logits, positive)
