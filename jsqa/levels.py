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

import functools
import math

import numpy as np

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
# Activity is decided once per block of this length (the envelope's value at the block's end is
# exact): the envelope moves by ~3% per ms, and per-sample decisions cost 10x more.
BLOCK_S = 0.001
# Block recursions run over chunks of this many time constants, so the weights g**-k inside a
# chunk stay below e**500 (float64 overflows at e**709). The inputs are non-negative, so the
# cumulative sums have no cancellation and keep full precision whatever the weights' range.
CHUNK_TIME_CONSTANTS = 500.0


def rms_db(x: np.ndarray) -> float:
    """RMS level of ``x`` in dBov; ``-inf`` for an all-zero signal."""
    x = np.asarray(x)
    if x.size == 0:
        raise AudioError("rms_db: signal is empty (0 samples)")
    ms = float(np.add.reduce(np.square(x, dtype=np.float64), axis=None)) / x.size
    return 10.0 * math.log10(ms) if ms > 0.0 else -math.inf


def _recursive(u: np.ndarray, g: float) -> np.ndarray:
    """``y[n] = g * y[n-1] + u[n]`` from rest, for non-negative float64 ``u`` and 0 < g < 1.

    Pure numpy, no per-sample Python loop (and no scipy: pair workers must start light):
    inside a chunk ``y[n] = g**n * (g * y[-1] + cumsum(u * g**-k)[n])``, and the chunks are
    chained through their last values (one chunk for any utterance-length input).
    """
    n = u.size
    log_g = math.log(g)
    length = max(1, min(n, int(CHUNK_TIME_CONSTANTS / -log_g)))
    k = np.arange(length, dtype=np.float64)
    up = np.exp(-log_g * k)
    down = 1.0 / up
    out = np.empty(n)
    carry = 0.0
    for start in range(0, n, length):
        m = min(length, n - start)
        y = np.cumsum(u[start : start + m] * up[:m])
        if carry:
            y += g * carry
        y *= down[:m]
        out[start : start + m] = y
        carry = float(y[-1])
    return out


@functools.lru_cache(maxsize=8)
def _block_weights(sr: int, block: int) -> tuple[float, float, float, np.ndarray, np.ndarray]:
    """(g, 1 - g, g**block, weights of the first smoother, of the second) for one block."""
    g = math.exp(-1.0 / (sr * TIME_CONSTANT_S))
    beta = 1.0 - g
    j = np.arange(block, dtype=np.float64)
    w1 = (beta * g ** (block - 1 - j)).astype(np.float32)
    w2 = (beta * beta * (block - j) * g ** (block - 1 - j)).astype(np.float32)
    return g, beta, g**block, w1, w2


def _block_envelope(x: np.ndarray, sr: int, block: int) -> np.ndarray:
    """The P.56 envelope (two cascaded one-pole smoothers of |x|) at the last sample of every
    ``block`` samples; exact, from two weighted sums per block and a block-rate recursion.

    With ``b = 1 - g`` and ``a_j`` the block's |x|, one block advances the smoothers' state by
    ``q1 <- g**D q1 + b * sum g**(D-1-j) a_j`` and
    ``q2 <- g**D q2 + b D g**D q1_prev + b**2 * sum (D-j) g**(D-1-j) a_j``.
    The input is zero-padded to whole blocks.
    """
    g, beta, g_block, w1, w2 = _block_weights(sr, block)
    m = -(-x.size // block)
    a = np.zeros(m * block, dtype=np.float32)
    np.abs(x, out=a[: x.size], casting="unsafe")
    a = a.reshape(m, block)
    q1 = _recursive(np.einsum("bd,d->b", a, w1).astype(np.float64), g_block)
    drive = np.einsum("bd,d->b", a, w2).astype(np.float64)
    drive[1:] += beta * block * g_block * q1[:-1]
    return _recursive(drive, g_block)


def _trailing_max(q: np.ndarray, width: int) -> np.ndarray:
    """max(q[n - width + 1 .. n]) for every n (zeros before the start): activity lasts for the
    hangover. Van Herk / Gil-Werman: block prefix and suffix maxima, O(n)."""
    n = q.size
    if width <= 1:
        return q.copy()
    m = -(-(n + width - 1) // width)
    padded = np.zeros(m * width)
    padded[width - 1 : width - 1 + n] = q
    blocks = padded.reshape(m, width)
    prefix = np.maximum.accumulate(blocks, axis=1).reshape(-1)
    suffix = np.maximum.accumulate(blocks[:, ::-1], axis=1)[:, ::-1].reshape(-1)
    # The window [i, i + width - 1] of the padded signal spans at most two blocks.
    return np.maximum(suffix[:n], prefix[width - 1 : width - 1 + n])


def active_speech_level(x: np.ndarray, sr: int) -> float:
    """Active speech level of ``x`` in dBov (ITU-T P.56 method B style).

    The envelope (two 0.03 s one-pole smoothers of |x|) is compared with a ladder of
    thresholds 0.25 dB apart; a stretch is active while the envelope exceeded the threshold
    within the last 0.2 s (hangover). For each threshold the level of the active samples is
    computed; the answer is that level where it lies ``MARGIN_DB`` (15.9 dB) above its
    threshold, interpolated linearly between neighbouring thresholds. Activity is decided
    per 1 ms block from the exact envelope at the block's end (``BLOCK_S``); the level is
    exactly scale-equivariant.

    Raises AudioError for an empty, non-finite or silent signal.
    """
    x = np.asarray(x)
    if x.ndim != 1 or x.size == 0:
        raise AudioError(f"active_speech_level: expected a non-empty 1-D signal, got shape {x.shape}")
    if sr <= 0:
        raise AudioError(f"active_speech_level: sample rate must be positive, got {sr}")
    # Not np.dot / einsum on float64: those go to a multithreaded BLAS, whose spinning
    # threads cost pair workers more CPU than the sum itself.
    energy = float(np.add.reduce(np.square(x, dtype=np.float64)))
    # A NaN or inf sample makes the energy non-finite: one check instead of a pass of isfinite.
    if not math.isfinite(energy):
        raise AudioError("active_speech_level: signal contains NaN or infinite samples")

    block = max(1, int(round(BLOCK_S * sr)))
    q = _block_envelope(x, sr, block)
    peak = float(q.max())
    if peak <= 10.0 ** (SILENCE_FLOOR_DBOV / 20.0):
        raise AudioError("active_speech_level: no active speech (signal is silent)")
    hang = _trailing_max(q, int(round(HANGOVER_S * sr / block)) + 1)

    # Thresholds from low to high; the activity count for every threshold at once comes from
    # a sorted copy of the hangover envelope (one value per block).
    n_steps = int(round(THRESHOLD_SPAN_DB / THRESHOLD_STEP_DB))
    c_db = 20.0 * math.log10(peak) - THRESHOLD_STEP_DB * np.arange(n_steps, -1, -1)
    c_lin = 10.0 ** (c_db / 20.0)
    c_lin[-1] = peak  # exact, so the top threshold always has at least one active block
    hang_sorted = np.sort(hang)
    active_blocks = hang.size - np.searchsorted(hang_sorted, c_lin, side="left")
    # Blocks count as whole blocks, but the zero-padded last one only for its real samples.
    active = active_blocks * block - np.where(hang[-1] >= c_lin, hang.size * block - x.size, 0)
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


def noise_gain(
    speech_level_db: float, snr_db: float | np.ndarray, noise_db: float
) -> float | np.ndarray:
    """Linear gain on a noise of RMS level ``noise_db`` that puts it ``snr_db`` below speech of
    active level ``speech_level_db`` (the SNR of the module docstring); 0 where ``snr_db`` is
    +inf. Elementwise on arrays."""
    snr = np.asarray(snr_db, dtype=np.float64)
    gain = np.zeros(snr.shape)
    finite = ~np.isposinf(snr)
    gain[finite] = 10.0 ** ((speech_level_db - snr[finite] - noise_db) / 20.0)
    return float(gain) if gain.ndim == 0 else gain


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
    gain = float(noise_gain(_speech_level(speech, sr, speech_level_db), snr_db, noise_db))
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
