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
* :func:`generate_pairs` plans, renders shards in parallel (resumable), and writes the pair set;
  :func:`load_pairs` / :class:`PairSet` read it back for training.

Layout of ``out_dir``: ``plan.parquet``; per shard ``shard-NNNNN.npy`` (int16
``[n, 2, segment_samples]``), ``shard-NNNNN.json`` (render settings and skipped pairs) and
``shard-NNNNN.parquet`` (its recipes with gains, written last: the shard's completion mark);
then ``skipped.csv``, ``pairs.parquet`` and ``index.json``.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jsqa import distortions
from jsqa.audio import load_audio
from jsqa.config import PairsConfig
from jsqa.data.manifests import (
    CLEAN_COLUMNS,
    NOISE_COLUMNS,
    read_manifest,
    require_columns,
    resolve,
)
from jsqa.errors import AudioError, ConfigError, ManifestError
from jsqa.io import atomic_path, read_json, write_csv, write_json, write_parquet
from jsqa.levels import active_speech_level, mix_at_snr

log = logging.getLogger(__name__)

# Columns decided by the plan (compared on resume) and added by rendering.
PLAN_COLUMNS = [
    "pair_id",
    "utterance_id",
    "speaker",
    "clean_path",
    "noise_id",
    "noise_path",
    "noise_offset",
    "crop_offset",
    "snr_a",
    "snr_b",
    "seed",
    "shard",
]
# Planned too, but only present when some distortion is enabled.
DISTORTION_COLUMNS = ["distortion", "dist_param_a", "dist_param_b", "dist_seed"]
GAIN_COLUMNS = ["speech_gain", "noise_gain_a", "noise_gain_b"]
SKIPPED_COLUMNS = ["utterance_id", "reason", "n_pairs"]

# Bump when rendering changes in a way the plan does not show, so old shards are redone.
RENDER_FORMAT = 1
INT16_SCALE = 32768.0
_SHARD_RE = re.compile(r"^shard-(\d{5})\.(npy|json|parquet)$")


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


def segment_samples(cfg: PairsConfig, sample_rate: int) -> int:
    """Length in samples of each pair member."""
    return int(round(cfg.segment_seconds * sample_rate))


def utterance_seed(seed: int, index: int) -> int:
    """63-bit seed of one utterance's generator, from the run seed and its manifest index.

    ``numpy.random.default_rng(utterance_seed(seed, i))`` replays utterance ``i``'s draws; the
    value is stored in the recipes' ``seed`` column.
    """
    state = np.random.SeedSequence([int(seed), int(index)]).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(1))


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
) -> pd.DataFrame:
    """Draw the recipe of every pair (columns :data:`PLAN_COLUMNS`); all randomness is here.

    Utterance ``i`` gets its own generator ``default_rng(utterance_seed(seed, i))`` and
    ``cfg.pairs_per_utterance`` consecutive pair ids. Noise files are chosen uniformly, noise
    offsets uniformly within the file (the noise loops), crop offsets uniformly so the
    segment fits (offset 0 and zero padding for a short utterance). With ``cfg.shared_segment``
    (the default) the pairs of one utterance share noise file, noise offset and crop, so
    they differ only in SNR: hard negatives that isolate quality. SNRs: see
    :func:`_snrs_from_uniforms` and the module docstring.

    Distortions (when enabled) are drawn after those uniforms from the same generator, so
    turning them on changes no other column: the kind and ``dist_seed`` per segment draw
    (shared by an utterance's pairs with ``shared_segment``), member a's parameter and b's
    within-step offset per pair. Columns :data:`DISTORTION_COLUMNS` are added only then.
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
    # One block of uniforms per utterance from its own generator; everything else is
    # vectorised over utterances.
    seeds = np.array([utterance_seed(seed, i) for i in range(n_utt)], dtype=np.int64)
    base = 3 * draws + 4 * k
    # The distortion uniforms come last: the first `base` values are the same whatever follows.
    u = np.stack([np.random.default_rng(int(s)).random(base + 2 * draws + 2 * k) for s in seeds])
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
        "seed": np.repeat(seeds, k),
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


def crop(x: np.ndarray, offset: int, length: int) -> np.ndarray:
    """``x[offset:offset + length]``, zero-padded at the end when ``x`` runs out."""
    out = np.zeros(length, dtype=x.dtype)
    part = x[offset : offset + length]
    out[: part.size] = part
    return out


def loop_segment(noise: np.ndarray, offset: int, length: int) -> np.ndarray:
    """``length`` samples of ``noise`` from ``offset``, wrapping round (noise loops)."""
    if noise.size == 0:
        raise AudioError("loop_segment: noise is empty")
    return noise[(offset + np.arange(length)) % noise.size]


def render_pair(
    recipe_row: Mapping[str, Any] | pd.Series,
    speech: np.ndarray,
    noise: np.ndarray,
    cfg: PairsConfig,
    sample_rate: int,
    speech_level_db: float | None = None,
    rirs: list[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Render one pair from its recipe: no randomness.

    The whole utterance ``speech`` is scaled to ``cfg.speech_level_dbov`` active level
    (``speech_level_db`` may pass its already measured level), then cropped; the noise
    segment is taken at ``noise_offset`` (looping) and mixed at ``snr_a`` and ``snr_b``
    against that level. Returns (member a, member b) as float32 of the segment length and
    the gains {speech_gain, noise_gain_a, noise_gain_b}. Raises AudioError for silent speech
    or a noise segment of zero energy.

    A recipe with a ``distortion`` other than "none" then gets it applied to each member with
    its own parameter (``dist_param_a`` / ``dist_param_b``) and the shared ``dist_seed``;
    ``rirs`` (measured room responses, :func:`jsqa.distortions.load_rirs`) replace the
    synthetic ones for reverb.
    """
    seg = segment_samples(cfg, sample_rate)
    speech = np.asarray(speech)
    level = active_speech_level(speech, sample_rate) if speech_level_db is None else speech_level_db
    speech_gain = 10.0 ** ((cfg.speech_level_dbov - level) / 20.0)
    clean = crop(speech, int(recipe_row["crop_offset"]), seg).astype(np.float64) * speech_gain
    noise_seg = loop_segment(np.asarray(noise), int(recipe_row["noise_offset"]), seg)
    a, gain_a = mix_at_snr(clean, noise_seg, float(recipe_row["snr_a"]), sample_rate, cfg.speech_level_dbov)
    b, gain_b = mix_at_snr(clean, noise_seg, float(recipe_row["snr_b"]), sample_rate, cfg.speech_level_dbov)
    kind = str(recipe_row.get("distortion", distortions.NONE))
    if kind != distortions.NONE:
        seed = int(recipe_row["dist_seed"])
        a = distortions.apply(kind, a, float(recipe_row["dist_param_a"]), sample_rate, seed, rirs)
        b = distortions.apply(kind, b, float(recipe_row["dist_param_b"]), sample_rate, seed, rirs)
    return a, b, {"speech_gain": speech_gain, "noise_gain_a": gain_a, "noise_gain_b": gain_b}


# ---------------------------------------------------------------- shard rendering


def _shard_stem(out_dir: Path, shard: int) -> Path:
    return out_dir / f"shard-{shard:05d}"


def _render_key(cfg: PairsConfig, sample_rate: int) -> dict[str, Any]:
    """Settings that change the audio without changing the plan."""
    return {
        "format": RENDER_FORMAT,
        "sample_rate": int(sample_rate),
        "segment_samples": segment_samples(cfg, sample_rate),
        "speech_level_dbov": float(cfg.speech_level_dbov),
    }


def _to_int16(x: np.ndarray) -> tuple[np.ndarray, int]:
    """Quantise [-1, 1) floats to int16; also return how many samples had to be clipped."""
    scaled = np.round(x.astype(np.float64) * INT16_SCALE)
    clipped = int(np.count_nonzero((scaled > 32767) | (scaled < -32768)))
    return np.clip(scaled, -32768, 32767).astype(np.int16), clipped


@dataclass(frozen=True)
class ShardJob:
    """One shard to render: its planned rows and where the audio comes from and goes."""

    shard: int
    rows: pd.DataFrame
    cfg: PairsConfig
    sample_rate: int
    root: Path
    out_dir: Path


# How shards are spread: called as shard_map(render_shard, jobs), yields one summary per job.
ShardMap = Callable[[Callable[["ShardJob"], dict], list["ShardJob"]], Iterable[dict]]


def _worker_init() -> None:
    # Each worker renders whole shards, so any thread pool inside it would only oversubscribe.
    # torch is loaded only if resampling needs it; limit its threads then, not import it here.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def _pool_context() -> multiprocessing.context.BaseContext:
    """forkserver: workers fork from a clean server (a plain fork of a process that already
    runs torch or other threads can deadlock) that imports this module once, so starting
    workers is cheap after the first pool."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    return ctx


def render_shard(job: ShardJob) -> dict[str, Any]:
    """Render one shard and write its .npy, .json and (last) .parquet; return its summary."""
    seg = segment_samples(job.cfg, job.sample_rate)
    speech_cache: dict[str, tuple[np.ndarray, float] | str] = {}
    noise_cache: dict[str, np.ndarray | str] = {}

    def unreadable(path: str, exc: AudioError) -> str:
        # Name the file as the manifest does, so skipped.csv does not depend on the checkout.
        return str(exc).replace(str(resolve(path, job.root)), path)

    def speech_of(path: str) -> tuple[np.ndarray, float] | str:
        if path not in speech_cache:
            try:
                x, _ = load_audio(resolve(path, job.root), job.sample_rate)
            except AudioError as exc:
                speech_cache[path] = f"clean audio unreadable: {unreadable(path, exc)}"
            else:
                try:
                    speech_cache[path] = (x, active_speech_level(x, job.sample_rate))
                except AudioError as exc:
                    speech_cache[path] = f"clean audio unusable: {path}: {exc}"
        return speech_cache[path]

    def noise_of(path: str) -> np.ndarray | str:
        if path not in noise_cache:
            try:
                noise_cache[path] = load_audio(resolve(path, job.root), job.sample_rate)[0]
            except AudioError as exc:
                noise_cache[path] = f"noise audio unreadable: {unreadable(path, exc)}"
        return noise_cache[path]

    members: list[np.ndarray] = []
    kept: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for row in job.rows.to_dict("records"):
        sp = speech_of(row["clean_path"])
        nz = noise_of(row["noise_path"])
        reason = sp if isinstance(sp, str) else nz if isinstance(nz, str) else None
        if reason is None:
            try:
                a, b, gains = render_pair(row, sp[0], nz, job.cfg, job.sample_rate, sp[1])
            except AudioError as exc:
                reason = f"pair not renderable: {row['clean_path']} + {row['noise_path']}: {exc}"
            else:
                if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
                    reason = f"pair not renderable: non-finite samples from {row['clean_path']}"
        if reason is not None:
            skipped.append(
                {"pair_id": int(row["pair_id"]), "utterance_id": row["utterance_id"], "reason": reason}
            )
            continue
        members.append(np.stack([a, b]))
        kept.append({**row, **gains})

    audio = np.stack(members) if members else np.zeros((0, 2, seg), np.float32)
    pcm, clipped = _to_int16(audio)
    recipes = pd.DataFrame(kept, columns=plan_columns(job.rows) + GAIN_COLUMNS)
    recipes = recipes.astype(job.rows.dtypes.to_dict() | {c: np.float64 for c in GAIN_COLUMNS})
    recipes["row"] = np.arange(len(recipes), dtype=np.int64)

    stem = _shard_stem(job.out_dir, job.shard)
    with atomic_path(stem.with_suffix(".npy")) as tmp, open(tmp, "wb") as fh:
        np.save(fh, pcm)
    summary = {
        "shard": job.shard,
        "render": _render_key(job.cfg, job.sample_rate),
        "n_planned": len(job.rows),
        "n_rendered": len(recipes),
        "n_clipped_samples": clipped,
        "skipped": skipped,
    }
    write_json(stem.with_suffix(".json"), summary)
    write_parquet(stem.with_suffix(".parquet"), recipes)
    return summary


def _same_rows(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    """Column-by-column equality of the planned columns (inf equals inf; dtypes may differ)."""
    if len(a) != len(b) or plan_columns(a) != plan_columns(b):
        return False
    for c in plan_columns(a):
        if c not in b.columns:
            return False
        x, y = a[c].to_numpy(), b[c].to_numpy()
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
    out_dir: Path, shard: int, planned: pd.DataFrame, render_key: dict[str, Any], seg: int
) -> dict[str, Any] | None:
    """The shard's summary when its files on disk match the plan and settings, else None."""
    stem = _shard_stem(out_dir, shard)
    parquet, meta_path = stem.with_suffix(".parquet"), stem.with_suffix(".json")
    if not (parquet.exists() and meta_path.exists()):
        return None
    try:
        meta = read_json(meta_path)
        done = pd.read_parquet(parquet)
    except (OSError, ValueError) as exc:
        log.info("shard %05d: unreadable (%s), rendering again", shard, exc)
        return None
    if meta.get("render") != render_key:
        return None
    skipped_ids = {s["pair_id"] for s in meta.get("skipped", [])}
    expected = planned[~planned["pair_id"].isin(skipped_ids)]
    if not _same_rows(expected, done) or meta.get("n_planned") != len(planned):
        return None
    if _npy_shape(stem.with_suffix(".npy")) != (len(done), 2, seg):
        return None
    return meta


def _remove_stale_shards(out_dir: Path, n_shards: int) -> None:
    """Drop shard files a previous, larger plan left behind, and temporaries of a killed run."""
    for p in out_dir.iterdir():
        m = _SHARD_RE.match(p.name)
        if (m and int(m.group(1)) >= n_shards) or p.name.startswith(".shard-"):
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
    plan = plan_pairs(clean, noise, cfg, seed, sample_rate)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_parquet(out_dir / "plan.parquet", plan)

    seg = segment_samples(cfg, sample_rate)
    key = _render_key(cfg, sample_rate)
    n_shards = int(plan["shard"].max()) + 1 if len(plan) else 0
    _remove_stale_shards(out_dir, n_shards)

    summaries: dict[int, dict[str, Any]] = {}
    jobs: list[ShardJob] = []
    for shard, rows in plan.groupby("shard", sort=True):
        rows = rows.reset_index(drop=True)
        meta = _finished_shard(out_dir, int(shard), rows, key, seg)
        if meta is not None:
            summaries[int(shard)] = meta
        else:
            jobs.append(ShardJob(int(shard), rows, cfg, sample_rate, Path(root), out_dir))
    log.info(
        "pairs: %d planned in %d shards; %d shards kept, %d to render",
        len(plan), n_shards, len(summaries), len(jobs),
    )

    if shard_map is not None:
        for summary in shard_map(render_shard, jobs):
            summaries[summary["shard"]] = summary
    elif cfg.workers > 1 and len(jobs) > 1:
        ctx = _pool_context()
        with ProcessPoolExecutor(min(cfg.workers, len(jobs)), mp_context=ctx, initializer=_worker_init) as pool:
            for summary in pool.map(render_shard, jobs):
                summaries[summary["shard"]] = summary
    else:
        for job in jobs:
            summaries[job.shard] = render_shard(job)

    ordered = [summaries[s] for s in range(n_shards)]
    skipped = _skipped_table(ordered)
    for rec in skipped.itertuples(index=False):
        log.warning("skipped %d pair(s) of %s: %s", rec.n_pairs, rec.utterance_id, rec.reason)
    clipped = sum(s.get("n_clipped_samples", 0) for s in ordered)
    if clipped:
        log.warning("pairs: %d samples clipped to int16 range (lower pairs.speech_level_dbov)", clipped)

    write_csv(out_dir / "skipped.csv", skipped)
    frames = [pd.read_parquet(_shard_stem(out_dir, s).with_suffix(".parquet")) for s in range(n_shards)]
    recipes = pd.concat(frames, ignore_index=True)
    if len(recipes) == 0:
        raise AudioError(f"{out_dir}: no pair could be rendered (reasons in skipped.csv)")
    write_parquet(out_dir / "pairs.parquet", recipes)
    index = {
        "n_pairs": len(recipes),
        "n_planned": len(plan),
        "n_skipped": len(plan) - len(recipes),
        "n_shards": n_shards,
        "segment_samples": seg,
        "sample_rate": int(sample_rate),
        "jnd_db": float(cfg.jnd_db),
        "n_clipped_samples": clipped,
        "shards": [
            {"shard": s["shard"], "n_planned": s["n_planned"], "n_rendered": s["n_rendered"]}
            for s in ordered
        ],
    }
    write_json(out_dir / "index.json", index)
    return PairSet(out_dir, recipes, seg, int(sample_rate), float(cfg.jnd_db))


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
    ) -> None:
        require_columns(recipes, PLAN_COLUMNS + ["row"], f"{out_dir}/pairs.parquet")
        self.out_dir = Path(out_dir)
        self.recipes = recipes.reset_index(drop=True)
        self.segment_samples = int(segment_samples)
        self.sample_rate = int(sample_rate)
        self.jnd_db = float(jnd_db)
        self._shard = self.recipes["shard"].to_numpy(np.int64)
        self._row = self.recipes["row"].to_numpy(np.int64)
        # Integer codes make the B x B comparisons in positives_mask cheap.
        self._utt = pd.factorize(self.recipes["utterance_id"])[0]
        self._noise = pd.factorize(self.recipes["noise_id"])[0]
        self._noise_offset = self.recipes["noise_offset"].to_numpy(np.int64)
        self._crop_offset = self.recipes["crop_offset"].to_numpy(np.int64)
        self._snr_a = self.recipes["snr_a"].to_numpy(np.float64)
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
            arr = np.load(_shard_stem(self.out_dir, shard).with_suffix(".npy"), mmap_mode="r")
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

        Two pairs count as perceptually identical when they share utterance, crop, noise file
        and noise offset and their a-member SNRs satisfy :func:`within_jnd`. The diagonal is
        True. The pretraining loss uses this to keep such pairs out of the negatives.
        """
        idx = np.asarray(idx, dtype=np.int64)
        if idx.ndim != 1:
            raise IndexError(f"positives_mask: expected a 1-D index array, got shape {idx.shape}")
        if idx.size and (idx.min() < 0 or idx.max() >= self.n):
            raise IndexError(f"positives_mask: index out of range for {self.n} pairs")

        def same(v: np.ndarray) -> np.ndarray:
            col = v[idx]
            return col[:, None] == col[None, :]

        snr = self._snr_a[idx]
        return (
            same(self._utt)
            & same(self._crop_offset)
            & same(self._noise)
            & same(self._noise_offset)
            & within_jnd(snr[:, None], snr[None, :], self.jnd_db)
        )


def load_pairs(out_dir: Path) -> PairSet:
    """Open a pair set written by :func:`generate_pairs`."""
    out_dir = Path(out_dir)
    index_path, recipes_path = out_dir / "index.json", out_dir / "pairs.parquet"
    if not index_path.exists() or not recipes_path.exists():
        raise ManifestError(f"{out_dir}: no index.json / pairs.parquet (run the pairs stage first)")
    try:
        index = read_json(index_path)
        recipes = pd.read_parquet(recipes_path)
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{out_dir}: pair set not readable ({exc})") from exc
    if len(recipes) != index.get("n_pairs"):
        raise ManifestError(f"{recipes_path}: {len(recipes)} rows but index.json says {index.get('n_pairs')}")
    return PairSet(out_dir, recipes, index["segment_samples"], index["sample_rate"], index["jnd_db"])


__all__ = [
    "GAIN_COLUMNS",
    "DISTORTION_COLUMNS",
    "PLAN_COLUMNS",
    "PairSet",
    "crop",
    "generate_pairs",
    "load_pairs",
    "loop_segment",
    "plan_columns",
    "plan_pairs",
    "render_pair",
    "segment_samples",
    "utterance_seed",
    "within_jnd",
]
