"""``jsqa calibrate``: fit P(perceptibly different | encoder distance) on held-out JND pairs."""

from __future__ import annotations

import argparse
from pathlib import Path

from jsqa.cli.common import params, stage_parser


def add_parser(sub: argparse._SubParsersAction) -> None:
    sp = stage_parser(sub, "calibrate", run, "calibrate the encoder's distance on held-out JND pairs")
    sp.add_argument("--encoder", default="models/encoder.pt")
    sp.add_argument("--manifests", default="data/manifests")
    sp.add_argument("--out", default="models/jnd_calibration.json")
    sp.add_argument("--metrics", default="metrics/jnd.json")


def run(args: argparse.Namespace) -> int:
    import mlflow

    from jsqa.config import PairsConfig
    from jsqa.data.manifests import read_manifest
    from jsqa.io import write_json
    from jsqa.scoring.calibrate import calibrate
    from jsqa.scoring.compare import save_calibration
    from jsqa.tracking import stage_run

    p = params(args)
    # The pairs' JND, SNR range, segment and level; anchors and distortions stay off.
    cfg = PairsConfig(jnd_db=p.pairs.jnd_db, snr_db=p.pairs.snr_db, segment_seconds=p.pairs.segment_seconds,
                      speech_level_dbov=p.pairs.speech_level_dbov,
                      pairs_per_utterance=p.calibrate.pairs_per_utterance)
    mdir = Path(args.manifests)
    run_params = {"pairs_per_utterance": p.calibrate.pairs_per_utterance,
                  "max_delta_jnd": p.calibrate.max_delta_jnd, "jnd_db": cfg.jnd_db}
    with stage_run("calibrate", run_params, args.root):
        cal, metrics, _ = calibrate(
            Path(args.encoder), read_manifest(mdir / "clean.parquet", "clean"),
            read_manifest(mdir / "noise.parquet", "noise"), read_manifest(mdir / "mos.parquet", "mos"),
            cfg, p.seed, p.calibrate.max_delta_jnd, Path(args.root),
        )
        save_calibration(args.out, cal)
        write_json(args.metrics, metrics)
        mlflow.log_metrics({f"jnd_{k}": float(v) for k, v in metrics.items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool) and abs(float(v)) != float("inf")})
        mlflow.set_tag("jnd_calibration", "available" if cal.available else f"unavailable: {cal.reason}")
        mlflow.log_artifact(str(args.out))
    if not cal.available:
        # Not an error: MOS training and evaluation do not need it; compare gives the distance alone.
        print(f"calibrate: JND calibration unavailable ({cal.reason}); wrote {args.out} marked unavailable, "
              "so p_different will be n/a")
        return 0
    auc = metrics["roc_auc"]
    print(f"calibrate: {metrics['n_pairs']} held-out JND pairs; same/different accuracy {metrics['accuracy']:.3f} "
          f"(majority rule {metrics['majority_accuracy']:.3f}), ROC AUC "
          f"{'n/a' if auc is None else f'{auc:.3f}'}; wrote {args.out}")
    return 0
