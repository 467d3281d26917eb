"""Offline demo corpus: synthetic talkers, synthetic noise and a MOS-labelled degraded set.

Everything is generated from a seed, with no downloads, so the whole pipeline can run (and be
tested) on a laptop. Three parts are written under one directory:

- ``clean/<talker>/<talker>-<k>.wav``: speech-like utterances from source-filter synthesis
  (glottal pulses with a pitch contour through formant resonators, fricative noise bursts,
  syllable envelopes and pauses between words), at the speech level ``-26 dBov``.
- ``noise/<family>-<k>.wav``: white, pink, brown, babble (other synthetic talkers), hum and
  transients.
- ``mos/``: degraded clips, their clean references and ``NISQA_corpus_file.csv`` in the layout
  of the NISQA corpus, split by talker into DEMO_TRAIN, DEMO_VAL, DEMO_TEST_NOISE and
  DEMO_TEST_MIXED.

The MOS labels are NOT human ratings. They come from an objective proxy, :func:`proxy_mos`
(a frequency-weighted segmental SNR against the clean reference mapped through a logistic),
plus Gaussian rater-like scatter. They are good enough to check that a model learns "more
degradation, lower score", and nothing more: never report results on them as quality results.
The per-dimension columns ``noi``, ``col``, ``dis`` and ``loud`` are proxies as well
(:func:`dimension_proxies`, docs/data.md).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import typing
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torchaudio.functional as AF
from scipy import signal

from jsqa.audio import check_signal, write_audio
from jsqa.config import DemoConfig, NoiseFamily
from jsqa.data.manifests import (
    CLEAN_COLUMNS,
    NOISE_COLUMNS,
    audio_rows,
    mos_manifest_from_csv,
    write_manifest,
)
from jsqa.errors import AudioError, ConfigError
from jsqa.io import atomic_dir, write_csv, write_json
from jsqa.mos_scale import clamp_mos
from jsqa.signal.distortions import Bandpass, Clip, Mnru, MuLaw, PacketLoss, Reverb
from jsqa.signal.levels import active_speech_level, db_to_gain, gain_to_db, mix_at_snr

log = logging.getLogger(__name__)

# Fixed order: a family's random stream is keyed by its index here, not by its position in
# the config, so adding or reordering families never changes the others' audio.
# (The config's NoiseFamily choices, in that order.)
NOISE_FAMILIES: tuple[str, ...] = typing.get_args(NoiseFamily)

MOS_DBS = {
    "train": "DEMO_TRAIN",
    "val": "DEMO_VAL",
    "test_noise": "DEMO_TEST_NOISE",
    "test_mixed": "DEMO_TEST_MIXED",
}
NISQA_COLUMNS = [
    "db", "con", "file", "con_description", "filename_deg", "filename_ref", "source", "lang",
    "votes", "mos", "mos_std", "filepath_deg", "filepath_ref",
]  # fmt: skip
# Condition numbers (the NISQA ``con`` column); 0 is additive noise alone. New kinds go last,
# so the others keep their numbers.
DEGRADATIONS: tuple[str, ...] = (
    "none", "bandlimit_nb", "bandlimit_wb", "mulaw8", "quantise", "clipping", "packet_loss",
    "reverb", "mnru", "bandpass",
)  # fmt: skip
# Severity ranges of the degradations drawn per clip (uniform).
REVERB_RT60_S = (0.2, 1.2)
REVERB_DRR_DB = (12.0, 0.0)  # direct-to-reverberant ratio at those RT60s (see _reverberate)
MNRU_Q_DB = (0.0, 30.0)
BANDPASS_HIGH_HZ = (2400.0, 7000.0)

# Per-dimension proxy labels (NISQA's noi, col, dis, loud columns; see dimension_proxies).
DIMENSION_COLUMNS = ("noi", "col", "dis", "loud")
NOI_MID_DB, NOI_SLOPE_DB = 12.5, 6.0
LOUD_TARGET_DBOV = -26.0
# Degradation -> (dimension it lowers, severity parameter points, scores there), linear between
# the points and flat beyond them. Fixed-parameter kinds score the same everywhere.
DIMENSION_PROXIES: dict[str, tuple[str, tuple[float, float], tuple[float, float]]] = {
    "bandlimit_nb": ("col", (0.0, 1.0), (2.5, 2.5)),
    "bandlimit_wb": ("col", (0.0, 1.0), (4.2, 4.2)),
    "bandpass": ("col", BANDPASS_HIGH_HZ, (1.8, 4.2)),         # upper cutoff, Hz
    "reverb": ("col", REVERB_RT60_S, (4.2, 1.8)),              # RT60, s
    "mnru": ("col", MNRU_Q_DB, (1.5, 4.2)),                    # Q, dB
    "mulaw8": ("col", (0.0, 1.0), (4.0, 4.0)),
    "quantise": ("col", (6.0, 8.0), (2.5, 3.5)),               # bits
    "clipping": ("dis", (-20.0, -6.0), (1.8, 3.8)),            # threshold, dB below the peak
    "packet_loss": ("dis", (0.05, 0.25), (3.8, 1.5)),          # share of 20 ms frames lost
}

# Proxy label constants (see proxy_mos). C and S were fitted on this generator's clips so that
# additive noise from -5 to 40 dB SNR spans about 1.2 to 4.6.
FW_FRAME_S = 0.032
FW_BANDS = 32
FW_FMIN, FW_FMAX = 50.0, 8000.0
FW_GAMMA = 0.2
FW_CLIP_DB = (-10.0, 35.0)
MOS_C = 17.5
MOS_S = 5.5

SYNTH_MAX_SR = 24000
NOISE_FLOOR_DBFS = -80.0

# Random streams: every file draws from its own generator keyed by (seed, stream, index...), so
# any file can be regenerated alone and the clean talkers never share a stream with babble.
_TALKER, _UTTERANCE, _NOISE, _SPLIT, _CLIP, _MOS_NOISE = range(1, 7)

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
class DemoCorpus:
    """Where a generated demo corpus lives."""

    root: Path
    clean_dir: Path
    noise_dir: Path
    mos_csv: Path


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


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng([seed, *key])


# --------------------------------------------------------------------------- levels and mixing


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
    return [make_talker(f"spk{i:02d}", _rng(seed, _TALKER, i)) for i in range(n)]


@functools.lru_cache(maxsize=256)
def _bandpass(lo: float, hi: float, sr: int) -> np.ndarray:
    hi = min(hi, 0.45 * sr)
    return signal.butter(2, [lo, hi], btype="bandpass", fs=sr, output="sos")


def _resonators(formants: Sequence[float] | np.ndarray, bandwidths: Sequence[float] | np.ndarray, sr: int) -> np.ndarray:
    """Cascade of second-order formant resonators with unit gain at DC, as SOS sections."""
    rows = []
    for f, b in zip(formants, bandwidths):
        if f >= 0.45 * sr:
            continue
        r = math.exp(-math.pi * b / sr)
        a1, a2 = -2 * r * math.cos(2 * math.pi * f / sr), r * r
        rows.append([1 + a1 + a2, 0.0, 0.0, 1.0, a1, a2])
    return np.array(rows)


def _raised_cosine_envelope(n: int, attack: int, decay: int) -> np.ndarray:
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


def _periodic(frac: np.ndarray, table: np.ndarray) -> np.ndarray:
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
    flow = _periodic(np.mod(np.cumsum(f0 / sr), 1.0), pulse)
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
            env = _raised_cosine_envelope(fb - fa, int(0.01 * sr), int(0.02 * sr))
            fricative[fa:fb] += fric_tracks[kind][fa:fb] * env
        env = _raised_cosine_envelope(
            b - a, int(rng.uniform(0.015, 0.03) * sr), int(rng.uniform(0.04, 0.08) * sr)
        )
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


# --------------------------------------------------------------------------- noise


def _coloured(rng: np.random.Generator, n: int, sr: int, exponent: float) -> np.ndarray:
    """Gaussian noise with a power spectrum falling as 1/f**exponent above 20 Hz."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / sr)
    shape = np.zeros_like(f)
    keep = f >= 20.0
    shape[keep] = f[keep] ** (-exponent / 2)
    return np.fft.irfft(spec * shape, n)


def _babble(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """4-6 synthetic talkers talking at once; they come from this generator, never the corpus's."""
    out = np.zeros(n)
    for j in range(int(rng.integers(4, 7))):
        talker = make_talker(f"babble{j}", rng)
        parts, total = [], -int(rng.uniform(0, 2.0) * sr)
        while total < n:
            utt = synth_utterance(talker, rng.uniform(2.0, 4.0), sr, rng)
            parts.append(utt)
            total += len(utt)
        stream = np.concatenate(parts)
        out += stream[len(stream) - n :] * rng.uniform(0.7, 1.0)
    return out


def _hum(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Mains hum: 50 or 60 Hz and its harmonics, slowly wobbling, over a faint pink floor."""
    mains = 50.0 if rng.random() < 0.5 else 60.0
    u = np.arange(8192) / 8192
    period = np.zeros_like(u)
    for k in range(1, int(min(1200.0, 0.45 * sr) // mains) + 1):
        amp = rng.uniform(0.3, 1.0) / k ** (0.7 if k % 2 else 1.1)
        period += amp * np.sin(2 * np.pi * k * u + rng.uniform(0, 2 * np.pi))
    t = np.arange(n) / sr
    # Harmonics are exact multiples of the mains frequency, so one period describes them all.
    out = _periodic(np.mod(mains * t, 1.0), period)
    out *= 1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.2, 1.0) * t)
    floor = _coloured(rng, n, sr, 1.0)
    return out / np.std(out) + 0.01 * floor / np.std(floor)


def _transients(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Clicks and door-slam-like decaying low bursts on a low pink floor."""
    floor = _coloured(rng, n, sr, 1.0)
    out = 0.003 * floor / np.std(floor)
    count = max(1, rng.poisson(rng.uniform(0.5, 2.0) * n / sr))
    for start in rng.integers(0, n, size=count):
        if rng.random() < 0.5:
            length = int(rng.uniform(0.002, 0.006) * sr)
            burst = rng.standard_normal(length) * np.exp(-np.arange(length) / (0.0008 * sr))
            amp = rng.uniform(0.2, 0.8)
        else:
            length = int(rng.uniform(0.3, 0.8) * sr)
            decay = np.exp(-np.arange(length) / (rng.uniform(0.05, 0.2) * sr))
            lp = signal.butter(2, rng.uniform(200, 800), fs=sr, output="sos")
            burst = signal.sosfilt(lp, rng.standard_normal(length)) * decay
            burst *= _raised_cosine_envelope(length, int(0.002 * sr), 0)
            amp = rng.uniform(0.4, 1.0)
        end = min(n, start + length)
        out[start:end] += amp * burst[: end - start] / np.max(np.abs(burst))
    return out


_NOISE_MAKERS: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    "white": lambda rng, n, sr: rng.standard_normal(n),
    "pink": lambda rng, n, sr: _coloured(rng, n, sr, 1.0),
    "brown": lambda rng, n, sr: _coloured(rng, n, sr, 2.0),
    "babble": _babble,
    "hum": _hum,
    "transients": _transients,
}


def make_noise(family: str, seconds: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """``seconds`` of one noise family at ``sr``: RMS -26 dBFS, peak at most -1 dBFS."""
    if family not in _NOISE_MAKERS:
        known = ", ".join(NOISE_FAMILIES)
        raise ConfigError(f"data.demo.noise_families: unknown family '{family}' (known: {known})")
    x = _NOISE_MAKERS[family](rng, int(round(seconds * sr)), sr)
    x = x * (db_to_gain(-26.0) / max(float(np.sqrt(np.mean(np.square(x)))), 1e-12))
    peak = np.max(np.abs(x))
    if peak > db_to_gain(-1.0):
        x = x * (db_to_gain(-1.0) / peak)
    return x.astype(np.float32)


# --------------------------------------------------------------------------- degradations


def _reverberate(x: np.ndarray, rt60: float, sr: int, seed: int) -> tuple[np.ndarray, float]:
    """A talker at some distance in a room: the dry signal plus its :class:`Reverb` (synthetic
    room response from ``seed``) at a direct-to-reverberant ratio falling with RT60 (12 dB at
    0.2 s to 0 dB at 1.2 s, as a bigger, more reverberant room would), active level kept.
    Returns the signal and the DRR in dB."""
    x = np.asarray(x, dtype=np.float64)
    wet = Reverb(rt60)(x, sr, seed)
    drr_db = float(np.interp(rt60, REVERB_RT60_S, REVERB_DRR_DB))
    power = float(np.mean(wet**2))
    y = x if power == 0 else x + wet * math.sqrt(float(np.mean(x**2)) / power) * db_to_gain(-drr_db)
    return y * db_to_gain(active_speech_level(x, sr) - active_speech_level(y, sr)), drr_db


def _degrade(
    x: np.ndarray, kind: str, sr: int, rng: np.random.Generator
) -> tuple[np.ndarray, str, float]:
    """Apply one non-additive degradation with parameters drawn from ``rng``; returns the
    signal, a description and the parameter that sets its severity (:data:`DIMENSION_PROXIES`)."""
    if kind == "bandlimit_nb":
        sos = signal.butter(6, [300, 3400], btype="bandpass", fs=sr, output="sos")
        return signal.sosfilt(sos, x), "band-limited 300-3400 Hz", 3400.0
    if kind == "bandlimit_wb":
        sos = signal.butter(6, [50, min(7000, 0.45 * sr)], btype="bandpass", fs=sr, output="sos")
        return signal.sosfilt(sos, x), "band-limited 50-7000 Hz", 7000.0
    if kind == "mulaw8":
        return MuLaw(8)(x), "mu-law 8 bit", 8.0
    if kind == "quantise":
        bits = int(rng.integers(6, 9))
        step = 2.0 / 2**bits
        return np.round(x / step) * step, f"linear quantisation {bits} bit", float(bits)
    if kind == "clipping":
        # Clipping as overdrive: the level stays, the waveform is distorted.
        threshold_db = float(gain_to_db(rng.uniform(0.1, 0.5)))
        return Clip(threshold_db)(x, sr), f"hard clipping at {threshold_db:.1f} dB below the peak", threshold_db
    if kind == "packet_loss":
        rate = float(rng.uniform(0.05, 0.25))
        seed = int(rng.integers(2**32))
        return PacketLoss(rate)(x, sr, seed), f"packet loss {rate:.0%} of 20 ms frames", rate
    if kind == "reverb":
        rt60 = float(rng.uniform(*REVERB_RT60_S))
        seed = int(rng.integers(2**32))
        y, drr_db = _reverberate(x, rt60, sr, seed)
        return y, f"reverberation RT60 {rt60:.2f} s, DRR {drr_db:.1f} dB (synthetic room)", rt60
    if kind == "mnru":
        q_db = float(rng.uniform(*MNRU_Q_DB))
        seed = int(rng.integers(2**32))
        return Mnru(q_db)(x, sr, seed), f"MNRU Q {q_db:.1f} dB", q_db
    if kind == "bandpass":
        high = min(float(rng.uniform(*BANDPASS_HIGH_HZ)), 0.45 * sr)
        return Bandpass(high)(x, sr), f"band-pass {Bandpass.LOW_HZ:g}-{high:.0f} Hz", high
    raise ConfigError(f"degradation '{kind}' is unknown")  # pragma: no cover - internal list


# --------------------------------------------------------------------------- per-dimension proxies


def _logistic(x: float, mid: float, slope: float) -> float:
    """1 + 4 / (1 + exp(-(x - mid) / slope)): a score on the 1-5 scale."""
    return 1.0 + 4.0 / (1.0 + math.exp(-(x - mid) / slope))


def dimension_proxies(kind: str, param: float, snr_db: float, deg: np.ndarray, sr: int) -> dict[str, float]:
    """Objective stand-ins for NISQA's per-dimension MOS columns, each in [1, 5]; not ratings.

    - ``noi`` (noisiness): the additive-noise SNR through a logistic,
      ``1 + 4 / (1 + exp(-(snr_db - 12.5) / 6))`` (-5 dB: 1.2, 40 dB: 4.96).
    - ``col`` (coloration) and ``dis`` (discontinuity): the clip's degradation, when it is one of
      that dimension's in :data:`DIMENSION_PROXIES`, scored linearly in its severity parameter;
      5 when the clip has none.
    - ``loud`` (loudness): the active speech level L of ``deg`` against the -26 dBov target,
      ``5 - max(0, |L + 26| - 2) / 3`` clamped to [1, 5]: 5 within 2 dB of the target. The demo
      is level-normalised, so this falls only where loud noise raises the level.
    """
    out = {"noi": _logistic(snr_db, NOI_MID_DB, NOI_SLOPE_DB), "col": 5.0, "dis": 5.0}
    if kind in DIMENSION_PROXIES:
        dim, xs, ys = DIMENSION_PROXIES[kind]
        out[dim] = float(np.interp(param, xs, ys))
    level = active_speech_level(np.asarray(deg, dtype=np.float64), sr)
    out["loud"] = min(5.0, max(1.0, 5.0 - max(0.0, abs(level - LOUD_TARGET_DBOV) - 2.0) / 3.0))
    return out


# --------------------------------------------------------------------------- proxy label


@functools.lru_cache(maxsize=16)
def _melbank(n_fft: int, sr: int) -> np.ndarray:
    fmax = min(FW_FMAX, sr / 2)
    fb = AF.melscale_fbanks(n_fft // 2 + 1, FW_FMIN, fmax, FW_BANDS, sr, norm=None, mel_scale="htk")
    fb = fb.numpy().astype(np.float64)
    # Bins above the top band carry no weight; dropping them makes the product 3x cheaper at 48 kHz.
    return fb[: int(np.flatnonzero(fb.any(axis=1)).max()) + 1]


def _band_energies(x: np.ndarray, sr: int) -> np.ndarray:
    n = int(round(FW_FRAME_S * sr))
    hop = n // 2
    frames = 1 + max(0, len(x) - n) // hop
    x = np.pad(x.astype(np.float64), (0, max(0, n - len(x))))
    windows = np.lib.stride_tricks.sliding_window_view(x, n)[::hop][:frames]
    bank = _melbank(n, sr)
    spec = np.fft.rfft(windows * np.hanning(n), axis=1)[:, : len(bank)]
    # einsum rather than @: inside the worker pool, BLAS threads spinning on this small
    # product cost more CPU than the product itself.
    return np.einsum("fk,kb->fb", spec.real**2 + spec.imag**2, bank)


def fwsnrseg(deg: np.ndarray, ref: np.ndarray, sr: int) -> float:
    """Frequency-weighted segmental SNR (dB) of ``deg`` against the aligned clean ``ref``.

    Per 32 ms Hann frame (50 % overlap) and per band of a 32-band mel filterbank over
    50-8000 Hz: SNR_j = 10 log10(|X_j|^2 / (|X_j| - |Y_j|)^2), clipped to [-10, 35] dB, where
    |X_j|, |Y_j| are the band magnitudes of ref and deg; the frame value is the average of
    SNR_j weighted by |X_j|^0.2; the result is the mean over frames whose ref energy lies
    within 40 dB of the loudest frame (pauses carry no reference to weigh against).
    """
    deg = check_signal(np.asarray(deg, dtype=np.float64).ravel(), "deg")
    ref = check_signal(np.asarray(ref, dtype=np.float64).ravel(), "ref")
    if deg.shape != ref.shape:
        raise AudioError(
            f"fwsnrseg: deg has {deg.size} samples, ref {ref.size}; they must be aligned"
        )
    er, ed = _band_energies(ref, sr), _band_energies(deg, sr)
    frame_energy = er.sum(axis=1)
    if frame_energy.max() <= 0:
        raise AudioError("fwsnrseg: the reference is silent")
    active = frame_energy >= frame_energy.max() * 1e-4
    xr, xd = np.sqrt(er[active]), np.sqrt(ed[active])
    err = np.maximum((xr - xd) ** 2, 1e-30)
    snr = np.clip(10 * np.log10(np.maximum(xr**2, 1e-30) / err), *FW_CLIP_DB)
    w = xr**FW_GAMMA
    per_frame = (w * snr).sum(axis=1) / np.maximum(w.sum(axis=1), 1e-30)
    return float(per_frame.mean())


def proxy_mos(deg: np.ndarray, ref: np.ndarray, sr: int) -> float:
    """Objective stand-in for a MOS, in [1, 5]; not a human rating.

    ``x = fwsnrseg(deg, ref, sr)`` (see :func:`fwsnrseg`: 32 ms frames, 32 mel bands
    50-8000 Hz, SNR clipped to [-10, 35] dB, weights |ref band|^0.2), then
    ``mos = 1 + 4 / (1 + exp(-(x - 17.5) / 5.5))``. A clean reference scored against itself
    gets 4.84 (x = 35); additive noise at -5 / 10 / 30 dB SNR (active speech level over noise
    power) gets about 1.3 / 2.6 / 4.4 averaged over the noise families, 40 dB about 4.6.
    """
    x = fwsnrseg(deg, ref, sr)
    return float(1 + 4 / (1 + math.exp(-(x - MOS_C) / MOS_S)))


# --------------------------------------------------------------------------- generation


def _check(cfg: DemoConfig, seed: int, sample_rate: int, mos_seconds: tuple[float, float]) -> None:
    """Reject arguments the generator cannot honour, naming the params.yaml key (``cfg`` itself
    was validated when built)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed: must be a non-negative integer, got {seed!r}")
    if sample_rate < 8000:
        raise ConfigError("data.sample_rate: must be >= 8000")
    if not 0.3 <= mos_seconds[0] <= mos_seconds[1]:
        raise ConfigError("mos_seconds: must be [low, high], low >= 0.3")
    _clip_counts(cfg.mos_clips, cfg.mos_splits)


def split_talkers(
    names: Sequence[str], shares: dict[str, float], seed: int
) -> dict[str, list[str]]:
    """Assign whole talkers to train / val / test so no test talker is ever trained on.

    Test always gets at least one talker of its own; val gets its own from 3 talkers up,
    with 2 talkers it shares the train talker.
    """
    names = list(names)
    order = [names[i] for i in _rng(seed, _SPLIT).permutation(len(names))]
    total = sum(shares.values())
    n = len(names)
    n_test = max(1, round(n * shares["test"] / total))
    n_val = max(1, round(n * shares["val"] / total)) if n >= 3 else 0
    while n - n_test - n_val < 1:
        if n_val > 1 and n_val >= n_test:
            n_val -= 1
        else:
            n_test -= 1
    test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    return {"train": sorted(train), "val": sorted(val or train), "test": sorted(test)}


def _clip_counts(total: int, shares: dict[str, float]) -> dict[str, int]:
    s = sum(shares.values())
    n_val = round(total * shares["val"] / s)
    n_test = round(total * shares["test"] / s)
    counts = {
        "train": total - n_val - n_test,
        "val": n_val,
        "test_noise": (n_test + 1) // 2,
        "test_mixed": n_test // 2,
    }
    if min(counts.values()) < 1:
        raise ConfigError(
            f"data.demo.mos_clips: {total} clips leave an empty set ({counts}); use more clips"
        )
    return counts


def _write_clean(
    root: Path, talkers: list[Talker], cfg: DemoConfig, seed: int, sr: int, level_dbov: float,
    pool: Executor,
) -> None:  # fmt: skip
    def one(job: tuple[int, int]) -> None:
        i, k = job
        rng = _rng(seed, _UTTERANCE, i, k)
        x = synth_utterance(talkers[i], rng.uniform(*cfg.utterance_seconds), sr, rng, level_dbov)
        write_audio(root / talkers[i].name / f"{talkers[i].name}-{k:03d}.wav", x, sr)

    jobs = [(i, k) for i in range(len(talkers)) for k in range(cfg.utterances_per_talker)]
    list(pool.map(one, jobs))


def _write_noise(root: Path, cfg: DemoConfig, seed: int, sr: int, pool: Executor) -> None:
    def one(job: tuple[str, int]) -> None:
        family, k = job
        rng = _rng(seed, _NOISE, NOISE_FAMILIES.index(family), k)
        x = make_noise(family, cfg.noise_seconds, sr, rng)
        write_audio(root / f"{family}-{k:02d}.wav", x, sr)

    list(pool.map(one, [(f, k) for f in cfg.noise_families for k in range(cfg.noise_per_family)]))


def _mos_clip(
    i: int,
    subset: str,
    talkers: list[Talker],
    banks: dict[str, np.ndarray],
    cfg: DemoConfig,
    seed: int,
    mos_seconds: tuple[float, float],
    degraded_share: float,
    level_dbov: float,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Synthesise, degrade and label clip ``i``; returns (deg, ref, CSV row)."""
    sr = cfg.mos_sample_rate
    rng = _rng(seed, _CLIP, i)
    talker = talkers[int(rng.integers(len(talkers)))]
    ref = synth_utterance(talker, rng.uniform(*mos_seconds), sr, rng, level_dbov).astype(np.float64)
    family = cfg.noise_families[int(rng.integers(len(cfg.noise_families)))]
    bank = banks[family]
    start = int(rng.integers(0, len(bank) - len(ref) + 1))
    snr = float(rng.uniform(*cfg.mos_snr_db))
    deg = mix_at_snr(ref, bank[start : start + len(ref)], snr, sr)[0]
    description = f"{family} noise at {snr:.1f} dB SNR"
    kind, param = "none", 0.0
    if subset == "test_mixed" or (subset in ("train", "val") and rng.random() < degraded_share):
        kind = DEGRADATIONS[1 + int(rng.integers(len(DEGRADATIONS) - 1))]
        deg, what, param = _degrade(deg, kind, sr, rng)
        description += f" + {what}"
    # Label what the file will hold: 16-bit PCM cannot go past full scale.
    deg = np.clip(deg, -1.0, 1.0)
    label = proxy_mos(deg, ref, sr)
    dims = dimension_proxies(kind, param, snr, deg, sr)
    mos = float(clamp_mos(label + rng.normal(0, cfg.label_noise_std)))
    cid = f"c{i:05d}"
    row = {
        "db": MOS_DBS[subset],
        "con": DEGRADATIONS.index(kind),
        "file": cid,
        "con_description": description,
        "filename_deg": f"{cid}.wav",
        "filename_ref": f"{cid}.wav",
        "source": "jsqa-demo synthetic speech; proxy label, not human ratings",
        "lang": "und",
        "votes": 0,
        "mos": round(mos, 4),
        "mos_std": cfg.label_noise_std,
        # Per-dimension proxies (dimension_proxies), deterministic, not ratings.
        **{k: round(dims[k], 4) for k in DIMENSION_COLUMNS},
        "filepath_deg": f"deg/{cid}.wav",
        "filepath_ref": f"ref/{cid}.wav",
        "split": "test" if subset.startswith("test") else subset,
        "talker": talker.name,
        "noise": family,
        "snr_db": round(snr, 3),
        "degradation": kind,
        # The evaluation's condition (NISQA evaluates per condition): degradation and SNR band.
        "condition": demo_condition(kind, snr),
        "proxy_mos": round(label, 4),
        "duration": round(len(ref) / sr, 4),
    }
    return deg, ref, row


# SNR bands (dB) of the demo's conditions: the MOS clips' SNR range cut in three.
CONDITION_SNR_EDGES_DB = (10.0, 25.0)


def demo_condition(kind: str, snr_db: float) -> str:
    """A demo clip's condition: its degradation and SNR band, e.g. ``mulaw8/snr10-25``."""
    lo, hi = CONDITION_SNR_EDGES_DB
    band = f"snr<{lo:g}" if snr_db < lo else (f"snr{lo:g}-{hi:g}" if snr_db < hi else f"snr>={hi:g}")
    return f"{kind}/{band}"


def _write_mos(
    root: Path,
    talkers: list[Talker],
    cfg: DemoConfig,
    seed: int,
    mos_seconds: tuple[float, float],
    degraded_share: float,
    level_dbov: float,
    pool: Executor,
) -> None:
    sr = cfg.mos_sample_rate
    by_name = {t.name: t for t in talkers}
    assignment = split_talkers([t.name for t in talkers], cfg.mos_splits, seed)
    counts = _clip_counts(cfg.mos_clips, cfg.mos_splits)
    # One long bank per family, separate from the noise files, so test noise is never a file
    # the encoder was pretrained on.
    bank_s = max(cfg.noise_seconds, 2 * mos_seconds[1])

    def bank(family: str) -> np.ndarray:
        rng = _rng(seed, _MOS_NOISE, NOISE_FAMILIES.index(family))
        return make_noise(family, bank_s, sr, rng).astype(np.float64)

    banks = dict(zip(cfg.noise_families, pool.map(bank, cfg.noise_families)))
    jobs = []
    for subset, count in counts.items():
        who = [by_name[n] for n in assignment["test" if subset.startswith("test") else subset]]
        jobs += [(subset, who)] * count

    def one(i: int) -> dict:
        subset, who = jobs[i]
        deg, ref, row = _mos_clip(
            i, subset, who, banks, cfg, seed, mos_seconds, degraded_share, level_dbov
        )
        write_audio(root / row["filepath_deg"], deg, sr)
        write_audio(root / row["filepath_ref"], ref, sr)
        return row

    table = pd.DataFrame(list(pool.map(one, range(len(jobs)))))
    write_csv(root / "NISQA_corpus_file.csv", table)
    log.info("demo MOS set: %d clips, %s", len(table), table["db"].value_counts().to_dict())


def generate_demo(
    out_dir: Path,
    cfg: DemoConfig,
    seed: int,
    sample_rate: int = 16000,
    *,
    mos_seconds: tuple[float, float] = (3.0, 6.0),
    degraded_share: float = 0.4,
    speech_level_dbov: float = -26.0,
    workers: int | None = None,
) -> DemoCorpus:
    """Write the demo corpus to ``out_dir`` (replacing it whole) and describe where it is.

    Deterministic: the same arguments give byte-identical files. The corpus is built in a
    temporary sibling directory and renamed into place, so an interrupted run leaves the
    previous corpus (or nothing) rather than a partial one. ``workers`` threads do the work
    (default: the CPU count, at most 8); their number never changes the output.
    """
    out_dir = Path(out_dir)
    _check(cfg, seed, sample_rate, mos_seconds)
    seed = int(seed)
    workers = workers or min(8, os.cpu_count() or 1)
    talkers = clean_talkers(cfg.n_talkers, seed)
    with atomic_dir(out_dir) as tmp:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the corpus is meant to be shared
        # Threads suffice: filtering, FFTs and file writes release the GIL.
        with ThreadPoolExecutor(max_workers=workers) as pool:
            _write_clean(tmp / "clean", talkers, cfg, seed, sample_rate, speech_level_dbov, pool)
            _write_noise(tmp / "noise", cfg, seed, sample_rate, pool)
            _write_mos(
                tmp / "mos", talkers, cfg, seed, mos_seconds, degraded_share, speech_level_dbov,
                pool,
            )  # fmt: skip
        write_json(
            tmp / "demo.json",
            {
                "generator": "jsqa.data.demo",
                "seed": seed,
                "sample_rate": sample_rate,
                "config": dataclasses.asdict(cfg),
                "mos_seconds": list(mos_seconds),
                "degraded_share": degraded_share,
                "speech_level_dbov": speech_level_dbov,
                "labels": "proxy_mos (fwSNRseg -> logistic) + Gaussian scatter; not human ratings",
                "proxy": {"c": MOS_C, "s": MOS_S, "bands": FW_BANDS, "frame_s": FW_FRAME_S},
            },
        )
    log.info("demo corpus written to %s", out_dir)
    return corpus_at(out_dir)


def corpus_at(out_dir: Path) -> DemoCorpus:
    """The :class:`DemoCorpus` layout under ``out_dir`` (nothing is checked or written)."""
    out_dir = Path(out_dir)
    return DemoCorpus(
        root=out_dir,
        clean_dir=out_dir / "clean",
        noise_dir=out_dir / "noise",
        mos_csv=out_dir / "mos" / "NISQA_corpus_file.csv",
    )


# --------------------------------------------------------------------------- manifests


def prepare_demo(corpus: DemoCorpus, manifest_dir: Path, root: Path = Path(".")) -> dict[str, Path]:
    """Build clean / noise / mos manifests and a quarantine list for a generated corpus.

    Returns the written paths under the keys 'clean', 'noise', 'mos' and 'quarantine'.
    Unreadable audio files are left out of the manifests and listed in quarantine.csv
    (columns path, reason; empty when every file reads). Paths are relative to ``root``.
    """
    manifest_dir = Path(manifest_dir)
    clean_files = sorted(Path(corpus.clean_dir).glob("*/*.wav"))
    noise_files = sorted(Path(corpus.noise_dir).glob("*.wav"))

    clean_rows, bad_clean = audio_rows(
        clean_files, root, extra=lambda p: {"id": p.stem, "speaker": p.parent.name}
    )
    noise_rows, bad_noise = audio_rows(
        noise_files, root, extra=lambda p: {"id": p.stem, "environment": p.stem.rsplit("-", 1)[0]}
    )
    clean = pd.DataFrame(clean_rows, columns=CLEAN_COLUMNS)
    noise = pd.DataFrame(noise_rows, columns=NOISE_COLUMNS)
    mos, bad_mos = mos_manifest_from_csv(corpus.mos_csv, root=root)

    paths = {name: manifest_dir / f"{name}.parquet" for name in ("clean", "noise", "mos")}
    paths["quarantine"] = manifest_dir / "quarantine.csv"
    write_manifest(paths["clean"], clean, "clean")
    write_manifest(paths["noise"], noise, "noise")
    write_manifest(paths["mos"], mos, "mos")
    quarantine = pd.DataFrame(bad_clean + bad_noise + bad_mos, columns=["path", "reason"])
    write_csv(paths["quarantine"], quarantine)
    log.info(
        "demo manifests: %d clean, %d noise, %d mos, %d quarantined",
        len(clean), len(noise), len(mos), len(quarantine),
    )  # fmt: skip
    return paths
