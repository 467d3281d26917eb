"""MOS fine-tuning: encoder + regression head, from a pretrained encoder or from scratch.

Both runs share this function and the same schedule; only the encoder's initial weights differ,
which is what makes the scratch run the paper's baseline.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from jsqa.config import FinetuneConfig, ModelConfig
from jsqa.data.clips import ClipSet, label_se, label_targets, load_clips, random_crop
from jsqa.data.manifests import DIMENSIONS
from jsqa.errors import ConfigError, ManifestError
from jsqa.evaluation.collapse import MIN_SPREAD_RATIO, is_failed, run_health, still_improving
from jsqa.evaluation.metrics import mos_metrics, seed_stats
from jsqa.io import atomic_dir
from jsqa.models.encoder import EncoderSpec
from jsqa.models.mos import (
    MOSModel,
    check_sample_rate,
    checkpoint_sample_rate,
    encoder_from_checkpoint,
    encoder_spec,
    load_checkpoint,
    output_layout,
    save_checkpoint,
)
from jsqa.models.seeds import budget_path, seed_path, seeds_dir, write_seed_index
from jsqa.scoring.windows import score_waveforms, score_waveforms_all
from jsqa.signal.speech import random_gains
from jsqa.train.common import EpochCallback, no_callback, pick_device, seed_everything, set_determinism
from jsqa.train.label_subset import label_subset
from jsqa.train.losses import target_loss
from jsqa.train.std_scaling import fit_std_scales

log = logging.getLogger(__name__)


def manifest_dimensions(train: pd.DataFrame) -> tuple[str, ...]:
    """The NISQA quality dimensions (:data:`DIMENSIONS`) the train rows label (a column with at
    least one value): the model gets an output for each."""
    return tuple(d for d in DIMENSIONS if d in train.columns and train[d].notna().any())


def build_model(
    model_cfg: ModelConfig,
    cfg: FinetuneConfig,
    init_mos: float,
    encoder_ckpt: Path | None,
    sample_rate: int = 16000,
    dims: tuple[str, ...] = (),
) -> MOSModel:
    """A MOS model for ``sample_rate`` input whose encoder is random (scratch) or loaded from a
    pretraining checkpoint (ConfigError when that was trained at another rate).

    With ``model.projection_head`` on, the MOS head sits on the projection head, which is also
    taken from the pretraining checkpoint; off, it sits on the encoder embedding. Outputs: MOS
    and ``dims``, each with a standard deviation when ``cfg.loss`` is gnll.
    """
    projection = model_cfg.projection_head
    outputs = output_layout(dims, gaussian=cfg.loss == "gnll")

    def mos_model(spec: EncoderSpec) -> MOSModel:
        return MOSModel(
            spec,
            dropout=cfg.dropout,
            init_mos=init_mos,
            projection=projection,
            sample_rate=sample_rate,
            outputs=outputs,
            input_level_dbov=cfg.input_level_dbov,
        )

    if encoder_ckpt is None:
        return mos_model(encoder_spec(model_cfg.size))
    payload = load_checkpoint(encoder_ckpt)
    check_sample_rate(checkpoint_sample_rate(payload), sample_rate, encoder_ckpt)
    encoder = encoder_from_checkpoint(payload)
    model = mos_model(encoder.spec)
    model.encoder.load_state_dict(encoder.state_dict())
    if model.projection is not None:
        prefix = "projection."
        proj = {k[len(prefix) :]: v for k, v in payload["state_dict"].items() if k.startswith(prefix)}
        if not proj:
            raise ConfigError(f"{encoder_ckpt}: pretrained without a projection head but model.projection_head is true")
        model.projection.load_state_dict(proj)
    return model


def _better(health: dict, val_rmse: float, best: dict[str, Any] | None) -> bool:
    """Whether this epoch replaces the best one: a lower validation RMSE, but an epoch whose
    predictions collapsed never replaces one that learned, and one that learned always replaces a
    collapsed one. Plain lowest-RMSE selection picks the untrained, near-constant model on small
    sets: predicting the mean has a low RMSE until the spread of the predictions is learned."""
    if best is None:
        return True
    if health["collapsed"] != best["collapsed"]:
        return not health["collapsed"]
    return val_rmse < best["val_rmse"]


def _encoder_side(model: MOSModel) -> list[torch.nn.Parameter]:
    """Encoder and (when present) projection parameters: everything below the MOS head."""
    params = list(model.encoder.parameters())
    if model.projection is not None:
        params += list(model.projection.parameters())
    return params


def _calibrate_std(model: MOSModel, val: ClipSet, sample_rate: int, enabled: bool) -> dict[str, float]:
    """Fit and set the model's std factors on the validation clips (:mod:`jsqa.train.std_scaling`);
    returns ``val_std_scale`` (the MOS factor) for the metrics, or nothing when off or MOS-only."""
    model.set_std_scale({})  # fit on the raw stds: a loaded state keeps the last factors
    if not (enabled and model.has_std):
        return {}
    scales = fit_std_scales(model, score_waveforms_all(model, val.audio, sample_rate), val)
    model.set_std_scale(scales)
    return {"val_std_scale": scales.get("mos_std", 1.0)}


def _epoch(model: MOSModel, train: ClipSet, cfg: FinetuneConfig, crop: int, opt, rng, device) -> float:
    model.train()
    labels = torch.from_numpy(label_targets(train.rows, model.outputs))
    se = torch.from_numpy(label_se(train.rows))
    order = rng.permutation(len(train))
    total, n = 0.0, 0
    for i in range(0, len(order), cfg.batch_size):
        idx = order[i : i + cfg.batch_size]
        if len(idx) < 2:  # BatchNorm needs two items
            continue
        crops = np.stack([random_crop(train.audio[j], crop, rng) for j in idx])
        if cfg.gain_augment_db > 0:  # drawn after the crops, and only when on: runs without it are unchanged
            crops = (crops * random_gains(len(idx), cfg.gain_augment_db, rng)[:, None]).astype(np.float32)
        x = torch.from_numpy(crops).to(device)
        sel = torch.from_numpy(np.asarray(idx, dtype=np.int64))
        loss = target_loss(cfg.loss, model.outputs, model.all_outputs(x), labels[sel].to(device), se[sel].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        total += loss.item() * len(idx)
        n += len(idx)
    return total / max(n, 1)


def finetune(
    manifest: pd.DataFrame,
    model_cfg: ModelConfig,
    cfg: FinetuneConfig,
    seed: int,
    out_path: Path,
    encoder_ckpt: Path | None = None,
    sample_rate: int = 16000,
    root: str | Path = ".",
    on_epoch: EpochCallback = no_callback,
    budget_path: Path | None = None,
    *,
    deterministic: bool = True,
    data_profile: str | None = None,
) -> dict[str, Any]:
    """Fine-tune on the manifest's train split, early-stop on its val split, save the best model.

    With ``cfg.label_fraction`` < 1 only a stratified share of the train split is used (drawn
    from ``seed``: both inits of one seed see the same clips). With ``budget_path`` and
    ``cfg.equal_compute_epochs``, the best model within that many epochs is saved there too.

    Returns the best epoch's validation metrics (val_rmse, val_mae, val_pcc, val_srcc), its
    run health (val_pred_std, val_spread_ratio, collapsed, still_improving: see
    :mod:`jsqa.evaluation.collapse`),
    best_epoch, epochs_run, train_clips and ``history`` (one dict of metrics per epoch).
    ``deterministic``: :func:`jsqa.train.common.set_determinism` (``train.deterministic``).
    ``data_profile`` (``data.profile``), when given, is recorded in the checkpoint: scoring notes
    that a model trained on the synthetic demo profile says little about real recordings.
    """
    set_determinism(deterministic)
    rng = seed_everything(seed, cfg.threads)
    train, val = _load_splits(manifest, cfg, seed, sample_rate, root)
    init = "pretrained" if encoder_ckpt is not None else "scratch"
    device = pick_device(cfg.device)
    # From the whole train split, so every seed and label fraction has one output layout.
    dims = manifest_dimensions(manifest[manifest["split"] == "train"])
    model = build_model(model_cfg, cfg, float(train.mos.mean()), encoder_ckpt, sample_rate, dims).to(device)
    fit = _fit(model, train, val, cfg, sample_rate, _optimizer(model, cfg), rng, device, init, on_epoch)
    best = fit.best
    best.update(epochs_run=float(fit.epochs_run), train_clips=float(len(train)))
    best["still_improving"] = still_improving(best["best_epoch"], best["epochs_run"])
    _warn_failed(init, seed, best)
    meta: dict[str, Any] = {"head": model.head_config, "init": init, "config": asdict(cfg), "seed": seed}
    if data_profile is not None:
        meta["data_profile"] = data_profile
    if budget_path is not None and fit.budget is not None:
        model.load_state_dict(fit.budget[1])
        scale = _calibrate_std(model, val, sample_rate, cfg.calibrate_std)
        metrics = {**fit.budget[0], **scale, "budget_epochs": float(cfg.equal_compute_epochs)}
        save_checkpoint(
            budget_path, "mos", model.cpu(), model.encoder.spec, sample_rate=sample_rate, metrics=metrics, **meta
        )
        model.to(device)
    model.load_state_dict(fit.best_state)
    best.update(_calibrate_std(model, val, sample_rate, cfg.calibrate_std))
    model.cpu()
    save_checkpoint(out_path, "mos", model, model.encoder.spec, sample_rate=sample_rate, metrics=best, **meta)
    return {**best, "history": fit.history}


def _warn_failed(init: str, seed: int, best: dict[str, Any]) -> None:
    """A warning for a run that collapsed or was still improving at the epoch cap."""
    if best["collapsed"]:
        log.warning(
            "finetune (%s, seed %d) FAILED TO LEARN: validation predictions spread %.3f of the labels' "
            "(below %.2f); the run is flagged 'collapsed' and left out of seed statistics",
            init,
            seed,
            best["val_spread_ratio"],
            MIN_SPREAD_RATIO,
        )
    elif best["still_improving"]:
        log.warning(
            "finetune (%s, seed %d) was STILL IMPROVING at the epoch cap (best epoch %d of %d; raise "
            "finetune.epochs): the run is flagged 'still_improving' and left out of seed statistics",
            init,
            seed,
            int(best["best_epoch"]),
            int(best["epochs_run"]),
        )


def _load_splits(
    manifest: pd.DataFrame,
    cfg: FinetuneConfig,
    seed: int,
    sample_rate: int,
    root: str | Path,
) -> tuple[ClipSet, ClipSet]:
    """The train clips (the ``cfg.label_fraction`` subset, levelled) and the val clips."""
    train_df = label_subset(manifest[manifest["split"] == "train"], cfg.label_fraction, seed)
    val_df = manifest[manifest["split"] == "val"]
    if len(train_df) < 2 or len(val_df) < 2:
        raise ManifestError(
            f"fine-tuning needs at least 2 train and 2 val clips, found {len(train_df)} and {len(val_df)}"
        )
    # Validation clips are normalised per scoring window, by score_waveforms (the model's level).
    train = load_clips(train_df, sample_rate, root, level_dbov=cfg.input_level_dbov)
    val = load_clips(val_df, sample_rate, root)
    return train, val


def _optimizer(model: MOSModel, cfg: FinetuneConfig) -> torch.optim.Optimizer:
    """AdamW with two rates: the encoder side's and the MOS head's."""
    return torch.optim.AdamW(
        [
            # The projection head belongs to the pretrained network: it learns at the encoder's
            # rate (it was left out before, so scratch runs kept a random, untrained projection).
            {"params": _encoder_side(model), "lr": cfg.encoder_learning_rate},
            {"params": model.head.parameters(), "lr": cfg.learning_rate},
        ],
        weight_decay=cfg.weight_decay,
    )


@dataclass
class _Fit:
    """The outcome of the epoch loop: the best epoch's metrics and weights, the best weights
    within the equal-compute budget (metrics, state) if any, every epoch's metrics."""

    best: dict[str, Any]
    best_state: dict
    budget: tuple[dict[str, Any], dict] | None
    history: list[dict[str, float]]
    epochs_run: int


def _fit(
    model: MOSModel,
    train: ClipSet,
    val: ClipSet,
    cfg: FinetuneConfig,
    sample_rate: int,
    opt: torch.optim.Optimizer,
    rng: np.random.Generator,
    device: torch.device,
    init: str,
    on_epoch: EpochCallback,
) -> _Fit:
    """Train up to ``cfg.epochs`` epochs, keeping the best (:func:`_better`) and stopping early
    after ``cfg.patience`` epochs without one."""
    crop = int(cfg.crop_seconds * sample_rate)
    best: dict[str, Any] | None = None
    best_state = copy.deepcopy(model.state_dict())
    budget: tuple[dict[str, Any], dict] | None = None
    history: list[dict[str, float]] = []
    stale = 0
    for epoch in range(1, cfg.epochs + 1):
        train_loss = _epoch(model, train, cfg, crop, opt, rng, device)
        val_pred = score_waveforms(model, val.audio, sample_rate)
        val_metrics = {f"val_{k}": v for k, v in mos_metrics(val.mos, val_pred).items() if k != "n"}
        metrics = {"train_loss": train_loss, **val_metrics}
        history.append({"epoch": float(epoch), **metrics})
        log.info("finetune (%s) epoch %d: %s", init, epoch, {k: round(v, 4) for k, v in metrics.items()})
        on_epoch(epoch, metrics)
        health = run_health(val.mos, val_pred)
        history[-1]["val_spread_ratio"] = health["spread_ratio"]
        if _better(health, metrics["val_rmse"], best):
            best = {
                **val_metrics,
                "val_pred_std": health["pred_std"],
                "val_spread_ratio": health["spread_ratio"],
                "collapsed": health["collapsed"],
                "best_epoch": float(epoch),
            }
            best_state = copy.deepcopy(model.state_dict())
            stale = 0
        elif best is not None and not best["collapsed"]:
            # Patience runs only once an epoch has learned: a run still leaving its initial
            # near-constant output is not stopped for failing to beat that output's RMSE.
            stale += 1
        assert best is not None  # set by the first epoch
        if epoch <= cfg.equal_compute_epochs and stale == 0:
            budget = (dict(best), best_state)
        if stale >= cfg.patience:
            log.info("early stop after epoch %d (best %d)", epoch, int(best["best_epoch"]))
            break
    assert best is not None
    return _Fit(best, best_state, budget, history, epoch)


def finetune_seeds(
    manifest: pd.DataFrame,
    model_cfg: ModelConfig,
    cfg: FinetuneConfig,
    seed: int,
    out_path: Path,
    encoder_ckpt: Path | None = None,
    sample_rate: int = 16000,
    root: str | Path = ".",
    on_epoch: Callable[[int], EpochCallback] = lambda s: no_callback,
    *,
    deterministic: bool = True,
    data_profile: str | None = None,
) -> dict:
    """Fine-tune ``cfg.seeds`` models (seeds ``seed``, ``seed + 1``, ...) under one schedule.

    The first seed's model goes to ``out_path`` (the one registered and scored by default: a
    fixed choice, so picking the best of K on validation cannot flatter it); the others go to
    ``seeds_dir(out_path)/seed-N.pt`` with ``seeds.json`` listing every seed, and each seed's
    equal-compute model (``cfg.equal_compute_epochs`` > 0) to ``budget-seed-N.pt`` there.
    Returns the first seed's best validation metrics plus ``seeds`` ({seed: metrics}),
    ``curves`` ({seed: per-epoch metrics}), ``failed_seeds`` (:func:`~jsqa.evaluation.collapse.is_failed`) and
    ``seed_mean`` / ``seed_std`` (sample std; 0 for one run) of each validation metric over
    the runs that learned (over all of them when none did). ``data_profile``: see :func:`finetune`.
    """
    seeds = [seed + i for i in range(cfg.seeds)]
    per_seed: dict[str, dict[str, Any]] = {}
    curves: dict[str, list[dict[str, float]]] = {}
    with atomic_dir(seeds_dir(out_path)) as folder:
        for s in seeds:
            target = out_path if s == seeds[0] else seed_path(folder, s)
            budget = budget_path(folder, s) if cfg.equal_compute_epochs else None
            log.info("fine-tuning seed %d of %s (%s)", s, seeds, "pretrained" if encoder_ckpt else "scratch")
            run = (manifest, model_cfg, cfg, s, target, encoder_ckpt, sample_rate, root, on_epoch(s))
            result = finetune(*run, budget_path=budget, deterministic=deterministic, data_profile=data_profile)
            curves[str(s)] = result.pop("history")
            per_seed[str(s)] = result
        write_seed_index(folder, seeds, cfg.equal_compute_epochs)
    failed = [int(s) for s, m in per_seed.items() if is_failed(m)]
    learned = [m for s, m in per_seed.items() if int(s) not in failed] or list(per_seed.values())
    keys = [k for k in per_seed[str(seeds[0])] if k.startswith("val_")]
    stats = {k: seed_stats([m[k] for m in learned]) for k in keys}
    return {
        **per_seed[str(seeds[0])],
        "seeds": per_seed,
        "curves": curves,
        "failed_seeds": failed,
        "seed_mean": {k: v["mean"] for k, v in stats.items()},
        "seed_std": {k: v["std"] for k, v in stats.items()},
    }
