"""Rendering planned JND pairs into shards: the worker side of :mod:`jsqa.pairs`.

Pool workers fork from a server that imports this module (and so everything it imports)
once, and that import is CPU time of every run: it must stay light. Only numpy, soundfile
and light jsqa modules are imported here; pandas, pyarrow (which imports pandas as soon as
it converts an array) and scipy are not (scipy is imported lazily by the distortions that
need it). So a worker writes a shard's audio and summary; the caller writes its recipes.

Rendering draws nothing: every random choice is in the recipe (:func:`jsqa.pairs.plan.plan_pairs`).
Members are mixed in float32 at int16 scale and rounded once, so the stored samples are
the float render of :func:`render_pair` rounded to the nearest int16 step.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jsqa.audio import LoopedSegments, load_audio
from jsqa.errors import AudioError
from jsqa.io import atomic_path, write_json
from jsqa.signal import distortions
from jsqa.signal.levels import active_speech_level, active_speech_levels, db_to_gain, noise_gain, rms_db

if TYPE_CHECKING:
    # Annotations only: a worker never imports the config module (its dataclasses and yaml
    # cost every run ~0.08 s of CPU); jobs carry the few settings rendering needs.
    from jsqa.config import PairsConfig

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
# Planned too, but only present when some distortion is enabled. rir_path: the measured room
# response of a reverb pair ("" when synthetic or not reverb).
DISTORTION_COLUMNS = ["distortion", "dist_param_a", "dist_param_b", "dist_seed", "rir_path"]
GAIN_COLUMNS = ["speech_gain", "noise_gain_a", "noise_gain_b"]

# Bump when rendering changes in a way the plan does not show, so old shards are redone.
# 2: float32 mixing at int16 scale, activity decided per 1 ms block in the speech level.
# 3: speech level with activity per 2 ms block, block sums from one float32 product, and the
#    energy from a float32 dot (changes of at most a few thousandths of a dB).
# 4: noise levels from a float32 BLAS dot per segment (was one einsum over all segments).
# 5: activity decided in float32.
RENDER_FORMAT = 5
INT16_SCALE = 32768.0
_INT16_MIN, _INT16_MAX = -32768.0, 32767.0


def segment_samples(cfg: PairsConfig, sample_rate: int) -> int:
    """Length in samples of each pair member."""
    return int(round(cfg.segment_seconds * sample_rate))


def crop(x: np.ndarray, offset: int, length: int) -> np.ndarray:
    """``x[offset:offset + length]``, zero-padded at the end when ``x`` runs out."""
    part = x[offset : offset + length]
    if part.size == length:
        return part
    out = np.zeros(length, dtype=x.dtype)
    out[: part.size] = part
    return out


def loop_segment(noise: np.ndarray, offset: int, length: int) -> np.ndarray:
    """``length`` samples of ``noise`` from ``offset``, wrapping round (noise loops)."""
    if noise.size == 0:
        raise AudioError("loop_segment: noise is empty")
    offset %= noise.size
    if offset + length <= noise.size:
        return noise[offset : offset + length]
    return noise[(offset + np.arange(length)) % noise.size]


def _abs_max(x: np.ndarray) -> float:
    """max |x|, without an |x| temporary."""
    return max(float(x.max()), -float(x.min()))


class _GroupMixer:
    """Mixes groups of pairs that share one clean and one noise segment (an utterance's pairs,
    with ``shared_segment``).

    Group ``g`` is rows ``offsets[g]:offsets[g + 1]`` of ``snrs`` ``[n, 2]`` (and of ``dist``,
    the distortion columns of those rows, if any); ``clean[g]`` and ``noise[g]`` are its
    segments (kept as given, typically views into the decoded files: no copies) and
    ``speech_gains[g]`` the gain that puts its utterance at ``speech_level_dbov``.
    ``gains`` ``[n, 2]`` are the rows' noise gains and ``silent[g]`` marks a noise segment of
    zero energy (nothing to scale to an SNR). :meth:`members` mixes a group and leaves in
    ``bounds[g]`` a bound on the absolute value of its members, from the segments' peaks
    measured then, while they are in cache (inf when a distortion makes it unknown).
    """

    def __init__(
        self,
        snrs: np.ndarray,
        offsets: np.ndarray,
        clean: Sequence[np.ndarray],
        noise: Sequence[np.ndarray],
        speech_gains: np.ndarray,
        speech_level_dbov: float,
        sample_rate: int,
        dist: Mapping[str, np.ndarray] | None = None,
        rirs: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        self.offsets, self.sample_rate = offsets, sample_rate
        self.clean = [np.asarray(c, dtype=np.float32) for c in clean]
        self.noise = [np.asarray(x, dtype=np.float32) for x in noise]
        self.speech_gains = np.asarray(speech_gains, dtype=np.float64)
        self.dist, self.rirs = dist, rirs or {}
        # A clean member is exactly the float32 speech times this float32 gain (int16 scale).
        self.clean_scale = (self.speech_gains * INT16_SCALE).astype(np.float32)
        # Noise gains of all groups in one call (per group, numpy's call costs dominated).
        noise_db = np.array([rms_db(x) for x in self.noise])
        self.silent = noise_db == -math.inf
        group_of_row = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
        self.gains = np.asarray(
            noise_gain(speech_level_dbov, snrs, np.where(self.silent, 0.0, noise_db)[group_of_row, None])
        )
        self.bounds = np.full(len(offsets) - 1, math.inf)
        self.distorted = np.zeros(len(offsets) - 1, dtype=bool)
        if dist is not None and len(snrs):
            self.distorted = np.logical_or.reduceat(dist["distortion"] != distortions.NONE, offsets[:-1])

    def members(self, g: int) -> np.ndarray:
        """Group ``g``'s members, float32 ``[k, 2, seg]`` at int16 scale (not rounded).

        Raises AudioError when its noise segment has zero energy.
        """
        if self.silent[g]:
            raise AudioError("noise segment has zero energy")
        sel = slice(int(self.offsets[g]), int(self.offsets[g + 1]))
        noise, clean = self.noise[g], self.clean[g]
        scaled = (self.gains[sel] * INT16_SCALE).astype(np.float32)
        buf = np.multiply(scaled[:, :, None], noise[None, None, :])
        buf += clean * self.clean_scale[g]
        if not self.distorted[g]:
            # |clean + g * noise| <= max|clean| + g * max|noise|; the 1.0 covers float32 rounding.
            self.bounds[g] = _abs_max(clean) * float(self.clean_scale[g]) + float(scaled.max()) * _abs_max(noise) + 1.0
            return buf
        dist = self.dist
        assert dist is not None  # groups are distorted only when the recipes have distortion columns
        kinds = dist["distortion"][sel]
        for i in np.flatnonzero(kinds != distortions.NONE):
            seed = int(dist["dist_seed"][sel][i])
            rir_path = str(dist["rir_path"][sel][i]) if "rir_path" in dist else ""
            rir = self.rirs[rir_path] if rir_path else None
            for m, col in enumerate(("dist_param_a", "dist_param_b")):
                member = buf[i, m] * np.float32(1.0 / INT16_SCALE)
                y = distortions.apply(str(kinds[i]), member, float(dist[col][sel][i]), self.sample_rate, seed, rir)
                buf[i, m] = y * np.float32(INT16_SCALE)
        return buf


def _distortion_rows(rows: Mapping[str, Any], sel: Any) -> dict[str, np.ndarray] | None:
    """The distortion columns of ``rows[sel]``, or None when no row there is distorted."""
    if "distortion" not in rows:
        return None
    kinds = np.asarray(rows["distortion"])[sel]
    if not np.any(kinds != distortions.NONE):
        return None
    return {c: np.asarray(rows[c])[sel] for c in DISTORTION_COLUMNS if c in rows}


def render_pair(
    recipe_row: Mapping[str, Any],
    speech: np.ndarray,
    noise: np.ndarray,
    cfg: PairsConfig,
    sample_rate: int,
    speech_level_db: float | None = None,
    rir: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Render one pair from its recipe: no randomness.

    The whole utterance ``speech`` is scaled to ``cfg.speech_level_dbov`` active level
    (``speech_level_db`` may pass its already measured level), then cropped; the noise
    segment is taken at ``noise_offset`` (looping) and mixed at ``snr_a`` and ``snr_b``
    against that level. Returns (member a, member b) as float32 of the segment length and
    the gains {speech_gain, noise_gain_a, noise_gain_b}. Raises AudioError for silent speech
    or a noise segment of zero energy. Shards store exactly these members rounded to int16.

    A recipe with a ``distortion`` other than "none" then gets it applied to each member with
    its own parameter (``dist_param_a`` / ``dist_param_b``) and the shared ``dist_seed``;
    ``rir`` is the measured room response the recipe's ``rir_path`` names (reverb only).
    """
    seg = segment_samples(cfg, sample_rate)
    speech = np.asarray(speech)
    level = active_speech_level(speech, sample_rate) if speech_level_db is None else speech_level_db
    speech_gain = db_to_gain(cfg.speech_level_dbov - level)
    clean_seg = crop(speech, int(recipe_row["crop_offset"]), seg)
    noise_seg = loop_segment(np.asarray(noise), int(recipe_row["noise_offset"]), seg)
    row = {c: np.array([recipe_row.get(c, "")]) for c in DISTORTION_COLUMNS if c in recipe_row}
    dist = _distortion_rows(row, slice(None))
    rir_path = str(dist["rir_path"][0]) if dist is not None and "rir_path" in dist else ""
    if rir_path and rir is None:
        raise AudioError(f"render_pair: recipe uses room response {rir_path}; pass it as rir")
    snrs = np.array([[recipe_row["snr_a"], recipe_row["snr_b"]]], dtype=np.float64)
    mixer = _GroupMixer(
        snrs,
        np.array([0, 1]),
        [clean_seg],
        [noise_seg],
        np.array([speech_gain]),
        cfg.speech_level_dbov,
        sample_rate,
        dist,
        {rir_path: rir} if rir_path and rir is not None else None,
    )
    a, b = mixer.members(0)[0] * np.float32(1.0 / INT16_SCALE)
    gains = mixer.gains
    return a, b, {"speech_gain": speech_gain, "noise_gain_a": float(gains[0, 0]), "noise_gain_b": float(gains[0, 1])}


# ---------------------------------------------------------------- shards


@dataclass(frozen=True)
class ShardJob:
    """One shard to render: its planned rows (column name -> numpy array, in pair order),
    the render settings (:func:`render_key`), the audio files the rows name (manifest path
    -> path to read) and where the shard goes."""

    shard: int
    rows: dict[str, np.ndarray]
    render: dict[str, Any]
    sources: dict[str, str]
    out_dir: Path

    @property
    def n_rows(self) -> int:
        """Number of planned pairs in the shard."""
        return len(self.rows["pair_id"])


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def _keep_freed_memory() -> None:
    """Let glibc keep freed memory for reuse. By default it serves arrays above 128 kB from
    fresh mappings and gives the top of the heap back once 128 kB of it is free, so a worker,
    which frees a shard's decoded audio (10-20 MB) just before decoding the next, faulted
    every page of it in again: 2.3x the floor's page faults, measured. Memory stays bounded
    by one shard's working set. A no-op where malloc is not glibc's."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    mallopt(_M_MMAP_THRESHOLD, 64 << 20)
    mallopt(_M_TRIM_THRESHOLD, 256 << 20)


def worker_init() -> None:
    """Initializer of pool workers. It lives here, not in :mod:`jsqa.pairs`: a worker imports
    the initializer's module, and that one imports pandas."""
    _keep_freed_memory()
    # Each worker renders whole shards, so any thread pool inside it would only oversubscribe.
    # numpy's BLAS read its thread count when the server imported it, so the environment
    # can no longer change it: threadpoolctl does. Its threads otherwise spin between calls,
    # burning a second core: the level's block sums cost 2.3x the CPU with two of them.
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")
    # torch is loaded only if resampling needs it; limit its threads then, not import it here.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def shard_stem(out_dir: Path, shard: int) -> Path:
    """``out_dir/shard-NNNNN``: add .npy (the audio), .json (its summary) or .arrow (its recipes)."""
    return Path(out_dir) / f"shard-{shard:05d}"


def render_key(cfg: PairsConfig, sample_rate: int) -> dict[str, Any]:
    """Settings that change the audio without changing the plan."""
    return {
        "format": RENDER_FORMAT,
        "sample_rate": int(sample_rate),
        "segment_samples": segment_samples(cfg, sample_rate),
        "speech_level_dbov": float(cfg.speech_level_dbov),
    }


def _quantise_into(buf: np.ndarray, out: np.ndarray, bound: float = math.inf) -> int | None:
    """Round ``buf`` (int16 scale) into ``out``; the count of clipped samples, None if not finite.

    ``bound`` (a known bound on ``|buf|``) below the int16 range skips the range scan.
    """
    if bound < _INT16_MAX:
        # In range and finite: round straight into int16 (numpy casts chunk by chunk while
        # rounding, one pass fewer than rounding in place and then converting).
        np.rint(buf, out=out, casting="unsafe")
        return 0
    np.rint(buf, out=buf)
    lo, hi = float(buf.min()), float(buf.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    clipped = 0
    # A full count and clip only when some sample is out of range (rare at -26 dBov).
    if lo < _INT16_MIN or hi > _INT16_MAX:
        clipped = int(np.count_nonzero((buf < _INT16_MIN) | (buf > _INT16_MAX)))
        np.clip(buf, _INT16_MIN, _INT16_MAX, out=buf)
    out[...] = buf
    return clipped


def _groups(rows: Mapping[str, np.ndarray]) -> list[tuple[int, int]]:
    """[start, end) runs of consecutive rows sharing clean file, crop, noise file and offset."""
    n = len(rows["pair_id"])
    if n == 0:
        return []
    keys = ("clean_path", "crop_offset", "noise_path", "noise_offset")
    change = np.zeros(n, dtype=bool)
    change[0] = True
    for k in keys:
        v = rows[k]
        change[1:] |= v[1:] != v[:-1]
    starts = np.flatnonzero(change).tolist()
    return list(zip(starts, starts[1:] + [n]))


@functools.lru_cache(maxsize=64)
def _rir_cache(path: str, sample_rate: int) -> np.ndarray:
    # A worker renders many shards: a room response is read once per process (up to 64 of
    # them, ~100 kB each, so memory stays bounded whatever the folder holds).
    return distortions.load_rir(path, sample_rate)


def _unreadable(job: ShardJob, path: str, exc: AudioError) -> str:
    """``exc``'s message naming the file as the manifest does, so skipped.csv does not depend
    on the checkout."""
    return str(exc).replace(job.sources[path], path)


def _shard_rirs(job: ShardJob) -> dict[str, np.ndarray]:
    """The room responses the shard's rows name (manifest path -> samples)."""
    if "rir_path" not in job.rows:
        return {}
    names = sorted({str(p) for p in job.rows["rir_path"] if p})
    return {p: _rir_cache(job.sources[p], job.render["sample_rate"]) for p in names}


def _decode_speech(job: ShardJob) -> dict[str, tuple[np.ndarray, float] | str]:
    """Each utterance of the shard (manifest path) decoded with its active speech level, or
    the reason it cannot be used.

    The utterances are decoded first and their levels measured together (far fewer numpy
    calls than one by one); a shard bounds how many are held at once.
    """
    sr = job.render["sample_rate"]
    speech: dict[str, tuple[np.ndarray, float] | str] = {}
    decoded: list[tuple[str, np.ndarray]] = []
    for path in dict.fromkeys(job.rows["clean_path"].tolist()):
        try:
            decoded.append((path, load_audio(job.sources[path], sr)[0]))
        except AudioError as exc:
            speech[path] = f"clean audio unreadable: {_unreadable(job, path, exc)}"
    for (path, x), level in zip(decoded, active_speech_levels([x for _, x in decoded], sr)):
        speech[path] = f"clean audio unusable: {path}: {level}" if isinstance(level, str) else (x, level)
    return speech


@dataclass
class _Segments:
    """The shard's groups of rows (:func:`_groups`) and, per group, None or why it cannot be
    mixed (``reasons``); for the groups that can, in order, their clean and noise segments and
    the gain that puts their utterance at the speech level."""

    spans: list[tuple[int, int]]
    reasons: list[str | None]
    clean: list[np.ndarray]
    noise: list[np.ndarray]
    speech_gains: list[float]


def _cut_segments(job: ShardJob, speech: Mapping[str, tuple[np.ndarray, float] | str]) -> _Segments:
    """Which groups can be mixed, and their segments (``speech``: :func:`_decode_speech`).

    Noise files stay open for the shard and only the segments mixed are read (long files
    segment by segment, see LoopedSegments).
    """
    rows, sr, seg = job.rows, job.render["sample_rate"], job.render["segment_samples"]
    out = _Segments(_groups(rows), [], [], [], [])
    use_counts: dict[str, int] = {}
    for start, _ in out.spans:
        use_counts[str(rows["noise_path"][start])] = use_counts.get(str(rows["noise_path"][start]), 0) + 1
    noises: dict[str, LoopedSegments | str] = {}
    with contextlib.ExitStack() as open_files:
        for start, _ in out.spans:
            clean_path, noise_path = str(rows["clean_path"][start]), str(rows["noise_path"][start])
            if noise_path not in noises:
                try:
                    noises[noise_path] = open_files.enter_context(
                        LoopedSegments(job.sources[noise_path], sr, expected=use_counts[noise_path] * seg)
                    )
                except AudioError as exc:
                    noises[noise_path] = f"noise audio unreadable: {_unreadable(job, noise_path, exc)}"
            noise, sp = noises[noise_path], speech[clean_path]
            reason = sp if isinstance(sp, str) else noise if isinstance(noise, str) else None
            if reason is None:
                assert not isinstance(noise, str) and not isinstance(sp, str)  # no reason: both usable
                try:
                    out.noise.append(noise.segment(int(rows["noise_offset"][start]), seg))
                except AudioError as exc:
                    reason = f"noise audio unreadable: {_unreadable(job, noise_path, exc)}"
                else:
                    x, level = sp
                    out.clean.append(crop(x, int(rows["crop_offset"][start]), seg))
                    out.speech_gains.append(db_to_gain(job.render["speech_level_dbov"] - level))
            out.reasons.append(reason)
    return out


def _shard_mixer(job: ShardJob, segments: _Segments, rirs: Mapping[str, np.ndarray]) -> _GroupMixer | None:
    """The mixer of the groups that can be mixed (None when there are none)."""
    good = [span for span, reason in zip(segments.spans, segments.reasons) if reason is None]
    if not good:
        return None
    rows = job.rows
    take = np.concatenate([np.arange(a, b) for a, b in good])
    offsets = np.concatenate([[0], np.cumsum([b - a for a, b in good])])
    snrs = np.stack([np.asarray(rows["snr_a"], np.float64)[take], np.asarray(rows["snr_b"], np.float64)[take]], 1)
    return _GroupMixer(
        snrs,
        offsets,
        segments.clean,
        segments.noise,
        np.array(segments.speech_gains),
        job.render["speech_level_dbov"],
        job.render["sample_rate"],
        _distortion_rows(rows, take),
        rirs,
    )


@dataclass
class _Mixed:
    """A shard's rendered audio: ``pcm[:n_out]`` holds the kept rows' members in order,
    ``gains[kept]`` their gains (:data:`GAIN_COLUMNS`)."""

    pcm: np.ndarray
    gains: np.ndarray
    kept: np.ndarray
    n_out: int = 0
    clipped: int = 0


def _mix_groups(job: ShardJob, segments: _Segments, mixer: _GroupMixer | None) -> tuple[_Mixed, list[dict[str, Any]]]:
    """Mix and quantise every group that can be; returns the audio and the skipped rows."""
    rows, n = job.rows, job.n_rows
    out = _Mixed(
        np.empty((n, 2, job.render["segment_samples"]), dtype=np.int16),
        np.empty((n, 3), dtype=np.float64),
        np.zeros(n, dtype=bool),
    )
    skipped: list[dict[str, Any]] = []
    g = 0
    for (start, end), reason in zip(segments.spans, segments.reasons):
        clean_path, noise_path = str(rows["clean_path"][start]), str(rows["noise_path"][start])
        if reason is None:
            assert mixer is not None  # some group is mixable, so there is a mixer
            try:
                buf = mixer.members(g)
            except AudioError as exc:
                reason = f"pair not renderable: {clean_path} + {noise_path}: {exc}"
            else:
                k = end - start
                n_clip = _quantise_into(buf, out.pcm[out.n_out : out.n_out + k], float(mixer.bounds[g]))
                if n_clip is None:
                    reason = f"pair not renderable: non-finite samples from {clean_path}"
                else:
                    out.clipped += n_clip
                    out.gains[start:end, 0] = mixer.speech_gains[g]
                    out.gains[start:end, 1:] = mixer.gains[mixer.offsets[g] : mixer.offsets[g + 1]]
                    out.kept[start:end] = True
                    out.n_out += k
            g += 1
        if reason is not None:
            skipped.extend(
                {"pair_id": int(rows["pair_id"][i]), "utterance_id": str(rows["utterance_id"][i]), "reason": reason}
                for i in range(start, end)
            )
    return out, skipped


def render_shard(job: ShardJob) -> dict[str, Any]:
    """Render one shard and write its .npy and .json; return its summary plus ``kept`` (bool
    per planned row) and ``gains`` (``[n_kept, 3]``, :data:`GAIN_COLUMNS`), from which the
    caller writes the shard's recipes (:func:`jsqa.pairs.generate.generate_pairs` does).

    Pairs whose clean or noise audio is unreadable or silent are left out and listed in
    the summary's ``skipped``; an unusable room response is an error (a broken setting).
    """
    rirs = _shard_rirs(job)
    # The decoded utterances are dropped once their segments are cut (only the segments'
    # views of the files mixed stay alive).
    segments = _cut_segments(job, _decode_speech(job))
    mixed, skipped = _mix_groups(job, segments, _shard_mixer(job, segments, rirs))
    stem = shard_stem(job.out_dir, job.shard)
    with atomic_path(stem.with_suffix(".npy")) as tmp, open(tmp, "wb") as fh:
        np.save(fh, mixed.pcm[: mixed.n_out])
    summary = {
        "shard": job.shard,
        "render": job.render,
        "n_planned": job.n_rows,
        "n_rendered": mixed.n_out,
        "n_clipped_samples": mixed.clipped,
        "skipped": skipped,
    }
    write_json(stem.with_suffix(".json"), summary)
    # For the caller's recipes (.parquet, the shard's completion mark); not in the .json.
    return {**summary, "kept": mixed.kept, "gains": mixed.gains[mixed.kept]}


__all__ = [
    "DISTORTION_COLUMNS",
    "GAIN_COLUMNS",
    "INT16_SCALE",
    "PLAN_COLUMNS",
    "RENDER_FORMAT",
    "ShardJob",
    "crop",
    "loop_segment",
    "render_key",
    "render_pair",
    "render_shard",
    "segment_samples",
    "shard_stem",
    "worker_init",
]
