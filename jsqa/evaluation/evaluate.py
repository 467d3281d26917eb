"""Evaluation: each model on each test set (and pooled), failed runs, the paired comparison."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from jsqa.data.clips import label_se, load_clips
from jsqa.data.manifests import DIMENSIONS
from jsqa.errors import ManifestError
from jsqa.evaluation.collapse import failure_summary, is_failed, run_health, still_improving
from jsqa.evaluation.metrics import METRICS, bootstrap_ci, calibration, mos_metrics, seed_stats
from jsqa.evaluation.paired import paired_by_set, verdict
from jsqa.models.mos import MOSModel, check_sample_rate
from jsqa.scoring.windows import score_waveforms_all

log = logging.getLogger(__name__)

POOLED = "pooled"


def select_test_rows(manifest: pd.DataFrame, test_sets: Sequence[str] = ()) -> pd.DataFrame:
    """The test split, restricted to ``test_sets`` when given (unknown names are an error)."""
    test = manifest[manifest["split"] == "test"]
    if test_sets:
        unknown = sorted(set(test_sets) - set(test["db"]))
        if unknown:
            raise ManifestError(
                f"test set(s) {', '.join(unknown)} not in the manifest's test split "
                f"(have: {', '.join(sorted(set(test['db'])))})"
            )
        test = test[test["db"].isin(test_sets)]
    if test.empty:
        raise ManifestError("no test clips to evaluate (no row has split 'test')")
    return test.reset_index(drop=True)


def evaluate_models(
    models: Mapping[str, MOSModel | Mapping[int, MOSModel]],
    manifest: pd.DataFrame,
    test_sets: Sequence[str] = (),
    baseline: str | None = "scratch",
    sample_rate: int = 16000,
    root: str | Path = ".",
    resamples: int = 1000,
    seed: int = 0,
    budget_models: Mapping[str, Mapping[int, MOSModel]] | None = None,
    budget_epochs: int | None = None,
    device: torch.device | str | None = None,
    training: Mapping[str, Mapping[int, Mapping[str, Any]]] | None = None,
) -> tuple[dict, pd.DataFrame]:
    """Score every test clip with every model, and every seed of each model.

    ``models`` maps a name to one model or to {seed: model} (the first seed is the primary).
    Returns (report, predictions). report:

    - ``models``: {name: {db: metrics, "pooled": metrics}} of the primary model;
    - ``ci95``: {name: {db: {metric: {"lo", "hi"}}}}, percentile bootstrap over test clips
      (``resamples`` draws, seeded) for the primary model;
    - ``seeds``: {name: [seed, ...]}, ``per_seed``: {name: {seed: {db: metrics}}};
    - ``health``: {name: {seed: {pred_std, spread_ratio, collapsed, still_improving}}} (the last
      from ``training``, {name: {seed: checkpoint metrics}}), ``failed``: {name: [failed seeds]};
    - ``seed_stats``: {name: {db: {metric: {"mean", "std"}}}} over the runs that learned (all
      runs when none did: ``seed_stats_of`` says which);
    - ``paired``: {db: :func:`~jsqa.evaluation.paired.paired_difference`} of the first
      non-baseline model against ``baseline`` over the seeds where both learned, with
      ``relative_change`` / ``absolute_change`` ({db: {metric: value}}, signed: RMSE -18% is a
      reduction) and ``verdict`` (one sentence per metric, pooled);
    - ``equal_compute``: the same comparison for ``budget_models`` (each init's best model
      within ``budget_epochs`` epochs, a cap by design: only collapse fails one), when given;
    - ``calibration``: {name: {db: :func:`~jsqa.evaluation.metrics.calibration`}} of the primary
      model, for models that predict ``mos_std`` (the labels' ``mos_std / sqrt(votes)`` widen
      the intervals when the manifest has them);
    - ``dimensions``: {name: {dim: {db: metrics}}} for the quality dimensions (noi, col, dis,
      loud) that both the model predicts and the test rows label (rows without a label left out).

    predictions has one row per clip with columns id, db, mos and pred_<name> (primary model),
    and std_<name> (its predicted mos_std) for models that predict one.
    ConfigError when a model was trained at another rate than ``sample_rate`` (data.sample_rate).
    ``device``: where each model scores (default: where it is), windows batched across clips
    (:func:`jsqa.scoring.windows.score_waveforms`).
    """
    _check_rates(models, budget_models or {}, sample_rate=sample_rate)
    test = select_test_rows(manifest, test_sets)
    clips = load_clips(test, sample_rate, root)
    preds = test[["id", "db", "mos"]].copy()
    y = preds["mos"].to_numpy(dtype=np.float64)
    outputs = _score_all(models, clips.audio, sample_rate, device)
    scores = _mos_of(outputs)
    report = _per_model(preds, y, scores, resamples, seed)
    report.update(_primary_outputs(preds, test, y, outputs))
    report.update(_compare(preds["db"], y, scores, baseline, resamples, seed, training))
    if budget_models:
        budget_scores = _mos_of(_score_all(budget_models, clips.audio, sample_rate, device))
        budget = _compare(preds["db"], y, budget_scores, baseline, resamples, seed)
        report["equal_compute"] = {"epochs": budget_epochs, **budget}
    return report, preds


def _check_rates(*groups: Mapping[str, MOSModel | Mapping[int, MOSModel]], sample_rate: int) -> None:
    """ConfigError unless every model (every seed) was trained at ``sample_rate``."""
    for group in groups:
        for name, entry in group.items():
            for s, model in (dict(entry) if isinstance(entry, Mapping) else {0: entry}).items():
                check_sample_rate(model.sample_rate, sample_rate, f"model '{name}' (seed {s})")


def _per_model(
    preds: pd.DataFrame, y: np.ndarray, scores: Mapping[str, Mapping[int, np.ndarray]], resamples: int, seed: int
) -> dict:
    """The report's ``models``, ``ci95``, ``seeds``, ``per_seed`` and ``bootstrap`` (see
    :func:`evaluate_models`); each model's primary predictions go into ``preds``."""
    report: dict = {
        "models": {},
        "ci95": {},
        "seeds": {},
        "per_seed": {},
        "bootstrap": {"resamples": resamples, "seed": seed, "level": 0.95},
    }
    for name, by_seed in scores.items():
        primary = next(iter(by_seed.values()))
        preds[f"pred_{name}"] = primary
        report["ci95"][name] = _per_db(preds["db"], y, primary, lambda yy, pp: bootstrap_ci(yy, pp, resamples, seed))
        report["per_seed"][name] = {str(s): _per_db(preds["db"], y, p) for s, p in by_seed.items()}
        report["models"][name] = next(iter(report["per_seed"][name].values()))
        report["seeds"][name] = [int(s) for s in by_seed]
    return report


def _score_all(
    models: Mapping[str, MOSModel | Mapping[int, MOSModel]],
    audio: Sequence[np.ndarray],
    sample_rate: int,
    device: torch.device | str | None = None,
) -> dict[str, dict[int, dict[str, np.ndarray]]]:
    """{name: {seed: {output: predictions}}} for every model and seed, primary seed first."""
    out: dict[str, dict[int, dict[str, np.ndarray]]] = {}
    for name, entry in models.items():
        by_seed = dict(entry) if isinstance(entry, Mapping) else {0: entry}
        out[name] = {}
        for s, model in by_seed.items():
            scores = score_waveforms_all(model, audio, sample_rate, device=device)
            names = getattr(model, "outputs", ("mos",))
            out[name][int(s)] = {o: np.ascontiguousarray(scores[:, k]) for k, o in enumerate(names)}
    return out


def _mos_of(outputs: Mapping[str, Mapping[int, Mapping[str, np.ndarray]]]) -> dict[str, dict[int, np.ndarray]]:
    """{name: {seed: MOS predictions}} of :func:`_score_all`'s outputs."""
    return {name: {s: o["mos"] for s, o in by_seed.items()} for name, by_seed in outputs.items()}


def _primary_outputs(
    preds: pd.DataFrame,
    test: pd.DataFrame,
    y: np.ndarray,
    outputs: Mapping[str, Mapping[int, Mapping[str, np.ndarray]]],
) -> dict:
    """:func:`_output_metrics` of each model's primary seed; its predicted ``mos_std`` goes into ``preds``."""
    primaries = {n: next(iter(o.values())) for n, o in outputs.items()}
    for name, scored in primaries.items():
        if "mos_std" in scored:  # the per-file uncertainty beside the prediction ("std_", not a predictor)
            preds[f"std_{name}"] = scored["mos_std"]
    return _output_metrics(preds["db"], test, y, primaries)


def _output_metrics(
    dbs: pd.Series,
    test: pd.DataFrame,
    y: np.ndarray,
    outputs: Mapping[str, Mapping[str, np.ndarray]],
) -> dict:
    """``calibration`` and ``dimensions`` of each primary model (see :func:`evaluate_models`);
    keys only where some model has them."""
    se = label_se(test)
    out: dict = {"calibration": {}, "dimensions": {}}
    for name, scored in outputs.items():
        if "mos_std" in scored:
            out["calibration"][name] = {
                db: calibration(y[idx], scored["mos"][idx], scored["mos_std"][idx], se[idx])
                for db, idx in _groups(dbs).items()
            }
        dims = {}
        for dim in DIMENSIONS:
            if dim not in scored or dim not in test.columns:
                continue
            labels = pd.to_numeric(test[dim], errors="coerce").to_numpy(dtype=np.float64)
            per = {
                db: mos_metrics(labels[idx], scored[dim][idx]) for db, idx in _groups(dbs, np.isfinite(labels)).items()
            }
            if per:
                dims[dim] = per
        if dims:
            out["dimensions"][name] = dims
    return {k: v for k, v in out.items() if v}


def _groups(dbs: pd.Series, keep: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Row indices of each test set (sorted) and of all rows pooled, only rows where ``keep``;
    sets left without rows are dropped."""
    keep = np.ones(len(dbs), dtype=bool) if keep is None else keep
    groups = {str(db): idx[keep[idx]] for db, idx in dbs.groupby(dbs, sort=True).indices.items()}
    groups[POOLED] = np.flatnonzero(keep)
    return {db: idx for db, idx in groups.items() if len(idx)}


def _compare(
    dbs: pd.Series,
    y: np.ndarray,
    scores: Mapping[str, Mapping[int, np.ndarray]],
    baseline: str | None,
    resamples: int,
    seed: int,
    training: Mapping[str, Mapping[int, Mapping[str, Any]]] | None = None,
) -> dict:
    """Run health, seed statistics over the runs that learned, and the paired comparison."""
    health = _health(y, scores, training or {})
    failed = {name: [int(s) for s, h in per.items() if is_failed(h)] for name, per in health.items()}
    learned = {name: {s: p for s, p in by_seed.items() if s not in failed[name]} for name, by_seed in scores.items()}
    out: dict = {"health": health, "failed": failed, "seed_stats": {}, "seed_stats_of": {}}
    for name, by_seed in learned.items():
        # Over the runs that learned; when none did, over all of them, and the report says so.
        runs = by_seed or scores[name]
        per_seed = [_per_db(dbs, y, p) for p in runs.values()]
        out["seed_stats"][name] = {
            db: {m: seed_stats([r[db][m] for r in per_seed]) for m in METRICS} for db in per_seed[0]
        }
        out["seed_stats_of"][name] = "runs that learned" if by_seed else "all runs (none learned)"
    others = [m for m in scores if m != baseline]
    if baseline is None or baseline not in scores or not others:
        return out
    cand = others[0]
    common = sorted(set(learned[cand]) & set(learned[baseline]))
    out["paired_of"] = f"{cand} vs {baseline}"
    if not common:
        out["verdict"] = [f"no seed where both {cand} and {baseline} learned: no paired comparison"]
        return out
    paired = paired_by_set(
        dbs.to_numpy(),
        y,
        {s: learned[cand][s] for s in common},
        {s: learned[baseline][s] for s in common},
        resamples,
        seed,
        pooled=POOLED,
    )
    out["paired"] = paired
    out["relative_change"] = {db: {m: r[m]["rel"] for m in METRICS} for db, r in paired.items()}
    out["absolute_change"] = {db: {m: r[m]["diff"] for m in METRICS} for db, r in paired.items()}
    out["relative_change_of"] = out["paired_of"]
    out["verdict"] = [verdict(paired[POOLED], cand, baseline, POOLED, m) for m in METRICS]
    out["verdict"] += failure_summary(failed, {n: [int(s) for s in by] for n, by in scores.items()}, health)
    return out


def _health(
    y: np.ndarray,
    scores: Mapping[str, Mapping[int, np.ndarray]],
    training: Mapping[str, Mapping[int, Mapping[str, Any]]],
) -> dict[str, dict[str, dict]]:
    """{name: {seed: run health on the test clips, with ``still_improving`` from training}}."""
    out: dict[str, dict[str, dict]] = {}
    for name, by_seed in scores.items():
        out[name] = {}
        for s, p in by_seed.items():
            trained = training.get(name, {}).get(int(s), {})
            out[name][str(s)] = {
                **run_health(y, p),
                "still_improving": still_improving(trained.get("best_epoch"), trained.get("epochs_run")),
            }
    return out


def _per_db(dbs: pd.Series, y: np.ndarray, p: np.ndarray, fn: Callable = mos_metrics) -> dict:
    """``fn(y, p)`` for each test set (sorted) and for all clips pooled."""
    out = {str(db): fn(y[idx], p[idx]) for db, idx in dbs.groupby(dbs, sort=True).indices.items()}
    out[POOLED] = fn(y, p)
    return out


def flat_metrics(report: dict) -> dict[str, float]:
    """``{model}_{db}_{metric}`` -> value (primary model), plus ``_ci_lo`` / ``_ci_hi``,
    ``_seed_mean`` / ``_seed_std`` and ``relchange_{db}_{metric}``, for MLflow."""
    out = {}
    for name, per in report["models"].items():
        for db, m in per.items():
            for k in METRICS:
                out[f"{name}_{db}_{k}"] = m[k]
                ci = report.get("ci95", {}).get(name, {}).get(db, {}).get(k)
                if ci:
                    out[f"{name}_{db}_{k}_ci_lo"], out[f"{name}_{db}_{k}_ci_hi"] = ci["lo"], ci["hi"]
                st = report.get("seed_stats", {}).get(name, {}).get(db, {}).get(k)
                if st:
                    out[f"{name}_{db}_{k}_seed_mean"], out[f"{name}_{db}_{k}_seed_std"] = st["mean"], st["std"]
    for db, change in report.get("relative_change", {}).items():
        for k, v in change.items():
            if v is not None:
                out[f"relchange_{db}_{k}"] = v
    for db, per in report.get("paired", {}).items():
        for k in METRICS:
            out[f"diff_{db}_{k}"] = per[k]["diff"]
            out[f"diff_{db}_{k}_p"] = per[k]["p"]
    for name, bad in report.get("failed", {}).items():
        out[f"{name}_failed_runs"] = float(len(bad))
    for name, per in report.get("calibration", {}).items():
        for db, c in per.items():
            out.update({f"{name}_{db}_{k}": c[k] for k in ("coverage68", "coverage95", "mean_sigma")})
    for name, dims in report.get("dimensions", {}).items():
        for dim, per in dims.items():
            out.update({f"{name}_{dim}_{db}_{k}": m[k] for db, m in per.items() for k in METRICS})
    return out
