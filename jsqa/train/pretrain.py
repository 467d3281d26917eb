"""Contrastive pretraining of the encoder on JND pairs (NT-Xent, in-batch negatives).

Batches are built from groups of pairs of the same utterance: those pairs share content and
differ in SNR by more than the within-pair JND (they are drawn across the SNR range), so they
are the hard negatives that force the encoder to attend to quality rather than to content.

A run is resumable: every ``checkpoint_every`` optimizer steps, and at the step boundary after
SIGTERM/SIGINT, the full training state goes to a run directory (``<out>.ckpt/`` by default),
and the next run with the same parameters continues from it bit-for-bit on the same machine. Under ``torchrun`` the
batches are shared across ranks (see :mod:`jsqa.train.distributed`); rank 0 alone writes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import signal
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from jsqa.config import ModelConfig, PretrainConfig
from jsqa.errors import ManifestError
from jsqa.models.encoder import EncoderSpec, count_parameters
from jsqa.models.mos import PretrainModel, encoder_spec, save_checkpoint
from jsqa.pairs.store import PairSet, load_pairs
from jsqa.train.checkpointing import (
    ResumeMode,
    TrainingInterrupted,
    capture_rng,
    checkpoint_dir_for,
    clear_checkpoints,
    generator_state,
    params_hash,
    restore_rng,
    save_train_state,
    set_generator_state,
    starting_state,
)
from jsqa.train.common import (
    EpochCallback,
    StepCallback,
    autocast,
    autocast_dtype,
    no_callback,
    pick_device,
    seed_everything,
    set_determinism,
    step_seed,
)
from jsqa.train.distributed import (
    DistContext,
    agree_max,
    init_distributed,
    mean_over_ranks,
    shard_batches,
    shutdown_distributed,
    steps_per_epoch,
)
from jsqa.train.losses import nt_xent
from jsqa.train.pair_batches import PairBatch, PairBatchLoader
from jsqa.train.signals import StopRequest, stop_on_signals

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
    batches: list[np.ndarray] = []
    cur: list[np.ndarray] = []
    size = 0
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


METRIC_KEYS = ("loss", "pos_sim", "neg_sim", "top1")
# Parameters that change neither the data order nor the numbers: resuming may change them.
RESUME_FREE = ("threads", "device", "checkpoint_every")


def lr_factor(total: int, warmup: int) -> Callable[[int], float]:
    """Linear warmup over ``warmup`` steps, then cosine decay to 0 at ``total`` steps."""

    def f(s: int) -> float:
        return min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total))

    return f


def contrastive_loss(
    model: nn.Module, batch: PairBatch, temperature: float, amp: torch.dtype | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """NT-Xent of one batch (forward under autocast, loss in fp32); returns (loss, z_a, z_b)."""
    n = len(batch.idx)
    with autocast(batch.a.device, amp):
        z = model(torch.cat([batch.a, batch.b]))
    z = z.float()
    za, zb = z[:n], z[n:]
    return nt_xent(za, zb, temperature, batch.mask), za, zb


def optimizer_step(
    model: nn.Module,
    loss: torch.Tensor,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    clip_norm: float,
) -> None:
    """Backward, optional global-norm clipping, optimizer and scheduler step."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    opt.step()
    sched.step()


@torch.no_grad()
def _batch_stats(loss: torch.Tensor, za: torch.Tensor, zb: torch.Tensor) -> dict[str, float]:
    sims = za @ zb.t()
    eye = torch.eye(len(za), dtype=torch.bool, device=za.device)
    top1 = (sims.argmax(dim=1) == torch.arange(len(za), device=za.device)).float().mean()
    return {
        "loss": loss.item(),
        "pos_sim": float(sims[eye].mean()),
        "neg_sim": float(sims[~eye].mean()),
        "top1": float(top1),
    }


def _run_params(
    model_cfg: ModelConfig, cfg: PretrainConfig, seed: int, world: int, amp: torch.dtype | None, pairs_dir: Path
) -> dict:
    index = Path(pairs_dir) / "index.json"
    return {
        "seed": seed,
        **{f"model.{k}": v for k, v in asdict(model_cfg).items()},
        **{f"pretrain.{k}": v for k, v in asdict(cfg).items() if k not in RESUME_FREE},
        "precision": str(amp or "fp32"),
        "world_size": world,
        "pairs": hashlib.sha256(index.read_bytes()).hexdigest()[:16] if index.exists() else "",
    }


def pretrain(
    pairs_dir: Path,
    model_cfg: ModelConfig,
    cfg: PretrainConfig,
    seed: int,
    out_path: Path,
    on_epoch: EpochCallback = no_callback,
    *,
    on_step: StepCallback = no_callback,
    checkpoint_dir: Path | None = None,
    resume: ResumeMode = "auto",
    dist_ctx: DistContext | None = None,
    deterministic: bool = True,
) -> dict[str, float]:
    """Train the encoder (and projection head) contrastively; save an 'encoder' checkpoint.

    Returns the final epoch's metrics: loss, positive/negative cosine similarity and top-1
    retrieval accuracy (how often a view's nearest neighbour is its JND partner), plus counts.
    ``on_step(step, {"loss", "lr"})`` sees every optimizer step (rank 0 only), ``on_epoch``
    every epoch's means. Raises :class:`TrainingInterrupted` after saving a checkpoint when
    SIGTERM/SIGINT arrives. ``resume`` (see :func:`jsqa.train.checkpointing.starting_state`):
    "auto" continues a checkpoint in ``checkpoint_dir`` made with the same parameters, "resume"
    must continue one, "fresh" starts at step 0 regardless. ``deterministic``:
    :func:`jsqa.train.common.set_determinism` (``train.deterministic``).
    """
    set_determinism(deterministic)
    # Handlers go in before the slow setup (the first optimizer pulls in torch's lazy imports),
    # so a signal at any time ends the run at a step boundary with a checkpoint.
    with stop_on_signals() as stop:
        return _pretrain(
            pairs_dir,
            model_cfg,
            cfg,
            seed,
            out_path,
            on_epoch,
            on_step,
            checkpoint_dir,
            resume,
            dist_ctx or DistContext(),
            stop,
        )


def _pretrain(
    pairs_dir: Path,
    model_cfg: ModelConfig,
    cfg: PretrainConfig,
    seed: int,
    out_path: Path,
    on_epoch: EpochCallback,
    on_step: StepCallback,
    checkpoint_dir: Path | None,
    resume: ResumeMode,
    ctx: DistContext,
    stop: StopRequest,
) -> dict[str, float]:
    data_rng = seed_everything(seed, cfg.threads)
    run = _setup(pairs_dir, model_cfg, cfg, seed, out_path, checkpoint_dir, ctx)
    start_epoch, start_pos = _resume(run, resume, data_rng)
    metrics: dict[str, float] = {}
    for epoch in range(start_epoch, cfg.epochs):
        if run.step >= run.total:  # pretrain.max_steps reached
            break
        epoch_rng = generator_state(data_rng)
        pos = start_pos if epoch == start_epoch else 0
        if epoch != start_epoch:
            run.sums = dict.fromkeys(METRIC_KEYS, 0.0)
        plan = shard_batches(grouped_batches(run.utt, cfg.batch_size, cfg.group_size, data_rng), ctx)
        done = _train_epoch(run, cfg, seed, plan, epoch, pos, epoch_rng, on_step, stop)
        means = mean_over_ranks([run.sums[k] / max(done, 1) for k in METRIC_KEYS], ctx, run.device)
        metrics = dict(zip(METRIC_KEYS, means))
        metrics["lr"] = float(run.sched.get_last_lr()[0])
        if ctx.is_main:
            log.info("pretrain epoch %d: %s", epoch + 1, {k: round(v, 4) for k, v in metrics.items()})
            on_epoch(epoch + 1, metrics)
    if ctx.is_main:
        _save_encoder(run, out_path, model_cfg, cfg, metrics)
    shutdown_distributed(ctx)
    return {
        **metrics,
        "n_parameters": float(run.n_params),
        "n_pairs": float(run.pairs.n),
        "steps": float(run.step),
        "world_size": float(ctx.world_size),
    }


@dataclass
class _Run:
    """What a pretraining run carries from step to step, and what its checkpoints hold."""

    ctx: DistContext
    pairs: PairSet
    spec: EncoderSpec
    model: PretrainModel
    net: nn.Module  # the model, or its DistributedDataParallel wrapper
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    device: torch.device
    amp: torch.dtype | None
    utt: np.ndarray  # each pair's utterance id: what batches are grouped by
    total: int  # optimizer steps over all epochs
    n_params: int
    ckpt_dir: Path
    params: dict
    params_hash: str
    step: int = 0
    sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(METRIC_KEYS, 0.0))

    def save(self, epoch: int, pos: int, epoch_rng: str) -> None:
        """The full training state at this step boundary (rank 0 writes; the others return)."""
        if self.ctx.is_main:
            save_train_state(
                self.ckpt_dir,
                {
                    "params_hash": self.params_hash,
                    "params": json.dumps(self.params, default=str),
                    "step": self.step,
                    "epoch": epoch,
                    "position": pos,
                    "epoch_rng": epoch_rng,
                    "epoch_sums": dict(self.sums),
                    "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                    "optimizer": self.opt.state_dict(),
                    "scheduler": self.sched.state_dict(),
                    "rng": capture_rng(),
                },
            )


def _setup(
    pairs_dir: Path,
    model_cfg: ModelConfig,
    cfg: PretrainConfig,
    seed: int,
    out_path: Path,
    checkpoint_dir: Path | None,
    ctx: DistContext,
) -> _Run:
    """The run at step 0: pairs, model, optimizer and schedule (the data RNG is not drawn from)."""
    pairs = load_pairs(pairs_dir)
    if pairs.n < 2:
        raise ManifestError(f"{pairs_dir}: need at least 2 pairs to pretrain, found {pairs.n}")
    spec = encoder_spec(model_cfg.size)
    device = init_distributed(ctx, pick_device(cfg.device))
    amp = autocast_dtype(cfg.precision, device)
    # The encoder learns at the pair set's rate; its checkpoint records it for scoring.
    model = PretrainModel(spec, projection_head=model_cfg.projection_head, sample_rate=pairs.sample_rate).to(device)
    n_params = count_parameters(model.encoder)
    if ctx.is_main:
        log.info(
            "encoder '%s': %s trainable parameters; %s on %s, %d process(es)",
            model_cfg.size,
            f"{n_params:,}",
            "bf16 autocast" if amp else "fp32",
            device,
            ctx.world_size,
        )
    net: nn.Module = model
    if ctx.enabled:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    utt = pairs.recipes["utterance_id"].to_numpy()
    n_batches = len(grouped_batches(utt, cfg.batch_size, cfg.group_size, np.random.default_rng(0)))
    total = max(1, steps_per_epoch(n_batches, ctx.world_size) * cfg.epochs)
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    warmup = cfg.warmup_steps if cfg.warmup_steps > 0 else max(1, total // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(total, warmup))
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else checkpoint_dir_for(out_path)
    run_params = _run_params(model_cfg, cfg, seed, ctx.world_size, amp, pairs_dir)
    return _Run(
        ctx,
        pairs,
        spec,
        model,
        net,
        opt,
        sched,
        device,
        amp,
        utt,
        total,
        n_params,
        ckpt_dir,
        run_params,
        params_hash(run_params),
    )


def _resume(run: _Run, resume: ResumeMode, data_rng: np.random.Generator) -> tuple[int, int]:
    """Load the state the run continues from, if any (:func:`starting_state`); return the
    (epoch, batch position) it starts at."""
    state = starting_state(run.ckpt_dir, run.params_hash, run.params, resume, writer=run.ctx.is_main)
    if state is None:
        return 0, 0
    run.model.load_state_dict(state["model"])
    run.opt.load_state_dict(state["optimizer"])
    run.sched.load_state_dict(state["scheduler"])
    run.step, start_epoch, start_pos = int(state["step"]), int(state["epoch"]), int(state["position"])
    run.sums = {k: float(v) for k, v in state["epoch_sums"].items()}
    set_generator_state(data_rng, state["epoch_rng"])
    restore_rng(state["rng"])
    if run.ctx.is_main:
        log.info(
            "resuming from %s: step %d of %d (epoch %d, batch %d)",
            run.ckpt_dir / "last.pt",
            run.step,
            run.total,
            start_epoch + 1,
            start_pos,
        )
    return start_epoch, start_pos


def _train_epoch(
    run: _Run,
    cfg: PretrainConfig,
    seed: int,
    plan: list[np.ndarray],
    epoch: int,
    pos: int,
    epoch_rng: str,
    on_step: StepCallback,
    stop: StopRequest,
) -> int:
    """Train on this rank's ``plan`` from batch ``pos`` on, adding each batch's stats to ``run.sums``;
    checkpoint every ``cfg.checkpoint_every`` steps, and raise :class:`TrainingInterrupted` after
    checkpointing the step a signal arrived in. Stops early at ``run.total`` steps
    (``pretrain.max_steps``); returns the batches of the epoch done so far."""
    run.net.train()
    with PairBatchLoader(run.pairs, plan[pos:], run.device, cfg.mask_jnd_negatives) as loader:
        for batch in loader:
            torch.manual_seed(step_seed(seed, run.step, run.ctx.rank))
            loss, za, zb = contrastive_loss(run.net, batch, cfg.temperature, run.amp)
            optimizer_step(run.net, loss, run.opt, run.sched, cfg.clip_norm)
            stats = _batch_stats(loss, za, zb)
            for k in METRIC_KEYS:
                run.sums[k] += stats[k]
            run.step, pos = run.step + 1, pos + 1
            signum = agree_max(stop.signum, run.ctx, run.device)
            if signum or (cfg.checkpoint_every > 0 and run.step % cfg.checkpoint_every == 0):
                run.save(epoch, pos, epoch_rng)
            if run.ctx.is_main:
                on_step(run.step, {"loss": stats["loss"], "lr": float(run.sched.get_last_lr()[0])})
            if signum:
                msg = (
                    f"stopped by {signal.Signals(signum).name} at step {run.step} of {run.total}: checkpoint saved "
                    f"in {run.ckpt_dir}; run the same command again to continue from it"
                )
                log.warning(msg)
                shutdown_distributed(run.ctx)
                raise TrainingInterrupted(msg, signum, run.step)
            if run.step >= run.total:
                break
    return pos


def _save_encoder(
    run: _Run, out_path: Path, model_cfg: ModelConfig, cfg: PretrainConfig, metrics: dict[str, float]
) -> None:
    """The finished run's 'encoder' checkpoint; its training checkpoints are then removed."""
    save_checkpoint(
        out_path,
        "encoder",
        run.model,
        run.spec,
        sample_rate=run.pairs.sample_rate,
        projection_head=model_cfg.projection_head,
        config=asdict(cfg),
        metrics=metrics,
        n_parameters=run.n_params,
    )
    if clear_checkpoints(run.ckpt_dir):
        log.info("run complete: removed its checkpoints in %s", run.ckpt_dir)
