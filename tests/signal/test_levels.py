"""Active speech level, RMS level and SNR mixing (jsqa.signal.levels)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from jsqa.errors import AudioError
from jsqa.signal import levels
from jsqa.signal.levels import (
    active_speech_level,
    active_speech_levels,
    gain_for_level,
    measure_snr,
    mix_at_snr,
    rms_db,
)

SR = 16000


def sine(seconds: float, amp: float, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return amp * np.sin(2 * np.pi * freq * t)


def speech_like(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Harmonic tone with a syllable-rate envelope and pauses between 'words'."""
    t = np.arange(int(seconds * SR)) / SR
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    tone = sum(np.sin(h * phase) / h for h in range(1, 8))
    syllables = 0.5 * (1 - np.cos(2 * np.pi * 4 * t))
    words = ((t % 0.8) < 0.55).astype(float)
    return 0.2 * tone * syllables * words + 1e-4 * rng.standard_normal(t.size)


def test_full_scale_sine_reads_minus_3_dbov() -> None:
    assert active_speech_level(sine(2.0, 1.0), SR) == pytest.approx(-3.01, abs=0.1)


def test_silence_is_gated_out() -> None:
    # 2 s on / 2 s off: the level is that of the tone while it sounds, not of the whole file.
    on = sine(2.0, 0.3)
    x = np.concatenate([on, np.zeros_like(on)] * 3)
    active_part = 20 * math.log10(0.3 / math.sqrt(2))
    assert active_speech_level(x, SR) == pytest.approx(active_part, abs=1.0)
    # The plain RMS would be 3 dB lower: the gating matters.
    assert rms_db(x) == pytest.approx(active_part - 3.01, abs=0.05)


def test_doubling_adds_exactly_6_02_db() -> None:
    x = speech_like(3.0, np.random.default_rng(0))
    diff = active_speech_level(2 * x, SR) - active_speech_level(x, SR)
    assert diff == pytest.approx(20 * math.log10(2), abs=1e-9)


def test_level_is_independent_of_pause_length() -> None:
    rng = np.random.default_rng(1)
    x = speech_like(3.0, rng)
    padded = np.concatenate([np.zeros(SR * 3), x, np.zeros(SR * 3)])
    assert active_speech_level(padded, SR) == pytest.approx(active_speech_level(x, SR), abs=0.5)


@pytest.mark.parametrize("x", [np.zeros(SR), np.zeros(0)], ids=["zeros", "empty"])
def test_silent_or_empty_signal_raises(x: np.ndarray) -> None:
    with pytest.raises(AudioError, match="active_speech_level"):
        active_speech_level(x, SR)


def test_non_finite_signal_raises() -> None:
    x = sine(0.5, 0.1)
    x[10] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        active_speech_level(x, SR)


def test_rms_db_of_known_signals() -> None:
    assert rms_db(np.full(100, 0.1)) == pytest.approx(-20.0, abs=1e-9)
    assert rms_db(np.full(100, 0.1, dtype=np.float32)) == pytest.approx(-20.0, abs=1e-5)
    assert rms_db(np.zeros(100)) == -math.inf
    # float32 energy overflows: the float64 fallback still gives the right level, silently
    assert rms_db(np.full(16000, 1e20, dtype=np.float32)) == pytest.approx(400.0, abs=1e-4)


def test_noise_gain_is_zero_at_infinite_snr_and_elementwise() -> None:
    snr = np.array([[0.0, math.inf], [20.0, 6.0]])
    gain = levels.noise_gain(-26.0, snr, -20.0)
    assert gain.shape == (2, 2) and gain[0, 1] == 0.0
    # 0 dB SNR: the noise is scaled to the speech level; 20 dB: a tenth of that amplitude
    assert gain[0, 0] == pytest.approx(10 ** (-6.0 / 20), rel=1e-12)
    assert gain[1, 0] == pytest.approx(gain[0, 0] / 10, rel=1e-12)
    assert levels.noise_gain(-26.0, math.inf, -20.0) == 0.0
    assert levels.noise_gain(-26.0, 6.0, -20.0) == pytest.approx(gain[1, 1], rel=1e-15)


def test_gain_for_level_reaches_target() -> None:
    x = speech_like(2.0, np.random.default_rng(2))
    g = gain_for_level(x, SR, -26.0)
    assert active_speech_level(g * x, SR) == pytest.approx(-26.0, abs=1e-6)


def test_mix_hits_target_snr_for_many_snrs() -> None:
    rng = np.random.default_rng(3)
    speech = speech_like(1.5, rng)
    white = rng.standard_normal(speech.size)
    hum = np.sin(2 * np.pi * 50 * np.arange(speech.size) / SR) + 0.1 * rng.standard_normal(speech.size)
    for noise in (white, hum):
        for snr in rng.uniform(-10, 50, 25):
            mix, gain = mix_at_snr(speech, noise, float(snr), SR)
            assert mix.dtype == np.float32 and mix.shape == speech.shape
            scaled = mix.astype(np.float64) - speech
            assert measure_snr(speech, scaled, SR) == pytest.approx(snr, abs=0.1)
            assert gain == pytest.approx(np.std(scaled) / np.std(noise), rel=1e-3)


def test_mix_uses_given_speech_level() -> None:
    # A crop of an utterance is mixed against the utterance's level, not the crop's own.
    rng = np.random.default_rng(4)
    speech, noise = speech_like(1.0, rng), rng.standard_normal(SR)
    mix, gain = mix_at_snr(speech, noise, 10.0, SR, speech_level_db=-30.0)
    assert rms_db(mix.astype(np.float64) - speech) == pytest.approx(-40.0, abs=0.01)
    assert measure_snr(speech, gain * noise, SR, speech_level_db=-30.0) == pytest.approx(10.0, abs=1e-9)


def test_infinite_snr_is_clean() -> None:
    rng = np.random.default_rng(5)
    speech = speech_like(1.0, rng).astype(np.float32)
    mix, gain = mix_at_snr(speech, rng.standard_normal(speech.size), math.inf, SR)
    assert gain == 0.0
    assert np.array_equal(mix, speech)
    assert measure_snr(speech, np.zeros(speech.size), SR) == math.inf


def test_zero_noise_and_bad_shapes_raise() -> None:
    speech = sine(1.0, 0.1)
    with pytest.raises(AudioError, match="zero energy"):
        mix_at_snr(speech, np.zeros_like(speech), 10.0, SR)
    with pytest.raises(AudioError, match="differ in shape"):
        mix_at_snr(speech, np.ones(10), 10.0, SR)


def test_block_decisions_stay_within_0_01_db_of_per_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    # Activity is decided per BLOCK_S block for speed; the level it gives must stay where a
    # per-sample decision puts it, far below anything an SNR of 0.1 dB tolerance would see.
    rng = np.random.default_rng(11)
    signals = [speech_like(s, rng).astype(np.float32) for s in (1.3, 2.0, 3.7)]
    blocked = active_speech_levels(signals, SR)
    monkeypatch.setattr(levels, "BLOCK_S", 1.0 / SR)
    per_sample = active_speech_levels(signals, SR)
    assert np.max(np.abs(np.subtract(blocked, per_sample))) < 0.01
    assert np.max(np.abs(np.subtract(blocked, per_sample))) > 0  # the blocks are in effect


def test_db_to_gain_and_back() -> None:
    db = np.array([-120.0, -26.0, -3.0, 0.0, 6.0, 20.0])
    np.testing.assert_allclose(levels.gain_to_db(levels.db_to_gain(db)), db, atol=1e-12)
    assert levels.db_to_gain(20.0) == pytest.approx(10.0)
    assert levels.db_to_gain(-6.0) == pytest.approx(0.501187, rel=1e-6)
    # Exactly the expression pairs were rendered with (their hashes depend on its rounding).
    assert levels.db_to_gain(-26.0 - 3.3) == 10.0 ** ((-26.0 - 3.3) / 20.0)
    assert levels.gain_to_db(0.0) == -math.inf
