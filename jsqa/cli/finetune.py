"""``jsqa finetune``: MOS fine-tuning from a pretrained encoder, or from scratch without one."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from jsqa.cli.common import csv_args, mos_manifest, params, stage_parser
from jsqa.train.signals import Stopped, raise_on_signals


def add_parser(sub: argparse._SubParsersAction) -> None:
    sp = stage_parser(sub, "finetune", run, "fine-tune for MOS (from --encoder, or from scratch without it)")
    sp.add_argument("--manifest", default="data/manifests/mos.parquet", help="MOS manifest (train/val splits)")
    csv_args(sp)
    sp.add_argument("--encoder", default=None, help="pretrained encoder checkpoint; omit for the scratch baseline")
    sp.add_argument("--out", default="models/mos_pretrained.pt")
    sp.add_argument("--metrics", default="metrics/finetune_pretrained.json")
    sp.add_argument(
        "--curves",
        default=None,
        help="CSV of every seed's per-epoch validation metrics, and a PNG beside it (DVC plots)",
    )


def run(args: argparse.Namespace) -> int:
    import mlflow

    from jsqa.config import to_flat_dict
    from jsqa.io import remove_stale_temp_dirs, write_json
    from jsqa.models.seeds import seeds_dir
    from jsqa.tracking import log_epoch, stage_run
    from jsqa.train.finetune import finetune_seeds

    p = params(args)
    encoder = Path(args.encoder) if args.encoder else None
    stage = "finetune" if encoder else "finetune_scratch"
    flat = {
        "seed": p.seed,
        "init": "pretrained" if encoder else "scratch",
        **to_flat_dict(p.model, "model."),
        **to_flat_dict(p.train, "train."),
        **to_flat_dict(p.finetune, "finetune."),
    }
    manifest = mos_manifest(args)

    def on_epoch(seed: int) -> Callable[[int, dict[str, float]], None]:
        # The primary seed logs plain names (as with one seed); the others are prefixed.
        prefix = "" if seed == p.seed else f"seed{seed}_"
        return lambda e, m: log_epoch({prefix + k: v for k, v in m.items()}, e)

    # SIGTERM/Ctrl-C unwind through the atomic writes and the MLflow run (marked failed), so a stopped
    # run leaves no half-written output; the temp folders of a SIGKILLed one are removed first.
    remove_stale_temp_dirs(seeds_dir(args.out))
    try:
        with raise_on_signals():
            with stage_run(stage, flat, args.root):
                summary = finetune_seeds(
                    manifest,
                    p.model,
                    p.finetune,
                    p.seed,
                    Path(args.out),
                    encoder_ckpt=encoder,
                    sample_rate=p.data.sample_rate,
                    root=args.root,
                    on_epoch=on_epoch,
                    deterministic=p.train.deterministic,
                    data_profile=p.data.profile,
                )
                best = _log_summary(summary)
                write_json(args.metrics, summary)
                if args.curves:
                    _write_curves(summary, Path(args.curves), flat["init"])
                mlflow.log_artifact(args.out)
    except Stopped as exc:
        Path(args.out).unlink(missing_ok=True)  # the first seed's model alone is not the stage's output
        print(f"{stage}: {exc}; the stage did not finish, run it again", file=sys.stderr)
        return 128 + exc.signum
    _print_summary(stage, args.out, best, summary)
    return 0


def _log_summary(summary: dict) -> dict[str, float]:
    """The primary seed's best validation metrics, the seed statistics and failures, to MLflow."""
    import mlflow

    best = {k: v for k, v in summary.items() if isinstance(v, float)}
    mlflow.log_metrics({f"best_{k}": v for k, v in best.items()})
    mlflow.log_metrics({f"seeds_{k}_{s}": v for s in ("mean", "std") for k, v in summary[f"seed_{s}"].items()})
    mlflow.log_metrics(
        {
            "failed_runs": float(len(summary["failed_seeds"])),
            "collapsed": float(summary["collapsed"]),
            "still_improving": float(summary["still_improving"]),
        }
    )
    return best


def _write_curves(summary: dict, curves: Path, init: str) -> None:
    """Every seed's learning curves as a table and a plot, both also MLflow artifacts."""
    import mlflow

    from jsqa.io import write_csv
    from jsqa.train.curves import curves_plot, curves_table

    write_csv(curves, curves_table(summary["curves"]))
    best_epochs = {s: m["best_epoch"] for s, m in summary["seeds"].items()}
    curves_plot(summary["curves"], curves.with_suffix(".png"), init, best_epochs)
    for f in (curves, curves.with_suffix(".png")):
        mlflow.log_artifact(str(f))


def _print_summary(stage: str, out: str, best: dict[str, float], summary: dict) -> None:
    """The saved model's validation figures, the seeds' spread, and any run that failed to learn."""
    mean, std = summary["seed_mean"], summary["seed_std"]
    failed = summary["failed_seeds"]
    print(
        f"{stage}: model saved to {out} (val RMSE {best['val_rmse']:.3f}, PCC {best['val_pcc']:.3f}); "
        f"{len(summary['seeds']) - len(failed)} seeds that learned: val RMSE {mean['val_rmse']:.3f} ± "
        f"{std['val_rmse']:.3f}, PCC {mean['val_pcc']:.3f} ± {std['val_pcc']:.3f}"
    )
    from jsqa.evaluation.collapse import failure_summary

    seeds = [int(s) for s in summary["seeds"]]
    for line in failure_summary({stage: failed}, {stage: seeds}, {stage: summary["seeds"]}):
        print(f"{stage}: {line}")
