"""``jsqa study``: collect DVC experiments (label fractions, ablations) into one table and plot."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    sp = sub.add_parser(
        "study",
        help="run a grid of settings as DVC experiments (-S), then collect every "
        "experiment into one table and plot (pretrained vs scratch against label fraction "
        "or an ablation)",
    )
    sp.add_argument("--root", default=".", help="the DVC project (default: here)")
    sp.add_argument(
        "-S",
        "--set-param",
        dest="set_params",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="a setting or sweep, as for `dvc exp run -S` (repeatable; the grid is every "
        "combination). Each setting runs as `dvc exp run --temp` before the collection; "
        "without -S, only the experiments already run are collected",
    )
    sp.add_argument(
        "--target",
        dest="targets",
        action="append",
        default=None,
        help="stage each experiment reproduces (repeatable; default: evaluate)",
    )
    sp.add_argument(
        "-C",
        "--copy",
        dest="copy_paths",
        action="append",
        default=None,
        help="file copied into each experiment when it exists (repeatable; default: dvc.lock, "
        "so the upstream stages come from the cache)",
    )
    sp.add_argument("--exp-json", default=None, help="read this `dvc exp show --json` output instead of running it")
    sp.add_argument("--test-set", default="pooled", help="test set the table and plot report (default: pooled)")
    sp.add_argument("--out", default="metrics/study.json")
    sp.add_argument("--table", default="reports/study.md")
    sp.add_argument("--plot", default="plots/study.png")
    sp.set_defaults(func=run)


def _exp_show(root: str) -> list:
    from jsqa.errors import JsqaError

    cmd = [sys.executable, "-m", "dvc", "exp", "show", "--json", "--all-commits"]
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        raise JsqaError(f"`dvc exp show` failed in {root}: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout or "[]")


def run(args: argparse.Namespace) -> int:
    from jsqa.io import atomic_path, write_json
    from jsqa.study import (
        experiments_from_exp_show,
        factor_to_plot,
        failed_experiments,
        study_markdown,
        study_plot,
        study_table,
    )
    from jsqa.sweep import expand_grid, run_settings

    failed_runs: list[str] = []
    if args.set_params:
        settings = expand_grid(args.set_params)
        failed_runs = run_settings(
            args.root,
            settings,
            args.targets or ["evaluate"],
            ["dvc.lock"] if args.copy_paths is None else args.copy_paths,
        )
    exp_show = json.loads(Path(args.exp_json).read_text()) if args.exp_json else _exp_show(args.root)
    experiments = experiments_from_exp_show(exp_show)
    table = study_table(experiments, args.test_set)
    factors = [c for c in table.columns if "." in c]
    markdown = study_markdown(table, factors)
    verdicts = [
        f"- {e['name']}: {e['evaluation']['verdict'][0]}" for e in experiments if e["evaluation"].get("verdict")
    ]
    failed = sorted(set(failed_experiments(exp_show)) | set(failed_runs))
    note = f"\n{len(failed)} experiment(s) failed and are not in the table: {', '.join(failed)}\n" if failed else ""
    text = (
        f"# Study: {len(experiments)} experiments, factors {', '.join(factors) or 'none'} "
        f"(test set: {args.test_set})\n\n{markdown}\n" + "\n".join(verdicts) + "\n" + note
    )
    with atomic_path(args.table) as tmp:
        Path(tmp).write_text(text)
    write_json(args.out, {"factors": factors, "rows": table.to_dict(orient="records"), "failed_experiments": failed})
    x = factor_to_plot(factors)
    if x is not None:
        study_plot(table, x, args.plot, title=args.test_set)
    print(text.rstrip("\n"))
    print(f"study: {args.table}, {args.out}" + (f", {args.plot}" if x else " (one setting: no plot)"))
    return 1 if failed else 0
