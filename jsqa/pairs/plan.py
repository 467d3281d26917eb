"""Pair planning: every random choice of the pair set, deterministic from (seed, utterance index)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from jsqa.config import PairsConfig
from jsqa.data.manifests import CLEAN_COLUMNS, NOISE_COLUMNS, require_columns, resolve
from jsqa.errors import ConfigError, ManifestError
from jsqa.pairs.jnd import within_jnd
from jsqa.pairs.render import DISTORTION_COLUMNS, PLAN_COLUMNS, segment_samples
from jsqa.signal import distortions


def plan_columns(frame: pd.DataFrame) -> list[str]:
    """The planned columns of ``frame``: :data:`PLAN_COLUMNS`, plus the distortion ones if any."""
    extra = DISTORTION_COLUMNS if DISTORTION_COLUMNS[0] in frame.columns else []
    return PLAN_COLUMNS + extra


def plan_uniforms(seed: int, start: int, count: int, width: int) -> np.ndarray:
    """The uniforms ``[count, width]`` that plan utterances ``start .. start + count - 1``.

    Utterance ``i`` owns draws ``[i * width, (i + 1) * width)`` of ``default_rng(seed)``
    (PCG64, one 64-bit output per double), so a row depends on (seed, i, width) only, the
    whole plan comes from one vectorised draw, and one utterance is replayed alone by
    advancing the stream ``i * width`` outputs (what ``start`` does).
    """
    # PCG64 seeded with the run seed: the generator default_rng(seed) builds, named here
    # because advancing is PCG64's own method.
    bits = np.random.PCG64(int(seed))
    bits.advance(int(start) * int(width))
    return np.random.Generator(bits).random((int(count), int(width)))


def plan_width(cfg: PairsConfig) -> int:
    """Uniforms drawn per utterance by :func:`plan_pairs` (the row width of :func:`plan_uniforms`)."""
    k, draws = cfg.pairs_per_utterance, _segment_draws(cfg)
    return 3 * draws + 4 * k + 2 * draws + 2 * k


def _check_sample_rate(cfg: PairsConfig, sample_rate: int) -> tuple[distortions.Spec, ...]:
    """The checks that need the sample rate (the config validated everything else when built);
    returns the distortion specs, parsed once here."""
    if sample_rate <= 0:
        raise ConfigError(f"data.sample_rate: must be positive, got {sample_rate}")
    if segment_samples(cfg, sample_rate) <= 0:
        raise ConfigError(f"pairs.segment_seconds: {cfg.segment_seconds} s is no sample at {sample_rate} Hz")
    return distortions.parse_specs(cfg.distortions, sample_rate)


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
    bad = ~np.asarray(within_jnd(snr_a, snr_b, jnd))
    while bad.any():
        snr_b[bad] = snr_a[bad] + 0.5 * (snr_b[bad] - snr_a[bad])
        bad = ~np.asarray(within_jnd(snr_a, snr_b, jnd))
    anchor_b = np.minimum(hi + u[..., 3] * jnd, np.nextafter(hi + jnd, -np.inf))
    return np.where(anchor, np.inf, snr_a), np.where(anchor, anchor_b, snr_b)


def _check_inputs(
    clean: pd.DataFrame, noise: pd.DataFrame, cfg: PairsConfig, seed: int, sample_rate: int
) -> tuple[distortions.Spec, ...]:
    """Reject what :func:`plan_pairs` cannot plan from; returns the distortion specs."""
    specs = _check_sample_rate(cfg, sample_rate)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed: must be a non-negative integer, got {seed!r}")
    require_columns(clean, CLEAN_COLUMNS, "clean manifest")
    require_columns(noise, NOISE_COLUMNS, "noise manifest")
    if len(clean) == 0:
        raise ManifestError("clean manifest: no utterances to make pairs from")
    if len(noise) == 0:
        raise ManifestError("noise manifest: no noise files to mix with")
    return specs


def _segment_draws(cfg: PairsConfig) -> int:
    """Segment draws per utterance: one shared by its pairs with ``shared_segment``, else one per pair."""
    return 1 if cfg.shared_segment else cfg.pairs_per_utterance


def _pair_columns(
    u: np.ndarray, clean: pd.DataFrame, noise: pd.DataFrame, cfg: PairsConfig, sample_rate: int
) -> dict[str, np.ndarray]:
    """Noise file index, noise and crop offsets and SNRs of every pair (in pair order) from
    the utterances' uniforms ``u`` (:func:`plan_uniforms`): segment draws, then SNR draws."""
    seg = segment_samples(cfg, sample_rate)
    k, draws, n_utt = cfg.pairs_per_utterance, _segment_draws(cfg), len(clean)
    clean_len = _samples(clean["duration"], sample_rate, "clean manifest")
    noise_len = _samples(noise["duration"], sample_rate, "noise manifest")
    seg_u = np.repeat(u[:, : 3 * draws].reshape(n_utt, draws, 3), k // draws, axis=1)
    noise_idx = _scaled_index(seg_u[..., 0], len(noise))
    noise_offset = _scaled_index(seg_u[..., 1], noise_len[noise_idx])
    crop_room = np.maximum(clean_len - seg, 0)[:, None] + 1
    crop_offset = _scaled_index(seg_u[..., 2], crop_room)
    snr_a, snr_b = _snrs_from_uniforms(u[:, 3 * draws : 3 * draws + 4 * k].reshape(n_utt, k, 4), cfg)
    return {
        "noise_idx": noise_idx.ravel(),
        "noise_offset": noise_offset.ravel(),
        "crop_offset": crop_offset.ravel(),
        "snr_a": snr_a.ravel(),
        "snr_b": snr_b.ravel(),
    }


def _plan_frame(
    clean: pd.DataFrame, noise: pd.DataFrame, cfg: PairsConfig, seed: int, cols: Mapping[str, np.ndarray]
) -> pd.DataFrame:
    """The recipes (:data:`PLAN_COLUMNS`) from the drawn ``cols`` (:func:`_pair_columns`):
    pair ids, the utterance and noise each pair names, and its shard."""
    n = len(clean) * cfg.pairs_per_utterance
    pair_id = np.arange(n, dtype=np.int64)
    utt = np.repeat(np.arange(len(clean)), cfg.pairs_per_utterance)
    noise_ids = noise["id"].astype(str).to_numpy()
    noise_paths = noise["path"].astype(str).to_numpy()
    return pd.DataFrame(
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
            "seed": np.full(n, int(seed), dtype=np.int64),
            "shard": pair_id // cfg.shard_size,
        }
    )


def _assign_distortions(
    plan: pd.DataFrame, u: np.ndarray, specs: Sequence[distortions.Spec], cfg: PairsConfig, rir_paths: Sequence[str]
) -> None:
    """Add :data:`DISTORTION_COLUMNS` to ``plan`` from the last uniforms of the utterances' rows."""
    k, draws, n_utt = cfg.pairs_per_utterance, _segment_draws(cfg), len(u)
    n = n_utt * k
    base = 3 * draws + 4 * k
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
    within-step offset per pair. Columns :data:`jsqa.pairs.render.DISTORTION_COLUMNS` are added only then.
    With ``pairs.distortions.reverb.rir_folder`` set, ``rir_paths`` are its room responses
    (:func:`rir_paths`) and a reverb pair records the one it uses
    (:func:`jsqa.signal.distortions.pick_rir` of its ``dist_seed``) in ``rir_path``.
    """
    specs = _check_inputs(clean, noise, cfg, seed, sample_rate)
    # One row of uniforms per utterance; everything else is vectorised over utterances. The
    # distortion uniforms come last, and are drawn whether or not any distortion is on, so
    # turning one on changes no other column.
    u = plan_uniforms(seed, 0, len(clean), plan_width(cfg))
    plan = _plan_frame(clean, noise, cfg, seed, _pair_columns(u, clean, noise, cfg, sample_rate))
    if not cfg.distortions.enabled:
        return plan[PLAN_COLUMNS]
    _assign_distortions(plan, u, specs, cfg, rir_paths)
    return plan[PLAN_COLUMNS + DISTORTION_COLUMNS]


def _distortion_columns(
    specs: Sequence[distortions.Spec], seg_u: np.ndarray, pair_u: np.ndarray
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
