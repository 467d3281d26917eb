"""Pair generation: plan, render shards in parallel (resumable), write the pair set.

Shards are rendered into a work folder beside the output, ``<out_dir>.partial/``
(:func:`partial_dir`), and moved into ``out_dir`` once every shard is finished. ``dvc repro``
deletes a stage's outputs before running it again, so shards rendered straight into
``out_dir`` by a killed run were lost; the work folder is not an output, and the next run
keeps every shard in it that matches the plan and render settings.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from threadpoolctl import threadpool_limits

from jsqa.config import PairsConfig
from jsqa.data.manifests import read_manifest
from jsqa.errors import AudioError
from jsqa.io import atomic_path, read_json, write_csv, write_json, write_parquet
from jsqa.pairs.plan import plan_columns, plan_pairs, rir_paths
from jsqa.pairs.render import (
    DISTORTION_COLUMNS,
    GAIN_COLUMNS,
    PLAN_COLUMNS,
    ShardJob,
    render_key,
    render_shard,
    segment_samples,
    shard_stem,
    worker_init,
)
from jsqa.pairs.store import PairSet

log = logging.getLogger(__name__)

SKIPPED_COLUMNS = ["utterance_id", "reason", "n_pairs"]
# .parquet: shard recipes as written before RENDER_FORMAT 5 (now .arrow); always stale.
_SHARD_RE = re.compile(r"^shard-(\d{5})\.(npy|json|arrow|parquet)$")
# A shard's files, its recipes (the completion mark) last.
_SHARD_SUFFIXES = (".npy", ".json", ".arrow")


# How shards are spread: called as shard_map(render_shard, jobs), yields one summary per job.
ShardMap = Callable[[Callable[["ShardJob"], dict], list["ShardJob"]], Iterable[dict]]


def _pool_context() -> multiprocessing.context.BaseContext:
    """forkserver: workers fork from a clean server (a plain fork of a process that already
    runs torch or other threads can deadlock) that imports the rendering module once, so
    starting workers is cheap; that module avoids pandas and scipy, whose imports alone
    would cost more CPU than rendering a small corpus."""
    ctx = multiprocessing.get_context("forkserver")
    # "__main__" as well (the default list): else every worker re-runs the main script.
    # threadpoolctl: imported once here, used by every worker's initializer.
    ctx.set_forkserver_preload(["__main__", render_shard.__module__, "threadpoolctl"])
    return ctx


def _same_rows(expected: Mapping[str, np.ndarray], done: pa.Table) -> bool:
    """Column-by-column equality of the planned columns (inf equals inf; dtypes may differ)."""
    names = [c for c in PLAN_COLUMNS + DISTORTION_COLUMNS if c in expected]
    n = len(expected["pair_id"])
    if done.num_rows != n or [c for c in names if c in done.column_names] != names:
        return False
    if any(c in done.column_names for c in DISTORTION_COLUMNS if c not in expected):
        return False
    for c in names:
        x, y = np.asarray(expected[c]), done.column(c).to_numpy(zero_copy_only=False)
        if x.dtype.kind == "f" or y.dtype.kind == "f":
            if not np.array_equal(x.astype(np.float64), y.astype(np.float64)):
                return False
        elif list(map(str, x)) != list(map(str, y)):
            return False
    return True


def _npy_shape(path: Path) -> tuple[int, ...] | None:
    try:
        with open(path, "rb") as fh:
            major, _ = np.lib.format.read_magic(fh)
            reader = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, _ = reader(fh)
        return tuple(shape)
    except (OSError, ValueError):
        return None


def _finished_shard(
    out_dir: Path, shard: int, planned: Mapping[str, np.ndarray], render_key: dict[str, Any], seg: int
) -> tuple[dict[str, Any], pa.Table] | None:
    """The shard's summary and recipes when its files on disk match the plan and settings,
    else None."""
    stem = shard_stem(out_dir, shard)
    recipes, meta_path = stem.with_suffix(".arrow"), stem.with_suffix(".json")
    if not (recipes.exists() and meta_path.exists()):
        return None
    try:
        meta = read_json(meta_path)
        with pa.OSFile(str(recipes), "rb") as source:
            done = pa.ipc.open_file(source).read_all()
    except (OSError, ValueError, pa.ArrowException) as exc:
        log.info("shard %05d: unreadable (%s), rendering again", shard, exc)
        return None
    if meta.get("render") != render_key or meta.get("n_planned") != len(planned["pair_id"]):
        return None
    skipped_ids = np.array([s["pair_id"] for s in meta.get("skipped", [])], dtype=np.int64)
    keep = ~np.isin(planned["pair_id"], skipped_ids)
    if not _same_rows({c: v[keep] for c, v in planned.items()}, done):
        return None
    if _npy_shape(stem.with_suffix(".npy")) != (done.num_rows, 2, seg):
        return None
    return meta, done


def _remove_stale_shards(out_dir: Path, n_shards: int) -> None:
    """Drop shard files a previous, larger plan left behind, and temporaries of a killed run."""
    if not out_dir.is_dir():
        return
    for p in out_dir.iterdir():
        m = _SHARD_RE.match(p.name)
        stale = m is not None and (int(m.group(1)) >= n_shards or m.group(2) == "parquet")
        if stale or p.name.startswith(".shard-"):
            log.info("removing stale %s", p.name)
            p.unlink()


def _skipped_table(summaries: list[dict[str, Any]]) -> pd.DataFrame:
    rows = [s for summary in summaries for s in summary["skipped"]]
    if not rows:
        return pd.DataFrame({"utterance_id": [], "reason": [], "n_pairs": []}).astype(
            {"utterance_id": str, "reason": str, "n_pairs": np.int64}
        )
    df = pd.DataFrame(rows)
    return df.groupby(["utterance_id", "reason"], sort=True).size().rename("n_pairs").reset_index()[SKIPPED_COLUMNS]


def _arrow_column(values: np.ndarray) -> pa.Array:
    # Text columns arrive as numpy object arrays; store them as plain parquet strings.
    return pa.array(values, type=pa.string()) if values.dtype.kind in "OUS" else pa.array(values)


def _plan_table(columns: Mapping[str, np.ndarray]) -> pa.Table:
    """The planned columns as one Arrow table, converted once (text as plain strings): each
    shard's recipes are a slice of it, not a conversion of their own."""
    return pa.table({c: _arrow_column(columns[c]) for c in PLAN_COLUMNS + DISTORTION_COLUMNS if c in columns})


def _write_shard_recipes(
    out_dir: Path, shard: int, planned: pa.Table, rendered: dict[str, Any]
) -> tuple[dict[str, Any], pa.Table]:
    """Write a rendered shard's recipes (its ``planned`` rows that were kept, with gains and
    ``row``, the position in the .npy): the shard's completion mark, written after its audio
    and summary. Returns the summary without the arrays, and the recipes.

    Built with pyarrow from the plan's Arrow slice: through pandas, this bookkeeping cost
    the main process more than a worker's rendering of the shard.
    """
    summary = {k: v for k, v in rendered.items() if k not in ("kept", "gains")}
    kept = np.asarray(rendered["kept"], dtype=bool)
    table = planned if kept.all() else planned.filter(pa.array(kept))
    gains = np.asarray(rendered["gains"], dtype=np.float64).reshape(int(kept.sum()), len(GAIN_COLUMNS))
    for j, c in enumerate(GAIN_COLUMNS):
        table = table.append_column(c, pa.array(gains[:, j]))
    table = table.append_column("row", pa.array(np.arange(len(gains), dtype=np.int64)))
    # Arrow IPC, not parquet: read back only on resume, and written in a third of the time
    # (pairs.parquet holds every recipe for everyone else).
    with atomic_path(shard_stem(out_dir, shard).with_suffix(".arrow")) as tmp:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
    return summary, table


def _plan_arrays(plan: pd.DataFrame) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The planned columns as numpy arrays (text as object arrays) and the shard bounds:
    shard ``s`` is rows ``bounds[s]:bounds[s + 1]``."""
    columns = {c: plan[c].to_numpy() for c in plan_columns(plan)}
    n_shards = int(columns["shard"][-1]) + 1 if len(plan) else 0
    return columns, np.searchsorted(columns["shard"], np.arange(n_shards + 1))


def _shard_jobs(
    shards: dict[int, dict[str, np.ndarray]], key: dict[str, Any], root: Path, out_dir: Path
) -> list[ShardJob]:
    """Jobs of ``shards`` (shard -> its planned rows as numpy columns) rendered with the
    settings ``key`` (:func:`render_key`): a worker needs no pandas and no config.

    Each path is resolved once for the whole run, not once per shard that names it.
    """
    resolved: dict[str, str] = {}
    root_str = str(root)
    jobs = []
    for shard, rows in shards.items():
        names = set()
        for c in ("clean_path", "noise_path", "rir_path"):
            if c in rows:
                names.update(rows[c].tolist())
        names.discard("")
        for p in names:
            if p not in resolved:
                # resolve() with plain strings: pathlib costs more than a worker's decode here.
                resolved[p] = p if os.path.isabs(p) else os.path.join(root_str, p)
        jobs.append(ShardJob(shard, rows, key, {p: resolved[p] for p in sorted(names)}, out_dir))
    return jobs


def _plan(
    clean_manifest: Path, noise_manifest: Path, cfg: PairsConfig, seed: int, sample_rate: int, root: Path, out_dir: Path
) -> pd.DataFrame:
    """Plan the pair set from the manifests and write it to ``out_dir/plan.parquet``."""
    clean = read_manifest(clean_manifest, "clean")
    noise = read_manifest(noise_manifest, "noise")
    rirs = rir_paths(cfg, sample_rate, root)
    plan = plan_pairs(clean, noise, cfg, seed, sample_rate, rirs)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_parquet(out_dir / "plan.parquet", plan)
    return plan


def partial_dir(out_dir: Path) -> Path:
    """The work folder shards are rendered in before they move into ``out_dir``: its sibling
    ``<name>.partial`` (``data/pairs`` -> ``data/pairs.partial``), so never one of DVC's outputs,
    and on the same file system, so the move is a rename (a linked ``out_dir`` is resolved: the
    sibling of the folder it points to)."""
    out_dir = Path(out_dir).resolve()
    return out_dir.with_name(f"{out_dir.name}.partial")


def _resume(
    dirs: tuple[Path, Path], columns: Mapping[str, np.ndarray], bounds: np.ndarray, key: dict[str, Any], seg: int
) -> tuple[dict[int, dict[str, Any]], dict[int, pa.Table], dict[int, dict[str, np.ndarray]], list[int]]:
    """Split the shards (rows ``bounds[s]:bounds[s + 1]`` of ``columns``) into those already
    finished on disk, with their summaries and recipes, and those to render, with their rows.

    ``dirs`` is (out_dir, work folder): a shard is looked for in out_dir first (a finished pair
    set run again outside DVC), then in the work folder (a killed run); the last item returned
    lists the shards kept from the work folder, which still have to move into out_dir.
    """
    summaries: dict[int, dict[str, Any]] = {}
    # Each shard's recipes as on disk, kept in memory rather than read back at the end.
    shard_recipes: dict[int, pa.Table] = {}
    to_render: dict[int, dict[str, np.ndarray]] = {}
    in_work: list[int] = []
    for shard in range(len(bounds) - 1):
        rows = {c: v[bounds[shard] : bounds[shard + 1]] for c, v in columns.items()}
        for d in dirs:
            finished = _finished_shard(d, shard, rows, key, seg) if d.is_dir() else None
            if finished is not None:
                summaries[shard], shard_recipes[shard] = finished
                if d == dirs[1]:
                    in_work.append(shard)
                break
        else:
            to_render[shard] = rows
    return summaries, shard_recipes, to_render, in_work


def _move_shards(work: Path, out_dir: Path, shards: Iterable[int]) -> None:
    """Move finished ``shards`` from ``work`` into ``out_dir``, each file by one rename. An
    older recipes file in out_dir is removed first and the new one moves last, so a run killed
    part-way through a shard's move never leaves a completion mark beside another render's audio."""
    for shard in shards:
        src, dst = shard_stem(work, shard), shard_stem(out_dir, shard)
        dst.with_suffix(".arrow").unlink(missing_ok=True)
        for suffix in _SHARD_SUFFIXES:
            os.replace(src.with_suffix(suffix), dst.with_suffix(suffix))


def _render_shards(jobs: list[ShardJob], workers: int, shard_map: ShardMap | None) -> Iterator[dict[str, Any]]:
    """Render ``jobs`` with ``shard_map`` when given, else ``workers`` processes (1: in this
    process); yields each shard's :func:`render_shard` result, while the pool is still up."""
    if shard_map is not None:
        yield from shard_map(render_shard, jobs)
    elif workers > 1 and len(jobs) > 1:
        ctx = _pool_context()
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=ctx, initializer=worker_init) as pool:
            yield from pool.map(render_shard, jobs)
    else:
        # One shard at a time in this process: as in a pool worker, BLAS on one thread
        # (restored afterwards; the caller may want its threads back for training).
        with threadpool_limits(1, user_api="blas"):
            for job in jobs:
                yield render_shard(job)


def _report_skipped(ordered: list[dict[str, Any]]) -> tuple[pd.DataFrame, int]:
    """The skipped pairs (:data:`SKIPPED_COLUMNS`) and the count of clipped samples of the
    shards' summaries, each logged as a warning."""
    skipped = _skipped_table(ordered)
    for rec in skipped.itertuples(index=False):
        log.warning("skipped %d pair(s) of %s: %s", rec.n_pairs, rec.utterance_id, rec.reason)
    clipped = sum(s.get("n_clipped_samples", 0) for s in ordered)
    if clipped:
        log.warning("pairs: %d samples clipped to int16 range (lower pairs.speech_level_dbov)", clipped)
    return skipped, clipped


def _write_pair_set(
    out_dir: Path, ordered: list[dict[str, Any]], shard_recipes: list[pa.Table], n_planned: int,
    cfg: PairsConfig, seg: int, sample_rate: int,
) -> pd.DataFrame:  # fmt: skip
    """Write skipped.csv, pairs.parquet (every shard's recipes) and index.json from the shards'
    summaries and recipes, in shard order; returns the recipes."""
    skipped, clipped = _report_skipped(ordered)
    write_csv(out_dir / "skipped.csv", skipped)
    table = pa.concat_tables(shard_recipes, promote_options="permissive")
    if table.num_rows == 0:
        raise AudioError(f"{out_dir}: no pair could be rendered (reasons in skipped.csv)")
    with atomic_path(out_dir / "pairs.parquet") as tmp:
        pq.write_table(table, tmp)
    recipes = table.to_pandas()
    index = {
        "n_pairs": len(recipes),
        "n_planned": n_planned,
        "n_skipped": n_planned - len(recipes),
        "n_shards": len(ordered),
        "segment_samples": seg,
        "sample_rate": int(sample_rate),
        "jnd_db": float(cfg.jnd_db),
        "distortion_steps": cfg.distortions.steps,
        "n_clipped_samples": clipped,
        "shards": [{"shard": s["shard"], "n_planned": s["n_planned"], "n_rendered": s["n_rendered"]} for s in ordered],
    }
    write_json(out_dir / "index.json", index)
    return recipes


def _finish_shards(
    dirs: tuple[Path, Path], columns: Mapping[str, np.ndarray], bounds: np.ndarray, key: dict[str, Any], seg: int,
    root: Path, workers: int, shard_map: ShardMap | None,
) -> tuple[dict[int, dict[str, Any]], dict[int, pa.Table], list[int]]:  # fmt: skip
    """Every shard finished: kept from ``dirs`` (out_dir, work folder: :func:`_resume`) or
    rendered into the work folder. Returns their summaries and recipes, and the shards that
    are in the work folder, in order."""
    work = dirs[1]
    n_shards = len(bounds) - 1
    for d in dirs:
        _remove_stale_shards(d, n_shards)
    summaries, shard_recipes, to_render, in_work = _resume(dirs, columns, bounds, key, seg)
    jobs = _shard_jobs(to_render, key, root, work)
    log.info(
        "pairs: %d planned in %d shards; %d shards kept (%d resumed from %s), %d to render",
        len(columns["pair_id"]), n_shards, len(summaries), len(in_work), work, len(jobs),
    )  # fmt: skip
    if jobs:
        work.mkdir(parents=True, exist_ok=True)
        table = _plan_table(columns)
        for rendered in _render_shards(jobs, workers, shard_map):
            shard = rendered["shard"]
            planned = table.slice(bounds[shard], bounds[shard + 1] - bounds[shard])
            summaries[shard], shard_recipes[shard] = _write_shard_recipes(work, shard, planned, rendered)
    return summaries, shard_recipes, sorted(in_work + list(to_render))


def generate_pairs(
    clean_manifest: Path,
    noise_manifest: Path,
    cfg: PairsConfig,
    seed: int,
    out_dir: Path,
    sample_rate: int = 16000,
    root: Path = Path("."),
    shard_map: ShardMap | None = None,
) -> PairSet:
    """Plan and render the JND pair set into ``out_dir`` (layout: module docstring).

    Shards are rendered by ``cfg.workers`` processes (1: in this process), or by
    ``shard_map(render_shard, jobs)`` when given: the hook an external engine (a Prefect task
    runner backed by Dask, say) uses to spread shards over machines. Shards are rendered in
    :func:`partial_dir` and moved into ``out_dir`` at the end; a shard whose files, in either
    folder, already match the plan and render settings is kept. Utterances (or noises) that are
    unreadable or silent are skipped with a warning and listed in ``skipped.csv``.
    """
    out_dir = Path(out_dir)
    plan = _plan(clean_manifest, noise_manifest, cfg, seed, sample_rate, Path(root), out_dir)
    seg = segment_samples(cfg, sample_rate)
    columns, bounds = _plan_arrays(plan)
    work = partial_dir(out_dir)
    summaries, shard_recipes, in_work = _finish_shards(
        (out_dir, work), columns, bounds, render_key(cfg, sample_rate), seg, Path(root), cfg.workers, shard_map
    )
    n_shards = len(bounds) - 1
    # The pair set's own files first, then the shards by renames: a run killed in between
    # leaves the shards not yet moved in the work folder, where the next run finds them.
    recipes = _write_pair_set(
        out_dir, [summaries[s] for s in range(n_shards)], [shard_recipes[s] for s in range(n_shards)],
        len(plan), cfg, seg, sample_rate,
    )  # fmt: skip
    _move_shards(work, out_dir, in_work)
    if work.is_dir():
        shutil.rmtree(work)
    return PairSet(out_dir, recipes, seg, int(sample_rate), float(cfg.jnd_db), cfg.distortions.steps)
