"""``jsqa check-params``: read params.yaml as every stage does, so a mistyped key fails at once.

The first DVC stage runs this, and depends on the whole of params.yaml: DVC runs only stale
stages, and a key no stage lists (a typo) would otherwise make none of them stale and go unnoticed.
"""

from __future__ import annotations

import argparse

from jsqa.cli.common import params, stage_parser


def add_parser(sub: argparse._SubParsersAction) -> None:
    stage_parser(sub, "check-params", run, "check params.yaml (unknown keys, types, ranges) and exit")


def run(args: argparse.Namespace) -> int:
    params(args)
    print(f"check-params: {args.params} is valid")
    return 0
