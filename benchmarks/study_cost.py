"""Cost of one full label-efficiency study on this machine: the `make study` steps, timed.

Run (from the project root, after `make setup`):
    .venv/bin/python benchmarks/study_cost.py [--study "finetune.label_fraction=0.1,0.3"] [--jobs 1]

Prints wall-clock seconds of each step (`dvc repro evaluate`, queueing, running the queue,
`jsqa study`), the number of experiments, seconds per experiment, and how many fine-tuning runs
there were (experiments x 2 inits x finetune.seeds). Runs real DVC experiments in this
project: remove them afterwards with `dvc exp remove --all` if unwanted.
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
    ap.add_argument("--jobs", type=int, default=1)
    args = ap.parse_args()
    bin_dir = str(Path(sys.executable).parent)
    # DVC's queue workers start `dvc` from PATH.
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1"}
    dvc = [sys.executable, "-m", "dvc"]
    grids = args.study.split()
    sets = [len(g.partition("=")[2].split(",")) for g in grids]
    n_exp = 1
    for k in sets:
        n_exp *= k
    seeds = int(yaml.safe_load((ROOT / "params.yaml").read_text())["finetune"]["seeds"])
    steps = {
        "dvc repro evaluate": timed([*dvc, "repro", "evaluate"], env),
        "queue": timed([*dvc, "exp", "run", "--queue", "-C", "dvc.lock", "-S", "evaluate.peers=[]",
                        *[a for g in grids for a in ("-S", g)],
                        "evaluate"], env),
        "run queue": timed([*dvc, "exp", "run", "--run-all", "-j", str(args.jobs)], env, check=False),
        "jsqa study": timed([sys.executable, "-m", "jsqa.cli", "study"], env, check=False),
    }
    total = sum(steps.values())
    print(f"\nstudy {args.study!r}: {n_exp} experiments x 2 inits x {seeds} seeds = {n_exp * 2 * seeds} "
          f"fine-tuning runs, {args.jobs} at a time, {os.cpu_count()} CPUs")
    for name, s in steps.items():
        print(f"  {name:20s} {s:8.1f} s")
    print(f"  {'total':20s} {total:8.1f} s; {steps['run queue'] / n_exp:.1f} s per experiment")


if __name__ == "__main__":
    main()
