"""Writing the demo corpus (layout: :mod:`jsqa.data.demo`): talkers split by set, the clean,
noise and MOS files, and the manifests of a written corpus.

Deterministic: every file draws from its own stream (:mod:`jsqa.data.demo.streams`), so the
same arguments give byte-identical files whatever the number of worker threads.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from jsqa.audio import write_audio
from jsqa.config import DemoConfig
from jsqa.data.demo.degrade import DEGRADATIONS, apply_degradation
from jsqa.data.demo.label import (
    FW_BANDS,
    FW_FRAME_S,
    MOS_C,
    MOS_S,
    demo_condition,
    dimension_proxies,
    proxy_mos,
)
from jsqa.data.demo.noise import NOISE_FAMILIES, make_noise
from jsqa.data.demo.speech import Talker, clean_talkers, synth_utterance
from jsqa.data.demo.streams import CLIP, MOS_NOISE, NOISE, SPLIT, UTTERANCE, stream_rng
from jsqa.data.manifests import (
    CLEAN_COLUMNS,
    DIMENSIONS,
    NOISE_COLUMNS,
    audio_rows,
    mos_manifest_from_csv,
    write_manifest,
)
from jsqa.errors import ConfigError
from jsqa.io import atomic_dir, write_csv, write_json
from jsqa.mos_scale import clamp_mos
from jsqa.signal.levels import mix_at_snr

log = logging.getLogger(__name__)

MOS_DBS = {
    "train": "DEMO_TRAIN",
    "val": "DEMO_VAL",
    "test_noise": "DEMO_TEST_NOISE",
    "test_mixed": "DEMO_TEST_MIXED",
}
NISQA_COLUMNS = [
    "db", "con", "file", "con_description", "filename_deg", "filename_ref", "source", "lang",
    "votes", "mos", "mos_std", "filepath_deg", "filepath_ref",
]  # fmt: skip


@dataclass(frozen=True)
class DemoCorpus:
    """Where a generated demo corpus lives."""

    root: Path
    clean_dir: Path
    noise_dir: Path
    mos_csv: Path


# --------------------------------------------------------------------------- generation


def _check(cfg: DemoConfig, seed: int, sample_rate: int, mos_seconds: tuple[float, float]) -> None:
    """Reject arguments the generator cannot honour, naming the params.yaml key (``cfg`` itself
    was validated when built)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed: must be a non-negative integer, got {seed!r}")
    if sample_rate < 8000:
        raise ConfigError("data.sample_rate: must be >= 8000")
    if not 0.3 <= mos_seconds[0] <= mos_seconds[1]:
        raise ConfigError("mos_seconds: must be [low, high], low >= 0.3")
    _clip_counts(cfg.mos_clips, cfg.mos_splits)


def split_talkers(names: Sequence[str], shares: dict[str, float], seed: int) -> dict[str, list[str]]:
    """Assign whole talkers to train / val / test so no test talker is ever trained on.

    Test always gets at least one talker of its own; val gets its own from 3 talkers up,
    with 2 talkers it shares the train talker.
    """
    names = list(names)
    order = [names[i] for i in stream_rng(seed, SPLIT).permutation(len(names))]
    total = sum(shares.values())
    n = len(names)
    n_test = max(1, round(n * shares["test"] / total))
    n_val = max(1, round(n * shares["val"] / total)) if n >= 3 else 0
    while n - n_test - n_val < 1:
        if n_val > 1 and n_val >= n_test:
            n_val -= 1
        else:
            n_test -= 1
    test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    return {"train": sorted(train), "val": sorted(val or train), "test": sorted(test)}


def _clip_counts(total: int, shares: dict[str, float]) -> dict[str, int]:
    s = sum(shares.values())
    n_val = round(total * shares["val"] / s)
    n_test = round(total * shares["test"] / s)
    counts = {
        "train": total - n_val - n_test,
        "val": n_val,
        "test_noise": (n_test + 1) // 2,
        "test_mixed": n_test // 2,
    }
    if min(counts.values()) < 1:
        raise ConfigError(f"data.demo.mos_clips: {total} clips leave an empty set ({counts}); use more clips")
    return counts


def _write_clean(
    root: Path, talkers: list[Talker], cfg: DemoConfig, seed: int, sr: int, level_dbov: float,
    pool: Executor,
) -> None:  # fmt: skip
    def one(job: tuple[int, int]) -> None:
        i, k = job
        rng = stream_rng(seed, UTTERANCE, i, k)
        x = synth_utterance(talkers[i], rng.uniform(*cfg.utterance_seconds), sr, rng, level_dbov)
        write_audio(root / talkers[i].name / f"{talkers[i].name}-{k:03d}.wav", x, sr)

    jobs = [(i, k) for i in range(len(talkers)) for k in range(cfg.utterances_per_talker)]
    list(pool.map(one, jobs))


def _write_noise(root: Path, cfg: DemoConfig, seed: int, sr: int, pool: Executor) -> None:
    def one(job: tuple[str, int]) -> None:
        family, k = job
        rng = stream_rng(seed, NOISE, NOISE_FAMILIES.index(family), k)
        x = make_noise(family, cfg.noise_seconds, sr, rng)
        write_audio(root / f"{family}-{k:02d}.wav", x, sr)

    list(pool.map(one, [(f, k) for f in cfg.noise_families for k in range(cfg.noise_per_family)]))


def _mos_clip(
    i: int,
    subset: str,
    talkers: list[Talker],
    banks: dict[str, np.ndarray],
    cfg: DemoConfig,
    seed: int,
    mos_seconds: tuple[float, float],
    degraded_share: float,
    level_dbov: float,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Synthesise, degrade and label clip ``i``; returns (deg, ref, CSV row)."""
    sr = cfg.mos_sample_rate
    rng = stream_rng(seed, CLIP, i)
    talker = talkers[int(rng.integers(len(talkers)))]
    ref = synth_utterance(talker, rng.uniform(*mos_seconds), sr, rng, level_dbov).astype(np.float64)
    family = cfg.noise_families[int(rng.integers(len(cfg.noise_families)))]
    bank = banks[family]
    start = int(rng.integers(0, len(bank) - len(ref) + 1))
    snr = float(rng.uniform(*cfg.mos_snr_db))
    deg = mix_at_snr(ref, bank[start : start + len(ref)], snr, sr)[0]
    description = f"{family} noise at {snr:.1f} dB SNR"
    kind, param = "none", 0.0
    if subset == "test_mixed" or (subset in ("train", "val") and rng.random() < degraded_share):
        kind = DEGRADATIONS[1 + int(rng.integers(len(DEGRADATIONS) - 1))]
        deg, what, param = apply_degradation(deg, kind, sr, rng)
        description += f" + {what}"
    # Label what the file will hold: 16-bit PCM cannot go past full scale.
    deg = np.clip(deg, -1.0, 1.0)
    label = proxy_mos(deg, ref, sr)
    dims = dimension_proxies(kind, param, snr, deg, sr)
    mos = float(clamp_mos(label + rng.normal(0, cfg.label_noise_std)))
    cid = f"c{i:05d}"
    row = {
        "db": MOS_DBS[subset],
        "con": DEGRADATIONS.index(kind),
        "file": cid,
        "con_description": description,
        "filename_deg": f"{cid}.wav",
        "filename_ref": f"{cid}.wav",
        "source": "jsqa-demo synthetic speech; proxy label, not human ratings",
        "lang": "und",
        "votes": 0,
        "mos": round(mos, 4),
        "mos_std": cfg.label_noise_std,
        # Per-dimension proxies (dimension_proxies), deterministic, not ratings.
        **{k: round(dims[k], 4) for k in DIMENSIONS},
        "filepath_deg": f"deg/{cid}.wav",
        "filepath_ref": f"ref/{cid}.wav",
        "split": "test" if subset.startswith("test") else subset,
        "talker": talker.name,
        "noise": family,
        "snr_db": round(snr, 3),
        "degradation": kind,
        # The evaluation's condition (NISQA evaluates per condition): degradation and SNR band.
        "condition": demo_condition(kind, snr),
        "proxy_mos": round(label, 4),
        "duration": round(len(ref) / sr, 4),
    }
    return deg, ref, row


def _write_mos(
    root: Path,
    talkers: list[Talker],
    cfg: DemoConfig,
    seed: int,
    mos_seconds: tuple[float, float],
    degraded_share: float,
    level_dbov: float,
    pool: Executor,
) -> None:
    sr = cfg.mos_sample_rate
    by_name = {t.name: t for t in talkers}
    assignment = split_talkers([t.name for t in talkers], cfg.mos_splits, seed)
    counts = _clip_counts(cfg.mos_clips, cfg.mos_splits)
    # One long bank per family, separate from the noise files, so test noise is never a file
    # the encoder was pretrained on.
    bank_s = max(cfg.noise_seconds, 2 * mos_seconds[1])

    def bank(family: str) -> np.ndarray:
        rng = stream_rng(seed, MOS_NOISE, NOISE_FAMILIES.index(family))
        return make_noise(family, bank_s, sr, rng).astype(np.float64)

    banks = dict(zip(cfg.noise_families, pool.map(bank, cfg.noise_families)))
    jobs = []
    for subset, count in counts.items():
        who = [by_name[n] for n in assignment["test" if subset.startswith("test") else subset]]
        jobs += [(subset, who)] * count

    def one(i: int) -> dict:
        subset, who = jobs[i]
        deg, ref, row = _mos_clip(i, subset, who, banks, cfg, seed, mos_seconds, degraded_share, level_dbov)
        write_audio(root / row["filepath_deg"], deg, sr)
        write_audio(root / row["filepath_ref"], ref, sr)
        return row

    table = pd.DataFrame(list(pool.map(one, range(len(jobs)))))
    write_csv(root / "NISQA_corpus_file.csv", table)
    log.info("demo MOS set: %d clips, %s", len(table), table["db"].value_counts().to_dict())


def generate_demo(
    out_dir: Path,
    cfg: DemoConfig,
    seed: int,
    sample_rate: int = 16000,
    *,
    mos_seconds: tuple[float, float] = (3.0, 6.0),
    degraded_share: float = 0.4,
    speech_level_dbov: float = -26.0,
    workers: int | None = None,
) -> DemoCorpus:
    """Write the demo corpus to ``out_dir`` (replacing it whole) and describe where it is.

    Deterministic: the same arguments give byte-identical files. The corpus is built in a
    temporary sibling directory and renamed into place, so an interrupted run leaves the
    previous corpus (or nothing) rather than a partial one. ``workers`` threads do the work
    (default: the CPU count, at most 8); their number never changes the output.
    """
    out_dir = Path(out_dir)
    _check(cfg, seed, sample_rate, mos_seconds)
    seed = int(seed)
    workers = workers or min(8, os.cpu_count() or 1)
    talkers = clean_talkers(cfg.n_talkers, seed)
    with atomic_dir(out_dir) as tmp:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the corpus is meant to be shared
        # Threads suffice: filtering, FFTs and file writes release the GIL.
        with ThreadPoolExecutor(max_workers=workers) as pool:
            _write_clean(tmp / "clean", talkers, cfg, seed, sample_rate, speech_level_dbov, pool)
            _write_noise(tmp / "noise", cfg, seed, sample_rate, pool)
            _write_mos(
                tmp / "mos", talkers, cfg, seed, mos_seconds, degraded_share, speech_level_dbov,
                pool,
            )  # fmt: skip
        write_json(
            tmp / "demo.json",
            {
                "generator": "jsqa.data.demo",
                "seed": seed,
                "sample_rate": sample_rate,
                "config": dataclasses.asdict(cfg),
                "mos_seconds": list(mos_seconds),
                "degraded_share": degraded_share,
                "speech_level_dbov": speech_level_dbov,
                "labels": "proxy_mos (fwSNRseg -> logistic) + Gaussian scatter; not human ratings",
                "proxy": {"c": MOS_C, "s": MOS_S, "bands": FW_BANDS, "frame_s": FW_FRAME_S},
            },
        )
    log.info("demo corpus written to %s", out_dir)
    return corpus_at(out_dir)


def corpus_at(out_dir: Path) -> DemoCorpus:
    """The :class:`DemoCorpus` layout under ``out_dir`` (nothing is checked or written)."""
    out_dir = Path(out_dir)
    return DemoCorpus(
        root=out_dir,
        clean_dir=out_dir / "clean",
        noise_dir=out_dir / "noise",
        mos_csv=out_dir / "mos" / "NISQA_corpus_file.csv",
    )


# --------------------------------------------------------------------------- manifests


def prepare_demo(corpus: DemoCorpus, manifest_dir: Path, root: Path = Path(".")) -> dict[str, Path]:
    """Build clean / noise / mos manifests and a quarantine list for a generated corpus.

    Returns the written paths under the keys 'clean', 'noise', 'mos' and 'quarantine'.
    Unreadable audio files are left out of the manifests and listed in quarantine.csv
    (columns path, reason; empty when every file reads). Paths are relative to ``root``.
    """
    manifest_dir = Path(manifest_dir)
    clean_files = sorted(Path(corpus.clean_dir).glob("*/*.wav"))
    noise_files = sorted(Path(corpus.noise_dir).glob("*.wav"))

    clean_rows, bad_clean = audio_rows(clean_files, root, extra=lambda p: {"id": p.stem, "speaker": p.parent.name})
    noise_rows, bad_noise = audio_rows(
        noise_files, root, extra=lambda p: {"id": p.stem, "environment": p.stem.rsplit("-", 1)[0]}
    )
    clean = pd.DataFrame(clean_rows, columns=CLEAN_COLUMNS)
    noise = pd.DataFrame(noise_rows, columns=NOISE_COLUMNS)
    mos, bad_mos = mos_manifest_from_csv(corpus.mos_csv, root=root)

    paths = {name: manifest_dir / f"{name}.parquet" for name in ("clean", "noise", "mos")}
    paths["quarantine"] = manifest_dir / "quarantine.csv"
    write_manifest(paths["clean"], clean, "clean")
    write_manifest(paths["noise"], noise, "noise")
    write_manifest(paths["mos"], mos, "mos")
    quarantine = pd.DataFrame(bad_clean + bad_noise + bad_mos, columns=["path", "reason"])
    write_csv(paths["quarantine"], quarantine)
    log.info(
        "demo manifests: %d clean, %d noise, %d mos, %d quarantined",
        len(clean), len(noise), len(mos), len(quarantine),
    )  # fmt: skip
    return paths
