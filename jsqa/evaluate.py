"""Evaluation: each model on each test set (and pooled), relative change against scratch, plots."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from jsqa.inference import score_waveforms  # noqa: E402
from jsqa.io import atomic_path  # noqa: E402
from jsqa.metrics import METRICS, mos_metrics, relative_change  # noqa: E402
from jsqa.models.mos import MOSModel  # noqa: E402
from jsqa.train.clips import load_clips  # noqa: E402

log = logging.getLogger(__name__)

POOLED = "pooled"


def test_rows(manifest: pd.DataFrame, test_sets: Sequence[str] = ()) -> pd.DataFrame:
    """The test split, restricted to ``test_sets`` when given (unknown names are an error)."""
    test = manifest[manifest["split"] == "test"]
    if test_sets:
        unknown = sorted(set(test_sets) - set(test["db"]))
        if unknown:
            raise ValueError(f"test set(s) {', '.join(unknown)} not in the manifest's test split "
                             f"(have: {', '.join(sorted(set(test['db'])))})")
        test = test[test["db"].isin(test_sets)]
    if test.empty:
        raise ValueError("no test clips to evaluate")
    return test.reset_index(drop=True)


def evaluate_models(
    models: dict[str, MOSModel],
    manifest: pd.DataFrame,
    test_sets: Sequence[str] = (),
    baseline: str | None = "scratch",
    sample_rate: int = 16000,
    root: str | Path = ".",
) -> tuple[dict, pd.DataFrame]:
    """Score every test clip with every model.

    Returns (report, predictions): report = {"models": {name: {db: metrics, "pooled": metrics}},
    "relative_change": {db: {metric: percent}}} (the latter comparing the first non-baseline
    model against ``baseline`` when both are present); predictions has one row per clip with
    columns id, db, mos and pred_<model>.
    """
    test = test_rows(manifest, test_sets)
    clips = load_clips(test, sample_rate, root)
    preds = test[["id", "db", "mos"]].copy()
    report: dict = {"models": {}}
    for name, model in models.items():
        preds[f"pred_{name}"] = score_waveforms(model, clips.audio, sample_rate)
        per = {}
        for db, g in preds.groupby("db", sort=True):
            per[str(db)] = mos_metrics(g["mos"].to_numpy(), g[f"pred_{name}"].to_numpy())
        per[POOLED] = mos_metrics(preds["mos"].to_numpy(), preds[f"pred_{name}"].to_numpy())
        report["models"][name] = per
    others = [m for m in models if m != baseline]
    if baseline in models and others:
        cand = report["models"][others[0]]
        base = report["models"][baseline]
        report["relative_change"] = {db: relative_change(cand[db], base[db]) for db in cand}
        report["relative_change_of"] = f"{others[0]} vs {baseline}"
    return report, preds


def flat_metrics(report: dict) -> dict[str, float]:
    """``{model}_{db}_{metric}`` -> value, for MLflow."""
    out = {}
    for name, per in report["models"].items():
        for db, m in per.items():
            for k in METRICS:
                out[f"{name}_{db}_{k}"] = m[k]
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
