"""``jsqa pairs``: render the JND pair set as shards."""

from __future__ import annotations

import argparse
from pathlib import Path

from jsqa.cli.common import params, stage_parser


def add_parser(sub: argparse._SubParsersAction) -> None:
    sp = stage_parser(sub, "pairs", run, "render JND pairs (positives) as shards")
    sp.add_argument("--manifests", default="data/manifests")
    sp.add_argument("--out", default="data/pairs")


def run(args: argparse.Namespace) -> int:
    import mlflow

    from jsqa.config import to_flat_dict
    from jsqa.pairs.generate import generate_pairs
    from jsqa.tracking import stage_run

    p = params(args)
    mdir = Path(args.manifests)
    # The distortions beyond noise apply only in the data profiles pairs.distortions.profiles lists.
    pairs, profile = p.pairs, p.data.profile
    cfg = pairs.for_profile(profile)
    logged = {**to_flat_dict(cfg, "pairs."), "data.profile": profile}
    with stage_run("pairs", logged, args.root):
        pairset = generate_pairs(
            mdir / "clean.parquet",
            mdir / "noise.parquet",
            cfg,
            p.seed,
            Path(args.out),
            sample_rate=p.data.sample_rate,
            root=Path(args.root),
        )
        mlflow.log_metric("n_pairs", pairset.n)
    print(f"pairs: {pairset.n} JND pairs in {args.out}")
    return 0
