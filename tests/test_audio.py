"""Audio loading: every way a file can be unusable ends in an AudioError naming it."""

import os
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from jsqa.audio import audio_info, load_audio, resample, write_audio
from jsqa.errors import AudioError
from jsqa.scoring.limits import ScoringLimits, load_scoring_audio, scoring_waveform


def test_stereo_48k_becomes_mono_16k_with_the_same_content(tmp_path):
    sr = 48000
    t = np.arange(sr) / sr
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    f = tmp_path / "stereo.wav"
    sf.write(f, np.stack([tone, tone], axis=1), sr, subtype="FLOAT")
    x, out_sr = load_audio(f, 16000)
    assert out_sr == 16000 and x.ndim == 1 and x.dtype == np.float32
    assert abs(len(x) - 16000) <= 1
    # a 440 Hz tone survives resampling: RMS preserved within 1%
    assert np.sqrt(np.mean(x[1000:-1000] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


def test_empty_corrupt_missing_and_nan_files_are_rejected_by_name(tmp_path):
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), 16000)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk")
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.array([0.1, np.nan, 0.2], dtype=np.float32), 16000, subtype="FLOAT")
    for f, why in [
        (empty, "empty"),
        (corrupt, "not readable"),
        (tmp_path / "missing.wav", "no such file"),
        (nan, "NaN"),
    ]:
        with pytest.raises(AudioError) as err:
            load_audio(f)
        assert str(f) in str(err.value) and why in str(err.value)


def test_write_audio_is_atomic_and_clips(tmp_path):
    f = tmp_path / "out.wav"
    write_audio(f, np.array([2.0, -2.0, 0.5], dtype=np.float32), 8000)
    x, sr = load_audio(f, None)
    assert sr == 8000 and x.max() <= 1.0 and x.min() >= -1.0
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]  # no temp file left behind
    assert audio_info(f)["frames"] == 3


# --- the scoring path's checks (shared by `jsqa predict` and the served model) ---------------


@pytest.mark.parametrize(
    ("samples", "rate", "why"),
    [
        (np.zeros(0, np.float32), 16000, "empty (0 samples)"),
        (np.full(1, 0.1, np.float32), 16000, "1 samples (0.06 ms) is too short"),
        (np.full(1600, 0.1, np.float32), 7999, "sample rate 7999 Hz is outside 8000..192000"),
        (np.full(1600, 0.1, np.float32), 16000.5, "whole number of Hz"),
        (np.full(1600, 0.1, np.float32), "16000", "sample rate must be a number"),
        (np.full(1600, 0.1, np.float32), True, "sample rate must be a number"),
        (np.ones(1600, np.int16), 16000, "must be floats, got dtype int16 (scale integer PCM"),
        (np.ones(1600, bool), 16000, "must be floats, got dtype bool"),
        (np.array(["0.1"] * 1600), 16000, "must be floats, got dtype <U3"),
        ([[0.1, 0.2], [0.3]], 16000, "not a rectangular array"),
        (np.zeros((1600, 65), np.float32), 16000, "65 channels (at most 64"),
        (np.zeros((4, 1600, 2), np.float32), 16000, "shaped (n,) or (n, channels)"),
        (np.r_[np.zeros(1599), np.inf], 16000, "NaN or infinite"),
        (np.r_[np.zeros(1599), 1e300], 16000, "NaN or infinite"),  # float64 beyond float32
        (np.r_[np.zeros(1599), 32767.0], 16000, "peak sample 3.28e+04 is beyond ±10"),
    ],
)
def test_hostile_samples_are_rejected_with_the_reason(samples, rate, why):
    with pytest.raises(AudioError) as err:
        scoring_waveform(samples, rate, "clip 7")
    msg = str(err.value)
    assert msg.startswith("clip 7: ") and why in msg and "\n" not in msg


def test_usable_samples_of_any_float_width_rate_and_channels_come_back_mono_16k():
    x = (0.5 * np.sin(np.arange(4410) / 10)).astype(np.float64)
    stereo = np.stack([x, x], axis=1)
    for samples, rate in [(x, 44100), (x.astype(np.float32), 44100), (stereo, 44100), (x.tolist(), 44100.0)]:
        y = scoring_waveform(samples, rate, "ok")
        assert y.dtype == np.float32 and y.ndim == 1 and abs(len(y) - 1600) <= 1
        assert np.allclose(y, scoring_waveform(x, 44100, "ok"), atol=1e-6)


def test_hours_long_input_is_refused_before_anything_is_allocated(tmp_path):
    # Three hours of samples that take no memory (a zero-stride view).
    hours = np.broadcast_to(np.float32(0.1), (3 * 3600 * 16000,))
    tracemalloc.start()
    try:
        with pytest.raises(AudioError, match=r"10800\.0 s long, over the 600 s limit"):
            scoring_waveform(hours, 16000, "long")
        # A file is judged by its header: 5 s of 48 kHz stereo against a 2 s limit is never decoded.
        f = tmp_path / "five_seconds.wav"
        sf.write(f, np.zeros((5 * 48000, 2), np.int16), 48000)
        tracemalloc.reset_peak()
        with pytest.raises(AudioError, match=r"five_seconds\.wav: 5\.0 s long, over the 2 s limit"):
            load_scoring_audio(f, limits=ScoringLimits(max_seconds=2.0))
        assert tracemalloc.get_traced_memory()[1] < 256 * 1024  # the file holds 960 kB of samples
    finally:
        tracemalloc.stop()


def test_co_prime_rate_resamples_in_bounded_memory():
    # 47999 and 16000 share no factor: an exact sinc kernel would need ~3 GB; the ratio is
    # approximated instead, with a length error under one sample and the tone intact.
    sr = 47999
    t = np.arange(sr) / sr
    x = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    tracemalloc.start()
    try:
        y = resample(x, sr, 16000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert abs(len(y) - 16000) <= 1 and peak < 16 * 2**20
    assert np.sqrt(np.mean(y[500:-500] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


def test_bytes_that_are_not_audio_or_are_cut_short_are_rejected(tmp_path):
    f = tmp_path / "ok.wav"
    sf.write(f, np.full(1600, 0.1, np.float32), 16000)
    raw = f.read_bytes()
    for blob, why in [
        (b"", "empty file (0 bytes)"),
        (b"%PDF-1.7 not audio", "not readable as audio"),
        (raw[:30], "not readable as audio"),
        (raw[:44], "empty (0 samples)"),
    ]:
        with pytest.raises(AudioError) as err:
            load_scoring_audio(blob, "upload")
        assert str(err.value).startswith("upload: ") and why in str(err.value)
    # Cut inside the samples: what is there is scored (and still passes every check).
    assert len(load_scoring_audio(raw[: 44 + 2 * 1000], "upload")) == 1000


def test_devices_and_pipes_are_not_read(tmp_path):
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    for path in (fifo, "/dev/zero"):
        with pytest.raises(AudioError, match="not a regular file"):
            load_scoring_audio(path)


@pytest.mark.parametrize("ext", ["wav", "flac"])
def test_looped_segments_read_alone_equal_the_whole_decode(tmp_path, ext) -> None:
    # Segment-by-segment reads (seek + read, wrapping past the end) must give exactly the
    # samples of a whole decode sliced with wrap-around, or rendered pairs would change.
    from jsqa.audio import LoopedSegments, load_audio
    from jsqa.pairs.render import loop_segment

    x = (0.3 * np.random.default_rng(2).standard_normal(16000 * 3)).clip(-1, 1).astype(np.float32)
    path = tmp_path / f"n.{ext}"
    sf.write(path, x, 16000, subtype="PCM_16")
    whole = load_audio(path, 16000)[0]
    with LoopedSegments(path, 16000) as reader:
        assert reader._file is not None  # really reading by segment
        for offset in (0, 1234, 16000 * 3 - 100, 16000 * 7 + 5):
            np.testing.assert_array_equal(reader.segment(offset, 8000), loop_segment(whole, offset, 8000))
        np.testing.assert_array_equal(reader.segment(500, 16000 * 3), loop_segment(whole, 500, 16000 * 3))
    # Expected to read most of the file: decoded whole, once, from the handle already open.
    with LoopedSegments(path, 16000, expected=16000 * 2) as reader:
        assert reader._file is None
        np.testing.assert_array_equal(reader.segment(1234, 8000), loop_segment(whole, 1234, 8000))


@pytest.mark.parametrize("expected", [0, 10**9])
def test_looped_segments_reject_float_noise_with_nan_by_name(tmp_path, expected) -> None:
    # Integer PCM skips the finite check (it cannot hold NaN); float files keep it, whether
    # read by segment or whole.
    from jsqa.audio import LoopedSegments

    x = np.full(16000, 0.1, dtype=np.float32)
    x[9000] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="nan.wav.*NaN"):
        with LoopedSegments(path, 16000, expected=expected) as reader:
            reader.segment(8000, 4000)
    with LoopedSegments(path, 16000) as reader:  # a segment clear of the NaN is fine
        assert reader.segment(0, 4000).shape == (4000,)
