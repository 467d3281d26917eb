"""Fuzzing the scoring path that `jsqa predict` and the served model share (1,000 generated cases).

Whatever arrives (arrays of any dtype/shape/values, any sample rate, arbitrary or mutilated
file bytes, malformed request rows) the outcome is either a finite MOS in [1, 5] or an
AudioError with a one-line reason naming the input; never another exception, never NaN, and
memory stays bounded for bounded inputs.
"""

from __future__ import annotations

import base64
import io
import math
import tracemalloc

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from jsqa.errors import AudioError
from jsqa.models.mos import MOSModel, encoder_spec
from jsqa.scoring.limits import load_scoring_audio, scoring_waveform
from jsqa.scoring.serving import score_rows
from jsqa.scoring.windows import score_waveform

pytestmark = pytest.mark.integration

FUZZ = settings(
    deadline=2000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
    database=None,
)
# Inputs here are at most ~100k samples; scoring one allocates a few MB at most.
PEAK_BYTES = 64 * 2**20


@pytest.fixture(scope="module")
def model():
    # One thread: the fuzz cases are tiny and torch's thread pool only adds contention here.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    try:
        yield MOSModel(encoder_spec("small")).eval()
    finally:
        torch.set_num_threads(threads)


def _outcome(fn) -> tuple[float | None, str | None, int]:
    """(score or None, AudioError message or None, traced peak bytes) of ``fn()``."""
    tracemalloc.start()
    try:
        return fn(), None, tracemalloc.get_traced_memory()[1]
    except AudioError as exc:
        return None, str(exc), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _assert_clear(score: float | None, error: str | None, name: str) -> None:
    if error is None:
        assert score is not None and math.isfinite(score) and 1.0 <= score <= 5.0
    else:
        assert error.startswith(name) and "\n" not in error and len(error) < 400


_dtypes = st.sampled_from(
    [np.float32, np.float64, np.float16, np.int16, np.int32, np.uint8, np.bool_, np.complex64, "U4", "O"]
)
_floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
_good_rates = st.sampled_from([8000, 11025, 12345, 16000, 22050, 44100, 47999, 48000, 96000, 192000])
# Half the cases get a usable rate, so that the samples' own checks and the model run too.
_rates = st.one_of(
    _good_rates,
    _good_rates,
    _good_rates,
    st.integers(-10, 400_000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([True, None, "16000", b"16k", [16000], 16000.5]),
)
_REASONS = (
    "sample rate",
    "must be floats",
    "shaped",
    "too short",
    "empty",
    "channels",
    "NaN",
    "peak",
    "rectangular",
    "limit",
    "not readable",
    "no bytes",
)


def _label(error: str | None) -> str:
    return "scored" if error is None else next((r for r in _REASONS if r in error), "other")


@st.composite
def _plausible(draw):
    """Float audio at a usable rate, sometimes with one hostile value: mostly scored."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rate = draw(_good_rates)
    shortest = math.ceil(0.05 * rate)  # ScoringLimits.min_seconds
    frames = draw(st.integers(shortest, shortest + 6000))
    shape = draw(st.sampled_from([(frames,), (frames, draw(st.integers(1, 8)))]))
    x = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).uniform(-1, 1, shape).astype(dtype)
    if draw(st.integers(0, 3)) == 0:
        with np.errstate(over="ignore"):  # 1e300 into float32 is inf: one more hostile value
            x.flat[draw(st.integers(0, x.size - 1))] = draw(_floats)
    return x, rate


@st.composite
def _hostile(draw):
    """Any dtype, shape and contents, with any rate."""
    dtype = np.dtype(draw(_dtypes))
    frames = draw(st.one_of(st.integers(0, 50), st.integers(400, 2000)))
    shape = draw(st.sampled_from([(frames,), (frames, draw(st.integers(1, 80))), (2, 3, 4), ()]))
    if int(np.prod(shape)) > 2000:
        shape = (draw(st.integers(0, 2000)),)
    if dtype.kind == "O":
        x = np.array(draw(st.lists(st.one_of(_floats, st.text(max_size=3), st.none()), max_size=50)), dtype=object)
    else:
        elements = st.floats(width=8 * dtype.itemsize) if dtype.kind == "f" else None
        x = draw(hnp.arrays(dtype, shape, elements=elements))
    return x, draw(_rates)


@settings(FUZZ, max_examples=450)
@given(case=st.one_of(_plausible(), _hostile()))
def test_any_array_and_rate_scores_or_is_rejected_clearly(model, case):
    samples, rate = case
    score, error, peak = _outcome(lambda: score_waveform(model, scoring_waveform(samples, rate, "fuzz")))
    event(_label(error))
    _assert_clear(score, error, "fuzz")
    assert peak < PEAK_BYTES


def _encoded(x: np.ndarray, sr: int, fmt: str, subtype: str) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


@st.composite
def _file_bytes(draw):
    kind = draw(st.sampled_from(["random", "truncated", "flipped", "valid", "valid"]))
    if kind == "random":
        return draw(st.binary(max_size=2000))
    sr = draw(st.sampled_from([8000, 12345, 16000, 44100, 48000]))
    channels = draw(st.integers(1, 6))
    frames = draw(st.one_of(st.integers(0, 100), st.integers(2400, 8000)))
    x = np.random.default_rng(frames).uniform(-1, 1, (frames, channels)).astype(np.float32)
    fmt, subtype = draw(st.sampled_from([("WAV", "PCM_16"), ("WAV", "FLOAT"), ("FLAC", "PCM_16"), ("WAV", "PCM_U8")]))
    raw = bytearray(_encoded(x, sr, fmt, subtype))
    if kind == "truncated":
        return bytes(raw[: draw(st.integers(0, len(raw)))])
    if kind == "flipped" and raw:
        # Header bytes: rates, channel counts and chunk sizes that lie.
        for _ in range(draw(st.integers(1, 8))):
            raw[draw(st.integers(0, min(63, len(raw) - 1)))] = draw(st.integers(0, 255))
    return bytes(raw)


@settings(FUZZ, max_examples=350)
@given(raw=_file_bytes())
def test_any_file_bytes_score_or_are_rejected_clearly(model, raw):
    score, error, peak = _outcome(lambda: score_waveform(model, load_scoring_audio(raw, "fuzz.wav")))
    event(_label(error))
    _assert_clear(score, error, "fuzz.wav")
    assert peak < PEAK_BYTES


_cell = st.one_of(
    st.none(),
    st.text(max_size=20),
    _floats,
    st.integers(),
    st.booleans(),
    st.lists(_floats, max_size=2000),
    st.lists(st.integers(-3, 3), max_size=50),
    st.binary(max_size=100).map(lambda b: base64.b64encode(b).decode("ascii")),
)
_row = st.dictionaries(st.sampled_from(["path", "audio_base64", "audio", "sample_rate", "extra"]), _cell, max_size=4)


@settings(FUZZ, max_examples=200)
@given(rows=st.lists(_row, min_size=1, max_size=4))
def test_any_request_rows_give_one_result_per_row(model, rows):
    if not any(k in r for r in rows for k in ("path", "audio_base64", "audio")):
        rows = [*rows, {"audio": [0.1, -0.1] * 800, "sample_rate": 16000}]
    out = score_rows(model, rows)
    assert list(out.columns) == ["mos", "error", "warning"] and len(out) == len(rows)
    for i, (mos, error) in enumerate(zip(out["mos"], out["error"])):
        if error is None:
            assert math.isfinite(mos) and 1.0 <= mos <= 5.0
        else:
            assert mos is None and error.startswith(f"row {i}: ") and "\n" not in error
