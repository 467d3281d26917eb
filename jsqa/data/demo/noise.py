"""Noise families of the demo corpus: white, pink, brown, babble (other synthetic talkers),
hum and transients."""

from __future__ import annotations

import typing
from collections.abc import Callable

import numpy as np
from scipy import signal

from jsqa.config import NoiseFamily
from jsqa.data.demo.speech import make_talker, periodic, raised_cosine_envelope, synth_utterance
from jsqa.errors import ConfigError
from jsqa.signal.levels import db_to_gain

# Fixed order: a family's random stream is keyed by its index here, not by its position in
# the config, so adding or reordering families never changes the others' audio.
# (The config's NoiseFamily choices, in that order.)
NOISE_FAMILIES: tuple[str, ...] = typing.get_args(NoiseFamily)


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
    out = periodic(np.mod(mains * t, 1.0), period)
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
            burst *= raised_cosine_envelope(length, int(0.002 * sr), 0)
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
