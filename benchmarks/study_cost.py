"""Cost of one full label-efficiency study on this machine: the `make study` steps, timed.

Run (from the project root, after `make setup`):
    .venv/bin/python benchmarks/study_cost.py [--study "finetune.label_fraction=0.1,0.3"]

Prints wall-clock seconds of each step (`dvc repro evaluate`, then `jsqa study -S ...`, which
runs every setting as a DVC experiment and collects them), the number of experiments, seconds per
experiment, and how many fine-tuning runs there were (experiments x 2 inits x finetune.seeds).
Runs real DVC experiments in this project: remove them afterwards with `dvc exp remove --all`
if unwanted.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml

from jsqa.sweep import expand_grid

ROOT = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], env: dict[str, str], check: bool = True) -> float:
    print("$", shlex.join(cmd), flush=True)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env)
    if check and done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {shlex.join(cmd)}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default="finetune.label_fraction=0.1,0.3", help="space-separated -S grids")
    args = ap.parse_args()
    bin_dir = str(Path(sys.executable).parent)
    # Stage commands (`jsqa ...`) are looked up on PATH.
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1"}
    dvc = [sys.executable, "-m", "dvc"]
    grids = args.study.split()
    n_exp = len(expand_grid(grids))
    seeds = int(yaml.safe_load((ROOT / "params.yaml").read_text())["finetune"]["seeds"])
    steps = {
        "dvc repro evaluate": timed([*dvc, "repro", "evaluate"], env),
        "jsqa study -S": timed(
            [
                sys.executable,
                "-m",
                "jsqa.cli",
                "study",
                "-S",
                "evaluate.peers=[]",
                *[a for g in grids for a in ("-S", g)],
            ],
            env,
            check=False,
        ),
    }
    total = sum(steps.values())
    print(
        f"\nstudy {args.study!r}: {n_exp} experiments x 2 inits x {seeds} seeds = {n_exp * 2 * seeds} "
        f"fine-tuning runs, one at a time, {os.cpu_count()} CPUs"
    )
    for name, s in steps.items():
        print(f"  {name:20s} {s:8.1f} s")
    print(f"  {'total':20s} {total:8.1f} s; {steps['jsqa study -S'] / n_exp:.1f} s per experiment")


if __name__ == "__main__":
    main()
