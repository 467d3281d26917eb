"""Great Expectations suites for the manifests: the gate between acquire and every later stage.

Facts GX cannot see in one table (does the file exist? does a test clip also sit in train?)
are computed first as boolean columns, so the suite still states every rule and Data Docs
show them all. One file-backed GX context is built per call, in a temporary folder that
replaces the docs folder (``<out_dir>/gx`` by default) whole when done.

Two outputs, kept apart on purpose: ``<out_dir>/report.json`` is the *verdict* (pass/fail and
the failed expectations per manifest; no timestamps, no Data Docs location), the same bytes
for the same manifests, so later DVC stages depend on it and are not re-run by a fresh
validation of unchanged data. The Data Docs hold timestamped pages and are for people.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from jsqa.config import ValidateConfig
from jsqa.data.manifests import SCHEMAS, SPLITS, read_manifest, resolve
from jsqa.errors import ManifestError, ValidationFailed
from jsqa.io import atomic_dir, write_json

log = logging.getLogger(__name__)

FILE_EXISTS = "file_exists"
LEAKS_INTO_TRAIN = "leaks_into_train"
SPEAKER_SPANS_SUBSETS = "speaker_spans_subsets"
# Where the failing values themselves say nothing ("False", "None"), name the rows instead.
_EXAMPLE_SOURCE = {FILE_EXISTS: "path", LEAKS_INTO_TRAIN: "id", SPEAKER_SPANS_SUBSETS: "speaker"}
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
    for col in SCHEMAS[kind]:
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
        gxe.ExpectColumnValuesToBeBetween(
            column="duration", min_value=cfg.min_duration_s, max_value=max_duration
        )
    )
    out.append(
        gxe.ExpectColumnValuesToBeInSet(
            column=FILE_EXISTS,
            value_set=[True],
            notes="path, resolved against the project root, is a file",
        )
    )
    if kind == "clean":
        out.append(
            gxe.ExpectColumnValuesToBeInSet(
                column=SPEAKER_SPANS_SUBSETS,
                value_set=[False],
                notes="a speaker found in more than one subset (LibriSpeech splits are disjoint by speaker)",
            )
        )
    if kind == "mos":
        lo, hi = cfg.mos_range
        out.append(gxe.ExpectColumnValuesToBeBetween(column="mos", min_value=lo, max_value=hi))
        out.append(gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)))
        out.append(
            gxe.ExpectColumnDistinctValuesToContainSet(column="split", value_set=list(SPLITS))
        )
        out.append(
            gxe.ExpectColumnValuesToBeInSet(
                column=LEAKS_INTO_TRAIN,
                value_set=[False],
                notes="a test row whose path or id also appears in the train split",
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


def validate_manifests(
    manifests: Mapping[str, Path],
    cfg: ValidateConfig,
    sample_rate: int,
    out_dir: Path,
    root: Path = Path("."),
    docs_dir: Path | None = None,
) -> dict:
    """Validate each manifest (keyed by kind); write the verdict ``out_dir/report.json`` and Data Docs.

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
            name = str(path)
            try:
                df = _read(path)
            except ManifestError as exc:
                per_manifest[kind] = {
                    "path": name, "success": False, "n_rows": 0, "error": str(exc), "failed": []
                }
                lines.append(str(exc))
                continue
            df = add_computed_columns(kind, df, root)
            outcome = _run_suite(gx, context, datasource, kind, df, cfg, sample_rate)
            entry = {"path": name, **outcome}
            per_manifest[kind] = entry
            lines.extend(f"{name}: {f['summary']}" for f in entry["failed"])
            status = "ok" if entry["success"] else "FAILED"
            log.info("%s: %d rows, %s", name, entry["n_rows"], status)
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
    # already reports it in one readable line.
    expectations = [
        e
        for e in suite_for(kind, cfg, sample_rate)
        if getattr(e, "column", None) in (None, *df.columns)
        or type(e).__name__ == "ExpectColumnToExist"
    ]
    # Added whole: adding to a stored suite rewrites its JSON once per expectation.
    suite = context.suites.add(gx.ExpectationSuite(name=kind, expectations=expectations))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=kind, data=batch, suite=suite)
    )
    result = definition.run(
        batch_parameters={"dataframe": df},
        result_format={"result_format": "SUMMARY", "partial_unexpected_count": 20},
    )
    failed = [_describe(r, df) for r in result.results if not r.success]
    return {"success": bool(result.success), "n_rows": int(len(df)), "failed": failed}


def _describe(res: Any, df: pd.DataFrame) -> dict:
    """Turn one failed GX result into a JSON-safe record with a one-line summary."""
    etype = res.expectation_config.type
    kw = res.expectation_config.kwargs
    col = kw.get("column")
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
        rec["unexpected_values"] = _examples(r, df, source)
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


def _examples(r: dict, df: pd.DataFrame, source: str | None) -> list[Any]:
    """Up to five distinct offending values, or the failing rows' ``source`` values."""
    if source is not None and "partial_unexpected_index_list" in r:
        values = df.loc[r["partial_unexpected_index_list"], source].tolist()
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


def _fmt_args(kw: Mapping[str, Any]) -> str:
    parts = [str(kw["column"])] if kw.get("column") is not None else []
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
