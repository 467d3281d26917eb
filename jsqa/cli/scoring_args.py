"""Options shared by the commands that read users' audio (`jsqa predict`, `jsqa compare`).

Kept apart from :mod:`jsqa.cli.common`, which every stage imports: the stages do not depend on
the scoring limits.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jsqa.scoring.limits import ScoringLimits


def max_seconds_arg(sp: argparse.ArgumentParser) -> None:
    """``--max-seconds``: the longest audio file the command reads (checked before decoding)."""
    sp.add_argument(
        "--max-seconds", type=float, default=None, help="refuse longer files, checked before decoding (default 600)"
    )


def scoring_limits(args: argparse.Namespace) -> ScoringLimits:
    """The scoring limits with ``--max-seconds`` applied."""
    from dataclasses import replace

    from jsqa.scoring.limits import LIMITS

    return LIMITS if args.max_seconds is None else replace(LIMITS, max_seconds=args.max_seconds)
