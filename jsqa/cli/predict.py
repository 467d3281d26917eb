"""``jsqa predict``: a MOS for each audio file, with a checkpoint or a registry URI."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from jsqa.cli.scoring_args import max_seconds_arg, project_root, root_arg, scoring_limits

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    sp = sub.add_parser("predict", help="print a MOS for each audio file (folders are searched)")
    sp.add_argument("inputs", nargs="+", help="audio files or folders")
    sp.add_argument(
        "--model",
        default="models:/jsqa-mos@champion",
        help="checkpoint path or MLflow model URI (default: models:/jsqa-mos@champion)",
    )
    sp.add_argument("--format", choices=("table", "csv", "json"), default="table")
    root_arg(sp)
    max_seconds_arg(sp)
    sp.add_argument(
        "--allow-truncated",
        action="store_true",
        help="exit 0 when a file is shorter than its header says (it is scored, with a warning)",
    )
    sp.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where the model scores (default auto: the GPU when one is visible)",
    )
    sp.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from jsqa.scoring.inputs import audio_files
    from jsqa.scoring.model_uri import check_model_ref, is_mlflow_uri

    # Before torch is imported (seconds): a mistyped path fails at once.
    files = audio_files(args.inputs)
    check_model_ref(args.model)
    root = project_root(args) if is_mlflow_uri(args.model) else Path(args.root or ".")

    from jsqa.scoring.limits import mentions_truncation
    from jsqa.scoring.predict import format_rows, load_scorer, score_files
    from jsqa.train.common import pick_device

    device = pick_device(args.device)
    scorer = load_scorer(args.model, root)
    log.info("scoring %d file(s) with %s on %s", len(files), scorer.description, device)
    rows = score_files(
        scorer.model,
        files,
        limits=scoring_limits(args),
        progress=sys.stderr.isatty(),
        device=device,
        note=scorer.note,
    )
    if scorer.note:
        # On stderr, so that CSV and JSON on stdout stay parseable (they carry it as `note`).
        print(f"note: {scorer.note}", file=sys.stderr)
    sys.stdout.write(format_rows(rows, args.format))
    # Only truncation fails the run; the other warnings (an unusual rate, channels averaged) inform.
    truncated = any(mentions_truncation(r["warning"]) for r in rows) and not args.allow_truncated
    return 1 if truncated or any(r["error"] for r in rows) else 0
