"""``jsqa pretrain``: contrastive pretraining of the encoder on JND pairs (resumable, torchrun-aware)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Literal

from jsqa.cli.common import params, stage_parser


def add_parser(sub: argparse._SubParsersAction) -> None:
    sp = stage_parser(sub, "pretrain", run, "contrastive pretraining of the encoder on JND pairs")
    sp.add_argument("--pairs", default="data/pairs")
    sp.add_argument("--out", default="models/encoder.pt")
    sp.add_argument("--metrics", default="metrics/pretrain.json")
    # Without either flag a rerun continues a checkpoint made with the same parameters, so that
    # `dvc repro` and Prefect retries pick up an interrupted run.
    mode = sp.add_mutually_exclusive_group()
    mode.add_argument(
        "--resume",
        action="store_true",
        help="continue from the last checkpoint; an error when there is none with these parameters",
    )
    mode.add_argument("--fresh", action="store_true", help="start at step 0, removing any earlier checkpoint")
    sp.add_argument(
        "--checkpoint-dir", default=None, help="run directory for resumable checkpoints (default: OUT.ckpt)"
    )


def run(args: argparse.Namespace) -> int:
    import contextlib

    import mlflow

    from jsqa.config import to_flat_dict
    from jsqa.io import write_json
    from jsqa.tracking import log_epoch, stage_run
    from jsqa.train.checkpointing import TrainingInterrupted
    from jsqa.train.common import no_callback
    from jsqa.train.distributed import context_from_env
    from jsqa.train.pretrain import pretrain

    p = params(args)
    resume: Literal["auto", "resume", "fresh"] = "resume" if args.resume else "fresh" if args.fresh else "auto"
    ctx = context_from_env()
    flat = {
        "seed": p.seed,
        **to_flat_dict(p.model, "model."),
        **to_flat_dict(p.train, "train."),
        **to_flat_dict(p.pretrain, "pretrain."),
    }
    # Under torchrun only rank 0 tracks and writes; the other ranks just train.
    tracked = (
        stage_run("pretrain", {**flat, "world_size": ctx.world_size, "resume": resume}, args.root)
        if ctx.is_main
        else contextlib.nullcontext()
    )
    with tracked:
        try:
            summary = pretrain(
                Path(args.pairs),
                p.model,
                p.pretrain,
                p.seed,
                Path(args.out),
                on_epoch=(lambda e, m: log_epoch(m, e)) if ctx.is_main else no_callback,
                checkpoint_dir=Path(args.checkpoint_dir) if args.checkpoint_dir else None,
                resume=resume,
                dist_ctx=ctx,
                deterministic=p.train.deterministic,
            )
        except TrainingInterrupted as exc:
            if ctx.is_main:
                mlflow.set_tag("interrupted", f"step {exc.step}")
                print(f"jsqa pretrain: {exc}", file=sys.stderr)
            return 128 + exc.signum
        if not ctx.is_main:
            return 0
        mlflow.log_metrics({k: summary[k] for k in ("n_parameters", "steps", "world_size")})
        write_json(args.metrics, summary)
        mlflow.log_artifact(args.out)
    print(
        f"pretrain: encoder ({int(summary['n_parameters']):,} parameters) saved to {args.out} "
        f"(loss {summary['loss']:.4f}, top-1 {summary['top1']:.3f}, {int(summary['steps'])} steps)"
    )
    return 0
