"""Synthetic talkers and the source-filter speech synthesiser of the demo corpus.

Glottal pulses with a pitch contour through formant resonators, fricative noise bursts,
syllable envelopes and pauses between words, scaled to an active speech level.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import signal

from jsqa.data.demo.streams import TALKER, stream_rng
from jsqa.signal.levels import active_speech_level, db_to_gain

SYNTH_MAX_SR = 24000
NOISE_FLOOR_DBFS = -80.0

# Vowel formants F1-F4 (Hz) of an adult male vocal tract, Peterson-Barney style; talkers
# scale them by their own vocal-tract factor.
_VOWELS = np.array(
    [
        [270, 2290, 3010, 3500],  # i
        [530, 1840, 2480, 3500],  # e
        [660, 1720, 2410, 3600],  # ae
        [730, 1090, 2440, 3400],  # a
        [570, 840, 2410, 3300],  # o
        [300, 870, 2240, 3300],  # u
        [520, 1190, 2390, 3400],  # schwa
    ],
    dtype=float,
)
_FRICATIVES = np.array([[3800.0, 9000.0], [2000.0, 6000.0], [1200.0, 8000.0]])  # s, sh, f


@dataclass(frozen=True)
class Talker:
    """Voice parameters of one synthetic talker."""

    name: str
    f0_hz: float
    formants_hz: tuple[tuple[float, ...], ...]  # one (F1..F4) per vowel
    bandwidths_hz: tuple[float, ...]
    syllable_rate_hz: float
    jitter: float
    open_quotient: float
    breathiness: float
    fricatives_hz: tuple[tuple[float, float], ...]
    fricative_gain_db: float


# --------------------------------------------------------------------------- levels


def _set_level(x: np.ndarray, sr: int, level_db: float) -> np.ndarray:
    """Peak-normalise to -3 dBFS, then scale to ``level_db`` active level (peak kept < 0 dBFS)."""
    peak = np.max(np.abs(x))
    if peak == 0:
        return x
    x = x * (db_to_gain(-3.0) / peak)
    x = x * db_to_gain(level_db - active_speech_level(x, sr))
    peak = np.max(np.abs(x))
    # A very peaky signal at -26 dBov could overload; keeping the waveform beats keeping the level.
    if peak > db_to_gain(-1.0):
        x = x * (db_to_gain(-1.0) / peak)
    return x


# --------------------------------------------------------------------------- talkers and speech


def make_talker(name: str, rng: np.random.Generator) -> Talker:
    """Draw a talker: mean pitch 90-250 Hz, vocal-tract scale, formants, rate and voice quality."""
    high = rng.random() < 0.5
    f0 = rng.uniform(165, 250) if high else rng.uniform(90, 145)
    # Higher voices tend to have shorter vocal tracts, hence higher formants.
    tract = (rng.uniform(1.08, 1.22) if high else rng.uniform(0.92, 1.05)) * rng.uniform(0.97, 1.03)
    formants = _VOWELS * tract * rng.uniform(0.95, 1.05, size=_VOWELS.shape)
    formants.sort(axis=1)
    bandwidths = np.array([60.0, 90.0, 130.0, 170.0]) * rng.uniform(0.8, 1.3, size=4)
    fric = _FRICATIVES * tract * rng.uniform(0.92, 1.08, size=(len(_FRICATIVES), 1))
    return Talker(
        name=name,
        f0_hz=float(f0),
        formants_hz=tuple(tuple(float(v) for v in row) for row in formants),
        bandwidths_hz=tuple(float(b) for b in bandwidths),
        syllable_rate_hz=float(rng.uniform(3.0, 6.0)),
        jitter=float(rng.uniform(0.005, 0.015)),
        open_quotient=float(rng.uniform(0.5, 0.7)),
        breathiness=float(rng.uniform(0.02, 0.12)),
        fricatives_hz=tuple((float(a), float(b)) for a, b in fric),
        fricative_gain_db=float(rng.uniform(-16, -8)),
    )


def clean_talkers(n: int, seed: int) -> list[Talker]:
    """The corpus talkers ``spk00`` .. ``spk{n-1}``, each from its own seed stream."""
    return [make_talker(f"spk{i:02d}", stream_rng(seed, TALKER, i)) for i in range(n)]


@functools.lru_cache(maxsize=256)
def _bandpass(lo: float, hi: float, sr: int) -> np.ndarray:
    hi = min(hi, 0.45 * sr)
    return signal.butter(2, [lo, hi], btype="bandpass", fs=sr, output="sos")


def _resonators(
    formants: Sequence[float] | np.ndarray, bandwidths: Sequence[float] | np.ndarray, sr: int
) -> np.ndarray:
    """Cascade of second-order formant resonators with unit gain at DC, as SOS sections."""
    rows = []
    for f, b in zip(formants, bandwidths):
        if f >= 0.45 * sr:
            continue
        r = math.exp(-math.pi * b / sr)
        a1, a2 = -2 * r * math.cos(2 * math.pi * f / sr), r * r
        rows.append([1 + a1 + a2, 0.0, 0.0, 1.0, a1, a2])
    return np.array(rows)


def raised_cosine_envelope(n: int, attack: int, decay: int) -> np.ndarray:
    """An envelope of ``n`` samples, 1 but for a raised-cosine rise over ``attack`` samples
    (at most a third of ``n``) and fall over the last ``decay`` (at most half)."""
    env = np.ones(n)
    attack, decay = min(attack, n // 3), min(decay, n // 2)
    if attack > 0:
        env[:attack] = 0.5 - 0.5 * np.cos(np.pi * np.arange(attack) / attack)
    if decay > 0:
        env[n - decay :] *= 0.5 + 0.5 * np.cos(np.pi * np.arange(1, decay + 1) / decay)
    return env


def _syllable_plan(talker: Talker, n: int, sr: int, rng: np.random.Generator) -> list[tuple]:
    """Lay out words of 1-3 syllables with pauses: (fricative span or None, vowel span, vowel)."""
    plan: list[tuple] = []
    t = int(rng.uniform(0.05, 0.15) * sr)
    end = n - int(0.08 * sr)
    while True:
        for _ in range(int(rng.integers(1, 4))):
            length = int(sr / talker.syllable_rate_hz * rng.uniform(0.7, 1.3))
            if t + length > end:
                if plan or end - t < int(0.06 * sr):
                    return plan
                length = end - t  # a short utterance still gets one syllable
            fric = None
            flen = int(rng.uniform(0.04, 0.1) * sr)
            if rng.random() < 0.4 and length - flen >= int(0.06 * sr):
                fric = (t, t + flen, int(rng.integers(len(talker.fricatives_hz))))
                t += flen
                length -= flen
            plan.append((fric, (t, t + length), int(rng.integers(len(talker.formants_hz)))))
            t += length
        t += int(rng.uniform(0.06, 0.22) * sr)


def _pitch_contour(talker: Talker, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """f0 per sample: declination, slow intonation drift and cycle-scale jitter, in Hz."""
    hop = max(1, sr // 100)
    k = n // hop + 2
    pos = np.linspace(0.0, 1.0, k)
    semitones = 2.0 - 4.0 * pos  # declination over the utterance
    drift = np.cumsum(rng.normal(0, 0.25, size=k))
    drift = signal.lfilter([0.1], [1, -0.9], drift - drift.mean())
    contour = talker.f0_hz * 2 ** ((semitones + drift) / 12)
    jitter = 1 + rng.normal(0, talker.jitter, size=k)
    t = np.arange(n) / hop
    return np.interp(t, np.arange(k), contour * jitter)


def periodic(frac: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Evaluate a one-period waveform, sampled on [0, 1), at phases ``frac`` in [0, 1)."""
    grid = np.arange(len(table) + 1) / len(table)
    return np.interp(frac, grid, np.append(table, table[0]))


def _glottal_source(f0: np.ndarray, sr: int, open_quotient: float) -> tuple[np.ndarray, np.ndarray]:
    """Rosenberg-style glottal flow from the running phase, and its derivative (lip radiation)."""
    u = np.arange(4096) / 4096
    tp, tn = 0.6 * open_quotient, 0.4 * open_quotient
    pulse = np.where(
        u < tp,
        0.5 - 0.5 * np.cos(np.pi * u / tp),
        np.where(u < tp + tn, np.cos(0.5 * np.pi * np.clip(u - tp, 0, None) / tn), 0.0),
    )
    # A lookup over one period is far cheaper than evaluating cosines at every sample.
    flow = periodic(np.mod(np.cumsum(f0 / sr), 1.0), pulse)
    return flow, np.diff(flow, prepend=0.0)


def synth_utterance(
    talker: Talker, seconds: float, sr: int, rng: np.random.Generator, level_dbov: float = -26.0
) -> np.ndarray:
    """One speech-like utterance of ``seconds`` at ``sr``, scaled to ``level_dbov`` active level.

    Above 24 kHz the voice is synthesised at 24 kHz and resampled: synthetic speech has next
    to nothing above 12 kHz, and this halves the cost of 48 kHz clips.
    """
    out_sr, out_n = sr, int(round(seconds * sr))
    sr = min(sr, SYNTH_MAX_SR)
    n = int(round(seconds * sr))
    f0 = _pitch_contour(talker, n, sr, rng)
    flow, source = _glottal_source(f0, sr, talker.open_quotient)
    # Breath noise rides on the open phase of the glottis.
    source = source + talker.breathiness * np.std(source) * rng.standard_normal(n) * flow
    voiced = np.zeros(n + int(0.05 * sr))
    fric_tracks: dict[int, np.ndarray] = {}
    fricative = np.zeros(n)
    white = rng.standard_normal(n)
    for fric, (a, b), vowel in _syllable_plan(talker, n, sr, rng):
        if fric is not None:
            fa, fb, kind = fric
            if kind not in fric_tracks:
                sos = _bandpass(*talker.fricatives_hz[kind], sr)
                fric_tracks[kind] = signal.sosfilt(sos, white)
            env = raised_cosine_envelope(fb - fa, int(0.01 * sr), int(0.02 * sr))
            fricative[fa:fb] += fric_tracks[kind][fa:fb] * env
        env = raised_cosine_envelope(b - a, int(rng.uniform(0.015, 0.03) * sr), int(rng.uniform(0.04, 0.08) * sr))
        formants = np.array(talker.formants_hz[vowel]) * rng.uniform(0.97, 1.03, size=4)
        sos = _resonators(formants, talker.bandwidths_hz, sr)
        tail = int(0.04 * sr)
        seg = np.concatenate([source[a:b] * env * rng.uniform(0.6, 1.0), np.zeros(tail)])
        voiced[a : b + tail] += signal.sosfilt(sos, seg)
    voiced = voiced[:n]
    if fricative.any():
        v = active_speech_level(voiced, sr)
        f = active_speech_level(fricative, sr)
        fricative *= db_to_gain(v + talker.fricative_gain_db - f)
    x = voiced + fricative
    if out_sr != sr:
        x = signal.resample_poly(x, out_sr // math.gcd(sr, out_sr), sr // math.gcd(sr, out_sr))
        x = np.pad(x, (0, max(0, out_n - len(x))))[:out_n]
    x = _set_level(x, out_sr, level_dbov)
    # A faint floor, as in any recording: digital silence between words is unlike real speech.
    x += db_to_gain(NOISE_FLOOR_DBFS) * rng.standard_normal(out_n)
    return x.astype(np.float32)
