"""``jsqa evaluate``: RMSE, MAE, PCC, SRCC per test set and pooled, plots, change vs scratch."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from jsqa.cli.common import csv_args, mos_manifest, params, stage_parser

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_MODELS = ["pretrained=models/mos_pretrained.pt", "scratch=models/mos_scratch.pt"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    sp = stage_parser(sub, "evaluate", run, "RMSE, MAE, PCC, SRCC per test set, plots, change vs scratch")
    sp.add_argument("--manifest", default="data/manifests/mos.parquet")
    csv_args(sp)
    sp.add_argument(
        "--model",
        action="append",
        default=None,
        metavar="NAME=CHECKPOINT",
        help="model to score (repeatable); default pretrained and scratch",
    )
    sp.add_argument("--test-sets", default="", help="comma-separated db names (default: params)")
    sp.add_argument("--metrics", default="metrics/evaluate.json")
    sp.add_argument("--plots", default="plots")
    sp.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default=None,
        help="where models score (default: params evaluate.device; auto: GPU when visible)",
    )
    sp.add_argument("--report", default="reports/evaluate.html", help="the HTML page of this evaluation")
    sp.add_argument(
        "--jnd",
        default="metrics/jnd.json",
        help="held-out JND same/different metrics (jsqa calibrate) added to the report when present",
    )
    sp.add_argument(
        "--peer-cache",
        default="data/peer_cache",
        help="per-clip peer scores kept between evaluations (not a DVC output)",
    )


def run(args: argparse.Namespace) -> int:
    from jsqa.evaluation.comparison_report import comparison_tables
    from jsqa.evaluation.evaluate import evaluate_models
    from jsqa.evaluation.report import evaluation_tables
    from jsqa.tracking import stage_run
    from jsqa.train.common import pick_device, set_determinism

    p = params(args)
    device = pick_device(args.device or p.evaluate.device)
    set_determinism(p.train.deterministic)  # repeatable GPU scores too
    models, budget, epochs, training = _load_models(args.model or DEFAULT_MODELS)
    manifest = mos_manifest(args)
    if getattr(args, "csv", None):
        from jsqa.evaluation.field_report import require_test_split

        require_test_split(manifest, args.csv)
    test_sets = args.test_sets.split(",") if args.test_sets else list(p.evaluate.test_sets)
    run_params = {
        "test_sets": ",".join(test_sets) or "all",
        "models": ",".join(models),
        "seeds": ",".join(str(len(m)) for m in models.values()),
        "bootstrap_resamples": p.evaluate.bootstrap_resamples,
        "device": str(device),
    }
    with stage_run("evaluate", run_params, args.root):
        report, preds = evaluate_models(
            models,
            manifest,
            test_sets,
            sample_rate=p.data.sample_rate,
            root=args.root,
            resamples=p.evaluate.bootstrap_resamples,
            seed=p.seed,
            device=device,
            budget_models=budget,
            budget_epochs=epochs,
            training=training,
        )
        _write_outputs(args, report, preds, manifest, test_sets, p.evaluate.peers)
    print(evaluation_tables(report, "text").rstrip("\n"))
    print(comparison_tables(report, "text").rstrip("\n"))
    return 0


def _load_models(specs: list[str]) -> tuple[dict, dict | None, int | None, dict]:
    """{name: {seed: model}} of each NAME=CHECKPOINT, the equal-compute models and their epoch
    budget, or (None, None) unless every model has them, all at one budget, and {name: {seed:
    the checkpoint's training metrics}} (best_epoch, epochs_run: whether a run still improved)."""
    from jsqa.errors import JsqaError
    from jsqa.models.mos import load_checkpoint, mos_model_from_checkpoint
    from jsqa.models.seeds import budget_epochs, seed_checkpoints

    models, budget, budgets, training = {}, {}, set(), {}
    for spec in specs:
        name, _, path = spec.partition("=")
        if not path:
            raise JsqaError(f"--model expects NAME=CHECKPOINT, got '{spec}'")
        payloads = {s: load_checkpoint(f) for s, f in seed_checkpoints(path).items()}
        models[name] = {s: mos_model_from_checkpoint(payload) for s, payload in payloads.items()}
        training[name] = {s: payload.get("metrics") or {} for s, payload in payloads.items()}
        budget[name] = {
            s: mos_model_from_checkpoint(load_checkpoint(f)) for s, f in seed_checkpoints(path, budget=True).items()
        }
        budgets.add(budget_epochs(path))
    # The equal-compute comparison needs every model's budget checkpoints, all at one budget.
    equal = len(budgets) == 1 and None not in budgets and all(budget.values())
    return models, budget if equal else None, next(iter(budgets)) if equal else None, training


def _write_outputs(
    args: argparse.Namespace,
    report: dict,
    preds: pd.DataFrame,
    manifest: pd.DataFrame,
    test_sets: list[str],
    peers: Sequence[str],
) -> None:
    """The JND results, the field comparison, the metrics, predictions and plots: written, and
    logged to the active MLflow run."""
    import mlflow

    from jsqa.evaluation.comparison import comparison_flat_metrics
    from jsqa.evaluation.evaluate import flat_metrics, select_test_rows
    from jsqa.evaluation.field_report import write_comparison
    from jsqa.io import write_csv, write_json

    jnd = _jnd_metrics(args.jnd)
    if jnd is not None:  # in the tables and the HTML page too
        report["jnd"] = jnd
        mlflow.log_metrics(
            {f"jnd_{k}": float(jnd[k]) for k in ("accuracy", "roc_auc", "majority_accuracy") if jnd.get(k) is not None}
        )
    plots = Path(args.plots)
    # The field comparison: mapped RMSE, conditions, peers, the scatter (one panel per
    # predictor) and the HTML page; it extends report and preds, written once below.
    compared = write_comparison(
        report,
        preds,
        select_test_rows(manifest, test_sets),
        peers,
        plots,
        Path(args.report),
        args.root,
        args.peer_cache,
    )
    write_json(args.metrics, report)
    write_csv(plots / "predictions.csv", preds)
    mlflow.log_metrics(comparison_flat_metrics(report))
    for extra in compared.extra():
        mlflow.log_artifact(str(extra))
    mlflow.log_metrics(flat_metrics(report))
    for f in (args.metrics, plots / "predictions.csv", plots / "scatter.png"):
        mlflow.log_artifact(str(f))


def _jnd_metrics(path: str | None) -> dict | None:
    """metrics/jnd.json when it exists (the calibrate stage's held-out same/different results)."""
    from jsqa.io import read_json

    return read_json(path) if path and Path(path).is_file() else None
