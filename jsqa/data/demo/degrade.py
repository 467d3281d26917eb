"""The non-additive degradations applied to the demo's MOS clips, on top of their noise.

They are the shared transforms of :mod:`jsqa.signal.distortions`, with severities drawn per clip.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import signal

from jsqa.errors import ConfigError
from jsqa.signal.distortions import Bandpass, Clip, Mnru, MuLaw, PacketLoss, Reverb
from jsqa.signal.levels import active_speech_level, db_to_gain, gain_to_db

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


def apply_degradation(x: np.ndarray, kind: str, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, str, float]:
    """Apply one non-additive degradation with parameters drawn from ``rng``; returns the
    signal, a description and the parameter that sets its severity (:data:`jsqa.data.demo.label.DIMENSION_PROXIES`)."""
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
        return Bandpass(high, sr)(x), f"band-pass {Bandpass.LOW_HZ:g}-{high:.0f} Hz", high
    raise ConfigError(f"degradation '{kind}' is unknown")  # pragma: no cover - internal list
