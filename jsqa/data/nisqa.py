"""NISQA corpus (Mittag et al., Zenodo record 4728081) and MOS datasets in its CSV layout.

``NISQA_corpus_file.csv`` lists every clip with ``db`` (its subset), ``filepath_deg`` (relative
to the corpus root) and ``mos``; the subset name says the split (TRAIN / VAL / TEST).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from jsqa.config import NISQA_SUBSETS
from jsqa.data.download import Remote, fetch_and_extract, with_overrides
from jsqa.data.manifests import MOS_COLUMNS, MOS_OPTIONAL_COLUMNS, mos_manifest_from_csv, require_columns
from jsqa.errors import ConfigError, JsqaError, ManifestError

log = logging.getLogger(__name__)

NISQA_URLS: tuple[str, ...] = (
    "https://zenodo.org/records/4728081/files/NISQA_Corpus.zip",
    "https://zenodo.org/record/4728081/files/NISQA_Corpus.zip",
)
# No checksum is pinned: Zenodo's own MD5 was not available offline; download() still checks
# that the transfer completed.
NISQA_REMOTE = Remote("NISQA_Corpus.zip", NISQA_URLS)
CORPUS_CSV = "NISQA_corpus_file.csv"
REQUIRED_COLUMNS = ("db", "filepath_deg", "mos")
# The params.yaml key that records the user's acceptance (jsqa.config.CorporaConfig).
ACCEPT_PARAM = "data.corpora.accept_nisqa_licence"

LICENCE_NOTE = (
    "The NISQA corpus (about 16 GiB) has no single licence: each subset inherits the licence of "
    "its source material (speech corpora, recorded calls), and parts are reportedly for "
    "non-commercial use only. Check the terms at https://zenodo.org/records/4728081 and of each "
    "subset's sources before using it."
)


def require_licence(accept_licence: bool) -> None:
    """Raise JsqaError carrying LICENCE_NOTE unless the user accepted the NISQA licence.

    Callers that fetch other corpora first check this before any of them: a refusal after tens
    of GB of downloads wastes hours.
    """
    if not accept_licence:
        raise JsqaError(
            f"NISQA licence not accepted. {LICENCE_NOTE} To accept, set {ACCEPT_PARAM}: true in params.yaml."
        )


def download_nisqa(
    target_dir: Path,
    *,
    accept_licence: bool,
    base_url: str | None = None,
    checksums: Mapping[str, str] | None = None,
    progress: bool = True,
    keep_archives: bool = True,
) -> Path:
    """Download and unzip the NISQA corpus; return ``target_dir/'NISQA_Corpus'``.

    Refuses (JsqaError carrying LICENCE_NOTE) unless ``accept_licence`` is true, i.e. the user
    set ``data.corpora.accept_nisqa_licence: true``. Idempotent. ``base_url`` and ``checksums``
    as in :func:`jsqa.data.download.with_overrides`.
    """
    require_licence(accept_licence)
    log.warning("NISQA licence: %s", LICENCE_NOTE)
    fetch_and_extract(
        with_overrides(NISQA_REMOTE, base_url, checksums),
        Path(target_dir),
        progress=progress,
        keep_archive=keep_archives,
    )
    return Path(target_dir) / "NISQA_Corpus"


def _check_subsets(subsets: Sequence[str] | None) -> list[str]:
    if subsets is None:
        return list(NISQA_SUBSETS)
    subsets = [subsets] if isinstance(subsets, str) else list(subsets)
    unknown = [s for s in subsets if s not in NISQA_SUBSETS]
    if unknown:
        raise ConfigError(f"unknown NISQA subset(s) {', '.join(unknown)}; known: {', '.join(NISQA_SUBSETS)}")
    return subsets


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ManifestError(f"{path}: not a readable CSV ({exc})") from exc


def _subset_table(corpus_dir: Path, subset: str) -> pd.DataFrame:
    """One subset's own CSV, with filepath_deg made relative to the corpus root."""
    csv = corpus_dir / subset / f"{subset}_file.csv"
    if not csv.is_file():
        raise ManifestError(f"{csv}: NISQA subset CSV not found (and no {CORPUS_CSV}); run download_nisqa first")
    table = _read_csv(csv)
    if "db" not in table.columns:
        table["db"] = subset
    require_columns(table, REQUIRED_COLUMNS, str(csv))
    # Depending on the release the paths are relative to the corpus root or to the subset folder.
    first = str(table["filepath_deg"].iloc[0]) if len(table) else ""
    if first and not (corpus_dir / first).exists() and (corpus_dir / subset / first).exists():
        table["filepath_deg"] = [f"{subset}/{p}" for p in table["filepath_deg"].astype(str)]
    return table


def prepare_nisqa(
    corpus_dir: Path, subsets: Sequence[str] | None = None, root: Path = Path(".")
) -> tuple[pd.DataFrame, list[dict]]:
    """MOS manifest of the chosen NISQA subsets (default all seven).

    Reads ``NISQA_corpus_file.csv``, or each subset's ``<SUBSET>/<SUBSET>_file.csv`` when the
    corpus file is absent. Split: TRAIN_* -> train, VAL_* -> val, TEST_* -> test.
    Returns (manifest with MOS_COLUMNS and the optional condition, mos_std, votes, ref_path
    columns the CSV provides, quarantine of unreadable files).
    """
    corpus_dir = Path(corpus_dir)
    # Accept the download target too (the folder that holds NISQA_Corpus/).
    if not (corpus_dir / CORPUS_CSV).is_file() and (corpus_dir / "NISQA_Corpus").is_dir():
        corpus_dir = corpus_dir / "NISQA_Corpus"
    if not corpus_dir.is_dir():
        raise ManifestError(f"{corpus_dir}: NISQA corpus not found (run download_nisqa first)")
    chosen = _check_subsets(subsets)
    corpus_csv = corpus_dir / CORPUS_CSV
    if corpus_csv.is_file():
        table = _read_csv(corpus_csv)
        require_columns(table, REQUIRED_COLUMNS, str(corpus_csv))
        table = table[table["db"].astype(str).isin(chosen)]
    else:
        table = pd.concat([_subset_table(corpus_dir, s) for s in chosen], ignore_index=True)
    if table.empty:
        raise ManifestError(f"{corpus_dir}: no clips of subset(s) {', '.join(chosen)} in the NISQA CSV")
    # mos_manifest_from_csv takes a file; hand it the selected rows through a private temp copy.
    with tempfile.TemporaryDirectory(prefix="jsqa-nisqa-") as tmp:
        selected = Path(tmp) / CORPUS_CSV
        table.to_csv(selected, index=False)
        manifest, quarantine = mos_manifest_from_csv(selected, corpus_root=corpus_dir, root=root)
    log.info("NISQA %s: %d clips, %d quarantined", ",".join(chosen), len(manifest), len(quarantine))
    return manifest[MOS_COLUMNS + [c for c in MOS_OPTIONAL_COLUMNS if c in manifest.columns]], quarantine


def prepare_user_mos(
    csv: Path, corpus_root: Path | None = None, root: Path = Path(".")
) -> tuple[pd.DataFrame, list[dict]]:
    """MOS manifest of a user dataset in the NISQA layout.

    The CSV needs ``filepath_deg`` (relative to ``corpus_root``, default the CSV's folder) and
    ``mos``; optional ``db`` (default USER_TEST, whose name sets the split) or ``split``.
    """
    csv = Path(csv)
    if not csv.is_file():
        raise ManifestError(f"{csv}: MOS CSV not found")
    return mos_manifest_from_csv(csv, corpus_root=corpus_root, root=root)
