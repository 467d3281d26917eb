"""Prefect flow that renders the JND pair shards on a Dask cluster.

CLI:
    python -m flows.pairs_dask [--params params.yaml] [--manifests data/manifests]
                               [--out data/pairs] [--address tcp://host:8786] [--workers N]

Without ``--address`` a local cluster of ``--workers`` processes (default ``pairs.workers``),
one thread each, is started for the run and closed after it. With ``--address`` the shards go
to an existing cluster: its workers must see the manifests' audio, ``--out`` and its work folder
``<out>.partial`` beside it at the same absolute paths (a shared file system), since shards are
read and written by the workers (into the work folder; they move into ``--out`` at the end).

Planning, resume and the final pair set are :func:`jsqa.pairs.generate.generate_pairs`'s; this flow only
swaps its shard loop for Prefect tasks, so the output is bit-identical to ``jsqa pairs``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from prefect import flow, task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect_dask import DaskTaskRunner

from jsqa.config import PairsConfig, load_params
from jsqa.errors import ConfigError, JsqaError
from jsqa.pairs.generate import generate_pairs
from jsqa.pairs.render import ShardJob, render_shard

log = logging.getLogger(__name__)

FLOW_NAME = "jsqa-pairs-dask"


def _shard_run_name() -> str:
    from prefect.runtime import task_run

    job = task_run.parameters.get("job")
    return f"shard-{job.shard:05d}" if isinstance(job, ShardJob) else "shard"


# Shards are deterministic files on disk and generate_pairs already resumes from them, so
# Prefect's own result cache would only duplicate that (and hash whole DataFrames to do it).
@task(name="render_shard", task_run_name=_shard_run_name, cache_policy=NO_CACHE)
def render_shard_task(job: ShardJob, render: Callable[[ShardJob], dict[str, Any]] = render_shard) -> dict[str, Any]:
    """Render one shard on whichever worker the task runner picks; return its summary."""
    return render(job)


def task_runner_shard_map(render: Callable[[ShardJob], dict[str, Any]], jobs: list[ShardJob]) -> list[dict[str, Any]]:
    """``generate_pairs`` hook: one Prefect task per shard, gathered in shard order.

    Must be called inside a flow; the tasks go to that flow's task runner.
    """
    if not jobs:
        return []
    futures = render_shard_task.map(jobs, render=unmapped(render))
    return [f.result() for f in futures]


# prefect-dask 0.3.7's runner is typed against an older TaskRunner generic; it is one at run time.
@flow(name=FLOW_NAME, task_runner=cast(Any, DaskTaskRunner()))
def pairs_dask_flow(
    clean_manifest: str,
    noise_manifest: str,
    cfg: PairsConfig,
    seed: int,
    out_dir: str,
    sample_rate: int = 16000,
    root: str = ".",
) -> dict[str, Any]:
    """Generate the pair set with shards rendered as tasks; return the counts of index.json."""
    pairset = generate_pairs(
        Path(clean_manifest),
        Path(noise_manifest),
        cfg,
        seed,
        Path(out_dir),
        sample_rate=sample_rate,
        root=Path(root),
        shard_map=task_runner_shard_map,
    )
    n_shards = int(pairset.recipes["shard"].max()) + 1 if pairset.n else 0
    return {"n_pairs": pairset.n, "n_shards": n_shards, "out_dir": str(out_dir)}


def dask_task_runner(workers: int = 2, address: str | None = None, processes: bool = True) -> DaskTaskRunner:
    """Task runner for an existing cluster at ``address``, else a local one of ``workers``
    single-threaded workers (``processes=False``: threads of this process, for tests)."""
    if address:
        return DaskTaskRunner(address=address)
    if workers < 1:
        raise ConfigError(f"--workers: must be at least 1, got {workers}")
    # One thread per worker: rendering is NumPy/soundfile work that holds the GIL in places,
    # so parallelism comes from processes, and more threads would only oversubscribe.
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": workers,
            "threads_per_worker": 1,
            "processes": processes,
            "dashboard_address": None,
        }
    )


def run_pairs_dask(
    clean_manifest: Path,
    noise_manifest: Path,
    cfg: PairsConfig,
    seed: int,
    out_dir: Path,
    sample_rate: int = 16000,
    root: Path = Path("."),
    workers: int | None = None,
    address: str | None = None,
    processes: bool = True,
) -> dict[str, Any]:
    """Run :func:`pairs_dask_flow` on a Dask task runner (see :func:`dask_task_runner`).

    ``workers`` defaults to ``cfg.workers``. Paths are made absolute here because workers
    (maybe on other machines) resolve them, not this process.
    """
    runner = dask_task_runner(cfg.workers if workers is None else workers, address, processes)
    return pairs_dask_flow.with_options(task_runner=cast(Any, runner))(
        clean_manifest=str(Path(clean_manifest).absolute()),
        noise_manifest=str(Path(noise_manifest).absolute()),
        cfg=cfg,
        seed=seed,
        out_dir=str(Path(out_dir).absolute()),
        sample_rate=sample_rate,
        root=str(Path(root).absolute()),
    )


def build_parser() -> argparse.ArgumentParser:
    """Argument parser for ``python -m flows.pairs_dask``."""
    parser = argparse.ArgumentParser(prog="python -m flows.pairs_dask", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    parser.add_argument("--manifests", default="data/manifests", help="folder with clean.parquet and noise.parquet")
    parser.add_argument("--out", default="data/pairs", help="pair set folder (default: data/pairs)")
    parser.add_argument("--root", default=".", help="project root manifest paths are relative to (default: .)")
    parser.add_argument("--address", help="scheduler of an existing Dask cluster, e.g. tcp://host:8786")
    parser.add_argument("--workers", type=int, help="local cluster size (default: pairs.workers)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the process exit code (1 on any failure, with a one-line message)."""
    args = build_parser().parse_args(argv)
    try:
        params = load_params(args.params)
        manifests = Path(args.manifests)
        result = run_pairs_dask(
            manifests / "clean.parquet",
            manifests / "noise.parquet",
            params.pairs.for_profile(params.data.profile),  # distortions only in their profiles
            params.seed,
            Path(args.out),
            sample_rate=params.data.sample_rate,
            root=Path(args.root),
            workers=args.workers,
            address=args.address,
        )
    except (JsqaError, OSError) as exc:
        # User errors, and a cluster that cannot be reached (OSError: refused, timed out), are one
        # line; anything else is a bug and keeps its traceback.
        log.debug("pairs flow failed", exc_info=True)
        first = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        print(f"jsqa-pairs-dask: error: {first}", file=sys.stderr)
        return 1
    print(f"pairs: {result['n_pairs']} JND pairs in {result['n_shards']} shards in {result['out_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
