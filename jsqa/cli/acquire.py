"""``jsqa acquire``: generate the demo corpus or fetch real corpora, and build manifests."""

from __future__ import annotations

import argparse
from pathlib import Path

from jsqa.cli.common import params, stage_parser


def add_parser(sub: argparse._SubParsersAction) -> None:
    sp = stage_parser(sub, "acquire", run, "generate (demo) or fetch corpora and build manifests")
    sp.add_argument("--out", default="data/raw")
    sp.add_argument("--manifests", default="data/manifests")


def run(args: argparse.Namespace) -> int:
    import mlflow
    import pandas as pd

    from jsqa.config import to_flat_dict
    from jsqa.data.acquire import acquire
    from jsqa.tracking import stage_run

    p = params(args)
    with stage_run("acquire", to_flat_dict(p.data, "data."), args.root):
        manifests = acquire(p.data, p.seed, Path(args.out), Path(args.manifests), root=Path(args.root))
        counts = {f"n_{k}": float(len(pd.read_parquet(v))) for k, v in manifests.items() if str(v).endswith(".parquet")}
        mlflow.log_metrics(counts)
    print(
        f"acquire ({p.data.profile}): manifests in {args.manifests}: "
        + ", ".join(f"{k}={v:.0f}" for k, v in counts.items())
    )
    return 0
