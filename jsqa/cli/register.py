"""``jsqa register``: register the encoder and MOS model; move @champion when the rule says so."""

from __future__ import annotations

import argparse
from pathlib import Path

from jsqa.cli.common import params, stage_parser


def add_parser(sub: argparse._SubParsersAction) -> None:
    sp = stage_parser(sub, "register", run, "register encoder and MOS model; move @champion if better")
    sp.add_argument("--encoder", default="models/encoder.pt")
    sp.add_argument("--mos", default="models/mos_pretrained.pt")
    sp.add_argument("--evaluation", default="metrics/evaluate.json")
    sp.add_argument("--out", default="metrics/register.json")
    sp.add_argument(
        "--calibration",
        default="models/jnd_calibration.json",
        help="JND calibration logged with the encoder when the file exists (jsqa calibrate)",
    )
    sp.add_argument("--manifests", default="data/manifests", help="manifests whose hashes tag the versions")
    sp.add_argument(
        "--jnd-metrics",
        default="metrics/jnd.json",
        help="held-out JND figures (jsqa calibrate) for the encoder's card and tags, when the file exists",
    )


def run(args: argparse.Namespace) -> int:
    from jsqa.io import read_json, write_json
    from jsqa.registry.register import evaluation_tags, register

    p = params(args)
    evaluation = read_json(args.evaluation) if args.evaluation and Path(args.evaluation).exists() else None
    tags = evaluation_tags(evaluation) if evaluation else {}
    calibration = Path(args.calibration) if args.calibration and Path(args.calibration).exists() else None
    jnd = read_json(args.jnd_metrics) if args.jnd_metrics and Path(args.jnd_metrics).exists() else None
    result = register(
        Path(args.encoder),
        Path(args.mos),
        p.register,
        Path(args.root),
        extra_tags=tags,
        manifests=Path(args.manifests),
        evaluation=evaluation,
        profile=p.data.profile,
        calibration=calibration,
        jnd_metrics=jnd,
    )
    write_json(args.out, result)
    if result["unchanged"]:
        print(f"register: {result['mos_model']} {result['reason']} (not registered again)")
        return 0
    verdict = "promoted to @" + p.register.alias if result["promoted"] else "not promoted"
    print(f"register: {result['mos_model']} v{result['mos_version']} {verdict} ({result['reason']})")
    return 0
