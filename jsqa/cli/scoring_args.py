"""Options shared by the commands that read users' audio (`jsqa predict`, `jsqa compare`).

Kept apart from :mod:`jsqa.cli.common`, which every stage imports: the stages do not depend on
the scoring limits.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jsqa.scoring.limits import ScoringLimits


def positive_seconds(text: str) -> float:
    """An argparse type: a finite number of seconds above 0 (argparse prints the one-line error)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got '{text}'")
    return value


def max_seconds_arg(sp: argparse.ArgumentParser) -> None:
    """``--max-seconds``: the longest audio file the command reads (checked before decoding)."""
    sp.add_argument(
        "--max-seconds",
        type=positive_seconds,
        default=None,
        help="refuse longer files, checked before decoding (seconds above 0; default 600)",
    )


def root_arg(sp: argparse.ArgumentParser) -> None:
    """``--root``: the project root holding mlflow.db; by default found from the current folder up."""
    sp.add_argument(
        "--root",
        default=None,
        help="project root holding mlflow.db (default: the nearest folder from here up that holds "
        "mlflow.db, params.yaml, dvc.yaml or .dvc)",
    )


def project_root(args: argparse.Namespace) -> Path:
    """``--root`` when given, else the project root found from the current folder."""
    if args.root is not None:
        return Path(args.root)
    from jsqa.tracking import project_root as find_root

    return find_root()


def scoring_limits(args: argparse.Namespace) -> ScoringLimits:
    """The scoring limits with ``--max-seconds`` applied."""
    from dataclasses import replace

    from jsqa.scoring.limits import LIMITS

    return LIMITS if args.max_seconds is None else replace(LIMITS, max_seconds=args.max_seconds)
