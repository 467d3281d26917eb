"""JND audio pairs: the only place the positive-pair rule lives.

A *positive pair* is one clean speech segment mixed with one noise segment at two SNRs that a
listener cannot tell apart: ``|snr_a - snr_b| < jnd_db`` (about 3 dB for speech in noise,
McShefferty et al. 2015). A *clean anchor* pair has ``snr_a = +inf`` (the clean segment) and
``snr_b`` in ``[snr_hi, snr_hi + jnd_db)``, i.e. noise too faint to be noticed against clean.
With ``pairs.distortions`` enabled, a pair may also carry one distortion beyond noise
(:mod:`jsqa.distortions`), applied to both members after mixing with one seed; the pair stays
positive only if its two parameters are also within that distortion's step
(:func:`jsqa.distortions.within_step`). The recipes then have :data:`DISTORTION_COLUMNS`
("none" / 0 for undistorted pairs); with all distortions off they are absent, so plans,
recipes and shards are exactly those of a noise-only run.
SNR is defined in :mod:`jsqa.levels`: speech active level (set on the whole utterance to
``pairs.speech_level_dbov``) minus the RMS level of the scaled noise over the segment.

Stages:

* :func:`plan_pairs` makes every random choice, deterministically from (seed, utterance index),
  so the plan does not depend on the number of workers or on other utterances.
* :func:`render_pair` turns one recipe row plus audio into the two members; it draws nothing.
  It and the shard renderer live in :mod:`jsqa.pair_render`, the light module pool workers
  import (re-exported here).
* :func:`generate_pairs` plans, renders shards in parallel (resumable), and writes the pair set;
  :func:`load_pairs` / :class:`PairSet` read it back for training.

Layout of ``out_dir``: ``plan.parquet``; per shard ``shard-NNNNN.npy`` (int16
``[n, 2, segment_samples]``), ``shard-NNNNN.json`` (render settings and skipped pairs) and
``shard-NNNNN.arrow`` (its recipes with gains, an Arrow IPC file, written last: the shard's
completion mark); then ``skipped.csv``, ``pairs.parquet`` (all recipes) and ``index.json``.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from threadpoolctl import threadpool_limits

from jsqa import distortions
from jsqa.config import PairsConfig
from jsqa.data.manifests import (
    CLEAN_COLUMNS,
    NOISE_COLUMNS,
    read_manifest,
    require_columns,
    resolve,
)
from jsqa.errors import AudioError, ConfigError, ManifestError
from jsqa.io import atomic_path, read_json, read_parquet, write_csv, write_json, write_parquet
from jsqa.pair_render import (
    DISTORTION_COLUMNS,
    GAIN_COLUMNS,
    INT16_SCALE,
    PLAN_COLUMNS,
    ShardJob,
    crop,
    loop_segment,
    render_key,
    render_pair,
    render_shard,
    segment_samples,
    shard_stem,
    worker_init,
)

log = logging.getLogger(__name__)

SKIPPED_COLUMNS = ["utterance_id", "reason", "n_pairs"]
# .parquet: shard recipes as written before RENDER_FORMAT 5 (now .arrow); always stale.
_SHARD_RE = re.compile(r"^shard-(\d{5})\.(npy|json|arrow|parquet)$")


def plan_columns(frame: pd.DataFrame) -> list[str]:
    """The planned columns of ``frame``: :data:`PLAN_COLUMNS`, plus the distortion ones if any."""
    extra = DISTORTION_COLUMNS if DISTORTION_COLUMNS[0] in frame.columns else []
    return PLAN_COLUMNS + extra


def within_jnd(
    snr_a: float | np.ndarray, snr_b: float | np.ndarray, jnd_db: float
) -> bool | np.ndarray:
    """True where two SNRs are less than one JND apart; two +inf (clean) count as within.

    Works elementwise on arrays (broadcasting), returning a bool array; on scalars a bool.
    """
    if not jnd_db > 0:
        raise ConfigError(f"pairs.jnd_db: must be positive, got {jnd_db}")
    a = np.asarray(snr_a, dtype=np.float64)
    b = np.asarray(snr_b, dtype=np.float64)
    with np.errstate(invalid="ignore"):  # inf - inf is NaN, which compares False
        out = (np.abs(a - b) < jnd_db) | (np.isposinf(a) & np.isposinf(b))
    return bool(out) if out.ndim == 0 else out


# Recipe columns two pairs must share to be heard alike: one utterance, crop and noise segment,
# and (when distortions are on) one distortion realisation.
_SEGMENT_KEYS = ("utterance_id", "crop_offset", "noise_id", "noise_offset")
_REALISATION_KEYS = ("distortion", "dist_seed", "rir_path")


def same_percept(
    a: Mapping[str, np.ndarray],
    b: Mapping[str, np.ndarray],
    jnd_db: float,
    steps: Mapping[str, float] | None = None,
) -> np.ndarray:
    """Elementwise (broadcasting): are recipes ``a`` and ``b`` (columns as arrays) within one JND?

    They are when they share utterance, crop, noise file and offset, their a-member SNRs
    satisfy :func:`within_jnd`, and, where distortion columns are present, they share the
    distortion kind and realisation (seed, room response) with a-member parameters within
    that kind's step (:func:`jsqa.distortions.within_step`; ``steps`` per kind, default
    :data:`jsqa.distortions.DEFAULT_STEPS`). A clean (undistorted) and a distorted recipe
    never are. Recipes without distortion columns count as undistorted.
    """
    steps = {**distortions.DEFAULT_STEPS, **(steps or {})}
    out = np.asarray(within_jnd(a["snr_a"], b["snr_a"], jnd_db))
    for key in _SEGMENT_KEYS:
        out = out & (np.asarray(a[key]) == np.asarray(b[key]))
    # What an undistorted recipe (no distortion columns) holds in each realisation column.
    plain = {"distortion": np.array(distortions.NONE, dtype=object), "dist_seed": 0, "rir_path": ""}
    for key in _REALISATION_KEYS:
        if key in a or key in b:
            out = out & (np.asarray(a.get(key, plain[key])) == np.asarray(b.get(key, plain[key])))
    kind_a, kind_b = np.asarray(a.get("distortion", plain["distortion"])), np.asarray(b.get("distortion", plain["distortion"]))
    if "dist_param_a" in a and "dist_param_a" in b:
        params = np.ones(out.shape, dtype=bool)
        for kind in set(np.unique(kind_a).tolist()) - {distortions.NONE}:
            both = (kind_a == kind) & (kind_b == kind)
            close = distortions.within_step(kind, a["dist_param_a"], b["dist_param_a"], steps[kind])
            params &= ~both | close
        out = out & params
    return out


def plan_uniforms(seed: int, start: int, count: int, width: int) -> np.ndarray:
    """The uniforms ``[count, width]`` that plan utterances ``start .. start + count - 1``.

    Utterance ``i`` owns draws ``[i * width, (i + 1) * width)`` of ``default_rng(seed)``
    (PCG64, one 64-bit output per double), so a row depends on (seed, i, width) only, the
    whole plan comes from one vectorised draw, and one utterance is replayed alone by
    advancing the stream ``i * width`` outputs (what ``start`` does).
    """
    rng = np.random.default_rng(int(seed))
    rng.bit_generator.advance(int(start) * int(width))
    return rng.random((int(count), int(width)))


def plan_width(cfg: PairsConfig) -> int:
    """Uniforms drawn per utterance by :func:`plan_pairs` (the row width of :func:`plan_uniforms`)."""
    k = cfg.pairs_per_utterance
    draws = 1 if cfg.shared_segment else k
    return 3 * draws + 4 * k + 2 * draws + 2 * k


def _check_config(cfg: PairsConfig, sample_rate: int) -> None:
    lo, hi = cfg.snr_db
    problems = {
        "pairs.jnd_db": cfg.jnd_db > 0,
        "pairs.snr_db": math.isfinite(lo) and math.isfinite(hi) and lo < hi,
        "pairs.clean_anchor_prob": 0.0 <= cfg.clean_anchor_prob <= 1.0,
        "pairs.pairs_per_utterance": cfg.pairs_per_utterance >= 1,
        "pairs.segment_seconds": cfg.segment_seconds > 0 and segment_samples(cfg, sample_rate) > 0,
        "pairs.shard_size": cfg.shard_size >= 1,
        "pairs.workers": cfg.workers >= 1,
        "pairs.speech_level_dbov": math.isfinite(cfg.speech_level_dbov) and cfg.speech_level_dbov < 0,
    }
    for key, ok in problems.items():
        if not ok:
            raise ConfigError(f"{key}: invalid value {getattr(cfg, key.split('.')[1])!r}")
    if sample_rate <= 0:
        raise ConfigError(f"data.sample_rate: must be positive, got {sample_rate}")


def _samples(durations: pd.Series, sample_rate: int, source: str) -> np.ndarray:
    d = durations.to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(d)) or np.any(d <= 0):
        raise ManifestError(f"{source}: column duration must be positive and finite")
    return np.maximum(np.round(d * sample_rate).astype(np.int64), 1)


def _scaled_index(u: np.ndarray, n: np.ndarray | int) -> np.ndarray:
    """Uniform integers in [0, n) from uniforms in [0, 1)."""
    return np.minimum(np.floor(u * n).astype(np.int64), np.asarray(n) - 1)


def _snrs_from_uniforms(u: np.ndarray, cfg: PairsConfig) -> tuple[np.ndarray, np.ndarray]:
    """SNRs of all pairs from uniforms ``u`` of shape [utterances, k, 4] (stratified, anchors).

    The four uniforms of a pair decide: clean anchor or not, snr_a within its stratum, the
    step d = snr_b - snr_a in (-jnd, jnd), and an anchor's snr_b in [hi, hi + jnd).
    """
    lo, hi = cfg.snr_db
    jnd = cfg.jnd_db
    k = u.shape[1]
    anchor = u[..., 0] < cfg.clean_anchor_prob
    # Pair j draws from the j-th of k equal sub-ranges, so the hard negatives of one
    # utterance are spread over the quality range instead of clumping.
    width = (hi - lo) / k
    snr_a = np.minimum(lo + (np.arange(k) + u[..., 1]) * width, hi)
    snr_b = snr_a + jnd * (2.0 * u[..., 2] - 1.0)
    # d = -jnd itself (u = 0), or a + d rounding onto the bound, would break the rule:
    # halve such steps (a measure-zero event, kept deterministic).
    bad = ~within_jnd(snr_a, snr_b, jnd)
    while bad.any():
        snr_b[bad] = snr_a[bad] + 0.5 * (snr_b[bad] - snr_a[bad])
        bad = ~within_jnd(snr_a, snr_b, jnd)
    anchor_b = np.minimum(hi + u[..., 3] * jnd, np.nextafter(hi + jnd, -np.inf))
    return np.where(anchor, np.inf, snr_a), np.where(anchor, anchor_b, snr_b)


def plan_pairs(
    clean: pd.DataFrame,
    noise: pd.DataFrame,
    cfg: PairsConfig,
    seed: int,
    sample_rate: int,
    rir_paths: Sequence[str] = (),
) -> pd.DataFrame:
    """Draw the recipe of every pair (columns :data:`PLAN_COLUMNS`); all randomness is here.

    Utterance ``i`` gets row ``i`` of :func:`plan_uniforms` (its own span of the run seed's
    stream; the recipes' ``seed`` column is that run seed) and ``cfg.pairs_per_utterance``
    consecutive pair ids. Noise files are chosen uniformly, noise
    offsets uniformly within the file (the noise loops), crop offsets uniformly so the
    segment fits (offset 0 and zero padding for a short utterance). With ``cfg.shared_segment``
    (the default) the pairs of one utterance share noise file, noise offset and crop, so
    they differ only in SNR: hard negatives that isolate quality. SNRs: see
    :func:`_snrs_from_uniforms` and the module docstring.

    Distortions (when enabled) take the last uniforms of the utterance's row, so turning
    them on changes no other column: the kind and ``dist_seed`` per segment draw
    (shared by an utterance's pairs with ``shared_segment``), member a's parameter and b's
    within-step offset per pair. Columns :data:`DISTORTION_COLUMNS` are added only then.
    With ``pairs.distortions.reverb.rir_folder`` set, ``rir_paths`` are its room responses
    (:func:`rir_paths`) and a reverb pair records the one it uses
    (:func:`jsqa.distortions.pick_rir` of its ``dist_seed``) in ``rir_path``.
    """
    _check_config(cfg, sample_rate)
    specs = distortions.check_specs(cfg.distortions, sample_rate)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed: must be a non-negative integer, got {seed!r}")
    require_columns(clean, CLEAN_COLUMNS, "clean manifest")
    require_columns(noise, NOISE_COLUMNS, "noise manifest")
    if len(clean) == 0:
        raise ManifestError("clean manifest: no utterances to make pairs from")
    if len(noise) == 0:
        raise ManifestError("noise manifest: no noise files to mix with")

    seg = segment_samples(cfg, sample_rate)
    k = cfg.pairs_per_utterance
    clean_len = _samples(clean["duration"], sample_rate, "clean manifest")
    noise_len = _samples(noise["duration"], sample_rate, "noise manifest")
    noise_ids = noise["id"].astype(str).to_numpy()
    noise_paths = noise["path"].astype(str).to_numpy()

    n_utt, n = len(clean), len(clean) * k
    draws = 1 if cfg.shared_segment else k
    # One row of uniforms per utterance; everything else is vectorised over utterances.
    base = 3 * draws + 4 * k
    # The distortion uniforms come last, and are drawn whether or not any distortion is on,
    # so turning one on changes no other column.
    u = plan_uniforms(seed, 0, n_utt, plan_width(cfg))
    seg_u = np.repeat(u[:, : 3 * draws].reshape(n_utt, draws, 3), k // draws, axis=1)
    noise_idx = _scaled_index(seg_u[..., 0], len(noise))
    noise_offset = _scaled_index(seg_u[..., 1], noise_len[noise_idx])
    crop_room = np.maximum(clean_len - seg, 0)[:, None] + 1
    crop_offset = _scaled_index(seg_u[..., 2], crop_room)
    snr_a, snr_b = _snrs_from_uniforms(u[:, 3 * draws : base].reshape(n_utt, k, 4), cfg)
    cols = {
        "noise_idx": noise_idx.ravel(),
        "noise_offset": noise_offset.ravel(),
        "crop_offset": crop_offset.ravel(),
        "snr_a": snr_a.ravel(),
        "snr_b": snr_b.ravel(),
        "seed": np.full(n, int(seed), dtype=np.int64),
    }

    pair_id = np.arange(n, dtype=np.int64)
    utt = np.repeat(np.arange(len(clean)), k)
    plan = pd.DataFrame(
        {
            "pair_id": pair_id,
            "utterance_id": clean["id"].astype(str).to_numpy()[utt],
            "speaker": clean["speaker"].astype(str).to_numpy()[utt],
            "clean_path": clean["path"].astype(str).to_numpy()[utt],
            "noise_id": noise_ids[cols["noise_idx"]],
            "noise_path": noise_paths[cols["noise_idx"]],
            "noise_offset": cols["noise_offset"],
            "crop_offset": cols["crop_offset"],
            "snr_a": cols["snr_a"],
            "snr_b": cols["snr_b"],
            "seed": cols["seed"],
            "shard": pair_id // cfg.shard_size,
        }
    )
    if not distortions.enabled(cfg.distortions):
        return plan[PLAN_COLUMNS]
    dist_u = np.repeat(u[:, base : base + 2 * draws].reshape(n_utt, draws, 2), k // draws, axis=1)
    pair_u = u[:, base + 2 * draws :].reshape(n_utt, k, 2)
    for col, values in _distortion_columns(specs, dist_u.reshape(n, 2), pair_u.reshape(n, 2)).items():
        plan[col] = values
    plan["rir_path"] = ""
    reverb = cfg.distortions.reverb
    if reverb.rir_folder and reverb.prob > 0:
        if not rir_paths:
            raise ConfigError("pairs.distortions.reverb.rir_folder: set, but no room responses passed to plan_pairs")
        is_reverb = plan["distortion"].to_numpy() == "reverb"
        pick = distortions.pick_rir(plan["dist_seed"].to_numpy()[is_reverb], len(rir_paths))
        plan.loc[is_reverb, "rir_path"] = np.asarray(list(rir_paths), dtype=object)[pick]
    return plan[PLAN_COLUMNS + DISTORTION_COLUMNS]


def _distortion_columns(
    specs: list[distortions.Spec], seg_u: np.ndarray, pair_u: np.ndarray
) -> dict[str, np.ndarray]:
    """Distortion recipe columns from per-pair uniforms: seg_u (kind, seed), pair_u (a, step)."""
    n = len(seg_u)
    kind = np.full(n, distortions.NONE, dtype=object)
    param_a, param_b = np.zeros(n), np.zeros(n)
    # Kinds take consecutive slices of [0, 1) of width prob; the rest is "none".
    edges = np.cumsum([s.prob for s in specs])
    choice = np.searchsorted(edges, seg_u[:, 0], side="right")
    for i, spec in enumerate(specs):
        sel = (choice == i) & (spec.prob > 0)
        if sel.any():
            kind[sel] = spec.kind
            param_a[sel], param_b[sel] = distortions.draw_params(spec, pair_u[sel, 0], pair_u[sel, 1])
    seed = np.floor(seg_u[:, 1] * 2.0**53).astype(np.int64)
    return {
        "distortion": kind.astype(str),
        "dist_param_a": param_a,
        "dist_param_b": param_b,
        "dist_seed": np.where(kind == distortions.NONE, 0, seed).astype(np.int64),
    }


# ---------------------------------------------------------------- shard rendering


def rir_paths(cfg: PairsConfig, sample_rate: int, root: Path = Path(".")) -> list[str]:
    """The measured room responses of ``pairs.distortions.reverb.rir_folder`` (relative to
    ``root``), named as recipes record them; each is read and checked once here, so a broken
    file fails the run before rendering. Empty when the folder is unset or reverb is off.

    Raises ConfigError for a missing or empty folder, AudioError naming an unreadable or
    non-decaying file.
    """
    reverb = cfg.distortions.reverb
    if not reverb.rir_folder or reverb.prob <= 0:
        return []
    folder = resolve(reverb.rir_folder, root)
    names = []
    for path in distortions.list_rirs(folder):
        distortions.load_rir(path, sample_rate)
        names.append((Path(reverb.rir_folder) / path.relative_to(folder)).as_posix())
    return names


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
    return (
        df.groupby(["utterance_id", "reason"], sort=True)
        .size()
        .rename("n_pairs")
        .reset_index()[SKIPPED_COLUMNS]
    )


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


def _distortion_steps(cfg: PairsConfig) -> dict[str, float]:
    """Each distortion kind's within-one-JND step as configured (kept in index.json)."""
    return {s.kind: float(s.step) for s in distortions.specs(cfg.distortions)}


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
    runner backed by Dask, say) uses to spread shards over machines. A shard whose files
    already match the plan and render settings is kept. Utterances (or noises) that are
    unreadable or silent are skipped with a warning and listed in ``skipped.csv``.
    """
    out_dir = Path(out_dir)
    clean = read_manifest(clean_manifest, "clean")
    noise = read_manifest(noise_manifest, "noise")
    rirs = rir_paths(cfg, sample_rate, Path(root))
    plan = plan_pairs(clean, noise, cfg, seed, sample_rate, rirs)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_parquet(out_dir / "plan.parquet", plan)

    seg = segment_samples(cfg, sample_rate)
    key = render_key(cfg, sample_rate)
    columns, bounds = _plan_arrays(plan)
    n_shards = len(bounds) - 1
    _remove_stale_shards(out_dir, n_shards)

    summaries: dict[int, dict[str, Any]] = {}
    # Each shard's recipes as on disk, kept in memory rather than read back at the end.
    shard_recipes: dict[int, pa.Table] = {}
    to_render: dict[int, dict[str, np.ndarray]] = {}
    for shard in range(n_shards):
        rows = {c: v[bounds[shard] : bounds[shard + 1]] for c, v in columns.items()}
        finished = _finished_shard(out_dir, shard, rows, key, seg)
        if finished is not None:
            summaries[shard], shard_recipes[shard] = finished
        else:
            to_render[shard] = rows
    jobs = _shard_jobs(to_render, key, Path(root), out_dir)
    log.info(
        "pairs: %d planned in %d shards; %d shards kept, %d to render",
        len(plan), n_shards, len(summaries), len(jobs),
    )

    table = _plan_table(columns) if jobs else None

    def finish(rendered: dict[str, Any]) -> None:
        shard = rendered["shard"]
        planned = table.slice(bounds[shard], bounds[shard + 1] - bounds[shard])
        summaries[shard], shard_recipes[shard] = _write_shard_recipes(out_dir, shard, planned, rendered)

    if shard_map is not None:
        for summary in shard_map(render_shard, jobs):
            finish(summary)
    elif cfg.workers > 1 and len(jobs) > 1:
        ctx = _pool_context()
        with ProcessPoolExecutor(min(cfg.workers, len(jobs)), mp_context=ctx, initializer=worker_init) as pool:
            for summary in pool.map(render_shard, jobs):
                finish(summary)
    else:
        # One shard at a time in this process: as in a pool worker, BLAS on one thread
        # (restored afterwards; the caller may want its threads back for training).
        with threadpool_limits(1, user_api="blas"):
            for job in jobs:
                finish(render_shard(job))

    ordered = [summaries[s] for s in range(n_shards)]
    skipped = _skipped_table(ordered)
    for rec in skipped.itertuples(index=False):
        log.warning("skipped %d pair(s) of %s: %s", rec.n_pairs, rec.utterance_id, rec.reason)
    clipped = sum(s.get("n_clipped_samples", 0) for s in ordered)
    if clipped:
        log.warning("pairs: %d samples clipped to int16 range (lower pairs.speech_level_dbov)", clipped)

    write_csv(out_dir / "skipped.csv", skipped)
    table = pa.concat_tables([shard_recipes[s] for s in range(n_shards)], promote_options="permissive")
    if table.num_rows == 0:
        raise AudioError(f"{out_dir}: no pair could be rendered (reasons in skipped.csv)")
    with atomic_path(out_dir / "pairs.parquet") as tmp:
        pq.write_table(table, tmp)
    recipes = table.to_pandas()
    index = {
        "n_pairs": len(recipes),
        "n_planned": len(plan),
        "n_skipped": len(plan) - len(recipes),
        "n_shards": n_shards,
        "segment_samples": seg,
        "sample_rate": int(sample_rate),
        "jnd_db": float(cfg.jnd_db),
        "distortion_steps": _distortion_steps(cfg),
        "n_clipped_samples": clipped,
        "shards": [
            {"shard": s["shard"], "n_planned": s["n_planned"], "n_rendered": s["n_rendered"]}
            for s in ordered
        ],
    }
    write_json(out_dir / "index.json", index)
    return PairSet(out_dir, recipes, seg, int(sample_rate), float(cfg.jnd_db), _distortion_steps(cfg))


# ---------------------------------------------------------------- reading


class PairSet:
    """A rendered pair set: recipes plus memory-mapped shards.

    Index ``i`` is the position in ``recipes`` (``pairs.parquet`` order), not ``pair_id``:
    skipped pairs leave gaps in ``pair_id`` but not in positions.
    """

    def __init__(
        self,
        out_dir: Path,
        recipes: pd.DataFrame,
        segment_samples: int,
        sample_rate: int,
        jnd_db: float,
        distortion_steps: Mapping[str, float] | None = None,
    ) -> None:
        require_columns(recipes, PLAN_COLUMNS + ["row"], f"{out_dir}/pairs.parquet")
        self.out_dir = Path(out_dir)
        self.recipes = recipes.reset_index(drop=True)
        self.segment_samples = int(segment_samples)
        self.sample_rate = int(sample_rate)
        self.jnd_db = float(jnd_db)
        self._shard = self.recipes["shard"].to_numpy(np.int64)
        self._row = self.recipes["row"].to_numpy(np.int64)
        self.distortion_steps = dict(distortion_steps or distortions.DEFAULT_STEPS)
        # The columns same_percept compares; strings as integer codes, so the B x B
        # comparisons in positives_mask are cheap.
        self._percept: dict[str, np.ndarray] = {}
        for c in ("snr_a", "dist_param_a"):
            if c in self.recipes:
                self._percept[c] = self.recipes[c].to_numpy(np.float64)
        for c in _SEGMENT_KEYS + _REALISATION_KEYS:
            if c in self.recipes and c != "distortion":
                col = self.recipes[c]
                self._percept[c] = col.to_numpy(np.int64) if col.dtype.kind in "iu" else pd.factorize(col)[0]
        if "distortion" in self.recipes:
            self._percept["distortion"] = self.recipes["distortion"].to_numpy(dtype=object)
        self._maps: dict[int, np.ndarray] = {}

    @property
    def n(self) -> int:
        """Number of rendered pairs."""
        return len(self.recipes)

    def __len__(self) -> int:
        return self.n

    def __getstate__(self) -> dict[str, Any]:
        # Memory maps are per process: a DataLoader worker reopens its own.
        state = self.__dict__.copy()
        state["_maps"] = {}
        return state

    def _shard_array(self, shard: int) -> np.ndarray:
        arr = self._maps.get(shard)
        if arr is None:
            arr = np.load(shard_stem(self.out_dir, shard).with_suffix(".npy"), mmap_mode="r")
            self._maps[shard] = arr
        return arr

    def __getitem__(self, i: int) -> np.ndarray:
        """Both members of pair ``i`` as float32 ``[2, segment_samples]`` in [-1, 1)."""
        i = int(i)
        if not -self.n <= i < self.n:
            raise IndexError(f"pair index {i} out of range for {self.n} pairs")
        arr = self._shard_array(int(self._shard[i]))
        return np.asarray(arr[self._row[i]], dtype=np.float32) / np.float32(INT16_SCALE)

    def int16_batch(self, idx: np.ndarray) -> np.ndarray:
        """Pairs ``idx`` as int16 ``[B, 2, segment_samples]``, one fancy-index read per shard.

        Training converts to float on its own device; reading int16 halves the bytes moved.
        """
        idx = np.asarray(idx, dtype=np.int64)
        if idx.size and (idx.min() < -self.n or idx.max() >= self.n):
            raise IndexError(f"int16_batch: index out of range for {self.n} pairs")
        out = np.empty((len(idx), 2, self.segment_samples), dtype=np.int16)
        shards = self._shard[idx]
        for s in np.unique(shards):
            sel = np.flatnonzero(shards == s)
            out[sel] = self._shard_array(int(s))[self._row[idx[sel]]]
        return out

    def positives_mask(self, idx: np.ndarray) -> np.ndarray:
        """``[B, B]`` bool: which pairs of a batch are within one JND of each other.

        The rule is :func:`same_percept` on the pairs' recipes (same utterance segment, a-member
        SNRs within one JND, same distortion kind and realisation with parameters within its
        step). The diagonal is True. The pretraining loss uses this to keep such pairs out of
        the negatives.
        """
        idx = np.asarray(idx, dtype=np.int64)
        if idx.ndim != 1:
            raise IndexError(f"positives_mask: expected a 1-D index array, got shape {idx.shape}")
        if idx.size and (idx.min() < 0 or idx.max() >= self.n):
            raise IndexError(f"positives_mask: index out of range for {self.n} pairs")
        rows = {c: v[idx][:, None] for c, v in self._percept.items()}
        cols = {c: v[idx][None, :] for c, v in self._percept.items()}
        return same_percept(rows, cols, self.jnd_db, self.distortion_steps)


def load_pairs(out_dir: Path) -> PairSet:
    """Open a pair set written by :func:`generate_pairs`."""
    out_dir = Path(out_dir)
    index_path, recipes_path = out_dir / "index.json", out_dir / "pairs.parquet"
    if not index_path.exists() or not recipes_path.exists():
        raise ManifestError(f"{out_dir}: no index.json / pairs.parquet (run the pairs stage first)")
    try:
        index = read_json(index_path)
        recipes = read_parquet(recipes_path)
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{out_dir}: pair set not readable ({exc})") from exc
    if len(recipes) != index.get("n_pairs"):
        raise ManifestError(f"{recipes_path}: {len(recipes)} rows but index.json says {index.get('n_pairs')}")
    return PairSet(
        out_dir, recipes, index["segment_samples"], index["sample_rate"], index["jnd_db"],
        index.get("distortion_steps"),
    )


__all__ = [
    "DISTORTION_COLUMNS",
    "GAIN_COLUMNS",
    "PLAN_COLUMNS",
    "PairSet",
    "ShardJob",
    "crop",
    "generate_pairs",
    "load_pairs",
    "loop_segment",
    "plan_columns",
    "plan_pairs",
    "plan_uniforms",
    "plan_width",
    "render_pair",
    "render_shard",
    "rir_paths",
    "same_percept",
    "segment_samples",
    "within_jnd",
]
