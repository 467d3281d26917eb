"""Is there speech to score, and at what level: the no-speech rule and input level normalisation.

A MOS model that records an input level (``MOSModel.input_level_dbov``, e.g. -26 dBov, NISQA's
recommendation) sees every scoring window, and every training clip, scaled so that its ITU-T P.56
active speech level (:func:`jsqa.signal.levels.active_speech_levels`) is that level: loudness
alone cannot move its score.

No speech, no score. A signal has no speech to score (:func:`check_speech`) when

- its P.56 active level is below ``MIN_ACTIVE_LEVEL_DBOV`` (-60 dBov), or it has none at all
  (digital silence: nothing above -100 dBov), or
- its long-term spectrum is tonal: at least ``TONAL_POWER_SHARE`` (99%) of the power of a Welch
  power spectrum (Hann segments of ``WELCH_SEGMENT_S`` = 64 ms, 15.6 Hz bins, half overlapping,
  each segment's mean removed) lies in its ``TONAL_TOP_BINS`` (8) strongest bins: a single tone
  or a pair (1 kHz, DTMF), a constant or a DC offset.

Speech under any of the demo corpus's noises, down to -5 dB SNR, and after band-limiting, mu-law,
clipping or packet loss is not flagged (tests/scoring/test_level_invariance.py checks a generated set).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from jsqa.errors import NoSpeechError
from jsqa.signal.levels import SILENCE_FLOOR_DBOV, active_speech_levels, db_to_gain

NO_SPEECH = "no active speech found"
MIN_ACTIVE_LEVEL_DBOV = -60.0
TONAL_TOP_BINS = 8
# Tones measure >= 0.998 (1 kHz, DTMF, a tone 30 dB above white noise); demo speech at most 0.93
# (hum or brown noise after band-pass): 0.9 flagged such a clip.
TONAL_POWER_SHARE = 0.99
WELCH_SEGMENT_S = 0.064


@dataclass(frozen=True)
class SpeechCheck:
    """The outcome of :func:`check_speech` for one signal."""

    level_dbov: float | None  # P.56 active level (None when the signal has none)
    reason: str | None  # why it holds no speech to score; None when it does

    @property
    def has_speech(self) -> bool:
        return self.reason is None

    def message(self) -> str:
        """``no active speech found (why)``."""
        return f"{NO_SPEECH} ({self.reason})"


def tonal_share(x: np.ndarray, sr: int) -> float:
    """Share of the power of ``x``'s Welch spectrum in its ``TONAL_TOP_BINS`` strongest bins
    (1.0 for a signal whose segments are all constant)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    n = max(16, int(round(WELCH_SEGMENT_S * sr)))
    if len(x) < n:
        x = np.pad(x, (0, n - len(x)))
    hop = n // 2
    frames = np.lib.stride_tricks.sliding_window_view(x, n)[::hop]
    frames = frames - frames.mean(axis=1, keepdims=True)
    psd = np.square(np.abs(np.fft.rfft(frames * np.hanning(n), axis=1))).sum(axis=0)
    total = float(psd.sum())
    if not total > 0.0:
        return 1.0
    top = np.partition(psd, len(psd) - TONAL_TOP_BINS)[-TONAL_TOP_BINS:] if len(psd) > TONAL_TOP_BINS else psd
    return float(top.sum()) / total


def check_speech(signals: Sequence[np.ndarray], sr: int) -> list[SpeechCheck]:
    """For each non-empty, finite 1-D signal at ``sr``: its active level and whether it holds
    speech to score, by the rule of the module docstring. Levels are measured together."""
    out = []
    for x, level in zip(signals, active_speech_levels(signals, sr)):
        if isinstance(level, str):
            silent = "silent" in level
            why = f"silent: nothing above {SILENCE_FLOOR_DBOV:.0f} dBov" if silent else level
            out.append(SpeechCheck(None, why))
        elif level < MIN_ACTIVE_LEVEL_DBOV:
            out.append(SpeechCheck(level, f"active level {level:.0f} dBov below {MIN_ACTIVE_LEVEL_DBOV:.0f}"))
        else:
            share = tonal_share(x, sr)
            tonal = share >= TONAL_POWER_SHARE
            out.append(
                SpeechCheck(
                    level, f"tonal: {share:.0%} of the power in {TONAL_TOP_BINS} spectral bins" if tonal else None
                )
            )
    return out


def level_gain(check: SpeechCheck, target_dbov: float) -> float:
    """Linear gain that brings a signal with speech to ``target_dbov`` active level."""
    if check.level_dbov is None or not check.has_speech:
        raise NoSpeechError(check.message())
    return float(db_to_gain(target_dbov - check.level_dbov))


def scaled(x: np.ndarray, gain: float) -> np.ndarray:
    """``x`` times ``gain`` as float32 (computed in float64)."""
    return (np.asarray(x, dtype=np.float64) * gain).astype(np.float32)


def normalise_level(x: np.ndarray, sr: int, target_dbov: float) -> np.ndarray:
    """``x`` scaled to ``target_dbov`` active speech level (float32); NoSpeechError when it
    holds no speech to score."""
    return scaled(x, level_gain(check_speech([x], sr)[0], target_dbov))


def normalise_window(x: np.ndarray, sr: int, target_dbov: float | None) -> np.ndarray | SpeechCheck:
    """A scoring window as a level-normalised model sees it (scaled to ``target_dbov``), or the
    failed check when it holds no speech. ``target_dbov`` None: ``x`` as it is."""
    if target_dbov is None:
        return x
    check = check_speech([x], sr)[0]
    if not check.has_speech:
        return check
    return scaled(x, level_gain(check, target_dbov))


def no_speech_error(failed: Sequence[SpeechCheck]) -> NoSpeechError:
    """The error for a signal none of whose ``failed`` windows holds speech."""
    if len(failed) == 1:
        return NoSpeechError(failed[0].message())
    return NoSpeechError(f"{NO_SPEECH} (in none of its {len(failed)} windows; first: {failed[0].reason})")


def random_gains(n: int, max_db: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` linear gains uniform in ±``max_db`` dB (training gain augmentation); ones, drawing
    nothing from ``rng``, when ``max_db`` is 0."""
    if max_db <= 0.0 or math.isnan(max_db):
        return np.ones(n)
    return np.asarray(db_to_gain(rng.uniform(-max_db, max_db, size=n)))
