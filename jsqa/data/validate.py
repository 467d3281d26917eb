"""Great Expectations suites for the manifests: the gate between acquire and every later stage.

Facts GX cannot see in one table (does the file exist? does a test clip also sit in train?)
are computed first as boolean columns, so the suite still states every rule and Data Docs
show them all. One file-backed GX context is built per call, in a temporary folder that
replaces the docs folder (``<out_dir>/gx`` by default) whole when done.

Every audio file a manifest lists is also decoded (in threads, ``validate.workers``) into a
per-file statistics table: whether it decodes, the frames its header promises against the
frames decoded (a file cut short decodes fewer), finite samples, RMS level, and the P.56
active speech level of speech files. The suite checks those columns like any other, so a
failure names the file and why, and the Data Docs show the rules on them. Each file (and a
MOS clip's reference) is also hashed, by as many threads, against the sha256 the acquire
stage recorded in the manifest: a file whose bytes changed since then fails, named.

Two outputs, kept apart on purpose: ``<out_dir>/report.json`` is the *verdict* (pass/fail and
the failed expectations per manifest; no timestamps, no Data Docs location), the same bytes
for the same manifests, so later DVC stages depend on it and are not re-run by a fresh
validation of unchanged data. The Data Docs hold timestamped pages and are for people.
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf
from tqdm import tqdm

from jsqa.audio import to_mono
from jsqa.config import ValidateConfig
from jsqa.data.manifests import (
    ACQUIRED_SCHEMAS,
    DIMENSION_RANGE,
    DIMENSIONS,
    REF_SHA256,
    SCHEMAS,
    SHA256,
    SPLITS,
    file_hashes,
    read_manifest,
    resolve,
)
from jsqa.errors import AudioError, ConfigError, ManifestError, ValidationFailed
from jsqa.io import atomic_dir, write_json
from jsqa.signal.levels import active_speech_levels, rms_db

log = logging.getLogger(__name__)

FILE_EXISTS = "file_exists"
LEAKS_INTO_TRAIN = "leaks_into_train"
SPEAKER_SPANS_SUBSETS = "speaker_spans_subsets"
# The per-file audio statistics (add_audio_stats); null for a file that does not exist, which
# file_exists already reports, and downstream of a failed decode.
DECODES = "decodes"
DECODE_ERROR = "decode_error"
HEADER_FRAMES = "header_frames"
DECODED_FRAMES = "decoded_frames"
FINITE = "finite"
RMS_DBOV = "rms_dbov"
ACTIVE_LEVEL_DBOV = "active_level_dbov"
AUDIO_STATS = (DECODES, DECODE_ERROR, HEADER_FRAMES, DECODED_FRAMES, FINITE, RMS_DBOV, ACTIVE_LEVEL_DBOV)
# Whether a file's bytes still hash to the manifest's sha256 (add_hash_checks); null where
# other rules already speak: no file, no recorded hash, or one that is not a sha256 at all.
SHA256_MATCHES = "sha256_matches"
REF_SHA256_MATCHES = "ref_sha256_matches"
_HASH_CHECKS = {SHA256_MATCHES: ("path", SHA256), REF_SHA256_MATCHES: ("ref_path", REF_SHA256)}
_SHA256_PATTERN = r"^[0-9a-f]{64}$"
# Noise is not speech: its active speech level means nothing.
_SPEECH_KINDS = ("clean", "mos")
# Files per task: the P.56 level is measured in batches (far fewer numpy calls per file) and
# the progress bar moves per task.
_STATS_CHUNK = 16
# Where the failing values themselves say nothing ("False", "None"), name the rows instead.
_EXAMPLE_SOURCE = {
    FILE_EXISTS: "path",
    LEAKS_INTO_TRAIN: "id",
    SPEAKER_SPANS_SUBSETS: "speaker",
    **dict.fromkeys(AUDIO_STATS, "path"),
    **{check: path for check, (path, _) in _HASH_CHECKS.items()},
    **{hashed: path for path, hashed in _HASH_CHECKS.values()},
}
_NOT_NULL = "expect_column_values_to_not_be_null"
# Clean speech and noise are mixed at the pipeline rate; upsampled sources would lack the top
# band and teach the encoder that band-limiting is "clean". Degraded MOS clips may be narrowband.
_AT_LEAST_PIPELINE_RATE = ("clean", "noise")
_MAX_EXAMPLES = 5
DATA_DOCS_INDEX = Path("uncommitted") / "data_docs" / "local_site" / "index.html"  # under the GX context


def data_docs_index(docs_dir: Path) -> Path:
    """The Data Docs home page that :func:`validate_manifests` builds under ``docs_dir``."""
    return Path(docs_dir) / DATA_DOCS_INDEX


def _gx() -> Any:
    """Import GX lazily (it takes seconds) with its usage analytics off."""
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    import great_expectations as gx

    return gx


def _check_kind(kind: str) -> None:
    if kind not in SCHEMAS:
        raise ManifestError(f"unknown manifest kind '{kind}' (expected {', '.join(SCHEMAS)})")


def suite_for(kind: str, cfg: ValidateConfig, sample_rate: int) -> list[Any]:
    """Expectations a manifest of ``kind`` ('clean', 'noise', 'mos') must meet.

    Includes checks on the computed columns added by :func:`add_computed_columns`.
    """
    _check_kind(kind)
    gxe = _gx().expectations
    out: list[Any] = [gxe.ExpectTableRowCountToBeBetween(min_value=1)]
    for col in ACQUIRED_SCHEMAS[kind]:
        out.append(gxe.ExpectColumnToExist(column=col))
        # Between/in-set skip nulls, so every column also needs its own not-null rule.
        out.append(gxe.ExpectColumnValuesToNotBeNull(column=col))
    out.append(gxe.ExpectColumnValuesToBeUnique(column="id"))
    min_rate = sample_rate if kind in _AT_LEAST_PIPELINE_RATE else 1
    out.append(gxe.ExpectColumnValuesToBeBetween(column="sample_rate", min_value=min_rate))
    out.append(gxe.ExpectColumnValuesToBeBetween(column="channels", min_value=1))
    # Noise is cut into segments, so long recordings are fine.
    max_duration = None if kind == "noise" else cfg.max_duration_s
    out.append(
        gxe.ExpectColumnValuesToBeBetween(column="duration", min_value=cfg.min_duration_s, max_value=max_duration)
    )
    out.append(
        gxe.ExpectColumnValuesToBeInSet(
            column=FILE_EXISTS,
            value_set=[True],
            notes="path, resolved against the project root, is a file",
        )
    )
    out.extend(_audio_expectations(gxe, kind, cfg))
    out.extend(_hash_expectations(gxe))
    if kind == "clean":
        out.append(
            gxe.ExpectColumnValuesToBeInSet(
                column=SPEAKER_SPANS_SUBSETS,
                value_set=[False],
                notes="a speaker found in more than one subset (LibriSpeech splits are disjoint by speaker)",
            )
        )
    if kind == "mos":
        out.extend(_mos_expectations(gxe, cfg))
    return out


def _mos_expectations(gxe: Any, cfg: ValidateConfig) -> list[Any]:
    """Rules on the labels and splits of a MOS manifest."""
    lo, hi = cfg.mos_range
    out = [gxe.ExpectColumnValuesToBeBetween(column="mos", min_value=lo, max_value=hi)]
    # Optional quality dimensions (1-5 like MOS): checked when the manifest has them; a
    # missing value (null) is allowed, the between rule skips it.
    for dim in DIMENSIONS:
        out.append(
            gxe.ExpectColumnValuesToBeBetween(column=dim, min_value=DIMENSION_RANGE[0], max_value=DIMENSION_RANGE[1])
        )
    out.append(gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)))
    out.append(gxe.ExpectColumnDistinctValuesToContainSet(column="split", value_set=list(SPLITS)))
    out.append(
        gxe.ExpectColumnValuesToBeInSet(
            column=LEAKS_INTO_TRAIN,
            value_set=[False],
            notes="a test row whose path or id also appears in the train split",
        )
    )
    return out


def _hash_expectations(gxe: Any) -> list[Any]:
    """Rules on the recorded content hashes and on the files' bytes against them.

    The reference's (``ref_sha256``) apply only to a manifest with references; a row without
    one has a null hash, which the rules skip.
    """
    out = []
    for check, (path_col, hash_col) in _HASH_CHECKS.items():
        out.append(
            gxe.ExpectColumnValuesToMatchRegex(
                column=hash_col, regex=_SHA256_PATTERN, notes="a sha256: 64 lowercase hex digits"
            )
        )
        out.append(
            gxe.ExpectColumnValuesToBeInSet(
                column=check,
                value_set=[True],
                notes=f"the bytes of the file at {path_col} still hash to {hash_col}: unchanged since acquire",
            )
        )
    return out


def _audio_expectations(gxe: Any, kind: str, cfg: ValidateConfig) -> list[Any]:
    """Rules on the per-file statistics of :func:`add_audio_stats`."""
    out = [
        gxe.ExpectColumnValuesToBeInSet(
            column=DECODES, value_set=[True], notes="the file decodes (soundfile/libsndfile)"
        ),
        gxe.ExpectColumnPairValuesToBeEqual(
            column_A=HEADER_FRAMES,
            column_B=DECODED_FRAMES,
            # A file that does not decode has no decoded length; `decodes` reports it.
            ignore_row_if="either_value_is_missing",
            notes="a truncated file decodes fewer frames than its header promises",
        ),
        gxe.ExpectColumnValuesToBeInSet(column=FINITE, value_set=[True], notes="no NaN or infinite sample"),
        gxe.ExpectColumnValuesToBeBetween(
            column=RMS_DBOV,
            min_value=cfg.min_rms_dbov,
            notes="RMS level above the floor: not digital silence",
        ),
    ]
    if kind in _SPEECH_KINDS:
        lo, hi = cfg.speech_level_dbov
        out.append(
            gxe.ExpectColumnValuesToBeBetween(
                column=ACTIVE_LEVEL_DBOV,
                min_value=lo,
                max_value=hi,
                notes="ITU-T P.56 active speech level, dBov (jsqa.signal.levels)",
            )
        )
    return out


def add_computed_columns(kind: str, df: pd.DataFrame, root: Path = Path(".")) -> pd.DataFrame:
    """Return a copy of ``df`` with the cross-file and cross-row facts the suite checks.

    A column is only added when its inputs exist; the missing input fails its own
    ``expect_column_to_exist`` instead.
    """
    _check_kind(kind)
    # A fresh index: failed rows are looked up by the index labels GX reports.
    df = df.reset_index(drop=True)
    if "path" in df.columns:
        df[FILE_EXISTS] = [isinstance(p, str) and resolve(p, root).is_file() for p in df["path"]]
    if kind == "clean":
        df[SPEAKER_SPANS_SUBSETS] = _speakers_across_subsets(df)
    if kind == "mos" and {"path", "id", "split"} <= set(df.columns):
        df[LEAKS_INTO_TRAIN] = _test_leaks(df, root)
    return df


def _speakers_across_subsets(df: pd.DataFrame) -> list[bool]:
    """True for each row whose speaker also appears in another subset (False without subsets)."""
    if not {"speaker", "subset"} <= set(df.columns):
        return [False] * len(df)
    n_subsets = df.groupby("speaker")["subset"].transform("nunique")
    return (n_subsets > 1).tolist()


def _test_leaks(df: pd.DataFrame, root: Path) -> list[bool]:
    """True for each test row whose file (same resolved path) or id is also in train."""

    def key(p: Any) -> str | None:
        return str(resolve(p, root).resolve()) if isinstance(p, str) else None

    train = df[df["split"] == "train"]
    train_paths = {key(p) for p in train["path"]} - {None}
    train_ids = set(train["id"].dropna())
    return [
        split == "test" and (key(p) in train_paths or i in train_ids)
        for p, i, split in zip(df["path"], df["id"], df["split"])
    ]


# --- per-file audio statistics ----------------------------------------------------------------


def wav_header_frames(path: Path) -> int | None:
    """Frames the header of a RIFF/WAVE file promises (data chunk size / block align).

    None when the file is not RIFF/WAVE, the header is cut short, or the size is left open
    (0 or 0xFFFFFFFF, as streaming writers leave it). libsndfile itself shrinks a WAV's frame
    count to the bytes present, so only the header says that a file was cut.
    """
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        block_align = 0
        while len(chunk := fh.read(8)) == 8:
            cid, size = chunk[:4], int.from_bytes(chunk[4:], "little")
            if cid == b"data":
                if not block_align or size in (0, 0xFFFFFFFF):
                    return None
                return size // block_align
            body = fh.read(size + (size & 1)) if cid == b"fmt " else None  # chunks are word-aligned
            if body is None:
                fh.seek(size + (size & 1), os.SEEK_CUR)
            elif len(body) >= 14:
                block_align = int.from_bytes(body[12:14], "little")
    return None


def _decode(path: Path, name: str) -> tuple[dict[str, Any], np.ndarray | None, int]:
    """Decode one file at its own rate: (its statistics so far, mono samples or None, rate).

    Read raw rather than through :func:`jsqa.audio.load_audio`, which rejects non-finite
    samples: here they are a statistic of their own, reported apart from decoding.
    """
    try:
        with sf.SoundFile(str(path)) as f:
            sr, frames = int(f.samplerate), int(f.frames)
            x = to_mono(np.asarray(f.read(dtype="float32", always_2d=False)))
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError, OSError, AudioError) as exc:
        reason = getattr(exc, "error_string", None) or str(exc)
        # libsndfile names the file as it was opened; the manifest's name is shorter and stable.
        return {DECODES: False, DECODE_ERROR: reason.replace(str(path), name)}, None, 0
    header = wav_header_frames(path)
    level = rms_db(x) if x.size else -math.inf  # an empty file is as silent as an all-zero one
    stats = {
        DECODES: True,
        HEADER_FRAMES: frames if header is None else header,
        DECODED_FRAMES: int(x.size),
        FINITE: bool(np.isfinite(x).all()),
        RMS_DBOV: level,
    }
    return stats, x, sr


def _stats_of_chunk(items: Sequence[tuple[Path, str]], speech: bool) -> list[dict[str, Any]]:
    """Statistics of a few files; the P.56 levels of speech measured together per rate."""
    if not speech:
        # Noise recordings run to minutes: keep no samples past each file's own statistics.
        return [_decode(path, name)[0] for path, name in items]
    decoded = [_decode(path, name) for path, name in items]
    rows = [stats for stats, _, _ in decoded]
    signals = {i: (x, sr) for i, (_, x, sr) in enumerate(decoded) if x is not None and x.size}
    for sr in sorted({sr for _, sr in signals.values()}):
        idx = [i for i, (_, r) in signals.items() if r == sr]
        levels = active_speech_levels([signals[i][0] for i in idx], sr)
        for i, level in zip(idx, levels):
            # A string says why there is no level (silent, non-finite): other rules report it.
            rows[i][ACTIVE_LEVEL_DBOV] = None if isinstance(level, str) else float(level)
    return rows


def add_audio_stats(
    kind: str,
    df: pd.DataFrame,
    root: Path = Path("."),
    workers: int = 2,
    progress: bool = True,
) -> pd.DataFrame:
    """Return a copy of ``df`` with the per-file audio statistics (AUDIO_STATS) the suite checks.

    Every listed file that exists is decoded, ``workers`` threads at a time (decoding and the
    level arithmetic release the GIL); rows whose file is missing keep null statistics. The
    active speech level is measured for clean and MOS files only. A progress bar shows on
    stderr when ``progress`` and stderr is a terminal. Nothing is added without a path column.
    """
    _check_kind(kind)
    if workers < 1:
        raise ConfigError(f"validate.workers: expected at least 1, got {workers}")
    df = df.reset_index(drop=True)
    if "path" not in df.columns:
        return df
    todo = [
        (i, resolve(p, root), p) for i, p in enumerate(df["path"]) if isinstance(p, str) and resolve(p, root).is_file()
    ]
    chunks = [todo[k : k + _STATS_CHUNK] for k in range(0, len(todo), _STATS_CHUNK)]
    speech = kind in _SPEECH_KINDS
    rows: list[dict[str, Any]] = [{} for _ in range(len(df))]
    start = time.perf_counter()
    show = progress and sys.stderr.isatty()
    with (
        ThreadPoolExecutor(max_workers=workers) as pool,
        tqdm(total=len(todo), disable=not show, file=sys.stderr, unit="file", desc=f"decoding {kind}") as bar,
    ):
        results = pool.map(lambda c: _stats_of_chunk([(p, n) for _, p, n in c], speech), chunks)
        for chunk, stats in zip(chunks, results):
            for (i, _, _), row in zip(chunk, stats):
                rows[i] = row
            bar.update(len(chunk))
    elapsed = time.perf_counter() - start
    log.info(
        "%s: decoded %d file(s) in %.2f s (%.1f ms per file, %d worker(s))",
        kind,
        len(todo),
        elapsed,
        1000 * elapsed / max(len(todo), 1),
        workers,
    )
    columns = AUDIO_STATS if speech else tuple(c for c in AUDIO_STATS if c != ACTIVE_LEVEL_DBOV)
    for col in columns:
        values = [r.get(col) for r in rows]
        # Nullable integers: a frame count must not turn into a float next to a missing one.
        df[col] = pd.array(values, dtype="Int64") if col in (HEADER_FRAMES, DECODED_FRAMES) else values
    return df


def add_hash_checks(kind: str, df: pd.DataFrame, root: Path = Path("."), workers: int = 2) -> pd.DataFrame:
    """Return a copy of ``df`` with :data:`SHA256_MATCHES` (and :data:`REF_SHA256_MATCHES` when
    it has ``ref_path``): whether each file's bytes still hash to the sha256 acquire recorded.

    The files are hashed in ``workers`` threads. A value is null where another rule already
    reports the row: a missing file (``file_exists``), a missing or malformed ``sha256``; a
    reference, which no other rule covers, fails when it went missing or has no hash recorded.
    """
    _check_kind(kind)
    if workers < 1:
        raise ConfigError(f"validate.workers: expected at least 1, got {workers}")
    df = df.reset_index(drop=True)
    for check, (path_col, hash_col) in _HASH_CHECKS.items():
        if path_col not in df.columns or (path_col == "path" and hash_col not in df.columns):
            continue
        files = [resolve(p, root) if isinstance(p, str) and p else None for p in df[path_col]]
        recorded = df[hash_col].tolist() if hash_col in df.columns else [None] * len(df)
        actual = file_hashes(files, workers)
        df[check] = [_matches(f, r, a, own=path_col != "path") for f, r, a in zip(files, recorded, actual)]
    return df


def _matches(file: Path | None, recorded: Any, actual: str | None, own: bool) -> bool | None:
    """One row of a hash check; ``own``: no other rule reports the file missing or unhashed."""
    if file is None or (isinstance(recorded, str) and not re.fullmatch(_SHA256_PATTERN, recorded)):
        return None
    if not isinstance(recorded, str):
        return False if own and actual is not None else None
    if actual is None and not own:
        return None
    return actual == recorded


def audio_summary(df: pd.DataFrame) -> dict[str, Any]:
    """The per-file statistics in a few numbers for the verdict: files decoded, level ranges."""
    decodes = df[DECODES] if DECODES in df.columns else pd.Series(dtype=object)
    out: dict[str, Any] = {
        "files_checked": int(decodes.notna().sum()),
        "files_decoded": int((decodes == True).sum()),  # noqa: E712 (object column: True, False, None)
        "frames_decoded": int(df[DECODED_FRAMES].sum()) if DECODED_FRAMES in df.columns else 0,
    }
    for col in (RMS_DBOV, ACTIVE_LEVEL_DBOV):
        if col in df.columns:
            out[col] = _spread(df[col])
    return out


def _spread(values: pd.Series) -> dict[str, float] | None:
    """min / median / max of the finite values, rounded so float noise stays out of the verdict."""
    v = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None
    return {k: round(float(f(v)), 2) for k, f in (("min", np.min), ("median", np.median), ("max", np.max))}


def validate_manifests(
    manifests: Mapping[str, Path],
    cfg: ValidateConfig,
    sample_rate: int,
    out_dir: Path,
    root: Path = Path("."),
    docs_dir: Path | None = None,
    progress: bool = True,
) -> dict:
    """Validate each manifest (keyed by kind); write the verdict ``out_dir/report.json`` and Data Docs.

    Every audio file listed is decoded (:func:`add_audio_stats`, ``cfg.workers`` threads, a
    progress bar when ``progress`` and stderr is a terminal) and hashed against the manifest's
    sha256 (:func:`add_hash_checks`); the verdict holds a summary of the per-file statistics
    under each manifest's ``audio``.

    The Data Docs (a GX context) go to ``docs_dir``, ``out_dir/gx`` by default; find their home
    page with :func:`data_docs_index`. The verdict names manifests as they were passed, so it is
    deterministic for relative paths (as under ``dvc repro``). Returns the verdict. Raises
    ValidationFailed, after writing it, listing one line per failed expectation when any
    manifest fails.
    """
    out_dir = Path(out_dir)
    docs_dir = Path(docs_dir) if docs_dir is not None else out_dir / "gx"
    for kind in manifests:
        _check_kind(kind)
    gx = _gx()
    per_manifest: dict[str, dict] = {}
    lines: list[str] = []
    with atomic_dir(docs_dir) as ctx_dir:
        context = gx.get_context(mode="file", context_root_dir=ctx_dir)
        context.variables.progress_bars = _no_progress_bars()
        datasource = context.data_sources.add_pandas("manifests")
        for kind, path in manifests.items():
            entry = _validate_one(gx, context, datasource, kind, path, cfg, sample_rate, root, progress)
            per_manifest[kind] = entry
            lines.extend(
                [entry["error"]] if "error" in entry else [f"{entry['path']}: {f['summary']}" for f in entry["failed"]]
            )
        context.build_data_docs()
    report = {
        "success": all(m["success"] for m in per_manifest.values()),
        "manifests": per_manifest,
    }
    report_path = out_dir / "report.json"
    write_json(report_path, report)
    if not report["success"]:
        head = f"{len(lines)} check(s) failed (details in {report_path}):"
        raise ValidationFailed("\n".join([head, *lines]))
    return report


def _validate_one(
    gx: Any,
    context: Any,
    datasource: Any,
    kind: str,
    path: Path,
    cfg: ValidateConfig,
    sample_rate: int,
    root: Path,
    progress: bool,
) -> dict:
    """The verdict on one manifest: its facts and per-file checks added, then its suite run.

    An unreadable manifest is a failed entry holding the ``error``, not an exception.
    """
    name = str(path)
    try:
        df = _read(path)
    except ManifestError as exc:
        return {"path": name, "success": False, "n_rows": 0, "error": str(exc), "failed": []}
    df = add_computed_columns(kind, df, root)
    df = add_audio_stats(kind, df, root, cfg.workers, progress)
    df = add_hash_checks(kind, df, root, cfg.workers)
    entry = {"path": name, **_run_suite(gx, context, datasource, kind, df, cfg, sample_rate)}
    if DECODES in df.columns:
        entry["audio"] = audio_summary(df)
    log.info("%s: %d rows, %s", name, entry["n_rows"], "ok" if entry["success"] else "FAILED")
    return entry


def _read(path: Path) -> pd.DataFrame:
    """Read a manifest without a schema check: a missing column is the suite's to report."""
    try:
        return read_manifest(path)
    except (OSError, ValueError) as exc:
        # pyarrow's errors derive from these; say which file instead of a traceback.
        raise ManifestError(f"{path}: not a readable parquet manifest ({exc})") from exc


def _no_progress_bars() -> Any:
    from great_expectations.data_context.types.base import ProgressBarsConfig

    return ProgressBarsConfig(globally=False)


def _run_suite(
    gx: Any,
    context: Any,
    datasource: Any,
    kind: str,
    df: pd.DataFrame,
    cfg: ValidateConfig,
    sample_rate: int,
) -> dict:
    """Run the suite for one manifest; a missing column fails only its existence check."""
    batch = datasource.add_dataframe_asset(kind).add_batch_definition_whole_dataframe("whole")
    # Column checks on a missing column end in a traceback inside GX; the existence check
    # already reports it in one readable line (and without a path there are no audio stats).
    expectations = [
        e
        for e in suite_for(kind, cfg, sample_rate)
        if _columns_of(e) <= set(df.columns) or type(e).__name__ == "ExpectColumnToExist"
    ]
    # Added whole: adding to a stored suite rewrites its JSON once per expectation.
    suite = context.suites.add(gx.ExpectationSuite(name=kind, expectations=expectations))
    definition = context.validation_definitions.add(gx.ValidationDefinition(name=kind, data=batch, suite=suite))
    result = definition.run(
        batch_parameters={"dataframe": df},
        result_format={"result_format": "SUMMARY", "partial_unexpected_count": 20},
    )
    failed = [_describe(r, df) for r in result.results if not r.success]
    return {"success": bool(result.success), "n_rows": int(len(df)), "failed": failed}


def _columns_of(expectation: Any) -> set[str]:
    """The columns an expectation reads (one, a pair, or none for table-level rules)."""
    names = (getattr(expectation, a, None) for a in ("column", "column_A", "column_B"))
    return {n for n in names if n is not None}


def _describe(res: Any, df: pd.DataFrame) -> dict:
    """Turn one failed GX result into a JSON-safe record with a one-line summary."""
    etype = res.expectation_config.type
    kw = res.expectation_config.kwargs
    col = kw.get("column") or kw.get("column_A")  # a pair rule is named by its first column
    r = res.result or {}
    rec: dict[str, Any] = {"expectation": etype, "column": col}
    exc = res.exception_info or {}
    error = _exception_message(exc)
    if error:
        rec["error"] = error
        outcome = f"error: {error}"
    elif etype == "expect_column_to_exist":
        outcome = "column missing"
    elif "unexpected_count" in r:
        rec["unexpected_count"] = int(r["unexpected_count"])
        source = _example_source(etype, col, df)
        rec["unexpected_values"] = _examples(r, df, source, col)
        label = f"{source}=" if source is not None else ""
        shown = ", ".join(label + _fmt(v) for v in rec["unexpected_values"])
        outcome = f"{rec['unexpected_count']} unexpected" + (f" (e.g. {shown})" if shown else "")
    elif "partial_missing_list" in r:
        rec["missing_values"] = [_plain(v) for v in r["partial_missing_list"]]
        outcome = "missing " + ", ".join(_fmt(v) for v in rec["missing_values"])
    else:
        rec["observed_value"] = _plain(r.get("observed_value"))
        outcome = f"observed {_fmt(rec['observed_value'])}"
    rec["summary"] = f"{etype}({_fmt_args(kw)}): {outcome}"
    return rec


def _exception_message(info: dict) -> str | None:
    """GX nests exception info by metric when a metric fails; flatten to the first message."""
    if info.get("raised_exception"):
        return str(info.get("exception_message"))
    for v in info.values():
        if isinstance(v, dict) and v.get("raised_exception"):
            return str(v.get("exception_message"))
    return None


def _example_source(etype: str, col: str | None, df: pd.DataFrame) -> str | None:
    """Column whose values name the failing rows better than the failing values do, if any."""
    source = _EXAMPLE_SOURCE.get(col or "")
    if source is None and etype == _NOT_NULL:
        source = "path" if col == "id" else "id"
    return source if source in df.columns else None


def _examples(r: dict, df: pd.DataFrame, source: str | None, col: str | None = None) -> list[Any]:
    """Up to five distinct offending values, or the failing rows' ``source`` values (for an
    audio statistic, each file followed by why it failed)."""
    if source is not None and "partial_unexpected_index_list" in r:
        rows = df.loc[r["partial_unexpected_index_list"]]
        values = rows[source].tolist()
        if col in AUDIO_STATS or col in _HASH_CHECKS:
            values = [f"{v} ({_audio_reason(col, row)})" for v, (_, row) in zip(values, rows.iterrows())]
    else:
        values = r.get("partial_unexpected_list") or []
    seen: list[Any] = []
    for v in values:
        v = _plain(v)
        if v not in seen:
            seen.append(v)
        if len(seen) == _MAX_EXAMPLES:
            break
    return seen


def _audio_reason(col: str, row: pd.Series) -> str:
    """Why a file failed the rule on audio statistic or hash check ``col``, from its row."""
    if col in _HASH_CHECKS:
        path_col, hash_col = _HASH_CHECKS[col]
        if not isinstance(row.get(hash_col), str):
            return f"no {hash_col} recorded"
        gone = "gone or " if path_col != "path" else ""
        return f"{gone}changed since acquire: its bytes no longer hash to the manifest's {hash_col}"
    if col == DECODES:
        return f"does not decode: {row[DECODE_ERROR]}"
    if col == HEADER_FRAMES:
        header, decoded = row[HEADER_FRAMES], row[DECODED_FRAMES]
        verdict = "truncated" if decoded < header else "longer than its header says"
        return f"header promises {header} frames, {decoded} decoded: {verdict}"
    if col == FINITE:
        return "NaN or infinite samples"
    if col == RMS_DBOV:
        return f"RMS {_fmt(float(row[RMS_DBOV]))} dBov: silent"
    return f"active speech level {_fmt(float(row[col]))} dBov"


def _fmt_args(kw: Mapping[str, Any]) -> str:
    names = [kw.get(k) for k in ("column", "column_A", "column_B")]
    parts = [str(n) for n in names if n is not None]
    lo, hi = kw.get("min_value"), kw.get("max_value")
    if lo is not None and hi is not None:
        parts.append(f"{_fmt(lo)}..{_fmt(hi)}")
    elif lo is not None:
        parts.append(f">= {_fmt(lo)}")
    elif hi is not None:
        parts.append(f"<= {_fmt(hi)}")
    if kw.get("value_set") is not None:
        parts.append("{" + ", ".join(_fmt(v) for v in kw["value_set"]) + "}")
    return ", ".join(parts)


def _plain(v: Any) -> Any:
    """numpy/pandas scalars to Python ones (NaN to None), so the report is plain JSON."""
    v = v.item() if hasattr(v, "item") else v
    return None if isinstance(v, float) and v != v else v


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        # Rounded so float noise stays out of messages; repr keeps "5.0" recognisably a float.
        return repr(round(v, 6))
    return str(v)
