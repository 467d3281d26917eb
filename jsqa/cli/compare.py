"""``jsqa compare REF DEG``: perceptual distance of two recordings and P(perceptibly different)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from jsqa.cli.scoring_args import max_seconds_arg, scoring_limits

DEFAULT_CALIBRATION = "models/jnd_calibration.json"
DEFAULT_ENCODER = "models/encoder.pt"


def add_parser(sub: argparse._SubParsersAction) -> None:
    sp = sub.add_parser(
        "compare",
        help="distance between two recordings in the JND encoder's space, "
        "and the calibrated probability that they sound different",
    )
    sp.add_argument("ref", help="reference audio file")
    sp.add_argument("deg", help="audio file to compare with it")
    sp.add_argument(
        "--encoder",
        default=DEFAULT_ENCODER,
        help="encoder checkpoint, logged model folder or MLflow URI such as models:/jsqa-encoder@champion",
    )
    sp.add_argument(
        "--calibration",
        default=None,
        help=f"JND calibration file (default: the one a registry model carries, else {DEFAULT_CALIBRATION} "
        "if present; without one only the distance is given)",
    )
    sp.add_argument("--format", choices=("table", "json"), default="table")
    sp.add_argument("--root", default=".", help="project root holding mlflow.db")
    max_seconds_arg(sp)
    sp.set_defaults(func=run)


def _format(row: dict, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(row) + "\n"
    lines = [f"ref          {row['ref']}", f"deg          {row['deg']}", f"distance     {row['distance']:.6f}"]
    if row.get("note"):
        lines.append(f"p_different  n/a ({row['note']})")
    elif "p_different" in row:
        lines += [f"p_different  {row['p_different']:.3f}", f"verdict      {row['verdict']}"]
    else:
        lines.append("p_different  - (no calibration: run `jsqa calibrate`)")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    from jsqa.scoring.compare import compare_files, load_distance_model, model_rate

    calibration = args.calibration
    local_default = Path(args.root) / DEFAULT_CALIBRATION
    # The pipeline's calibration belongs to the pipeline's encoder only.
    if calibration is None and args.encoder == DEFAULT_ENCODER and local_default.is_file():
        calibration = local_default
    model, cal, _ = load_distance_model(args.encoder, calibration, Path(args.root))
    row = compare_files(model, args.ref, args.deg, cal, limits=scoring_limits(args))
    row["sample_rate"] = model_rate(model)
    sys.stdout.write(_format(row, args.format))
    return 0
