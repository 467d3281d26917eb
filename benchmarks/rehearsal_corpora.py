"""Stand-in corpora in the real layouts, for rehearsing the ``paper`` profile at a chosen size.

:func:`build_mirror` writes, under one folder that an HTTP server can serve as
``data.corpora.mirrors``:

- ``librispeech/train-clean-100.tar.gz`` and ``train-clean-360.tar.gz``: ``LibriSpeech/<subset>/
  <speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac`` with one ``<speaker>-<chapter>.trans.txt``
  per chapter, 16 kHz mono FLAC; talkers split between the subsets as in the real corpus (100.6 h
  against 363.6 h);
- ``demand/<ENV>_16k.zip`` for the five default environments, each ``<ENV>/ch01.wav`` at 16 kHz
  (only the first of DEMAND's 16 channels: the one ``prepare_demand`` reads);
- ``nisqa/NISQA_Corpus.zip``: ``NISQA_Corpus/NISQA_corpus_file.csv`` in the corpus's own 21
  columns, and ``<db>/deg`` and ``<db>/ref`` 48 kHz WAVs for four simulated subsets
  (TRAIN_SIM, VAL_SIM, TEST_FOR, TEST_P501), with ``mos_std`` and ``votes``.

The audio is the demo generator's (synthetic talkers, noise families, degradations, proxy labels),
sized to ``hours`` of speech and to a MOS set that grows with it. It returns the md5 of every
archive, for ``data.corpora.checksums``. Deterministic for a given (hours, seed).
"""

from __future__ import annotations

import hashlib
import math
import shutil
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import soundfile as sf

from jsqa.config import DemoConfig
from jsqa.data.demo.corpus import generate_demo

# Real LibriSpeech: 132,553 utterances in 464.2 h (12.6 s each); 1,172 speakers in 100 + 360.
UTTERANCE_SECONDS = (8.0, 17.0)
UTTERANCES_PER_SPEAKER = 113
SHARE_100 = 100.6 / (100.6 + 363.6)
DEMAND_ENVIRONMENTS = ("TBUS", "SCAFE", "PCAFETER", "SPSQUARE", "STRAFFIC")
NOISE_FAMILIES = ("babble", "pink", "brown", "transients", "hum")  # one per environment, in order
# The demo's MOS dbs become NISQA's: its split follows the name (TRAIN_/VAL_/TEST_).
NISQA_DBS = {
    "DEMO_TRAIN": "NISQA_TRAIN_SIM",
    "DEMO_VAL": "NISQA_VAL_SIM",
    "DEMO_TEST_NOISE": "NISQA_TEST_FOR",
    "DEMO_TEST_MIXED": "NISQA_TEST_P501",
}
NISQA_CSV_COLUMNS = [
    "db", "con", "file", "con_description", "filename_deg", "filename_ref", "source", "lang", "votes",
    "mos", "noi", "col", "dis", "loud", "noi_std", "col_std", "dis_std", "loud_std", "mos_std",
    "filepath_deg", "filepath_ref",
]  # fmt: skip
MOS_CLIPS_PER_HOUR = 100  # the rehearsal's MOS set grows with the speech (NISQA: 14,432 clips for 464 h)
MIN_MOS_CLIPS = 200


@dataclass(frozen=True)
class Mirror:
    """What :func:`build_mirror` wrote: the served folder and what the params must say."""

    root: Path
    checksums: dict[str, str]  # archive name -> "md5:<hex>"
    archive_bytes: dict[str, int]
    speech_hours: float
    utterances: int
    speakers: int
    mos_clips: int
    test_clips: int  # of the MOS clips, those in TEST dbs
    nisqa_subsets: list[str] = field(default_factory=list)


def demo_config(hours: float, mos_clips: int | None = None) -> DemoConfig:
    """The demo generator's settings for ``hours`` of speech and its MOS set (``mos_clips``,
    default :data:`MOS_CLIPS_PER_HOUR` per hour, at least :data:`MIN_MOS_CLIPS`)."""
    mean = sum(UTTERANCE_SECONDS) / 2
    utterances = max(16, math.ceil(hours * 3600 / mean))
    speakers = max(8, round(utterances / UTTERANCES_PER_SPEAKER))
    return DemoConfig(
        n_talkers=speakers,
        utterances_per_talker=math.ceil(utterances / speakers),
        utterance_seconds=UTTERANCE_SECONDS,
        noise_seconds=float(min(300.0, max(30.0, 60.0 * hours))),
        noise_families=NOISE_FAMILIES,
        noise_per_family=1,
        mos_clips=mos_clips or max(MIN_MOS_CLIPS, round(MOS_CLIPS_PER_HOUR * hours)),
    )


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _librispeech(clean_dir: Path, stage: Path) -> dict[str, int]:
    """FLAC + transcripts in the LibriSpeech tree under ``stage``; returns utterances per subset."""
    talkers = sorted(p for p in clean_dir.iterdir() if p.is_dir())
    n_100 = min(len(talkers) - 1, max(1, round(len(talkers) * SHARE_100)))
    counts: dict[str, int] = {}
    for i, talker in enumerate(talkers):
        subset = "train-clean-100" if i < n_100 else "train-clean-360"
        speaker, chapter = str(100 + i), str(1000 + 7 * i)
        folder = stage / "LibriSpeech" / subset / speaker / chapter
        folder.mkdir(parents=True)
        lines = []
        for k, wav in enumerate(sorted(talker.glob("*.wav"))):
            audio, sr = sf.read(wav, dtype="int16")
            utt = f"{speaker}-{chapter}-{k:04d}"
            sf.write(folder / f"{utt}.flac", audio, sr, subtype="PCM_16", format="FLAC")
            lines.append(f"{utt} SYNTHETIC SPEECH OF TALKER {talker.name.upper()} NUMBER {k}")
        (folder / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
        counts[subset] = counts.get(subset, 0) + len(lines)
    (stage / "LibriSpeech" / "README.TXT").write_text("Rehearsal stand-in for LibriSpeech (synthetic speech).\n")
    return counts


def _tar_subsets(stage: Path, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    archives = []
    for subset in sorted(p.name for p in (stage / "LibriSpeech").iterdir() if p.is_dir()):
        archive = out / f"{subset}.tar.gz"
        # FLAC does not deflate further: level 1 keeps the format and saves the time.
        with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
            tar.add(stage / "LibriSpeech" / "README.TXT", "LibriSpeech/README.TXT")
            tar.add(stage / "LibriSpeech" / subset, f"LibriSpeech/{subset}")
        archives.append(archive)
    return archives


def _demand(noise_dir: Path, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    archives = []
    for env, family in zip(DEMAND_ENVIRONMENTS, NOISE_FAMILIES):
        archive = out / f"{env}_16k.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:
            z.write(noise_dir / f"{family}-00.wav", f"{env}/ch01.wav")
        archives.append(archive)
    return archives


def _nisqa(mos_dir: Path, out: Path) -> tuple[Path, pd.Series]:
    table = pd.read_csv(mos_dir / "NISQA_corpus_file.csv")
    table["db"] = table["db"].map(NISQA_DBS)
    table["votes"] = 5
    for dim in ("noi", "col", "dis", "loud"):
        table[f"{dim}_std"] = table["mos_std"]
    old_deg, old_ref = list(table["filepath_deg"]), list(table["filepath_ref"])
    table["filepath_deg"] = [f"{db}/deg/{Path(p).name}" for db, p in zip(table["db"], old_deg)]
    table["filepath_ref"] = [f"{db}/ref/{Path(p).name}" for db, p in zip(table["db"], old_ref)]
    table = table[NISQA_CSV_COLUMNS]
    out.mkdir(parents=True, exist_ok=True)
    archive = out / "NISQA_Corpus.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:
        z.writestr("NISQA_Corpus/NISQA_corpus_file.csv", table.to_csv(index=False))
        for db, rows in table.groupby("db"):
            z.writestr(f"NISQA_Corpus/{db}/{db}_file.csv", rows.to_csv(index=False))
        for src, dst in zip(old_deg + old_ref, list(table["filepath_deg"]) + list(table["filepath_ref"])):
            z.write(mos_dir / src, f"NISQA_Corpus/{dst}")
    return archive, table["db"].value_counts()


def build_mirror(out: Path, hours: float, seed: int = 1234, mos_clips: int | None = None) -> Mirror:
    """Write the three corpora's archives for ``hours`` of speech under ``out`` (replaced whole)."""
    out = Path(out)
    shutil.rmtree(out, ignore_errors=True)
    cfg = demo_config(hours, mos_clips)
    work = out.with_name(out.name + ".work")
    shutil.rmtree(work, ignore_errors=True)
    corpus = generate_demo(work / "demo", cfg, seed, 16000, mos_seconds=(4.0, 10.0))
    per_subset = _librispeech(corpus.clean_dir, work / "ls")
    archives = _tar_subsets(work / "ls", out / "librispeech") + _demand(corpus.noise_dir, out / "demand")
    nisqa, dbs = _nisqa(corpus.mos_csv.parent, out / "nisqa")
    archives.append(nisqa)
    seconds = sum(sf.info(p).duration for p in corpus.clean_dir.glob("*/*.wav"))
    shutil.rmtree(work)
    return Mirror(
        root=out,
        checksums={a.name: f"md5:{_md5(a)}" for a in archives},
        archive_bytes={a.name: a.stat().st_size for a in archives},
        speech_hours=seconds / 3600,
        utterances=sum(per_subset.values()),
        speakers=cfg.n_talkers,
        mos_clips=int(dbs.sum()),
        test_clips=int(sum(n for db, n in dbs.items() if db.startswith("NISQA_TEST_"))),
        nisqa_subsets=sorted(dbs.index),
    )
