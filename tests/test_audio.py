"""Audio loading: every way a file can be unusable ends in an AudioError naming it."""

import numpy as np
import pytest
import soundfile as sf

from jsqa.audio import audio_info, load_audio, write_audio
from jsqa.errors import AudioError


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
    for f, why in [(empty, "empty"), (corrupt, "not readable"), (tmp_path / "missing.wav", "no such file"), (nan, "NaN")]:
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
