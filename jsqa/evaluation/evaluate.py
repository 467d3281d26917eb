"""Evaluation: each model on each test set (and pooled), relative change against scratch, plots."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from jsqa.errors import ManifestError
from jsqa.evaluation.metrics import METRICS, bootstrap_ci, mos_metrics, relative_change, seed_stats
from jsqa.io import atomic_path
from jsqa.models.mos import MOSModel, check_sample_rate
from jsqa.scoring.windows import score_waveforms
from jsqa.train.clips import load_clips

log = logging.getLogger(__name__)

POOLED = "pooled"


def select_test_rows(manifest: pd.DataFrame, test_sets: Sequence[str] = ()) -> pd.DataFrame:
    """The test split, restricted to ``test_sets`` when given (unknown names are an error)."""
    test = manifest[manifest["split"] == "test"]
    if test_sets:
        unknown = sorted(set(test_sets) - set(test["db"]))
        if unknown:
            raise ManifestError(f"test set(s) {', '.join(unknown)} not in the manifest's test split "
                             f"(have: {', '.join(sorted(set(test['db'])))})")
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
    device: torch.device | str | None = None,
) -> tuple[dict, pd.DataFrame]:
    """Score every test clip with every model, and every seed of each model.

    ``models`` maps a name to one model or to {seed: model} (the first seed is the primary).
    Returns (report, predictions). report:

    - ``models``: {name: {db: metrics, "pooled": metrics}} of the primary model;
    - ``ci95``: {name: {db: {metric: {"lo", "hi"}}}}, percentile bootstrap over test clips
      (``resamples`` draws, seeded) for the primary model;
    - ``seeds``: {name: [seed, ...]}, ``per_seed``: {name: {seed: {db: metrics}}} and
      ``seed_stats``: {name: {db: {metric: {"mean", "std"}}}} over seeds;
    - ``relative_change``: {db: {metric: percent}} of the seed means of the first non-baseline
      model against ``baseline`` (the paper's sign convention), when both are present.

    predictions has one row per clip with columns id, db, mos and pred_<name> (primary model).
    ConfigError when a model was trained at another rate than ``sample_rate`` (data.sample_rate).
    ``device``: where each model scores (default: where it is), windows batched across clips
    (:func:`jsqa.scoring.windows.score_waveforms`).
    """
    for name, entry in models.items():
        for s, model in (dict(entry) if isinstance(entry, Mapping) else {0: entry}).items():
            check_sample_rate(model.sample_rate, sample_rate, f"model '{name}' (seed {s})")
    test = select_test_rows(manifest, test_sets)
    clips = load_clips(test, sample_rate, root)
    preds = test[["id", "db", "mos"]].copy()
    report: dict = {"models": {}, "ci95": {}, "seeds": {}, "per_seed": {}, "seed_stats": {},
                    "bootstrap": {"resamples": resamples, "seed": seed, "level": 0.95}}
    for name, entry in models.items():
        by_seed = dict(entry) if isinstance(entry, Mapping) else {0: entry}
        per_seed = {}
        for i, (s, model) in enumerate(by_seed.items()):
            scores = score_waveforms(model, clips.audio, sample_rate, device=device)
            per_seed[str(s)] = _per_db(preds["db"], preds["mos"].to_numpy(), scores)
            if i == 0:
                preds[f"pred_{name}"] = scores
                report["ci95"][name] = _per_db(preds["db"], preds["mos"].to_numpy(), scores,
                                               lambda y, p: bootstrap_ci(y, p, resamples, seed))
        primary = next(iter(per_seed.values()))
        report["models"][name] = primary
        report["seeds"][name] = [int(s) for s in by_seed]
        report["per_seed"][name] = per_seed
        report["seed_stats"][name] = {
            db: {m: seed_stats([r[db][m] for r in per_seed.values()]) for m in METRICS} for db in primary
        }
    others = [m for m in models if m != baseline]
    if baseline in models and others:
        cand = report["seed_stats"][others[0]]
        base = report["seed_stats"][baseline]
        report["relative_change"] = {
            db: relative_change({m: cand[db][m]["mean"] for m in METRICS}, {m: base[db][m]["mean"] for m in METRICS})
            for db in cand
        }
        report["relative_change_of"] = f"{others[0]} vs {baseline}"
    return report, preds


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
            out[f"relchange_{db}_{k}"] = v
    return out


def scatter_plot(preds: pd.DataFrame, path: Path, models: Sequence[str]) -> None:
    """Predicted-vs-true MOS, one panel per model, colour per test set (PNG, atomic)."""
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4.6), squeeze=False)
    for ax, name in zip(axes[0], models):
        for db, g in preds.groupby("db", sort=True):
            ax.scatter(g["mos"], g[f"pred_{name}"], s=12, alpha=0.7, label=str(db))
        ax.plot([1, 5], [1, 5], color="grey", lw=1, ls="--")
        ax.set(xlim=(1, 5), ylim=(1, 5), xlabel="true MOS", ylabel="predicted MOS", title=name)
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
