"""`jsqa` command line: one thin subcommand per DVC stage, plus `predict`.

Config is read here, once, from params.yaml into typed dataclasses and passed down; library
code never reads params.yaml itself. Every JsqaError ends as one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from jsqa.config import Params, load_params, to_flat_dict
from jsqa.errors import JsqaError

log = logging.getLogger("jsqa")

STAGES = ("acquire", "validate", "pairs", "pretrain", "finetune", "evaluate", "register")


def _params(args: argparse.Namespace) -> Params:
    return load_params(args.params)


# --- stage commands -------------------------------------------------------------------------


def cmd_acquire(args: argparse.Namespace) -> int:
    import mlflow
    import pandas as pd

    from jsqa.data.acquire import acquire
    from jsqa.tracking import stage_run

    p = _params(args)
    with stage_run("acquire", to_flat_dict(p.data, "data."), args.root):
        manifests = acquire(p.data, p.seed, Path(args.out), Path(args.manifests), root=Path(args.root))
        counts = {f"n_{k}": len(pd.read_parquet(v)) for k, v in manifests.items() if str(v).endswith(".parquet")}
        mlflow.log_metrics(counts)
    print(f"acquire ({p.data.profile}): manifests in {args.manifests}: "
          + ", ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    import mlflow

    from jsqa.data.validate import validate_manifests
    from jsqa.errors import ValidationFailed
    from jsqa.tracking import stage_run

    p = _params(args)
    mdir = Path(args.manifests)
    manifests = {k: mdir / f"{k}.parquet" for k in ("clean", "noise", "mos")}
    with stage_run("validate", to_flat_dict(p.validate, "validate."), args.root):
        try:
            report = validate_manifests(manifests, p.validate, p.data.sample_rate, Path(args.out), Path(args.root))
        except ValidationFailed:
            mlflow.log_artifact(str(Path(args.out) / "report.json"))
            mlflow.set_tag("validation", "failed")
            raise
        mlflow.log_artifact(str(Path(args.out) / "report.json"))
        mlflow.set_tag("validation", "passed")
    rows = ", ".join(f"{k} ({m['n_rows']} rows)" for k, m in report["manifests"].items())
    print(f"validate: every suite passed: {rows}; Data Docs: {report['data_docs']}")
    return 0


def cmd_pairs(args: argparse.Namespace) -> int:
    import mlflow

    from jsqa.pairs import generate_pairs
    from jsqa.tracking import stage_run

    p = _params(args)
    mdir = Path(args.manifests)
    with stage_run("pairs", to_flat_dict(p.pairs, "pairs."), args.root):
        pairset = generate_pairs(
            mdir / "clean.parquet", mdir / "noise.parquet", p.pairs, p.seed, Path(args.out),
            sample_rate=p.data.sample_rate, root=Path(args.root),
        )
        mlflow.log_metric("n_pairs", pairset.n)
    print(f"pairs: {pairset.n} JND pairs in {args.out}")
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    import contextlib

    import mlflow

    from jsqa.io import write_json
    from jsqa.tracking import log_epoch, stage_run
    from jsqa.train.checkpointing import TrainingInterrupted
    from jsqa.train.common import no_callback
    from jsqa.train.distributed import context_from_env
    from jsqa.train.pretrain import pretrain

    p = _params(args)
    ctx = context_from_env()
    flat = {"seed": p.seed, **to_flat_dict(p.model, "model."), **to_flat_dict(p.pretrain, "pretrain.")}
    # Under torchrun only rank 0 tracks and writes; the other ranks just train.
    run = stage_run("pretrain", {**flat, "world_size": ctx.world_size, "resume": args.resume}, args.root) \
        if ctx.is_main else contextlib.nullcontext()
    with run:
        try:
            summary = pretrain(
                Path(args.pairs), p.model, p.pretrain, p.seed, Path(args.out),
                on_epoch=(lambda e, m: log_epoch(m, e)) if ctx.is_main else no_callback,
                checkpoint_dir=Path(args.checkpoint_dir) if args.checkpoint_dir else None,
                resume=args.resume, dist_ctx=ctx,
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
    print(f"pretrain: encoder ({int(summary['n_parameters']):,} parameters) saved to {args.out} "
          f"(loss {summary['loss']:.4f}, top-1 {summary['top1']:.3f}, {int(summary['steps'])} steps)")
    return 0


def _mos_manifest(args: argparse.Namespace):
    """The MOS manifest from --csv (NISQA layout, audio under --audio-root) or --manifest (parquet)."""
    from jsqa.data.manifests import mos_manifest_from_csv, read_manifest

    if getattr(args, "csv", None):
        manifest, _ = mos_manifest_from_csv(args.csv, args.audio_root, root=args.root)  # skips are logged
        if manifest.empty:
            raise JsqaError(f"{args.csv}: no readable clips")
        return manifest
    return read_manifest(args.manifest, "mos")


def cmd_finetune(args: argparse.Namespace) -> int:
    import mlflow

    from jsqa.io import write_json
    from jsqa.tracking import log_epoch, stage_run
    from jsqa.train.finetune import finetune_seeds

    p = _params(args)
    encoder = Path(args.encoder) if args.encoder else None
    stage = "finetune" if encoder else "finetune_scratch"
    flat = {"seed": p.seed, "init": "pretrained" if encoder else "scratch",
            **to_flat_dict(p.model, "model."), **to_flat_dict(p.finetune, "finetune.")}
    manifest = _mos_manifest(args)

    def on_epoch(seed: int):
        # The primary seed logs plain names (as with one seed); the others are prefixed.
        prefix = "" if seed == p.seed else f"seed{seed}_"
        return lambda e, m: log_epoch({prefix + k: v for k, v in m.items()}, e)

    with stage_run(stage, flat, args.root):
        summary = finetune_seeds(manifest, p.model, p.finetune, p.seed, Path(args.out), encoder_ckpt=encoder,
                                 sample_rate=p.data.sample_rate, root=args.root, on_epoch=on_epoch)
        best = {k: v for k, v in summary.items() if isinstance(v, float)}
        mlflow.log_metrics({f"best_{k}": v for k, v in best.items()})
        mlflow.log_metrics({f"seeds_{k}_{s}": v for s in ("mean", "std") for k, v in summary[f"seed_{s}"].items()})
        write_json(args.metrics, summary)
        mlflow.log_artifact(args.out)
    mean, std = summary["seed_mean"], summary["seed_std"]
    print(f"{stage}: model saved to {args.out} (val RMSE {best['val_rmse']:.3f}, PCC {best['val_pcc']:.3f}); "
          f"{len(summary['seeds'])} seeds: val RMSE {mean['val_rmse']:.3f} ± {std['val_rmse']:.3f}, "
          f"PCC {mean['val_pcc']:.3f} ± {std['val_pcc']:.3f}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import mlflow

    from jsqa.evaluate import evaluate_models, flat_metrics, scatter_plot
    from jsqa.io import write_csv, write_json
    from jsqa.models.mos import load_checkpoint, mos_model_from_checkpoint
    from jsqa.tracking import stage_run
    from jsqa.train.finetune import seed_checkpoints

    p = _params(args)
    models = {}
    for spec in args.model:
        name, _, path = spec.partition("=")
        if not path:
            raise JsqaError(f"--model expects NAME=CHECKPOINT, got '{spec}'")
        models[name] = {s: mos_model_from_checkpoint(load_checkpoint(f)) for s, f in seed_checkpoints(path).items()}
    manifest = _mos_manifest(args)
    test_sets = args.test_sets.split(",") if args.test_sets else list(p.evaluate.test_sets)
    run_params = {"test_sets": ",".join(test_sets) or "all", "models": ",".join(models),
                  "seeds": ",".join(str(len(m)) for m in models.values()),
                  "bootstrap_resamples": p.evaluate.bootstrap_resamples}
    with stage_run("evaluate", run_params, args.root):
        report, preds = evaluate_models(models, manifest, test_sets, sample_rate=p.data.sample_rate, root=args.root,
                                        resamples=p.evaluate.bootstrap_resamples, seed=p.seed)
        write_json(args.metrics, report)
        plots = Path(args.plots)
        write_csv(plots / "predictions.csv", preds)
        scatter_plot(preds, plots / "scatter.png", list(models))
        mlflow.log_metrics(flat_metrics(report))
        for f in (args.metrics, plots / "predictions.csv", plots / "scatter.png"):
            mlflow.log_artifact(str(f))
    print(_evaluation_table(report))
    return 0


def _evaluation_table(report: dict) -> str:
    from jsqa.report import evaluation_tables

    return evaluation_tables(report, "text").rstrip("\n")


def cmd_export(args: argparse.Namespace) -> int:
    from jsqa.export import export_model

    out = export_model(Path(args.model), Path(args.out), args.format)
    print(f"export: {args.model} -> {out} ({args.format})")
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    from jsqa.io import read_json, write_json
    from jsqa.registry import evaluation_tags, register

    p = _params(args)
    tags = {}
    if args.evaluation and Path(args.evaluation).exists():
        tags = evaluation_tags(read_json(args.evaluation))
    result = register(Path(args.encoder), Path(args.mos), p.register, Path(args.root), extra_tags=tags,
                      manifests=Path(args.manifests))
    write_json(args.out, result)
    verdict = "promoted to @" + p.register.alias if result["promoted"] else "not promoted"
    print(f"register: {result['mos_model']} v{result['mos_version']} {verdict} ({result['reason']})")
    return 0


def _registry_client(args: argparse.Namespace):
    from mlflow.tracking import MlflowClient

    from jsqa.tracking import configure

    configure(args.root)
    return MlflowClient()


def _print_moves(verb: str, moves: dict, alias: str) -> None:
    for model, move in moves.items():
        print(f"{verb}: {model}@{alias} v{move['from'] or '-'} -> v{move['to']}")


def cmd_models_list(args: argparse.Namespace) -> int:
    from jsqa.champion import champion_history, format_versions, list_versions

    p = _params(args)
    client, name = _registry_client(args), args.name or p.register.mos_name
    print(format_versions(list_versions(client, name)))
    print(f"@{p.register.alias} history (oldest first): {', '.join(champion_history(client, name)) or '-'}")
    return 0


def cmd_models_promote(args: argparse.Namespace) -> int:
    from jsqa.champion import promote

    p = _params(args)
    moves = promote(_registry_client(args), p.register, args.name or p.register.mos_name, args.version)
    _print_moves("promote", moves, p.register.alias)
    return 0


def cmd_models_rollback(args: argparse.Namespace) -> int:
    from jsqa.champion import rollback

    p = _params(args)
    moves = rollback(_registry_client(args), p.register, args.name or p.register.mos_name)
    _print_moves("rollback", moves, p.register.alias)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from jsqa.predict import audio_files, format_rows, load_model, score_files

    files = audio_files(args.inputs)
    model, what = load_model(args.model, Path(args.root))
    log.info("scoring %d file(s) with %s", len(files), what)
    rows = score_files(model, files, limits=_scoring_limits(args), progress=sys.stderr.isatty())
    print(format_rows(rows, args.format))
    return 1 if any(r["error"] for r in rows) else 0


def _scoring_limits(args: argparse.Namespace):  # noqa: ANN202 (jsqa.audio is imported lazily)
    from dataclasses import replace

    from jsqa.audio import LIMITS

    return LIMITS if args.max_seconds is None else replace(LIMITS, max_seconds=args.max_seconds)


# --- parser ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jsqa", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def stage(name: str, fn: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help)
        sp.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
        sp.add_argument("--root", default=".", help="project root that manifest paths are relative to")
        sp.set_defaults(func=fn)
        return sp

    sp = stage("acquire", cmd_acquire, "generate (demo) or fetch corpora and build manifests")
    sp.add_argument("--out", default="data/raw")
    sp.add_argument("--manifests", default="data/manifests")

    sp = stage("validate", cmd_validate, "run the Great Expectations suites on every manifest")
    sp.add_argument("--manifests", default="data/manifests")
    sp.add_argument("--out", default="data/validation")

    sp = stage("pairs", cmd_pairs, "render JND pairs (positives) as shards")
    sp.add_argument("--manifests", default="data/manifests")
    sp.add_argument("--out", default="data/pairs")

    sp = stage("pretrain", cmd_pretrain, "contrastive pretraining of the encoder on JND pairs")
    sp.add_argument("--pairs", default="data/pairs")
    sp.add_argument("--out", default="models/encoder.pt")
    sp.add_argument("--metrics", default="metrics/pretrain.json")
    sp.add_argument("--resume", action="store_true", help="continue from the last checkpoint of an interrupted run")
    sp.add_argument("--checkpoint-dir", default=None, help="run directory for resumable checkpoints (default: OUT.ckpt)")

    sp = stage("finetune", cmd_finetune, "fine-tune for MOS (from --encoder, or from scratch without it)")
    sp.add_argument("--manifest", default="data/manifests/mos.parquet", help="MOS manifest (train/val splits)")
    _csv_args(sp)
    sp.add_argument("--encoder", default=None, help="pretrained encoder checkpoint; omit for the scratch baseline")
    sp.add_argument("--out", default="models/mos_pretrained.pt")
    sp.add_argument("--metrics", default="metrics/finetune_pretrained.json")

    sp = stage("evaluate", cmd_evaluate, "RMSE, MAE, PCC, SRCC per test set, plots, change vs scratch")
    sp.add_argument("--manifest", default="data/manifests/mos.parquet")
    _csv_args(sp)
    sp.add_argument("--model", action="append", default=None, metavar="NAME=CHECKPOINT",
                    help="model to score (repeatable); default pretrained and scratch")
    sp.add_argument("--test-sets", default="", help="comma-separated db names (default: params)")
    sp.add_argument("--metrics", default="metrics/evaluate.json")
    sp.add_argument("--plots", default="plots")

    sp = stage("register", cmd_register, "register encoder and MOS model; move @champion if better")
    sp.add_argument("--encoder", default="models/encoder.pt")
    sp.add_argument("--mos", default="models/mos_pretrained.pt")
    sp.add_argument("--evaluation", default="metrics/evaluate.json")
    sp.add_argument("--out", default="metrics/register.json")
    sp.add_argument("--manifests", default="data/manifests", help="manifests whose hashes tag the versions")

    sp = sub.add_parser("export", help="export a MOS checkpoint as a TorchScript file (waveform batch -> MOS)")
    sp.add_argument("--model", required=True, help="MOS checkpoint (.pt)")
    sp.add_argument("--format", choices=("torchscript",), default="torchscript",
                    help="torchscript (ONNX needs the onnx package, which is not in the stack)")
    sp.add_argument("--out", required=True, help="output file, e.g. model.ts")
    sp.set_defaults(func=cmd_export)

    sp = sub.add_parser("predict", help="print a MOS for each audio file (folders are searched)")
    sp.add_argument("inputs", nargs="+", help="audio files or folders")
    sp.add_argument("--model", default="models:/jsqa-mos@champion",
                    help="checkpoint path or MLflow model URI (default: models:/jsqa-mos@champion)")
    sp.add_argument("--format", choices=("table", "csv", "json"), default="table")
    sp.add_argument("--root", default=".", help="project root holding mlflow.db")
    sp.add_argument("--max-seconds", type=float, default=None,
                    help="refuse longer files, checked before decoding (default 600)")
    sp.set_defaults(func=cmd_predict)
    _add_models_parser(sub)
    return parser


def _csv_args(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--csv", default=None, help="MOS dataset in the NISQA CSV layout (filepath_deg, mos, db); "
                    "replaces --manifest")
    sp.add_argument("--audio-root", default=None, help="folder filepath_deg is relative to (default: the CSV's)")


def _add_models_parser(sub: argparse._SubParsersAction) -> None:
    """`jsqa models list|promote|rollback`: the registry's versions and the champion alias."""
    models = sub.add_parser("models", help="list registered versions; move or roll back @champion")
    group = models.add_subparsers(dest="models_command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--name", default=None, help="registered model (default: register.mos_name); "
                        "the encoder and MOS model move together")
    common.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    common.add_argument("--root", default=".", help="project root holding mlflow.db")
    sp = group.add_parser("list", parents=[common], help="versions, aliases, provenance tags and metrics")
    sp.set_defaults(func=cmd_models_list)
    sp = group.add_parser("promote", parents=[common], help="point @champion at VERSION (and its encoder)")
    sp.add_argument("version", help="version number of --name")
    sp.set_defaults(func=cmd_models_promote)
    sp = group.add_parser("rollback", parents=[common], help="point @champion back at the previous champion")
    sp.set_defaults(func=cmd_models_rollback)


def _quiet_libraries() -> None:
    for name in ("alembic", "mlflow", "urllib3", "matplotlib", "great_expectations", "numexpr"):
        logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `jsqa` console script."""
    args = build_parser().parse_args(argv)
    if getattr(args, "model", "x") is None:
        args.model = ["pretrained=models/mos_pretrained.pt", "scratch=models/mos_scratch.pt"]
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    _quiet_libraries()
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    try:
        return args.func(args)
    except JsqaError as exc:
        print(f"jsqa {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as exc:
        print(f"jsqa {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
