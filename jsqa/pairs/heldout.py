"""Held-out JND pairs: labelled same/different pairs from speech the encoder never saw.

Pretraining sees every utterance of the clean manifest. The held-out pairs take their speech
from the clean references (``ref_path``) of the MOS manifest's test split instead (new
utterances; in the demo, the test talkers' own clips), never a file the clean manifest lists,
and their noise from the noise manifest at freshly drawn offsets. Each pair is one utterance
and one noise segment at two SNRs whose difference ``|snr_a - snr_b|`` is drawn uniformly
over ``[0, max_delta_jnd * jnd_db)``; it is labelled *different* unless the JND rule
(:func:`jsqa.pairs.jnd.within_jnd`) calls it the same percept, so ``max_delta_jnd = 2`` gives
balanced classes. Planning reuses :func:`jsqa.pairs.plan.plan_pairs` (noise, offsets, crops,
first SNR) and rendering :func:`jsqa.pairs.render.render_pair`; all draws come from the seed.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from jsqa.audio import audio_info, load_audio
from jsqa.config import PairsConfig
from jsqa.data.manifests import CLEAN_COLUMNS, resolve
from jsqa.errors import AudioError, ConfigError, ManifestError
from jsqa.pairs.jnd import within_jnd
from jsqa.pairs.plan import plan_pairs
from jsqa.pairs.render import render_pair
from jsqa.signal.levels import active_speech_level

log = logging.getLogger(__name__)

# Mixed into the run seed so held-out draws never share a stream with the pretraining plan.
_HELDOUT_STREAM = 0x4A4E44  # "JND"


def heldout_seed(seed: int, part: int = 0) -> int:
    """The seed of the held-out pairs' draws (``part`` 0: the plan, 1: the SNR steps)."""
    return int(np.random.SeedSequence([int(seed), _HELDOUT_STREAM, int(part)]).generate_state(1)[0])


class NoHeldoutReferences(ManifestError):
    """The MOS manifest has no test-split clean reference to make held-out pairs from (a user's
    MOS CSV without ``filepath_ref``, NISQA LIVETALK only, ...): calibration is unavailable, and
    the ``calibrate`` stage records that instead of failing."""


def heldout_clean(mos: pd.DataFrame, clean: pd.DataFrame, root: Path = Path(".")) -> pd.DataFrame:
    """Clean utterances for held-out pairs (columns :data:`CLEAN_COLUMNS`): the distinct
    ``ref_path`` files of the MOS manifest's test split that the clean manifest does not list.

    Raises :class:`NoHeldoutReferences` when there are none (no ``ref_path`` column, no test
    reference, or only references the clean manifest lists).
    """
    why = "no test-split clean references (ref_path) in the MOS manifest: "
    if "ref_path" not in mos.columns:
        raise NoHeldoutReferences(
            why + "it has no ref_path column (held-out JND pairs need the test clips' clean references)"
        )
    in_test = mos["split"] == "test"
    has_ref = mos["ref_path"].notna() & (mos["ref_path"].astype(str) != "")
    test = mos[in_test & has_ref]
    if test.empty:
        raise NoHeldoutReferences(
            why + f"none of its {int(in_test.sum())} test-split rows has one "
            f"({int(has_ref.sum())} rows in all have one)"
        )
    seen = {Path(p).as_posix() for p in clean["path"].astype(str)}
    refs = sorted({Path(p).as_posix() for p in test["ref_path"].astype(str)} - seen)
    if not refs:
        raise NoHeldoutReferences(why + "every test-split reference is in the clean manifest (pretraining saw it)")
    rows: list[dict] = []
    for ref in refs:
        info = audio_info(resolve(ref, root))
        rows.append(
            {
                "id": f"heldout-{len(rows):05d}",
                "path": ref,
                "duration": info["duration"],
                "sample_rate": info["sample_rate"],
                "channels": info["channels"],
                "speaker": ref,
            }
        )
    return pd.DataFrame(rows, columns=CLEAN_COLUMNS)


def plan_heldout(
    clean: pd.DataFrame,
    noise: pd.DataFrame,
    cfg: PairsConfig,
    seed: int,
    sample_rate: int,
    max_delta_jnd: float = 2.0,
) -> pd.DataFrame:
    """Recipes of the held-out pairs plus ``delta_db`` and ``different`` (bool: beyond one JND).

    ``cfg`` gives the JND, SNR range, segment length, level and pairs per utterance; clean
    anchors and distortions are turned off (the labels are about noise level alone).
    """
    if not max_delta_jnd > 0:
        raise ConfigError(f"calibrate.max_delta_jnd: must be positive, got {max_delta_jnd}")
    # No data profile lists "": every distortion probability 0 (PairsConfig() ships the demo mix; DistortionsConfig() has every kind off).
    cfg = dataclasses.replace(cfg, clean_anchor_prob=0.0, distortions=cfg.distortions.for_profile(""))
    plan = plan_pairs(clean, noise, cfg, heldout_seed(seed, 0), sample_rate)
    rng = np.random.default_rng(heldout_seed(seed, 1))
    u = rng.random((len(plan), 2))
    delta = u[:, 0] * max_delta_jnd * cfg.jnd_db
    snr_a = plan["snr_a"].to_numpy(dtype=np.float64)
    snr_b = snr_a + np.where(u[:, 1] < 0.5, -delta, delta)
    plan["snr_b"] = snr_b
    plan["delta_db"] = np.abs(snr_b - snr_a)
    plan["different"] = ~np.asarray(within_jnd(snr_a, snr_b, cfg.jnd_db), dtype=bool)
    return plan


def render_heldout(
    plan: pd.DataFrame, cfg: PairsConfig, sample_rate: int, root: Path = Path(".")
) -> tuple[pd.DataFrame, np.ndarray]:
    """Render the planned pairs: (the rows rendered, float32 ``[n, 2, segment]``).

    Pairs whose audio is unreadable or silent are left out with a warning; ManifestError when
    none is left.
    """
    audio: dict[tuple[str, bool], tuple[np.ndarray, float] | None] = {}

    def source(path: str, speech: bool) -> tuple[np.ndarray, float] | None:
        """(samples, active speech level or 0 for noise), read once; None when unusable."""
        if (path, speech) not in audio:
            try:
                x = load_audio(resolve(path, root), sample_rate)[0]
                audio[path, speech] = (x, active_speech_level(x, sample_rate) if speech else 0.0)
            except AudioError as exc:
                log.warning("held-out pairs: skipping %s (%s)", path, exc)
                audio[path, speech] = None
        return audio[path, speech]

    keep, members = [], []
    for i, row in enumerate(plan.to_dict(orient="records")):
        speech, noise = source(str(row["clean_path"]), True), source(str(row["noise_path"]), False)
        if speech is None or noise is None:
            continue
        try:
            a, b, _ = render_pair(row, speech[0], noise[0], cfg, sample_rate, speech_level_db=speech[1])
        except AudioError as exc:
            log.warning("held-out pair %d: skipped (%s)", i, exc)
            continue
        keep.append(i)
        members.append(np.stack([a, b]))
    if not members:
        raise ManifestError("held-out JND pairs: none could be rendered")
    return plan.iloc[keep].reset_index(drop=True), np.stack(members).astype(np.float32)


def split_halves(utterances: pd.Series, seed: int) -> np.ndarray:
    """Bool per pair: True for the fitting half, False for the reporting half, by utterance
    (no utterance is in both), a seeded permutation of the distinct utterances."""
    ids = np.array(sorted(set(utterances.astype(str))))
    order = np.random.default_rng(heldout_seed(seed, 2)).permutation(len(ids))
    fit_ids = set(ids[order[: (len(ids) + 1) // 2]].tolist())
    return utterances.astype(str).isin(fit_ids).to_numpy()
