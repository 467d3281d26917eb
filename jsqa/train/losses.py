"""Contrastive loss: NT-Xent (SimCLR) with an optional perceptual mask on in-batch negatives."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from jsqa.models.mos import is_std


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


def gaussian_nll(
    mu: torch.Tensor,
    sigma: torch.Tensor,
    y: torch.Tensor,
    se: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean negative log-likelihood of ``y`` under N(mu, sigma² + se²), constant included.

    ``se`` is the label's own standard error (a MOS of few, spread votes is uncertain), so the
    model is not asked to explain noise the label already carries; None or 0: an exact label.
    """
    var = sigma**2 if se is None else sigma**2 + se**2
    return 0.5 * (torch.log(2 * torch.pi * var) + (y - mu) ** 2 / var).mean()


def target_loss(
    name: str,
    outputs: tuple[str, ...],
    pred: torch.Tensor,
    y: torch.Tensor,
    se: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sum over targets of the mean loss ``name`` ('gnll', 'mse', 'l1') of a model's outputs.

    ``pred`` [B, K] is laid out as ``outputs`` (:func:`jsqa.models.mos.output_layout`); ``y``
    [B, T] holds the targets (the outputs not ending in ``_std``) in order, NaN where a clip has
    no label (left out); ``se`` [B] is the MOS label's standard error (gnll only, MOS only).
    """
    targets = [o for o in outputs if not is_std(o)]
    if y.shape[-1] != len(targets):
        raise ValueError(f"expected {len(targets)} target columns ({', '.join(targets)}), got {y.shape[-1]}")
    total = pred.new_zeros(())
    for t, target in enumerate(targets):
        keep = ~torch.isnan(y[:, t])
        if not bool(keep.any()):
            continue
        mu, label = pred[keep, outputs.index(target)], y[keep, t]
        if name == "gnll":
            std = f"{target}_std"
            if std not in outputs:
                raise ValueError(f"gnll needs a '{std}' output (outputs: {', '.join(outputs)})")
            label_se = se[keep] if se is not None and target == "mos" else None
            total = total + gaussian_nll(mu, pred[keep, outputs.index(std)], label, label_se)
        elif name == "mse":
            total = total + torch.mean((mu - label) ** 2)
        elif name == "l1":
            total = total + torch.mean(torch.abs(mu - label))
        else:
            raise ValueError(f"unknown loss '{name}' (choose gnll, mse, l1)")
    return total
