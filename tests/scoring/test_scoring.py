"""Scoring files of any length, rate and channel count: long files in bounded chunks of windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.signal import resample_poly

from jsqa.audio import load_audio, write_audio
from jsqa.models.mos import MOSModel, encoder_spec
from jsqa.scoring.predict import score_files
from jsqa.scoring.windows import CHUNK_WINDOWS, HOP_S, WINDOW_S, score_waveform, windowed_mean, windows

SR = 16000


def _tone(seconds: float, seed: int = 0) -> np.ndarray:
    """Speech-band partials under a syllable-rate envelope, all below 4 kHz (survive 8 kHz)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = sum(0.1 * np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in (220, 440, 900, 1800, 3000))
    return (x * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


@pytest.fixture(scope="module")
def model() -> MOSModel:
    """A small untrained model made input-sensitive: BatchNorm statistics measured on varied
    audio and a steeper head, so different signals get clearly different scores."""
    torch.manual_seed(0)
    m = MOSModel(encoder_spec("small"))
    rng = np.random.default_rng(1)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm1d):
            mod.momentum = None  # cumulative average over the calibration batches
            mod.reset_running_stats()
    base = _tone(3.0)
    m.train()
    with torch.no_grad():
        m.head.net[-1].weight.mul_(20)
        for _ in range(4):
            batch = [
                base * rng.uniform(0.1, 1) + rng.standard_normal(len(base)).astype(np.float32) * rng.uniform(0, 0.3)
                for _ in range(8)
            ]
            m(torch.from_numpy(np.stack(batch)))
    return m.eval()


@pytest.mark.integration
def test_a_five_minute_file_scores_as_the_mean_of_its_window_scores(model, tmp_path):
    rng = np.random.default_rng(2)
    x = np.concatenate([_tone(60.0, s) * rng.uniform(0.2, 1.0) for s in range(5)])
    x = x + rng.standard_normal(len(x)).astype(np.float32) * 0.05
    write_audio(tmp_path / "long.wav", x, SR)
    [row] = score_files(model, [tmp_path / "long.wav"])
    assert row["error"] is None and np.isfinite(row["mos"]) and 1.0 <= row["mos"] <= 5.0
    y, _ = load_audio(tmp_path / "long.wav", SR)
    spans = windows(len(y), int(WINDOW_S * SR), int(HOP_S * SR))
    assert len(spans) == 38 and spans[-1] == (296 * SR, 300 * SR)  # 37 windows of 8 s and a 4 s tail
    with torch.inference_mode():
        per_window = [model(torch.from_numpy(y[a:b])[None]).item() for a, b in spans]
    weights = [b - a for a, b in spans]
    assert row["mos"] == pytest.approx(np.average(per_window, weights=weights), abs=1e-5)
    assert np.ptp(per_window) > 0.05  # the windows differ, so the mean is a real average


def test_windows_go_through_in_chunks_of_bounded_size_with_the_same_result(model):
    x = _tone(100.0)
    sizes: list[int] = []

    def recording(batch: torch.Tensor) -> torch.Tensor:
        sizes.append(batch.shape[0])
        return model(batch)

    chunked = windowed_mean(recording, x, SR, chunk=CHUNK_WINDOWS)
    assert max(sizes) <= CHUNK_WINDOWS and sum(sizes) == len(windows(len(x), 8 * SR, 8 * SR)) == 13
    whole = windowed_mean(model, x, SR, chunk=1000)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-6)


def test_an_8khz_stereo_file_scores_as_its_16khz_mono_version(model, tmp_path):
    x = _tone(3.0)
    write_audio(tmp_path / "mono16k.wav", x, SR)
    half = resample_poly(x, 1, 2).astype(np.float32)
    # channel gains that average to the mono signal
    write_audio(tmp_path / "stereo8k.wav", np.stack([half * 0.8, half * 1.2], axis=1), 8000)
    noise = np.random.default_rng(3).standard_normal(len(x)).astype(np.float32) * 0.1
    write_audio(tmp_path / "noise.wav", noise, SR)
    mono, stereo, other = (
        r["mos"]
        for r in score_files(model, [tmp_path / "mono16k.wav", tmp_path / "stereo8k.wav", tmp_path / "noise.wav"])
    )
    assert stereo == pytest.approx(mono, abs=0.02)
    assert abs(other - mono) > 0.1  # the tolerance is tight against what the model tells apart


def test_a_clip_shorter_than_a_window_is_one_pass(model):
    x = _tone(2.5)
    with torch.inference_mode():
        direct = model(torch.from_numpy(x)[None]).item()
    assert score_waveform(model, x) == pytest.approx(direct, abs=1e-6)


def test_files_are_resampled_to_the_rate_the_checkpoint_records(model, tmp_path):
    # The same weights declared an 8 kHz model: a 16 kHz file is scored at 8 kHz.
    m8 = MOSModel(encoder_spec("small"), sample_rate=8000)
    m8.load_state_dict(model.state_dict())
    m8.eval()
    write_audio(tmp_path / "a.wav", _tone(2.0, 4), SR)
    [row] = score_files(m8, [tmp_path / "a.wav"])
    x8, _ = load_audio(tmp_path / "a.wav", 8000)
    assert row["mos"] == pytest.approx(score_waveform(m8, x8, 8000), abs=1e-6)
    assert row["mos"] != pytest.approx(score_files(model, [tmp_path / "a.wav"])[0]["mos"], abs=1e-4)


@pytest.mark.integration
def test_streamed_scoring_of_a_48k_file_matches_whole_file_scoring(model, tmp_path):
    rng = np.random.default_rng(5)
    t = np.arange(48000 * 45) / 48000
    x = (
        0.2 * np.sin(2 * np.pi * 300 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t)) + 0.03 * rng.standard_normal(t.size)
    ).astype(np.float32)
    write_audio(tmp_path / "a48k.wav", x, 48000, subtype="FLOAT")
    [row] = score_files(model, [tmp_path / "a48k.wav"])
    whole, _ = load_audio(tmp_path / "a48k.wav", SR)  # decoded whole, then resampled
    assert row["error"] is None and row["warning"] is None
    assert abs(row["mos"] - score_waveform(model, whole, SR)) < 1e-3
