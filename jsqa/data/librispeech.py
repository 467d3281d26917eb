"""LibriSpeech (OpenSLR 12, CC BY 4.0): download the subset archives and build a clean manifest.

Layout after extraction: ``LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac``
with one ``<speaker>-<chapter>.trans.txt`` per chapter (``<utt-id> <TRANSCRIPT>`` per line).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from jsqa.data.download import Remote, fetch_and_extract, with_overrides
from jsqa.data.manifests import CLEAN_COLUMNS, audio_rows
from jsqa.errors import ConfigError, ManifestError

log = logging.getLogger(__name__)

MIRRORS: tuple[str, ...] = (
    "https://www.openslr.org/resources/12",
    "https://us.openslr.org/resources/12",
    "https://openslr.elda.org/resources/12",
    "https://openslr.trmal.net/resources/12",
)

# MD5s, sizes and the one published SHA-256 as listed on OpenSLR (see reference/data-sources.md).
_CHECKSUMS: dict[str, tuple[str, int | None, str | None]] = {
    "dev-clean": ("42e2234ba48799c1f50f24a7926300a1", 337_926_286, None),
    "test-clean": ("32fa31d27d2e1cad72775fee3f4849a9", 346_663_984, None),
    "train-clean-100": (
        "2a93770f6d5c6c964bc36631d331a522",
        6_387_309_499,
        "d4ddd1d5a6ab303066f14971d768ee43278a5f2a0aa43dc716b0e64ecbbbf6e2",
    ),
    "train-clean-360": ("c0e676e450a7ff2f54aeade5171606fa", None, None),
    "train-other-500": ("d1a0fd59409feb2c614ce4d30c387708", None, None),
}


def _remote(subset: str, md5: str, size: int | None, sha256: str | None) -> Remote:
    name = f"{subset}.tar.gz"
    return Remote(name, tuple(f"{m}/{name}" for m in MIRRORS), md5=md5, sha256=sha256, size=size)


SUBSETS: dict[str, Remote] = {s: _remote(s, *c) for s, c in _CHECKSUMS.items()}

EXTRA_COLUMNS = ["chapter", "subset", "text"]
LIBRISPEECH_COLUMNS = CLEAN_COLUMNS + EXTRA_COLUMNS


def check_subsets(subsets: Sequence[str]) -> list[str]:
    """Return ``subsets`` as a list, or raise ConfigError naming the unknown ones and the known ones."""
    if isinstance(subsets, str):
        subsets = [subsets]
    unknown = [s for s in subsets if s not in SUBSETS]
    if unknown:
        raise ConfigError(f"unknown LibriSpeech subset(s) {', '.join(unknown)}; known: {', '.join(SUBSETS)}")
    if not subsets:
        raise ConfigError(f"no LibriSpeech subset chosen; known: {', '.join(SUBSETS)}")
    return list(subsets)


def download_librispeech(
    target_dir: Path,
    subsets: Sequence[str],
    *,
    base_urls: str | Sequence[str] | None = None,
    checksums: Mapping[str, str] | None = None,
    progress: bool = True,
    keep_archives: bool = True,
) -> Path:
    """Download and extract LibriSpeech subsets; return ``target_dir/'LibriSpeech'``.

    Idempotent: subsets already extracted are skipped. ``base_urls`` replaces the OpenSLR
    mirrors (each is tried in order with ``<base>/<subset>.tar.gz``); ``checksums`` (archive
    name -> digest) replaces the pinned MD5 and size of the archives it names (:func:`with_overrides`).
    """
    target_dir = Path(target_dir)
    for subset in check_subsets(subsets):
        fetch_and_extract(
            with_overrides(SUBSETS[subset], base_urls, checksums),
            target_dir,
            progress=progress,
            keep_archive=keep_archives,
        )
    return target_dir / "LibriSpeech"


def read_transcripts(chapter_dir: Path) -> dict[str, str]:
    """Utterance id -> transcript from every ``*.trans.txt`` in a chapter folder."""
    texts: dict[str, str] = {}
    for trans in chapter_dir.glob("*.trans.txt"):
        for line in trans.read_text(encoding="utf-8").splitlines():
            utt, _, text = line.strip().partition(" ")
            if utt:
                texts[utt] = text.strip()
    return texts


def _corpus_root(corpus_dir: Path) -> Path:
    # Accept the download target too (the folder that holds LibriSpeech/).
    nested = corpus_dir / "LibriSpeech"
    return nested if nested.is_dir() and corpus_dir.name != "LibriSpeech" else corpus_dir


def prepare_librispeech(
    corpus_dir: Path,
    subsets: Sequence[str],
    root: Path = Path("."),
    workers: int | None = None,
) -> tuple[pd.DataFrame, list[dict]]:
    """Build the clean manifest of the chosen subsets.

    Returns (manifest, quarantine): the manifest has CLEAN_COLUMNS plus chapter, subset and
    text (the chapter's transcript line, '' when absent); id is the utterance id and speaker
    the speaker folder. Unreadable files go to quarantine (path, reason) and the build goes on.
    """
    corpus_dir = _corpus_root(Path(corpus_dir))
    files: list[Path] = []
    texts: dict[str, str] = {}
    subset_of: dict[Path, str] = {}
    for subset in check_subsets(subsets):
        folder = corpus_dir / subset
        if not folder.is_dir():
            raise ManifestError(
                f"{folder}: LibriSpeech subset not found (run download_librispeech for '{subset}' first)"
            )
        found = sorted(folder.glob("*/*/*.flac"))
        if not found:
            raise ManifestError(f"{folder}: no FLAC files (incomplete download? run download_librispeech again)")
        for chapter_dir in sorted({f.parent for f in found}):
            texts.update(read_transcripts(chapter_dir))
        files.extend(found)
        subset_of[folder] = subset

    missing_text = [f.stem for f in files if f.stem not in texts]
    if missing_text:
        log.warning("%d utterance(s) without a transcript line, e.g. %s", len(missing_text), missing_text[0])

    def extra(p: Path) -> dict:
        return {
            "id": p.stem,
            "speaker": p.parent.parent.name,
            "chapter": p.parent.name,
            "subset": subset_of[p.parent.parent.parent],
            "text": texts.get(p.stem, ""),
        }

    rows, quarantine = audio_rows(files, Path(root), workers=workers, extra=extra)
    manifest = pd.DataFrame(rows, columns=LIBRISPEECH_COLUMNS)
    log.info(
        "LibriSpeech %s: %d utterances, %d quarantined",
        ",".join(subset_of.values()), len(manifest), len(quarantine),
    )  # fmt: skip
    return manifest, quarantine
