"""``jsqa serve``: the registered model over HTTP (MLflow's scoring server), whatever PATH holds."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    sp = sub.add_parser("serve", help="serve a MOS model over HTTP (POST /invocations; see README 'Serving')")
    sp.add_argument(
        "--model",
        default="models:/jsqa-mos@champion",
        help="MLflow model URI or model folder (default: models:/jsqa-mos@champion)",
    )
    sp.add_argument("--host", default="127.0.0.1")
    sp.add_argument("--port", type=int, default=5001)
    sp.add_argument("--workers", type=int, default=1)
    sp.add_argument("--root", default=".", help="project root holding mlflow.db")
    sp.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from jsqa.scoring.server import serve_command

    argv, env = serve_command(args.model, args.host, args.port, args.workers, Path(args.root))
    # Replace this process: signals (Ctrl-C, a supervisor's SIGTERM) reach the server directly.
    os.execve(argv[0], argv, env)
    return 0  # not reached
