"""Signal levels and mixing at a target SNR.

Levels are in dBov: dB relative to an RMS of 1.0 for a float signal in [-1, 1], so a
full-scale sine reads about -3.01 dBov.

SNR definition used throughout the project (pairs, tests, docs):

    SNR = active speech level of the speech (ITU-T P.56 method B style, dBov)
          - RMS level of the scaled noise over the same segment (dBov)

Measuring speech by its *active* level makes the SNR independent of how much silence an
utterance holds; measuring noise by plain RMS matches how stationary background noise is heard.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import maximum_filter1d
from scipy.signal import lfilter

from jsqa.errors import AudioError

# P.56 method B constants.
TIME_CONSTANT_S = 0.03
HANGOVER_S = 0.2
MARGIN_DB = 15.9
# Thresholds are searched from the envelope's peak down over this span, in these steps. Tying
# them to the peak (not to full scale) makes the level exactly scale-equivariant.
THRESHOLD_SPAN_DB = 100.0
THRESHOLD_STEP_DB = 0.25
# An envelope that never rises above this is treated as silence (below 16-bit resolution).
SILENCE_FLOOR_DBOV = -100.0


def rms_db(x: np.ndarray) -> float:
    """RMS level of ``x`` in dBov; ``-inf`` for an all-zero signal."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        raise AudioError("rms_db: signal is empty (0 samples)")
    ms = float(np.mean(x * x))
    return 10.0 * math.log10(ms) if ms > 0.0 else -math.inf


def _envelope(x: np.ndarray, sr: int) -> np.ndarray:
    """Two cascaded one-pole smoothers of |x| (P.56 method B envelope)."""
    g = math.exp(-1.0 / (sr * TIME_CONSTANT_S))
    b, a = [1.0 - g], [1.0, -g]
    return lfilter(b, a, lfilter(b, a, np.abs(x)))


def _trailing_max(q: np.ndarray, width: int) -> np.ndarray:
    """max(q[n - width + 1 .. n]) for every n: a sample stays active for the hangover."""
    return maximum_filter1d(q, size=width, origin=(width - 1) // 2, mode="constant", cval=0.0)


def active_speech_level(x: np.ndarray, sr: int) -> float:
    """Active speech level of ``x`` in dBov (ITU-T P.56 method B style).

    The envelope (two 0.03 s one-pole smoothers of |x|) is compared with a ladder of
    thresholds 0.25 dB apart; a sample is active while the envelope exceeded the threshold
    within the last 0.2 s (hangover). For each threshold the level of the active samples is
    computed; the answer is that level where it lies ``MARGIN_DB`` (15.9 dB) above its
    threshold, interpolated linearly between neighbouring thresholds.

    Raises AudioError for an empty, non-finite or silent signal.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise AudioError(f"active_speech_level: expected a non-empty 1-D signal, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise AudioError("active_speech_level: signal contains NaN or infinite samples")
    if sr <= 0:
        raise AudioError(f"active_speech_level: sample rate must be positive, got {sr}")

    q = _envelope(x, sr)
    peak = float(q.max())
    if peak <= 10.0 ** (SILENCE_FLOOR_DBOV / 20.0):
        raise AudioError("active_speech_level: no active speech (signal is silent)")

    hang = _trailing_max(q, int(round(HANGOVER_S * sr)) + 1)
    energy = float(np.sum(x * x))

    # Thresholds from low to high; the activity count for every threshold at once comes from
    # a sorted copy of the hangover envelope.
    n_steps = int(round(THRESHOLD_SPAN_DB / THRESHOLD_STEP_DB))
    c_db = 20.0 * math.log10(peak) - THRESHOLD_STEP_DB * np.arange(n_steps, -1, -1)
    c_lin = 10.0 ** (c_db / 20.0)
    c_lin[-1] = peak  # exact, so the top threshold always has at least one active sample
    hang_sorted = np.sort(hang)
    active = hang.size - np.searchsorted(hang_sorted, c_lin, side="left")
    # active >= 1 everywhere: hang >= q and max(q) == peak >= every threshold.
    level_db = 10.0 * np.log10(energy / active)
    excess = level_db - c_db  # falls as the threshold rises

    below = np.flatnonzero(excess <= MARGIN_DB)
    if below.size == 0:
        # Even at the peak the active level stays more than the margin above the threshold
        # (a very impulsive signal): the top threshold's level is the best estimate.
        return float(level_db[-1])
    j = int(below[0])
    if j == 0:
        return float(level_db[0])
    # Linear interpolation of the crossing between thresholds j-1 (above margin) and j.
    e0, e1 = excess[j - 1], excess[j]
    t = (e0 - MARGIN_DB) / (e0 - e1)
    return float(level_db[j - 1] + t * (level_db[j] - level_db[j - 1]))


def gain_for_level(x: np.ndarray, sr: int, target_dbov: float) -> float:
    """Linear gain that brings the active speech level of ``x`` to ``target_dbov``."""
    return 10.0 ** ((target_dbov - active_speech_level(x, sr)) / 20.0)


def _speech_level(speech: np.ndarray, sr: int, speech_level_db: float | None) -> float:
    return active_speech_level(speech, sr) if speech_level_db is None else float(speech_level_db)


def mix_at_snr(
    speech: np.ndarray,
    noise: np.ndarray,
    snr_db: float,
    sr: int,
    speech_level_db: float | None = None,
) -> tuple[np.ndarray, float]:
    """Add ``noise`` to ``speech`` scaled so that the SNR (module docstring) is ``snr_db``.

    ``speech_level_db`` overrides the measured active level, e.g. when ``speech`` is a crop
    of an utterance whose level was set on the whole utterance. ``snr_db = +inf`` returns
    the speech unchanged with noise gain 0. Returns (float32 mixture, linear noise gain).
    Raises AudioError for mismatched lengths or a noise segment of zero energy.
    """
    speech = np.asarray(speech)
    noise = np.asarray(noise)
    if speech.shape != noise.shape:
        raise AudioError(f"mix_at_snr: speech {speech.shape} and noise {noise.shape} differ in shape")
    if math.isnan(snr_db) or snr_db == -math.inf:
        raise AudioError(f"mix_at_snr: SNR must be finite or +inf, got {snr_db}")
    if snr_db == math.inf:
        return speech.astype(np.float32, copy=True), 0.0
    noise_db = rms_db(noise)
    if noise_db == -math.inf:
        raise AudioError("mix_at_snr: noise segment has zero energy")
    level = _speech_level(speech, sr, speech_level_db)
    gain = 10.0 ** ((level - snr_db - noise_db) / 20.0)
    mix = speech.astype(np.float64) + gain * noise.astype(np.float64)
    return mix.astype(np.float32), gain


def measure_snr(
    speech: np.ndarray, scaled_noise: np.ndarray, sr: int, speech_level_db: float | None = None
) -> float:
    """SNR in dB of ``speech`` against the already scaled ``scaled_noise`` (+inf when it is 0)."""
    noise_db = rms_db(scaled_noise)
    if noise_db == -math.inf:
        return math.inf
    return _speech_level(speech, sr, speech_level_db) - noise_db
