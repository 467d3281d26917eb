"""The `jsqa` parser and entry point: every JsqaError ends as one line on stderr and exit 2.

Config is read by each command, once, from params.yaml into typed dataclasses and passed down;
library code never reads params.yaml itself. Anything else that escapes is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from jsqa.cli import (
    acquire,
    calibrate,
    check_params,
    compare,
    evaluate,
    export,
    finetune,
    models,
    pairs,
    predict,
    pretrain,
    register,
    serve,
    study,
    validate,
)
from jsqa.errors import JsqaError

# In dvc.yaml order; `finetune` also serves the finetune_scratch stage.
COMMANDS = (
    check_params,
    acquire,
    validate,
    pairs,
    pretrain,
    calibrate,
    finetune,
    evaluate,
    register,
    study,
    export,
    predict,
    compare,
    models,
    serve,
)


def build_parser() -> argparse.ArgumentParser:
    """The `jsqa` parser with one subcommand per module in :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="jsqa",
        description="jsqa: speech quality (MOS) prediction "
        "with contrastive pretraining on JND pairs; one subcommand per stage",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def _quiet_libraries() -> None:
    for name in ("alembic", "mlflow", "urllib3", "matplotlib", "great_expectations", "numexpr"):
        logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `jsqa` console script."""
    # torch's CPU threads are GNU OpenMP (libgomp) threads, which spin between parallel regions
    # unless told to sleep; on a loaded machine that made a small model's fine-tuning epoch 3-30x
    # slower (benchmarks/threads_under_load.py measures it). libgomp reads the policy once, when
    # torch is imported, and no subcommand imports torch before its run(): so it is set here, and
    # stage, torchrun and pool worker processes inherit it. A value the caller set wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    _quiet_libraries()
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    try:
        return int(args.func(args))
    except JsqaError as exc:
        print(f"jsqa {args.command}: error: {exc}", file=sys.stderr)
        return 2
