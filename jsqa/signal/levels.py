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
from collections.abc import Sequence
from typing import overload

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
# exact): per-sample decisions cost 15x more. On speech-like test signals the level is within
# 0.006 dB of per-sample decisions at 2 ms (0.003 dB at 1 ms, 0.014 dB at 4 ms), and 2 ms
# blocks take 40% less time than 1 ms ones.
BLOCK_S = 0.002
# Block recursions run over chunks of this many time constants, so the weights g**-k inside a
# chunk stay below e**500 (float64 overflows at e**709). The inputs are non-negative, so the
# cumulative sums have no cancellation and keep full precision whatever the weights' range.
CHUNK_TIME_CONSTANTS = 500.0


@overload
def db_to_gain(db: float) -> float: ...
@overload
def db_to_gain(db: np.ndarray) -> np.ndarray: ...
def db_to_gain(db: float | np.ndarray) -> float | np.ndarray:
    """Linear amplitude gain of ``db`` decibels (``10 ** (db / 20)``), elementwise on arrays.

    The one place a dB value becomes a gain: pair rendering depends on its exact rounding, so
    it is computed as the plain expression, in the input's own type.
    """
    return 10.0 ** (db / 20.0)


@overload
def gain_to_db(gain: float) -> float: ...
@overload
def gain_to_db(gain: np.ndarray) -> np.ndarray: ...
def gain_to_db(gain: float | np.ndarray) -> float | np.ndarray:
    """Decibels of a linear amplitude gain (``20 * log10(gain)``; -inf for 0)."""
    with np.errstate(divide="ignore"):
        return 20.0 * np.log10(gain)


def rms_db(x: np.ndarray) -> float:
    """RMS level of ``x`` in dBov; ``-inf`` for an all-zero signal."""
    x = np.asarray(x).ravel()
    if x.size == 0:
        raise AudioError("rms_db: signal is empty (0 samples)")
    # Scalar math: this runs once per mixed segment, where numpy's per-call costs dominate.
    with np.errstate(over="ignore", invalid="ignore"):
        energy = _energy(x, x)
    if not math.isfinite(energy):  # NaN or inf samples: no level
        return math.nan
    return -math.inf if energy == 0.0 else 10.0 * math.log10(energy / x.size)


# Signals are measured in batches of similar length, padded to the longest: at most this many
# padded samples per batch, so memory stays bounded.
BATCH_SAMPLES = 1 << 21


def _recursive(u: np.ndarray, g: float) -> np.ndarray:
    """``y[:, n] = g * y[:, n-1] + u[:, n]`` from rest along each row of non-negative float64
    ``u``, 0 < g < 1, computed in place over ``u`` (returned): no temporaries to allocate.

    Pure numpy, no per-sample Python loop (and no scipy: pair workers must start light):
    inside a chunk ``y[n] = g**n * (g * y[-1] + cumsum(u * g**-k)[n])``, and the chunks are
    chained through their last values. Chunks start at fixed columns, so a row's result does
    not depend on the other rows or on how far it is padded.
    """
    n = u.shape[1]
    log_g = math.log(g)
    length = max(1, int(CHUNK_TIME_CONSTANTS / -log_g))
    up, down = _chunk_weights(g, min(length, n))
    for start in range(0, n, length):
        m = min(length, n - start)
        y = u[:, start : start + m]
        y *= up[:m]
        np.cumsum(y, axis=1, out=y)
        if start:
            y += g * u[:, start - 1 : start]
        y *= down[:m]
    return u


@functools.lru_cache(maxsize=16)
def _chunk_weights(g: float, length: int) -> tuple[np.ndarray, np.ndarray]:
    """(g**-k, g**k) for k < length."""
    up = np.exp(-math.log(g) * np.arange(length, dtype=np.float64))
    return up, 1.0 / up


@functools.lru_cache(maxsize=8)
def _block_weights(sr: int, block: int) -> tuple[float, float, float, np.ndarray]:
    """(g, 1 - g, g**block, weights ``[block, 2]`` of the first smoother and of the second)."""
    g = math.exp(-1.0 / (sr * TIME_CONSTANT_S))
    beta = 1.0 - g
    j = np.arange(block, dtype=np.float64)
    w1 = beta * g ** (block - 1 - j)
    w2 = beta * beta * (block - j) * g ** (block - 1 - j)
    return g, beta, g**block, np.stack([w1, w2], axis=1).astype(np.float32)


def _block_envelope(a: np.ndarray, sr: int) -> np.ndarray:
    """The P.56 envelope (two cascaded one-pole smoothers of |x|) at the last sample of every
    block, for ``a`` = |x| as float32 ``[signals, blocks, block]``; exact, from two weighted
    sums per block and a block-rate recursion.

    With ``b = 1 - g`` and ``a_j`` the block's |x|, one block advances the smoothers' state by
    ``q1 <- g**D q1 + b * sum g**(D-1-j) a_j`` and
    ``q2 <- g**D q2 + b D g**D q1_prev + b**2 * sum (D-j) g**(D-1-j) a_j``.
    """
    block = a.shape[2]
    _g, beta, g_block, w = _block_weights(sr, block)
    # Both weighted sums in one pass over the samples (a [.., block] x [block, 2] product).
    sums = np.matmul(a, w)
    q1 = _recursive(sums[..., 0].astype(np.float64), g_block)
    drive = sums[..., 1].astype(np.float64)
    drive[:, 1:] += beta * block * g_block * q1[:, :-1]
    return _recursive(drive, g_block)


def _trailing_max(q: np.ndarray, width: int) -> np.ndarray:
    """max(q[:, n - width + 1 .. n]) for every n (the window cut at the start), per row of
    ``q`` >= 0: activity lasts for the hangover.

    Windows double in length pass by pass (one of 2s is two of s side by side) and the last
    pass joins two overlapping windows of the largest power of two: about log2(width) passes.
    Rows are laid end to end after ``width - 1`` zeros each and every pass is one shifted
    1-D maximum (3x faster than row-wise slices): a window that starts in the zeros never
    reaches the row before, so the rows stay independent.
    """
    rows, n = q.shape
    lead = max(width - 1, 0)
    padded = np.zeros((rows, lead + n), dtype=q.dtype)
    padded[:, lead:] = q
    out, spare = padded.reshape(-1), np.empty(padded.size, dtype=q.dtype)
    span = 1
    while 2 * span <= width:
        spare[:span] = out[:span]
        np.maximum(out[span:], out[:-span], out=spare[span:])
        out, spare, span = spare, out, 2 * span
    rest = width - span
    if rest > 0:
        # [n - width + 1, n - rest] and [n - span + 1, n] overlap (rest <= span) and cover the window.
        spare[:rest] = out[:rest]
        np.maximum(out[rest:], out[:-rest], out=spare[rest:])
        out = spare
    return out.reshape(rows, lead + n)[:, lead:]


def _energy(x: np.ndarray, a: np.ndarray) -> float:
    """Sum of squares of ``x``, given ``a``: ``x`` itself or its absolute values as float32
    (inf if any sample is not finite). Float32 audio sums ``a`` in float32 (a BLAS dot, 7x
    cheaper than squaring into float64; within 2e-6 relative, 1e-5 dB, on speech); float64
    where that overflows or the input is not float32. Call under
    ``np.errstate(over="ignore", invalid="ignore")``."""
    energy = float(np.dot(a, a)) if x.dtype == np.float32 else math.inf
    if not math.isfinite(energy):
        energy = float(np.add.reduce(np.square(x, dtype=np.float64)))
    return energy if math.isfinite(energy) else math.inf


def _levels_of_batch(signals: list[np.ndarray], sr: int) -> list[float | str]:
    """Active levels (or why not: the AudioError message) of non-empty 1-D signals."""
    block = max(1, int(round(BLOCK_S * sr)))
    sizes = np.array([x.size for x in signals])
    n_blocks = -(-sizes // block)
    width = int(n_blocks.max())
    a = np.empty((len(signals), width * block), dtype=np.float32)
    energies = np.empty(len(signals))
    with np.errstate(over="ignore", invalid="ignore"):  # once, not per signal
        for r, x in enumerate(signals):
            # (casting only when needed: it takes numpy off its fast same-type loop)
            if x.dtype == np.float32:
                np.abs(x, out=a[r, : x.size])
            else:
                np.abs(x, out=a[r, : x.size], casting="unsafe")
            a[r, x.size :] = 0.0
            energies[r] = _energy(x, a[r, : x.size])
    # A NaN or inf sample makes the energy infinite. Such a row's envelope is garbage but its
    # own: every step below works row by row.
    finite = np.isfinite(energies)
    with np.errstate(over="ignore", invalid="ignore"):
        q = _block_envelope(a.reshape(len(signals), width, block), sr)
    valid = np.arange(width)[None, :] < n_blocks[:, None]
    # Past a signal's end its row is padding: out of every count (below all thresholds).
    q[~valid] = -1.0
    peak = q.max(axis=1)
    # Activity is decided in float32 (sorting and searching half the bytes): the count at a
    # threshold changes only for blocks within 6e-8 relative of it, and the peak block, equal
    # to the top threshold in float64, stays equal to it in float32.
    hang = _trailing_max(np.maximum(q, 0.0).astype(np.float32), int(round(HANGOVER_S * sr / block)) + 1)
    hang[~valid] = -1.0
    hang_last = hang[np.arange(len(signals)), n_blocks - 1]
    hang.sort(axis=1)

    out: list[float | str] = [
        "active_speech_level: no active speech (signal is silent)"
        if ok
        else "active_speech_level: signal contains NaN or infinite samples"
        for ok in finite.tolist()
    ]
    rows = np.flatnonzero(finite & (peak > db_to_gain(SILENCE_FLOOR_DBOV)))
    if rows.size == 0:
        return out
    # Thresholds from low to high, 0.25 dB apart, the top one exactly at the envelope's peak.
    n_steps = int(round(THRESHOLD_SPAN_DB / THRESHOLD_STEP_DB))
    ladder_db = THRESHOLD_STEP_DB * np.arange(n_steps, -1, -1)
    c_db = gain_to_db(peak[rows])[:, None] - ladder_db
    c_lin = (peak[rows, None] * _ladder(n_steps)).astype(np.float32)
    active_blocks = np.empty(c_lin.shape, dtype=np.int64)
    for i, row in enumerate(rows):
        active_blocks[i] = width - np.searchsorted(hang[row], c_lin[i], side="left")
    # Blocks count whole, but the zero-padded last one only for its real samples.
    short = (n_blocks * block - sizes)[rows, None]
    active = active_blocks * block - np.where(hang_last[rows, None] >= c_lin, short, 0)
    # active >= 1 everywhere: the peak block's hangover reaches the top threshold.
    level_db = 10.0 * np.log10(energies[rows, None] / active)
    excess = level_db - c_db  # falls as the threshold rises
    for r, level in zip(rows.tolist(), _crossings(level_db, excess).tolist()):
        out[r] = level
    return out


@functools.lru_cache(maxsize=4)
def _ladder(n_steps: int) -> np.ndarray:
    """Linear factors of the thresholds below the peak, lowest first; the last is exactly 1."""
    return db_to_gain(-THRESHOLD_STEP_DB * np.arange(n_steps, -1, -1))


def _crossings(level_db: np.ndarray, excess: np.ndarray) -> np.ndarray:
    """Per row, the level where ``excess`` (falling as the threshold rises) crosses
    ``MARGIN_DB``, interpolated linearly between the thresholds either side."""
    below = excess <= MARGIN_DB
    j = np.argmax(below, axis=1)
    i = np.arange(len(j))
    prev = np.maximum(j - 1, 0)
    e0, e1 = excess[i, prev], excess[i, j]
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (e0 - MARGIN_DB) / (e0 - e1)
    crossed = level_db[i, prev] + t * (level_db[i, j] - level_db[i, prev])
    # No crossing (a very impulsive signal stays above the margin even at the peak): the top
    # threshold's level is the best estimate. A crossing at the lowest threshold: its level.
    return np.where(~below.any(axis=1), level_db[:, -1], np.where(j == 0, level_db[:, 0], crossed))


def active_speech_levels(signals: Sequence[np.ndarray], sr: int) -> list[float | str]:
    """Active speech level in dBov of each signal (ITU-T P.56 method B style), or the reason
    it has none (a one-line message: empty, non-finite or silent signal).

    The envelope (two 0.03 s one-pole smoothers of |x|) is compared with a ladder of
    thresholds 0.25 dB apart; a stretch is active while the envelope exceeded the threshold
    within the last 0.2 s (hangover). For each threshold the level of the active samples is
    computed; the answer is that level where it lies ``MARGIN_DB`` (15.9 dB) above its
    threshold, interpolated linearly between neighbouring thresholds. Activity is decided
    per 2 ms block from the exact envelope at the block's end (``BLOCK_S``); the level is
    exactly scale-equivariant. Signals are measured together (far fewer numpy calls per
    signal); each result is the same whatever the other signals are.
    """
    if sr <= 0:
        raise AudioError(f"active_speech_level: sample rate must be positive, got {sr}")
    out: list[float | str] = [""] * len(signals)
    todo: list[tuple[int, np.ndarray]] = []
    for i, x in enumerate(signals):
        x = np.asarray(x)
        if x.ndim != 1 or x.size == 0:
            out[i] = f"active_speech_level: expected a non-empty 1-D signal, got shape {x.shape}"
            continue
        todo.append((i, x))
    # Similar lengths together, so little of a batch is padding.
    todo.sort(key=lambda t: t[1].size)
    while todo:
        n = 1
        while n < len(todo) and (n + 1) * todo[n][1].size <= BATCH_SAMPLES:
            n += 1
        batch, todo = todo[:n], todo[n:]
        for (i, _), level in zip(batch, _levels_of_batch([x for _, x in batch], sr)):
            out[i] = level
    return out


def active_speech_level(x: np.ndarray, sr: int) -> float:
    """Active speech level of ``x`` in dBov (:func:`active_speech_levels` of one signal).

    Raises AudioError for an empty, non-finite or silent signal.
    """
    level = active_speech_levels([x], sr)[0]
    if isinstance(level, str):
        raise AudioError(level)
    return level


def gain_for_level(x: np.ndarray, sr: int, target_dbov: float) -> float:
    """Linear gain that brings the active speech level of ``x`` to ``target_dbov``."""
    return db_to_gain(target_dbov - active_speech_level(x, sr))


def _speech_level(speech: np.ndarray, sr: int, speech_level_db: float | None) -> float:
    return active_speech_level(speech, sr) if speech_level_db is None else float(speech_level_db)


def noise_gain(speech_level_db: float, snr_db: float | np.ndarray, noise_db: float | np.ndarray) -> float | np.ndarray:
    """Linear gain on a noise of RMS level ``noise_db`` that puts it ``snr_db`` below speech of
    active level ``speech_level_db`` (the SNR of the module docstring); 0 where ``snr_db`` is
    +inf. Elementwise on arrays (``noise_db`` broadcasts against ``snr_db``)."""
    snr = np.asarray(snr_db, dtype=np.float64)
    # One expression (10**-inf is 0, so +inf SNRs come out right for any finite noise
    # level); called once per mixed group, where each extra numpy call shows.
    gain = np.asarray(db_to_gain(speech_level_db - snr - np.asarray(noise_db, dtype=np.float64)))
    if gain.ndim == 0:
        return 0.0 if snr == math.inf else float(gain)
    if not np.isfinite(gain).all():
        gain = np.where(snr == math.inf, 0.0, gain)
    return gain


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


def measure_snr(speech: np.ndarray, scaled_noise: np.ndarray, sr: int, speech_level_db: float | None = None) -> float:
    """SNR in dB of ``speech`` against the already scaled ``scaled_noise`` (+inf when it is 0)."""
    noise_db = rms_db(scaled_noise)
    if noise_db == -math.inf:
        return math.inf
    return _speech_level(speech, sr, speech_level_db) - noise_db
