"""Scoring audio files with a MOS model from a checkpoint file or the MLflow registry.

Nothing here unpickles: a registry model is downloaded and only its checkpoint artifact is
opened, with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from tqdm import tqdm

from jsqa.errors import JsqaError
from jsqa.models.mos import MOSModel, load_checkpoint, mos_model_from_checkpoint
from jsqa.scoring.limits import LIMITS, ScoringAudio, ScoringLimits, training_note
from jsqa.scoring.model_uri import check_model_ref, checkpoint_in, download_model, is_mlflow_uri
from jsqa.scoring.windows import model_device, model_outputs, score_blocks_all

log = logging.getLogger(__name__)

FORMATS = ("table", "csv", "json")


class Scorer(NamedTuple):
    """A loaded MOS model (eval mode), a one-line description of what was loaded, and the note
    every score of it carries (:func:`jsqa.scoring.limits.training_note`; None: none)."""

    model: MOSModel
    description: str
    note: str | None


def load_scorer(ref: str, root: Path = Path(".")) -> Scorer:
    """A MOS model from a checkpoint path, a downloaded model folder or an MLflow model URI."""
    ref = str(ref)
    if is_mlflow_uri(ref):
        return _load_from_mlflow(ref, Path(root))
    check_model_ref(ref)
    path = Path(ref)
    ckpt = checkpoint_in(path) if path.is_dir() else path
    return _scorer(load_checkpoint(ckpt), f"checkpoint {ckpt}")


def load_model(ref: str, root: Path = Path(".")) -> tuple[MOSModel, str]:
    """The model and description of :func:`load_scorer` (eval mode)."""
    scorer = load_scorer(ref, root)
    return scorer.model, scorer.description


def _scorer(payload: dict, description: str) -> Scorer:
    return Scorer(mos_model_from_checkpoint(payload), description, training_note(payload))


def _load_from_mlflow(uri: str, root: Path) -> Scorer:
    with tempfile.TemporaryDirectory(prefix="jsqa-model-") as tmp:
        local, described = download_model(uri, root, Path(tmp))
        ckpt = checkpoint_in(local) if local.is_dir() else local
        scorer = _scorer(load_checkpoint(ckpt), described)
    log.info("loaded %s", described)
    return scorer


def score_files(
    model: MOSModel,
    files: Sequence[str | Path],
    limits: ScoringLimits = LIMITS,
    progress: bool = False,
    *,
    device: torch.device | str | None = None,
    note: str | None = None,
) -> list[dict]:
    """One row per file: {"path", "mos", "error", "warning"}, plus the model's other outputs
    (``mos_std``, quality dimensions: :func:`score_outputs`) when it has them; an unusable file gets an error, not
    a crash; a truncated one is scored and gets a warning saying how much of it was read, and
    resampling from an unusual rate or averaging channels is noted there too
    (:attr:`jsqa.scoring.limits.ScoringAudio.warning`).
    ``note`` (:attr:`Scorer.note`), when given, goes in every row's ``note``.

    Each file is checked from its header (:class:`jsqa.scoring.limits.ScoringAudio`, as the
    served model does), then decoded, resampled to the model's input rate and scored block by
    block, so memory does not grow with its length. ``progress`` draws a tqdm bar on stderr (the
    CLI turns it on when stderr is a terminal). ``device``: where to score (default: where the
    model is); the model moves there once, for all the files, and back after.
    """
    home = model_device(model)
    model.to(device if device is not None else home)
    try:
        rows = _score_files(model, files, limits, progress)
    finally:
        model.to(home)
    return rows if note is None else [{**r, "note": note} for r in rows]


def _score_files(model: MOSModel, files: Sequence[str | Path], limits: ScoringLimits, progress: bool) -> list[dict]:
    rows: list[dict] = []
    sample_rate = model.sample_rate
    outputs = score_outputs(model)
    for f in tqdm(files, disable=not progress, file=sys.stderr, unit="file", desc="scoring"):
        row: dict[str, Any] = {"path": str(f), "mos": None, **dict.fromkeys(outputs), "error": None, "warning": None}
        try:
            with ScoringAudio(f, str(f), limits) as audio:
                row.update(score_blocks_all(model, audio.blocks(sample_rate), sample_rate))
                row["warning"] = audio.warning
            if row["warning"]:
                log.warning("%s", row["warning"])
        except JsqaError as exc:
            log.warning("%s", exc)
            row["error"] = str(exc).splitlines()[0]
        rows.append(row)
    return rows


def score_outputs(model: MOSModel) -> list[str]:
    """The model's outputs besides MOS that score rows carry (``mos_std``, ``noi``, ...)."""
    return [o for o in model_outputs(model) if o != "mos"]


_TEXT_COLUMNS = ("error", "warning", "note")
_BASE_COLUMNS = ("path", "mos", *_TEXT_COLUMNS)


def _extra_columns(rows: Sequence[dict]) -> list[str]:
    """Output columns beyond path/mos/error/warning/note, in the order rows give them."""
    out: list[str] = []
    for r in rows:
        out += [k for k in r if k not in _BASE_COLUMNS and k not in out]
    return out


def format_rows(rows: Sequence[dict], fmt: str) -> str:
    """Render score rows as an aligned table, CSV or a JSON list of objects; the text ends with
    exactly one newline. Columns: path, mos, the model's other outputs when rows have them
    (``mos_std``, quality dimensions), error, warning, and note in CSV and JSON when rows carry
    one (the table leaves it to the caller, as it is the same on every row)."""
    extra = _extra_columns(rows)
    texts = _texts(rows)
    if fmt == "json":
        return json.dumps([_row(r, extra, texts) for r in rows], indent=2) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=["path", "mos", *extra, *texts], lineterminator="\n")
        writer.writeheader()
        for r in rows:
            r = _row(r, extra, texts)
            writer.writerow(
                {
                    "path": r["path"],
                    **{c: "" if r[c] is None else repr(r[c]) for c in ["mos", *extra]},
                    **{c: r[c] or "" for c in texts},
                }
            )
        return buf.getvalue()
    if fmt == "table":
        return _table(rows)
    raise JsqaError(f"unknown output format '{fmt}' (choose {', '.join(FORMATS)})")


def _texts(rows: Sequence[dict]) -> list[str]:
    """The text columns of CSV and JSON rows: error, warning, and note when a row has one."""
    return [c for c in _TEXT_COLUMNS if c != "note" or any("note" in r for r in rows)]


def _num(v: Any) -> float | None:
    return None if v is None else float(v)


def _row(r: dict, extra: Sequence[str] = (), texts: Sequence[str] = ("error", "warning")) -> dict[str, Any]:
    return {
        "path": str(r["path"]),
        "mos": _num(r.get("mos")),
        **{c: _num(r.get(c)) for c in extra},
        **{c: r.get(c) for c in texts},
    }


def _table(rows: Sequence[dict]) -> str:
    outputs = ["mos", *_extra_columns(rows)]
    # The error and warning columns appear only when some row has one.
    extra = [c for c in ("error", "warning") if any(r.get(c) for r in rows)]
    header = ["path", *outputs, *extra]
    body = []
    for r in rows:
        r = _row(r, outputs[1:])
        body.append(
            [r["path"], *("-" if r[c] is None else f"{r[c]:.3f}" for c in outputs), *(r[c] or "" for c in extra)]
        )
    widths = [max(len(c[i]) for c in [header, *body]) for i in range(len(header))]
    n = 1 + len(outputs)
    lines = []
    for cells in [header, *body]:
        # Scores are right-aligned so the decimals line up; the last column is not padded.
        parts = [cells[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(cells[1:n], widths[1:n]))] + cells[n:]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines) + "\n"
