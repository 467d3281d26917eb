"""``jsqa calibrate``: fit P(perceptibly different | encoder distance) on held-out JND pairs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from jsqa.cli.common import params, stage_parser

if TYPE_CHECKING:
    from jsqa.scoring.compare import Calibration


def add_parser(sub: argparse._SubParsersAction) -> None:
    sp = stage_parser(sub, "calibrate", run, "calibrate the encoder's distance on held-out JND pairs")
    sp.add_argument("--encoder", default="models/encoder.pt")
    sp.add_argument("--manifests", default="data/manifests")
    sp.add_argument("--out", default="models/jnd_calibration.json")
    sp.add_argument("--metrics", default="metrics/jnd.json")


def run(args: argparse.Namespace) -> int:
    from jsqa.config import PairsConfig
    from jsqa.data.manifests import read_manifest
    from jsqa.io import write_json
    from jsqa.scoring.calibrate import calibrate
    from jsqa.scoring.compare import save_calibration
    from jsqa.tracking import stage_run

    p = params(args)
    # The pairs' JND, SNR range, segment and level; anchors and distortions stay off.
    cfg = PairsConfig(
        jnd_db=p.pairs.jnd_db,
        snr_db=p.pairs.snr_db,
        segment_seconds=p.pairs.segment_seconds,
        speech_level_dbov=p.pairs.speech_level_dbov,
        pairs_per_utterance=p.calibrate.pairs_per_utterance,
    )
    mdir = Path(args.manifests)
    run_params = {
        "pairs_per_utterance": p.calibrate.pairs_per_utterance,
        "max_delta_jnd": p.calibrate.max_delta_jnd,
        "jnd_db": cfg.jnd_db,
    }
    with stage_run("calibrate", run_params, args.root):
        cal, metrics, _ = calibrate(
            Path(args.encoder),
            read_manifest(mdir / "clean.parquet", "clean"),
            read_manifest(mdir / "noise.parquet", "noise"),
            read_manifest(mdir / "mos.parquet", "mos"),
            cfg,
            p.seed,
            p.calibrate.max_delta_jnd,
            Path(args.root),
        )
        save_calibration(args.out, cal)
        write_json(args.metrics, metrics)
        _log_calibration(cal, metrics, Path(args.out))
    return _print_outcome(cal, metrics, args.out)


def _log_calibration(cal: Calibration, metrics: dict, out: Path) -> None:
    """The held-out figures as ``jnd_*`` metrics, availability as a tag, the file as an artifact."""
    import mlflow

    finite = {
        f"jnd_{k}": float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and abs(float(v)) != float("inf")
    }
    mlflow.log_metrics(finite)
    mlflow.set_tag("jnd_calibration", "available" if cal.available else f"unavailable: {cal.reason}")
    mlflow.log_artifact(str(out))


def _print_outcome(cal: Calibration, metrics: dict, out: str) -> int:
    """One line: the held-out accuracy, or why the calibration is unavailable (not an error)."""
    if not cal.available:
        # Not an error: MOS training and evaluation do not need it; compare gives the distance alone.
        print(
            f"calibrate: JND calibration unavailable ({cal.reason}); wrote {out} marked unavailable, "
            "so p_different will be n/a"
        )
        return 0
    auc = metrics["roc_auc"]
    print(
        f"calibrate: {metrics['n_pairs']} held-out JND pairs; same/different accuracy {metrics['accuracy']:.3f} "
        f"(majority rule {metrics['majority_accuracy']:.3f}), ROC AUC "
        f"{'n/a' if auc is None else f'{auc:.3f}'}; wrote {out}"
    )
    return 0
