"""The served models: MLflow pyfunc wrappers that score audio sent as paths, bytes or samples.

Each model is logged as "models from code": the model folder holds the small entry file from
:mod:`jsqa.scoring.pyfunc_code` and the checkpoint, never a pickled Python object. Loading one runs our
own code and opens the checkpoint with ``torch.load(weights_only=True)``.

Input, one row per clip (a DataFrame, or what ``mlflow models serve`` builds from
``dataframe_records`` / ``dataframe_split`` / ``inputs``), with exactly one of:

- ``path``: a file readable by the server (disable with ``JSQA_SERVE_PATHS=0``);
- ``audio_base64``: base64 of an encoded file (WAV, FLAC, OGG, ...);
- ``audio`` (a list of float samples, or a list of per-frame channel lists) plus ``sample_rate``.

Files (paths and decoded base64) are read and scored block by block, so a long clip costs no
more memory than a short one. MLflow's scoring server reads a whole request body before the
model sees it and has no size limit of its own; rows whose ``audio_base64`` or ``audio`` is over
``JSQA_SERVE_MAX_BYTES`` (decoded bytes; float32 samples count 4 bytes; default 64 MiB) are
refused with an error row before they are decoded. ``JSQA_SERVE_MAX_SECONDS`` (default 600)
is the duration limit.

Output: one row per input row, in order: ``mos``, the model's other outputs when it has them
(``mos_std``, quality dimensions ``noi`` ...), ``error``, ``warning``, and ``note`` for a model
fine-tuned on the synthetic demo profile (:data:`jsqa.scoring.limits.DEMO_NOTE`). A row that
cannot be scored gets null scores and a one-line ``error``; the other rows are still scored. A
truncated file is scored from what it holds, with the ``warning`` `jsqa predict` gives it; an
unusual sample rate resampled and channels averaged to mono are noted there too. A
request that is unusable as a whole (no known column, not a table) raises, which the scoring
server answers with HTTP 400.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel
from mlflow.types import ColSpec, DataType, Schema, TensorSpec
from mlflow.types.schema import AnyType

from jsqa.errors import AudioError, JsqaError
from jsqa.models.encoder import Encoder
from jsqa.models.mos import MOSModel, encoder_from_checkpoint, load_checkpoint, mos_model_from_checkpoint
from jsqa.scoring.compare import (
    Calibration,
    compare_waveforms,
    distance_model_from_checkpoint,
    load_calibration,
    model_rate,
)
from jsqa.scoring.limits import LIMITS, ScoringAudio, ScoringLimits, checked_waveform, training_note
from jsqa.scoring.model_uri import CALIBRATION_ARTIFACT, CHECKPOINT_ARTIFACT
from jsqa.scoring.windows import HOP_S, WINDOW_S, model_outputs, score_blocks_all, windowed_mean, windowed_mean_blocks

log = logging.getLogger(__name__)

# The served input columns and their types in the logged signature (see input_schema).
INPUT_TYPES: dict[str, DataType | AnyType] = {
    "path": DataType.string,
    "audio_base64": DataType.string,
    "audio": AnyType(),
    "sample_rate": DataType.double,
}
INPUT_COLUMNS = tuple(INPUT_TYPES)
# The served encoder's optional reference, given like the audio (one of path / base64 / samples):
# a row with one also gets jnd_distance and p_different (jsqa.scoring.compare).
REFERENCE_COLUMNS = ("ref_path", "ref_audio_base64", "ref_audio", "ref_sample_rate")
DEFAULT_MAX_BYTES = 64 * 2**20
_CODE_DIR = Path(__file__).resolve().parent / "pyfunc_code"
# "Models from code" entry files for mlflow.pyfunc.log_model(python_model=...).
MOS_MODEL_CODE = str(_CODE_DIR / "mos.py")
ENCODER_MODEL_CODE = str(_CODE_DIR / "encoder.py")


def input_schema(reference: bool = False) -> Schema:
    """The served input columns, all optional (each row uses one kind of input): ``path`` and
    ``audio_base64`` strings, ``sample_rate`` a double (a whole number of Hz: MLflow's integer
    columns cannot hold the missing value of a row without samples, so one such row would fail
    the whole request), and ``audio`` untyped, because it is a list of floats or a list of
    per-frame channel lists, and MLflow has no union type; and a typed array would turn a row of
    integer samples into a failed request rather than an error row. Values are checked per row by
    :func:`row_blocks`. ``reference``: the encoder's optional :data:`REFERENCE_COLUMNS` too."""
    cols: list[ColSpec | TensorSpec] = [ColSpec(t, name, required=False) for name, t in INPUT_TYPES.items()]
    if reference:
        cols += [ColSpec(t, "ref_" + name, required=False) for name, t in INPUT_TYPES.items()]
    return Schema(cols)


def output_schema(scores: Iterable[str], note: bool = False) -> Schema:
    """The served output columns: ``scores`` (doubles, null in an error row), then the one-line
    ``error`` and ``warning`` strings, and ``note`` when the model carries one."""
    texts = ("error", "warning", "note") if note else ("error", "warning")
    cols: list[ColSpec | TensorSpec] = [ColSpec(DataType.double, n, required=False) for n in scores]
    return Schema(cols + [ColSpec(DataType.string, n, required=False) for n in texts])


def paths_allowed() -> bool:
    """Whether ``path`` rows are accepted (``JSQA_SERVE_PATHS=0`` turns them off)."""
    return os.environ.get("JSQA_SERVE_PATHS", "1").strip().lower() not in ("0", "false", "no")


def max_row_bytes() -> int:
    """The largest ``audio_base64`` (decoded) or ``audio`` (4 bytes a sample) a row may carry:
    ``JSQA_SERVE_MAX_BYTES``, default 64 MiB."""
    raw = os.environ.get("JSQA_SERVE_MAX_BYTES", "").strip()
    try:
        return int(raw) if raw else DEFAULT_MAX_BYTES
    except ValueError as exc:
        raise JsqaError(f"JSQA_SERVE_MAX_BYTES must be a whole number of bytes, got '{raw}'") from exc


def serve_limits() -> ScoringLimits:
    """The served model's limits: :data:`LIMITS` with ``JSQA_SERVE_MAX_SECONDS`` as the duration limit."""
    raw = os.environ.get("JSQA_SERVE_MAX_SECONDS", "").strip()
    try:
        seconds = float(raw) if raw else LIMITS.max_seconds
    except ValueError as exc:
        raise JsqaError(f"JSQA_SERVE_MAX_SECONDS must be a number of seconds, got '{raw}'") from exc
    return replace(LIMITS, max_seconds=seconds, raise_hint="the server's JSQA_SERVE_MAX_SECONDS")


def _check_size(size: int, what: str, i: int) -> None:
    limit = max_row_bytes()
    if size > limit:
        raise AudioError(
            f"row {i}: {what} is {size / 2**20:.1f} MiB, over this server's {limit / 2**20:g} MiB limit "
            "per row (JSQA_SERVE_MAX_BYTES); send a path or a shorter clip"
        )


def as_frame(model_input: Any) -> pd.DataFrame:
    """The model input as a DataFrame with at least one known column; JsqaError otherwise."""
    if isinstance(model_input, list) and all(isinstance(r, dict) for r in model_input):
        model_input = pd.DataFrame(model_input)
    elif isinstance(model_input, dict):
        try:
            model_input = pd.DataFrame(
                {k: list(v) if isinstance(v, (list, np.ndarray)) else [v] for k, v in model_input.items()}
            )
        except ValueError as exc:
            raise JsqaError(f"model input columns differ in length ({exc})") from exc
    if not isinstance(model_input, pd.DataFrame):
        raise JsqaError(f"model input must be a table of rows, got {type(model_input).__name__}")
    if not any(c in model_input.columns for c in ("path", "audio_base64", "audio")):
        raise JsqaError("model input needs a 'path', 'audio_base64' or 'audio' (+ 'sample_rate') column")
    return model_input


def _present(v: Any) -> bool:
    """False for None, NaN, pd.NA and "" (how a DataFrame marks the column a row does not use)."""
    if v is None or (pd.api.types.is_scalar(v) and pd.isna(v)):
        return False
    return not (isinstance(v, str) and v == "")


class RowAudio:
    """One input row's audio as consecutive mono blocks at the model's rate (:attr:`blocks`),
    and the warning scoring it leaves (:attr:`warning`), known once the blocks are consumed."""

    def __init__(
        self, blocks: Iterable[np.ndarray], source: ScoringAudio | None = None, warning: str | None = None
    ) -> None:
        self.blocks = blocks
        self._source = source
        self._warning = warning

    @property
    def warning(self) -> str | None:
        """What `jsqa predict` would say of the row's audio (:attr:`ScoringAudio.warning`: a
        truncated file, an unusual rate, channels averaged); None when nothing."""
        return self._source.warning if self._source is not None else self._warning


@contextmanager
def row_blocks(row: dict, i: int, target_sr: int, limits: ScoringLimits) -> Iterator[RowAudio]:
    """The mono ``target_sr`` audio of input row ``i`` (files are decoded as they are read);
    AudioError saying "row i: why"."""
    given = [c for c in ("path", "audio_base64", "audio") if _present(row.get(c))]
    if len(given) != 1:
        what = "none" if not given else ", ".join(given)
        raise AudioError(f"row {i}: set exactly one of 'path', 'audio_base64', 'audio' (got {what})")
    kind, value = given[0], row[given[0]]
    if kind != "audio" and not isinstance(value, str):
        raise AudioError(f"row {i}: '{kind}' must be a string, got {type(value).__name__}")
    if kind == "audio":
        samples, warning = _row_samples(row, value, i, target_sr, limits)
        yield RowAudio([samples], warning=warning)
        return
    if kind == "path":
        if not paths_allowed():
            raise AudioError(f"row {i}: 'path' input is disabled on this server (JSQA_SERVE_PATHS=0)")
        source: str | bytes = value
        name = f"row {i}: {value}"
    else:
        _check_size(len(value) // 4 * 3, "audio_base64", i)  # the decoded size, before decoding
        try:
            source = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise AudioError(f"row {i}: audio_base64 is not valid base64 ({exc})") from exc
        name = f"row {i}: audio_base64"
    with ScoringAudio(source, name, limits) as audio:
        yield RowAudio(audio.blocks(target_sr), audio)


def _row_samples(row: dict, value: Any, i: int, target_sr: int, limits: ScoringLimits) -> tuple[np.ndarray, str | None]:
    """Row ``i``'s ``audio`` samples with its ``sample_rate``, checked, mono at ``target_sr``, and
    their warning (:func:`checked_waveform`)."""
    sr = row.get("sample_rate")
    if not _present(sr):
        raise AudioError(f"row {i}: 'audio' needs a 'sample_rate' in Hz")
    if isinstance(value, str):
        raise AudioError(f"row {i}: 'audio' must be a list of float samples, got a string")
    n = len(value) if hasattr(value, "__len__") else 1
    first = value[0] if n and hasattr(value, "__getitem__") else None
    channels = len(first) if isinstance(first, (list, tuple, np.ndarray)) else 1
    _check_size(4 * n * channels, "audio", i)
    return checked_waveform(value, sr, f"row {i}: audio", target_sr, limits)


def _rows(model_input: Any) -> list[dict]:
    return as_frame(model_input).to_dict(orient="records")


def _row_error(exc: AudioError, i: int) -> str:
    """The one-line error of row ``i``, which errors raised below the row (no speech, decoding)
    name like the rest."""
    log.warning("%s", exc)
    message = str(exc).splitlines()[0]
    return message if message.startswith(f"row {i}:") else f"row {i}: {message}"


def _text_columns(errors: list[str | None], warnings: list[str | None], note: str | None) -> dict[str, pd.Series]:
    """The ``error``, ``warning`` (and ``note``, when given, on every row) columns."""
    out = {"error": pd.Series(errors, dtype="object"), "warning": pd.Series(warnings, dtype="object")}
    if note is not None:
        out["note"] = pd.Series([note] * len(errors), dtype="object")
    return out


def score_rows(
    model: MOSModel, model_input: Any, limits: ScoringLimits | None = None, note: str | None = None
) -> pd.DataFrame:
    """One MOS per input row (columns ``mos``, the model's other outputs such as ``mos_std`` and
    quality dimensions when it has them, ``error``, ``warning``, and ``note`` when given); a bad
    row gets an error, not a crash; a truncated file is scored with a warning, as in `jsqa predict`.
    Each row's audio is resampled to the model's input rate (the one its checkpoint records).

    Scores are float64 when every row scored, else object with None where ``error`` is set (so
    the JSON response never carries NaN). ``limits`` defaults to :func:`serve_limits`. Raises
    JsqaError only for an unusable input table.
    """
    limits = limits or serve_limits()
    names = model_outputs(model)
    scores: dict[str, list[float | None]] = {n: [] for n in names}
    errors: list[str | None] = []
    warnings: list[str | None] = []
    for i, row in enumerate(_rows(model_input)):
        values: dict[str, float | None] = dict.fromkeys(names)
        error = warning = None
        try:
            with row_blocks(row, i, model.sample_rate, limits) as audio:
                scored = score_blocks_all(model, audio.blocks, model.sample_rate)
                warning = audio.warning
            if not all(math.isfinite(v) for v in scored.values()):
                raise AudioError(f"row {i}: the model gave a non-finite score")
            values.update(scored)
        except AudioError as exc:
            error, warning = _row_error(exc, i), None
        if warning:
            log.warning("%s", warning)
        for n in names:
            scores[n].append(values[n])
        errors.append(error)
        warnings.append(warning)
    dtype = "float64" if all(e is None for e in errors) else "object"
    return pd.DataFrame(
        {**{n: pd.Series(v, dtype=dtype) for n, v in scores.items()}, **_text_columns(errors, warnings, note)}
    )


def embed_waveform(encoder: Encoder, x: np.ndarray, window_s: float = WINDOW_S, hop_s: float = HOP_S) -> np.ndarray:
    """Embedding of one clip at the encoder's input rate: the length-weighted mean over the
    same windows as scoring."""
    encoder.eval()
    return windowed_mean(encoder, x, encoder.sample_rate, window_s, hop_s).numpy()


def embed_rows(encoder: Encoder, model_input: Any, limits: ScoringLimits | None = None) -> pd.DataFrame:
    """Embedding columns e0..eD-1 plus ``error`` and ``warning`` per input row (None embeddings
    for a bad row); each row's audio is resampled to the encoder's input rate."""
    limits = limits or serve_limits()
    encoder.eval()
    dim = encoder.embedding_dim
    cells: list[list[float | None]] = []
    errors: list[str | None] = []
    warnings: list[str | None] = []
    for i, row in enumerate(_rows(model_input)):
        try:
            with row_blocks(row, i, encoder.sample_rate, limits) as audio:
                cells.append(
                    [float(v) for v in windowed_mean_blocks(encoder, audio.blocks, encoder.sample_rate).numpy()]
                )
                warnings.append(audio.warning)
            errors.append(None)
        except AudioError as exc:
            cells.append([None] * dim)
            errors.append(_row_error(exc, i))
            warnings.append(None)
    dtype = "float64" if all(e is None for e in errors) else "object"
    out = pd.DataFrame(cells, columns=[f"e{i}" for i in range(dim)], dtype=dtype)
    for name, column in _text_columns(errors, warnings, None).items():
        out[name] = column
    return out


def _bad_request(exc: JsqaError) -> MlflowException:
    # The scoring server answers an MlflowException with its code (400) and this message;
    # any other exception becomes a generic "unexpected error".
    return MlflowException(str(exc).splitlines()[0], error_code=INVALID_PARAMETER_VALUE)


class MOSPyfunc(PythonModel):
    """Audio rows -> MOS, for ``mlflow.pyfunc.load_model`` and ``mlflow models serve``."""

    def load_context(self, context: Any) -> None:
        payload = load_checkpoint(context.artifacts[CHECKPOINT_ARTIFACT])
        self.model = mos_model_from_checkpoint(payload)
        self.note = training_note(payload)

    # A DataFrame hint is one MLflow does not try to derive a schema from (the signature rules).
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        """Score each row (see the module docstring); HTTP 400 for an unusable table."""
        try:
            return score_rows(self.model, model_input, note=self.note)
        except JsqaError as exc:
            raise _bad_request(exc) from exc


def reference_row(row: dict) -> dict | None:
    """Row ``row``'s reference as an input row of its own (``ref_`` dropped); None without one."""
    ref = {c[len("ref_") :]: row.get(c) for c in REFERENCE_COLUMNS}
    return ref if any(_present(ref[c]) for c in ("path", "audio_base64", "audio")) else None


def _row_waveform(row: dict, i: int, target_sr: int, limits: ScoringLimits) -> np.ndarray:
    with row_blocks(row, i, target_sr, limits) as audio:
        parts = [np.asarray(b, dtype=np.float32) for b in audio.blocks]
    if not parts or sum(len(p) for p in parts) == 0:
        raise AudioError(f"row {i}: audio is empty (0 samples)")
    return np.concatenate(parts)


def distance_rows(
    model: torch.nn.Module, calibration: Calibration | None, model_input: Any, limits: ScoringLimits | None = None
) -> pd.DataFrame:
    """``jnd_distance`` and ``p_different`` per input row (None for a row without a reference, or
    without a calibration for ``p_different``), plus ``error`` for a row whose pair failed."""
    limits = limits or serve_limits()
    sr = model_rate(model)
    dist: list[float | None] = []
    prob: list[float | None] = []
    errors: list[str | None] = []
    for i, row in enumerate(_rows(model_input)):
        ref = reference_row(row)
        d = p = err = None
        if ref is not None:
            try:
                out = compare_waveforms(
                    model, _row_waveform(ref, i, sr, limits), _row_waveform(row, i, sr, limits), calibration
                )
                d, p = out["distance"], out.get("p_different")
            except AudioError as exc:
                log.warning("reference: %s", exc)
                err = f"reference: {str(exc).splitlines()[0]}"
        dist.append(d)
        prob.append(p)
        errors.append(err)
    return pd.DataFrame(
        {
            "jnd_distance": pd.Series(dist, dtype="object"),
            "p_different": pd.Series(prob, dtype="object"),
            "error": pd.Series(errors, dtype="object"),
        }
    )


def has_reference(model_input: Any) -> bool:
    """Whether the input table has any reference column."""
    return any(c in as_frame(model_input).columns for c in REFERENCE_COLUMNS)


class EncoderPyfunc(PythonModel):
    """Audio rows -> embedding columns e0..eD-1 (and ``error``, ``warning``); rows with a reference
    (:data:`REFERENCE_COLUMNS`) also get ``jnd_distance`` and ``p_different`` (None without one)."""

    def load_context(self, context: Any) -> None:
        payload = load_checkpoint(context.artifacts[CHECKPOINT_ARTIFACT])
        self.encoder = encoder_from_checkpoint(payload).eval()
        self.distance_model = distance_model_from_checkpoint(payload)
        cal = context.artifacts.get(CALIBRATION_ARTIFACT)
        self.calibration = load_calibration(cal) if cal else None
        if self.calibration is not None and not self.calibration.available:
            log.warning("JND calibration unavailable (%s): p_different will be null", self.calibration.reason)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        """Embed each row (see the module docstring); HTTP 400 for an unusable table."""
        try:
            out = embed_rows(self.encoder, model_input)
            if has_reference(model_input):
                pairs = distance_rows(self.distance_model, self.calibration, model_input)
                out["jnd_distance"], out["p_different"] = pairs["jnd_distance"], pairs["p_different"]
                out["error"] = out["error"].where(out["error"].notna(), pairs["error"])
            return out
        except JsqaError as exc:
            raise _bad_request(exc) from exc
