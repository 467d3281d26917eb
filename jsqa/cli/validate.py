"""``jsqa validate``: the Great Expectations suites over every manifest and the audio it lists."""

from __future__ import annotations

import argparse
from pathlib import Path

from jsqa.cli.common import params, stage_parser


def add_parser(sub: argparse._SubParsersAction) -> None:
    sp = stage_parser(sub, "validate", run, "run the Great Expectations suites on every manifest and its audio files")
    sp.add_argument("--manifests", default="data/manifests")
    sp.add_argument("--out", default="data/validation", help="folder of the verdict, report.json")
    sp.add_argument(
        "--docs",
        default=None,
        help="Data Docs folder (a GX context; default: OUT/gx); "
        "apart from the verdict because its pages are timestamped",
    )


def run(args: argparse.Namespace) -> int:
    import mlflow

    from jsqa.config import to_flat_dict
    from jsqa.data.validate import data_docs_index, validate_manifests
    from jsqa.errors import ValidationFailed
    from jsqa.tracking import stage_run

    p = params(args)
    mdir = Path(args.manifests)
    docs = Path(args.docs) if args.docs else Path(args.out) / "gx"
    manifests = {k: mdir / f"{k}.parquet" for k in ("clean", "noise", "mos")}
    with stage_run("validate", to_flat_dict(p.validate, "validate."), args.root):
        try:
            report = validate_manifests(
                manifests, p.validate, p.data.sample_rate, Path(args.out), Path(args.root), docs_dir=docs
            )
        except ValidationFailed:
            mlflow.log_artifact(str(Path(args.out) / "report.json"))
            mlflow.set_tag("validation", "failed")
            raise
        mlflow.log_artifact(str(Path(args.out) / "report.json"))
        mlflow.set_tag("validation", "passed")
    rows = ", ".join(f"{k} ({m['n_rows']} rows)" for k, m in report["manifests"].items())
    decoded = sum(m.get("audio", {}).get("files_decoded", 0) for m in report["manifests"].values())
    print(
        f"validate: every suite passed: {rows}; {decoded} audio files decoded and checked; "
        f"Data Docs: {data_docs_index(docs).as_posix()}"
    )
    return 0
