"""Manifests: one parquet table per corpus, the contract between acquire and every later stage.

Paths in a manifest are stored relative to the project root (the directory DVC runs stages
in) when they lie under it, else absolute; :func:`resolve` turns them back into real paths.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pandas as pd

from jsqa.audio import audio_info
from jsqa.errors import AudioError, JsqaError, ManifestError
from jsqa.io import file_sha256, read_parquet, write_parquet

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_R = TypeVar("_R")

AUDIO_COLUMNS = ["id", "path", "duration", "sample_rate", "channels"]
CLEAN_COLUMNS = AUDIO_COLUMNS + ["speaker"]
NOISE_COLUMNS = AUDIO_COLUMNS + ["environment"]
MOS_COLUMNS = AUDIO_COLUMNS + ["mos", "db", "split"]
# NISQA's quality dimensions, rated like MOS on a 1-5 scale (DIMENSION_RANGE): noisiness,
# colouration, discontinuity, loudness. Optional manifest columns and optional model outputs.
DIMENSIONS: tuple[str, ...] = ("noi", "col", "dis", "loud")
DIMENSION_RANGE = (1.0, 5.0)
# Optional MOS-manifest columns kept from a NISQA-layout CSV when it has them: the condition
# (NISQA ``con`` or a user ``condition``), the raters' spread and count, the clean reference,
# and NISQA's quality dimensions (noi, col, dis, loud: 1-5 like MOS).
MOS_OPTIONAL_COLUMNS = ["condition", "mos_std", "votes", "ref_path", *DIMENSIONS]
SPLITS = ("train", "val", "test")

# What each manifest must hold; validate and every consumer rely on it.
SCHEMAS: dict[str, list[str]] = {
    "clean": CLEAN_COLUMNS,
    "noise": NOISE_COLUMNS,
    "mos": MOS_COLUMNS,
}
# The sha256 of each file's bytes (``path``; ``ref_path`` too where a MOS manifest has one),
# recorded by the acquire stage. It puts the audio itself into the manifests, the stage
# contract DVC sees: new audio of the same length changes the manifest, so later stages re-run.
SHA256 = "sha256"
REF_SHA256 = "ref_sha256"
# What the acquire stage writes and validate requires: the schema plus the content hash.
# Consumers read only SCHEMAS; none needs the hash to do its work.
ACQUIRED_SCHEMAS: dict[str, list[str]] = {kind: [*columns, SHA256] for kind, columns in SCHEMAS.items()}


def relpath(path: str | Path, root: str | Path = ".") -> str:
    """Store ``path`` relative to ``root`` when it lies beneath it, else absolute (posix form).

    Paths are made absolute without resolving symlinks: a file that is a link (a DVC cache
    link, say) keeps its name in the project.
    """
    p = os.path.abspath(path)
    r = os.path.abspath(root)
    rel = os.path.relpath(p, r)
    return Path(p).as_posix() if rel == ".." or rel.startswith("../") or os.path.isabs(rel) else Path(rel).as_posix()


def resolve(path: str, root: str | Path = ".") -> Path:
    """Inverse of :func:`relpath`."""
    p = Path(path)
    return p if p.is_absolute() else Path(root) / p


def require_columns(df: pd.DataFrame, columns: Sequence[str], source: str) -> None:
    """Raise ManifestError naming ``source`` and every missing column."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ManifestError(f"{source}: missing column(s) {', '.join(missing)}")


def read_manifest(path: str | Path, kind: str | None = None) -> pd.DataFrame:
    """Read a parquet manifest; with ``kind`` ('clean', 'noise', 'mos') check its columns."""
    path = Path(path)
    if not path.exists():
        raise ManifestError(f"{path}: manifest not found (run the acquire stage first)")
    df = read_parquet(path)
    if kind is not None:
        require_columns(df, SCHEMAS[kind], str(path))
    return df


def write_manifest(path: str | Path, df: pd.DataFrame, kind: str) -> None:
    """Check the schema, sort by id (stable hashes for DVC) and write atomically."""
    require_columns(df, SCHEMAS[kind], str(path))
    df = df.sort_values("id", kind="stable").reset_index(drop=True)
    write_parquet(path, df)


def audio_rows(
    paths: Iterable[Path],
    root: str | Path = ".",
    workers: int | None = None,
    extra: Callable[[Path], dict] | None = None,
) -> tuple[list[dict], list[dict]]:
    """Read the header of each file in parallel, in input order.

    Returns (rows, quarantine): rows hold path/duration/sample_rate/channels plus whatever
    ``extra(file)`` adds (speaker, environment, ...); an unreadable or empty file goes to
    quarantine with its reason instead of stopping the build.
    """
    paths = list(paths)

    def one(p: Path) -> dict:
        rel = relpath(p, root)
        try:
            info = audio_info(p)
        except AudioError as exc:
            return {"path": rel, "reason": str(exc), "_bad": True}
        if info["frames"] == 0:
            return {"path": rel, "reason": f"{p}: audio is empty", "_bad": True}
        row = {
            "path": rel,
            "duration": info["duration"],
            "sample_rate": info["sample_rate"],
            "channels": info["channels"],
        }
        return {**row, **extra(p)} if extra is not None else row

    results = _thread_map(one, paths, workers)
    good = [r for r in results if not r.get("_bad")]
    bad = [{k: v for k, v in r.items() if k != "_bad"} for r in results if r.get("_bad")]
    for b in bad:
        log.warning("quarantined %s", b["reason"])
    return good, bad


def _thread_map(fn: Callable[[_T], _R], items: Sequence[_T], workers: int | None) -> list[_R]:
    """``fn`` over ``items`` in threads (file I/O releases the GIL), results in input order."""
    workers = workers or min(8, (os.cpu_count() or 1) * 2)
    if workers == 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items))


def file_hashes(paths: Sequence[Path | None], workers: int | None = None) -> list[str | None]:
    """The sha256 of each file, read in ``workers`` threads, in input order.

    None for a None path, a missing file or one that cannot be read (logged): what to make of
    that is the caller's to say.
    """

    def one(p: Path | None) -> str | None:
        if p is None or not p.is_file():
            return None
        try:
            return file_sha256(p)
        except JsqaError as exc:
            log.warning("%s", exc)
            return None

    return _thread_map(one, paths, workers)


def add_content_hashes(df: pd.DataFrame, root: str | Path = ".", workers: int | None = None) -> pd.DataFrame:
    """A copy of manifest ``df`` with :data:`SHA256` of each ``path`` and, when it has a
    ``ref_path`` column, :data:`REF_SHA256` of each reference (None where there is none)."""
    df = df.copy()
    for path_col, hash_col in (("path", SHA256), ("ref_path", REF_SHA256)):
        if path_col in df.columns:
            files = [resolve(p, root) if isinstance(p, str) and p else None for p in df[path_col]]
            df[hash_col] = file_hashes(files, workers)
    return df


def split_of_db(db: str) -> str:
    """NISQA naming: a db containing TRAIN / VAL / TEST belongs to that split."""
    up = db.upper()
    for split in SPLITS:
        if split.upper() in up.split("_") or f"_{split.upper()}" in up or up.startswith(split.upper()):
            return split
    raise ManifestError(f"db '{db}': cannot tell its split (name must contain TRAIN, VAL or TEST)")


def _csv_split(db: str, csv_path: Path) -> str:
    """The split of a user CSV's row from its db name; the error says the ``split`` column is the way out."""
    try:
        return split_of_db(db)
    except ManifestError:
        raise ManifestError(
            f"{csv_path}: db names carry no TRAIN/VAL/TEST (db '{db}') and there is no 'split' column; "
            "add a 'split' column (train, val or test) or name the dbs *_TRAIN / *_VAL / *_TEST"
        ) from None


def mos_manifest_from_csv(
    csv_path: str | Path, corpus_root: str | Path | None = None, root: str | Path = "."
) -> tuple[pd.DataFrame, list[dict]]:
    """Turn a CSV in the NISQA layout into a MOS manifest.

    Needs ``filepath_deg`` (relative to ``corpus_root``, by default the CSV's folder) and
    ``mos``; ``db`` is optional (default 'USER_TEST'), and a ``split`` column, if present,
    overrides the split read from the db name. Optional columns are kept (see
    :data:`MOS_OPTIONAL_COLUMNS`): ``condition`` (or NISQA's ``con``), ``mos_std``, ``votes``,
    ``ref_path`` (from ``filepath_ref`` or ``ref_path``, relative to ``corpus_root`` like ``filepath_deg``) and
    the quality dimensions ``noi``, ``col``, ``dis``, ``loud``.
    """
    csv_path = Path(csv_path)
    try:
        table = pd.read_csv(csv_path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ManifestError(f"{csv_path}: not a readable CSV ({exc})") from exc
    require_columns(table, ["filepath_deg", "mos"], str(csv_path))
    corpus_root = Path(corpus_root) if corpus_root is not None else csv_path.parent
    if "db" not in table.columns:
        table["db"] = "USER_TEST"
    files = [corpus_root / str(p) for p in table["filepath_deg"]]
    rows, quarantine = audio_rows(files, root)
    by_path = {r["path"]: r for r in rows}
    out = []
    for f, (_, rec) in zip(files, table.iterrows()):
        info = by_path.get(relpath(f, root))
        if info is None:
            continue
        split = _row_split(rec, table, csv_path)
        out.append(
            {
                "id": Path(str(rec["filepath_deg"])).with_suffix("").as_posix().replace("/", "__"),
                **info,
                "mos": float(rec["mos"]),
                "db": str(rec["db"]),
                "split": split,
                **_optional(rec, table, corpus_root, root),
            }
        )
    columns = MOS_COLUMNS + [c for c in MOS_OPTIONAL_COLUMNS if _has_optional(table, c)]
    return pd.DataFrame(out, columns=columns), quarantine


def _row_split(rec: pd.Series, table: pd.DataFrame, csv_path: Path) -> str:
    """The row's ``split`` cell when the CSV has one (an empty cell falls back to the db name)."""
    if "split" in table.columns and isinstance(rec["split"], str) and rec["split"].strip():
        split = rec["split"].strip().lower()
        if split not in SPLITS:
            raise ManifestError(f"{csv_path}: split '{rec['split']}' is not one of {', '.join(SPLITS)}")
        return split
    return _csv_split(str(rec["db"]), csv_path)


# A CSV's clean-reference column, by any of these names: NISQA's first, then the manifest's own,
# which users' CSVs often reuse. PESQ and STOI score only clips that have one.
REF_PATH_COLUMNS = ("filepath_ref", "ref_path")

_OPTIONAL_SOURCES = {
    "condition": ("condition", "con"),
    "mos_std": ("mos_std",),
    "votes": ("votes",),
    "ref_path": REF_PATH_COLUMNS,
    **{d: (d,) for d in DIMENSIONS},
}


def _has_optional(table: pd.DataFrame, column: str) -> bool:
    return any(c in table.columns for c in _OPTIONAL_SOURCES[column])


def _optional(rec: pd.Series, table: pd.DataFrame, corpus_root: Path, root: str | Path) -> dict:
    """The optional columns of one CSV row (None where its cell is empty)."""
    out: dict = {}
    for column, sources in _OPTIONAL_SOURCES.items():
        source = next((c for c in sources if c in table.columns), None)
        if source is None:
            continue
        value = rec[source]
        if pd.isna(value) or str(value).strip() in ("", "-"):
            out[column] = None
        elif column == "condition":
            out[column] = str(value)
        elif column == "ref_path":
            out[column] = relpath(corpus_root / str(value), root)
        else:
            out[column] = float(value)
    return out
