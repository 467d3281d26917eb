"""Fine-tuning speed per OpenMP wait policy, on an idle machine and beside busy processes.

Run: .venv/bin/python benchmarks/threads_under_load.py [--epochs 3] [--threads 2] [--load 2]
     [--policies unset,PASSIVE,ACTIVE] [--clips 64]

Why: torch's intra-op thread pool is OpenMP (``torch.__config__.parallel_info()``: "ATen parallel
backend: OpenMP"; MKL runs on the same GNU libgomp). A libgomp worker that finishes its share of
a parallel region does not sleep: with ``OMP_WAIT_POLICY`` unset it spins for GOMP_SPINCOUNT
(300,000 iterations) waiting for the next region, and with ACTIVE it spins without end;
only PASSIVE makes it sleep on a futex at once. A small model's training step is thousands of
short parallel regions (tiny convolutions, element-wise ops, the optimizer) separated by serial
Python and autograd work, so with ``finetune.threads: 2`` the second thread spins through nearly
all of the step. On an idle machine that only burns a core (and starts the next region
sooner); on a loaded one (other processes,
or other jobs' spinning threads) the spinner takes CPU time from the process's own main
thread, and a region's end waits for a worker the kernel has descheduled for a whole time slice.
That is where a 2-core machine's epoch goes from about a second to 10-15 s.
The price of PASSIVE is the wake-up: on an idle machine a sleeping worker takes longer to start
a region than a spinning one, so there libgomp's default is faster (below: 0.26 against 0.41 s
an epoch); a dedicated machine can set ``OMP_WAIT_POLICY=ACTIVE``, which the entry points keep.
On a shared or busy machine PASSIVE saves far more than that, hence the default.
libgomp reads the variable once, when it is loaded (on ``import torch``), so it must be in the
environment before that; torch.set_num_threads cannot change it afterwards. The project's entry
points (``jsqa``, bin/jsqa, ``python -m flows.pipeline``, the Makefile, the test suite) set
``OMP_WAIT_POLICY=PASSIVE`` unless the caller chose a value, and every stage, torchrun worker
and pool worker they start inherits it. The policy changes only when an idle thread sleeps,
never the arithmetic: the weights trained under each policy are compared byte for byte.

Figures (2-core x86_64 VM shared with other jobs, 64 clips, 3 epochs, 2 threads, s/epoch):

    machine                                 unset   PASSIVE  ACTIVE
    quiet (load avg 0.9), no extra load     0.26    0.41     0.25
    quiet, --load 2                         1.22    0.36     1.19   (3.4x slower than PASSIVE)
    busy (load avg 7-9 from other jobs)    15.0     0.44     9.5    (34x)
    busy, --load 2                         37.7     1.63     7.3    (23x)

The trained weights were byte-identical in every cell.

Each cell trains in a fresh subprocess (the variable is read at library load) on the same small
synthetic corpus (the demo generator, ``--clips`` MOS clips) with the project's fine-tuning
loop (jsqa.train.finetune, small encoder, ``--threads`` torch threads). Load: ``--load`` K
processes busy-looping for the duration of the loaded cells, killed at the end. Printed per
cell: median seconds per epoch (the first epoch, which includes the start, left out), the
worker's CPU seconds over its wall seconds (start included: how much of the time it had a
core), then each policy's time per epoch over PASSIVE's under the same load.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

POLICY_VAR = "OMP_WAIT_POLICY"


def _make_corpus(root: Path, clips: int) -> Path:
    """The demo generator at a small size; returns the MOS manifest (paths relative to ``root``)."""
    from jsqa.config import DemoConfig
    from jsqa.data.demo import generate_demo, prepare_demo

    cfg = DemoConfig(
        n_talkers=4,
        utterances_per_talker=3,
        utterance_seconds=(1.0, 1.5),
        noise_seconds=3.0,
        noise_per_family=1,
        mos_clips=clips,
        mos_sample_rate=16000,
    )
    corpus = generate_demo(root / "raw", cfg, seed=3, mos_seconds=(1.5, 2.5))
    return prepare_demo(corpus, root / "manifests", root=root)["mos"]


def _train(manifest: Path, root: Path, epochs: int, threads: int, out: Path) -> None:
    """The worker: fine-tune and print one JSON line of per-epoch wall times."""
    import torch  # after the parent set the policy: libgomp reads it now

    from jsqa.config import FinetuneConfig, ModelConfig
    from jsqa.data.manifests import read_manifest
    from jsqa.train.finetune import finetune

    stamps = [time.perf_counter()]
    cfg = FinetuneConfig(
        epochs=epochs, batch_size=8, crop_seconds=1.0, patience=epochs, threads=threads, equal_compute_epochs=0
    )
    finetune(
        read_manifest(manifest, "mos"),
        ModelConfig(size="small"),
        cfg,
        seed=0,
        out_path=out,
        root=root,
        on_epoch=lambda e, m: stamps.append(time.perf_counter()),
    )
    epoch_s = [b - a for a, b in itertools.pairwise(stamps)]
    print(json.dumps({"epoch_s": epoch_s, "threads": torch.get_num_threads()}))


def _cell(policy: str, manifest: Path, root: Path, args: argparse.Namespace, out: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != POLICY_VAR}
    if policy != "unset":
        env[POLICY_VAR] = policy
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        str(manifest),
        str(root),
        str(args.epochs),
        str(args.threads),
        str(out),
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    steady = result["epoch_s"][1:] or result["epoch_s"]
    return {"epoch_s": statistics.median(steady), "cpu_per_wall": cpu / wall, "weights": out.read_bytes()}


def _start_load(k: int, seconds: float) -> list[subprocess.Popen]:
    """K busy-looping processes that end by themselves after ``seconds`` (and are killed at the end)."""
    spin = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"
    return [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(k)]


def _stop_load(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.kill()
        p.wait()


def _loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (finetune.threads)")
    parser.add_argument("--load", type=int, default=2, help="busy-looping processes in the loaded cells")
    parser.add_argument("--policies", default="unset,PASSIVE,ACTIVE")
    parser.add_argument("--clips", type=int, default=64, help="MOS clips in the synthetic corpus")
    parser.add_argument("--max-load-seconds", type=float, default=900.0, help="the load processes end after this")
    parser.add_argument(
        "--worker", nargs=5, metavar=("MANIFEST", "ROOT", "EPOCHS", "THREADS", "OUT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.worker:
        manifest, root, epochs, threads, out = args.worker
        _train(Path(manifest), Path(root), int(epochs), int(threads), Path(out))
        return 0
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    print(f"cpus {os.cpu_count()}, load average before: {_loadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="jsqa-threads-") as tmp:
        root = Path(tmp)
        manifest = _make_corpus(root, args.clips)
        rows: dict[tuple[int, str], dict] = {}
        print(f"{'load':>4}  {'OMP_WAIT_POLICY':<15} {'s/epoch':>8} {'cpu/wall':>8}", flush=True)
        for load in (0, args.load):
            procs = _start_load(load, args.max_load_seconds)
            try:
                for policy in policies:
                    row = rows[load, policy] = _cell(policy, manifest, root, args, root / f"{load}-{policy}.pt")
                    print(f"{load:>4}  {policy:<15} {row['epoch_s']:>8.3f} {row['cpu_per_wall']:>8.2f}", flush=True)
            finally:
                _stop_load(procs)
        print(f"load average after: {_loadavg()}")
        for (load, policy), row in rows.items():
            base = rows.get((load, "PASSIVE"))
            if base and policy != "PASSIVE":
                print(f"load {load}: {policy} takes {row['epoch_s'] / base['epoch_s']:.2f}x PASSIVE's time per epoch")
        same = len({row["weights"] for row in rows.values()}) == 1
        print(f"trained weights identical across policies and loads: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
