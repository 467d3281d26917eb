"""Contrastive pretraining of the encoder on JND pairs (NT-Xent, in-batch negatives).

Batches are built from groups of pairs of the same utterance: those pairs share content and
differ in SNR by more than the within-pair JND (they are drawn across the SNR range), so they
are the hard negatives that force the encoder to attend to quality rather than to content.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from jsqa.config import ModelConfig, PretrainConfig
from jsqa.losses import nt_xent
from jsqa.models.encoder import count_parameters
from jsqa.models.mos import PretrainModel, encoder_spec, save_checkpoint
from jsqa.pairs import PairSet, load_pairs
from jsqa.train.common import EpochCallback, no_callback, pick_device, seed_everything

log = logging.getLogger(__name__)


def grouped_batches(
    utterance_ids: np.ndarray, batch_size: int, group_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """One epoch of batches of pair indices, ``group_size`` pairs per utterance per batch."""
    order = np.argsort(utterance_ids, kind="stable")
    _, starts = np.unique(utterance_ids[order], return_index=True)
    groups = np.split(order, starts[1:])
    chunks: list[np.ndarray] = []
    for g in groups:
        g = rng.permutation(g)
        chunks.extend(g[i : i + group_size] for i in range(0, len(g), group_size))
    rng.shuffle(chunks)
    batches, cur, size = [], [], 0
    for c in chunks:
        # Never split a group: close the batch when the next group would overflow it.
        if cur and size + len(c) > batch_size:
            batches.append(np.concatenate(cur))
            cur, size = [], 0
        cur.append(c)
        size += len(c)
    # A last batch of one pair has no negatives; keep it only when it has a few.
    if size >= 2:
        batches.append(np.concatenate(cur))
    return batches


def _batch_tensors(pairs: PairSet, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    audio = np.stack([pairs[int(i)] for i in idx])  # [B, 2, T]
    t = torch.from_numpy(audio)
    return t[:, 0], t[:, 1]


def pretrain(
    pairs_dir: Path,
    model_cfg: ModelConfig,
    cfg: PretrainConfig,
    seed: int,
    out_path: Path,
    on_epoch: EpochCallback = no_callback,
) -> dict[str, float]:
    """Train the encoder (and projection head) contrastively; save an 'encoder' checkpoint.

    Returns the final epoch's metrics: loss, positive/negative cosine similarity and top-1
    retrieval accuracy (how often a view's nearest neighbour is its JND partner).
    """
    rng = seed_everything(seed, cfg.threads)
    pairs = load_pairs(pairs_dir)
    if pairs.n < 2:
        raise ValueError(f"{pairs_dir}: need at least 2 pairs to pretrain, found {pairs.n}")
    spec = encoder_spec(model_cfg.size)
    device = pick_device(cfg.device)
    model = PretrainModel(spec, projection_head=model_cfg.projection_head).to(device)
    n_params = count_parameters(model.encoder)
    log.info("encoder '%s': %s trainable parameters", model_cfg.size, f"{n_params:,}")
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    utt = pairs.recipes["utterance_id"].to_numpy()
    steps_per_epoch = len(grouped_batches(utt, cfg.batch_size, cfg.group_size, np.random.default_rng(0)))
    total = max(1, steps_per_epoch * cfg.epochs)
    warmup = max(1, total // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
    )
    metrics: dict[str, float] = {}
    for epoch in range(cfg.epochs):
        model.train()
        sums = {"loss": 0.0, "pos_sim": 0.0, "neg_sim": 0.0, "top1": 0.0}
        n_batches = 0
        for idx in grouped_batches(utt, cfg.batch_size, cfg.group_size, rng):
            a, b = (t.to(device, non_blocking=True) for t in _batch_tensors(pairs, idx))
            mask = torch.from_numpy(pairs.positives_mask(idx)).to(device) if cfg.mask_jnd_negatives else None
            z = model(torch.cat([a, b]))
            za, zb = z[: len(idx)], z[len(idx) :]
            loss = nt_xent(za, zb, cfg.temperature, mask)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            sched.step()
            with torch.no_grad():
                sims = za @ zb.t()
                eye = torch.eye(len(idx), dtype=torch.bool, device=device)
                sums["loss"] += loss.item()
                sums["pos_sim"] += float(sims[eye].mean())
                sums["neg_sim"] += float(sims[~eye].mean())
                sums["top1"] += float((sims.argmax(dim=1) == torch.arange(len(idx), device=device)).float().mean())
            n_batches += 1
        metrics = {k: v / max(n_batches, 1) for k, v in sums.items()}
        metrics["lr"] = float(sched.get_last_lr()[0])
        log.info("pretrain epoch %d: %s", epoch + 1, {k: round(v, 4) for k, v in metrics.items()})
        on_epoch(epoch + 1, metrics)
    save_checkpoint(
        out_path,
        "encoder",
        model,
        spec,
        projection_head=model_cfg.projection_head,
        config=asdict(cfg),
        metrics=metrics,
        n_parameters=n_params,
    )
    return {**metrics, "n_parameters": float(n_params), "n_pairs": float(pairs.n)}
