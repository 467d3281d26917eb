"""Distortions beyond additive noise, each with a parameter and a "within one JND" step.

Every distortion is a pure function of (signal, parameter, seed, sample rate): the random
parts (a synthetic room response, which packets are lost) come from ``seed`` alone, so two
members rendered with one seed differ only by their parameters.

=============  ====================  =====================================================
kind           parameter             within one JND (project assumption, not measured)
=============  ====================  =====================================================
reverb         RT60 in seconds       ratio within 10% (``abs(ln(b / a)) < ln(1.10)``)
lowpass        cutoff in Hz          ratio within 5%, about 1/14 octave
mulaw          bit depth             none: both members use the same bit depth
clip           threshold, dB re peak less than 1 dB apart
packet_loss    loss rate (0..1)      less than 1 percentage point apart
=============  ====================  =====================================================

Steps are configurable (``pairs.distortions.<kind>``); :func:`within_step` is the rule.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from jsqa.audio import load_audio
from jsqa.errors import AudioError, ConfigError
from jsqa.signal.levels import active_speech_level

if TYPE_CHECKING:  # pair workers import this module and must not pay for the config's
    from jsqa.config import DistortionsConfig

log = logging.getLogger(__name__)

NONE = "none"
KINDS = ("reverb", "lowpass", "mulaw", "clip", "packet_loss")
PACKET_MS = 20.0
# Energy decays by 60 dB over RT60: amplitude envelope exp(-DECAY * t / rt60).
_DECAY = 3.0 * math.log(10.0)


@dataclass(frozen=True)
class Spec:
    """One enabled-or-not distortion as the planner sees it.

    ``relative``: the step is a ratio (``abs(ln(b / a)) < ln(1 + step)``); otherwise a
    difference (``abs(b - a) < step``). A step of 0 means both members share the parameter.
    ``integer``: the parameter takes whole values in ``[low, high]``.
    """

    kind: str
    prob: float
    low: float
    high: float
    step: float
    relative: bool = False
    integer: bool = False


DEFAULT_STEPS = {"reverb": 0.10, "lowpass": 0.05, "mulaw": 0.0, "clip": 1.0, "packet_loss": 0.01}
_RELATIVE = {"reverb", "lowpass"}


def specs(cfg: DistortionsConfig) -> list[Spec]:
    """The distortions of ``cfg`` in planning order (:data:`KINDS`)."""
    return [
        Spec("reverb", cfg.reverb.prob, *cfg.reverb.rt60_s, cfg.reverb.step, relative=True),
        Spec("lowpass", cfg.lowpass.prob, *cfg.lowpass.cutoff_hz, cfg.lowpass.step, relative=True),
        Spec("mulaw", cfg.mulaw.prob, float(cfg.mulaw.bits[0]), float(cfg.mulaw.bits[1]), 0.0, integer=True),
        Spec("clip", cfg.clip.prob, *cfg.clip.threshold_db, cfg.clip.step_db),
        Spec("packet_loss", cfg.packet_loss.prob, *cfg.packet_loss.rate, cfg.packet_loss.step),
    ]


def enabled(cfg: DistortionsConfig) -> bool:
    """True when any distortion has a positive probability."""
    return any(s.prob > 0 for s in specs(cfg))


def check_specs(cfg: DistortionsConfig, sample_rate: int) -> list[Spec]:
    """Validate ``cfg`` (probabilities, ranges, steps) and return its specs."""
    out = specs(cfg)
    total = 0.0
    for s in out:
        key = f"pairs.distortions.{s.kind}"
        if not 0.0 <= s.prob <= 1.0:
            raise ConfigError(f"{key}.prob: must be in [0, 1], got {s.prob}")
        total += s.prob
        if not (math.isfinite(s.low) and math.isfinite(s.high) and s.low <= s.high):
            raise ConfigError(f"{key}: range must be finite and ordered, got ({s.low}, {s.high})")
        if not (s.step >= 0 and math.isfinite(s.step)):
            raise ConfigError(f"{key}: step must be non-negative, got {s.step}")
        ok = {
            "reverb": s.low > 0,
            "lowpass": s.low > 0 and s.high < sample_rate / 2,
            "mulaw": s.low >= 2 and s.high <= 16,
            "clip": s.high < 0,
            "packet_loss": s.low >= 0 and s.high < 1,
        }[s.kind]
        if not ok:
            raise ConfigError(f"{key}: range ({s.low}, {s.high}) out of bounds for {s.kind}")
    if total > 1.0 + 1e-12:
        raise ConfigError(f"pairs.distortions: probabilities sum to {total:g} (> 1; one distortion per pair)")
    return out


def within_step(
    kind: str, a: float | np.ndarray, b: float | np.ndarray, step: float | None = None
) -> bool | np.ndarray:
    """True where two parameters of ``kind`` are less than one JND step apart.

    ``step`` defaults to :data:`DEFAULT_STEPS`; a step of 0 accepts only equal values.
    ``"none"`` pairs are always within. Elementwise on arrays, a bool on scalars.
    """
    if kind == NONE:
        out = np.ones(np.broadcast_shapes(np.shape(a), np.shape(b)), dtype=bool)
        return bool(out) if out.ndim == 0 else out
    if kind not in DEFAULT_STEPS:
        raise ConfigError(f"distortion: unknown kind {kind!r} (one of {', '.join(KINDS)})")
    step = DEFAULT_STEPS[kind] if step is None else float(step)
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if step == 0:
        out = x == y
    elif kind in _RELATIVE:
        with np.errstate(divide="ignore", invalid="ignore"):
            out = (x > 0) & (y > 0) & (np.abs(np.log(y / x)) < math.log1p(step))
    else:
        out = np.abs(x - y) < step
    return bool(out) if out.ndim == 0 else out


def draw_params(spec: Spec, u_param: np.ndarray, u_step: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Member a's parameter and member b's within-step neighbour, from two uniform arrays.

    a is uniform in ``[low, high]`` (whole values when integer); b = a moved by less than one
    step (ratio or difference), kept inside the range. Steps that land on the boundary of
    the rule by rounding are halved (deterministic).
    """
    if spec.integer:
        a = np.minimum(np.floor(spec.low + u_param * (spec.high - spec.low + 1)), spec.high)
    else:
        a = spec.low + u_param * (spec.high - spec.low)
    t = 2.0 * u_step - 1.0
    if spec.step == 0:
        return a, a.copy()
    b = a * np.exp(math.log1p(spec.step) * t) if spec.relative else a + spec.step * t
    b = np.clip(b, spec.low, spec.high)
    bad = ~within_step(spec.kind, a, b, spec.step)
    while np.any(bad):
        b = np.where(bad, a + 0.5 * (b - a), b)
        bad = ~within_step(spec.kind, a, b, spec.step)
    return a, b


# ---------------------------------------------------------------- the distortions


def synthetic_rir(rt60: float, sr: int, seed: int) -> np.ndarray:
    """Unit-energy room response: a direct path plus Gaussian noise decaying 60 dB in ``rt60``.

    One seed gives the same noise for any RT60 (the draws are a prefix of one stream), so
    two RT60s differ only in the decay.
    """
    if not (rt60 > 0 and math.isfinite(rt60)):
        raise ConfigError(f"reverb: RT60 must be positive, got {rt60}")
    n = max(2, int(math.ceil(rt60 * sr)))
    t = np.arange(n) / sr
    h = np.random.default_rng(seed).standard_normal(n) * np.exp(-_DECAY * t / rt60)
    h[0] = 1.0
    return h / np.sqrt(np.sum(h**2))


def estimate_rt60(rir: np.ndarray, sr: int) -> float:
    """RT60 from the Schroeder decay curve between -5 and -25 dB (T20, times 3)."""
    e = np.cumsum((np.asarray(rir, dtype=np.float64) ** 2)[::-1])[::-1]
    if e[0] <= 0:
        raise AudioError("estimate_rt60: room response has zero energy")
    with np.errstate(divide="ignore"):
        db = 10.0 * np.log10(e / e[0])
    i5, i25 = np.argmax(db <= -5.0), np.argmax(db <= -25.0)
    if db[-1] > -25.0 or i25 <= i5:
        raise AudioError("estimate_rt60: room response decays less than 25 dB")
    return 3.0 * (i25 - i5) / sr


def reshape_rir(rir: np.ndarray, sr: int, rt60: float) -> np.ndarray:
    """Change a measured response's decay to ``rt60`` (multiplying by an exponential), unit energy."""
    h = np.asarray(rir, dtype=np.float64)
    t = np.arange(h.size) / sr
    h = h * np.exp(-_DECAY * t * (1.0 / rt60 - 1.0 / estimate_rt60(h, sr)))
    return h / np.sqrt(np.sum(h**2))


def list_rirs(folder: str | Path) -> list[Path]:
    """Every .wav/.flac room response under ``folder``, sorted by path; ConfigError if none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"pairs.distortions.reverb.rir_folder: {folder} is not a folder")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in (".wav", ".flac"))
    if not paths:
        raise ConfigError(f"pairs.distortions.reverb.rir_folder: no .wav or .flac room responses in {folder}")
    return paths


def load_rir(path: str | Path, sr: int) -> np.ndarray:
    """One measured room response, mono at ``sr``, checked usable (it decays by 25 dB).

    Raises AudioError naming the file when it is unreadable or does not decay.
    """
    h = load_audio(path, sr)[0].astype(np.float64)
    try:
        estimate_rt60(h, sr)
    except AudioError as exc:
        raise AudioError(f"{path}: not a usable room response ({exc})") from exc
    return h


def load_rirs(folder: str | Path, sr: int) -> list[np.ndarray]:
    """Every room response of :func:`list_rirs`, loaded by :func:`load_rir`."""
    return [load_rir(p, sr) for p in list_rirs(folder)]


def pick_rir(dist_seed: np.ndarray, n_rirs: int) -> np.ndarray:
    """Index of the measured response a reverb pair uses: its distortion seed modulo the count."""
    return np.asarray(dist_seed, dtype=np.int64) % int(n_rirs)


def reverb(x: np.ndarray, rt60: float, sr: int, seed: int, rir: np.ndarray | None = None) -> np.ndarray:
    """Convolve with a room response of ``rt60`` s, cut to the input length (the tail past
    the end is dropped, as in a fixed-length segment).

    Without ``rir`` the response is :func:`synthetic_rir`; with a measured one (the recipe's
    ``rir_path``, chosen by :func:`pick_rir`), that response reshaped to ``rt60`` by
    :func:`reshape_rir`.
    """
    h = synthetic_rir(rt60, sr, seed) if rir is None else reshape_rir(rir, sr, rt60)
    from scipy import signal  # here, not at the top: scipy.signal costs pair workers 2 s to import

    return signal.fftconvolve(np.asarray(x, dtype=np.float64), h)[: len(x)]


def lowpass(x: np.ndarray, cutoff_hz: float, sr: int) -> np.ndarray:
    """Band-limit to ``cutoff_hz`` with an 8th-order Butterworth, zero phase."""
    if not 0 < cutoff_hz < sr / 2:
        raise ConfigError(f"lowpass: cutoff {cutoff_hz} Hz must be in (0, {sr / 2})")
    from scipy import signal  # lazily, as in reverb()

    sos = signal.butter(8, cutoff_hz, btype="low", fs=sr, output="sos")
    x = np.asarray(x, dtype=np.float64)
    # sosfiltfilt needs a minimum length; shorter segments go through the causal filter.
    if x.size <= 3 * (2 * len(sos) + 1):
        return signal.sosfilt(sos, x)
    return signal.sosfiltfilt(sos, x)


def mulaw(x: np.ndarray, bits: int) -> np.ndarray:
    """Codec-like quantisation: mu-law compand with mu = 2**bits - 1, quantise to ``bits``, expand.

    Input beyond [-1, 1] is clipped first (as a codec would).
    """
    bits = int(bits)
    if not 2 <= bits <= 16:
        raise ConfigError(f"mulaw: bits must be in [2, 16], got {bits}")
    mu = 2.0**bits - 1.0
    x = np.clip(np.asarray(x, dtype=np.float64), -1.0, 1.0)
    y = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    levels = 2.0 ** (bits - 1)
    q = np.clip(np.round(y * levels), -levels, levels - 1) / levels
    return np.sign(q) * np.expm1(np.abs(q) * np.log1p(mu)) / mu


def clip(x: np.ndarray, threshold_db: float, sr: int) -> np.ndarray:
    """Hard-clip at ``threshold_db`` below the peak, then restore the active level.

    The threshold is a fraction of the segment's own peak (``10 ** (threshold_db / 20)``), so
    the parameter means the same on loud and quiet segments.
    """
    if not threshold_db < 0:
        raise ConfigError(f"clip: threshold must be below the peak (< 0 dB), got {threshold_db}")
    x = np.asarray(x, dtype=np.float64)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak == 0.0:
        return x.copy()
    limit = peak * 10.0 ** (threshold_db / 20.0)
    y = np.clip(x, -limit, limit)
    gain_db = active_speech_level(x, sr) - active_speech_level(y, sr)
    return y * 10.0 ** (gain_db / 20.0)


def lost_frames(n_frames: int, rate: float, seed: int) -> np.ndarray:
    """Bool mask of lost frames: frame i is lost when its uniform from ``seed`` is below ``rate``.

    One seed and two rates give nested losses (the lower rate's frames are a subset).
    """
    if not 0.0 <= rate <= 1.0:
        raise ConfigError(f"packet_loss: rate must be in [0, 1], got {rate}")
    return np.random.default_rng(seed).random(n_frames) < rate


def packet_loss(x: np.ndarray, rate: float, sr: int, seed: int) -> np.ndarray:
    """Zero whole 20 ms frames chosen by :func:`lost_frames` (no concealment)."""
    x = np.asarray(x, dtype=np.float64)
    frame = max(1, int(round(PACKET_MS * sr / 1000.0)))
    n_frames = -(-x.size // frame)
    keep = ~np.repeat(lost_frames(n_frames, rate, seed), frame)[: x.size]
    return x * keep


def apply(
    kind: str,
    x: np.ndarray,
    param: float,
    sr: int,
    seed: int,
    rir: np.ndarray | None = None,
) -> np.ndarray:
    """Apply distortion ``kind`` with ``param`` (units: module table); float32 out.

    ``rir``: a measured room response for reverb (synthetic from ``seed`` when None)."""
    if kind == NONE:
        y = np.asarray(x)
    elif kind == "reverb":
        y = reverb(x, param, sr, seed, rir)
    elif kind == "lowpass":
        y = lowpass(x, param, sr)
    elif kind == "mulaw":
        y = mulaw(x, int(round(param)))
    elif kind == "clip":
        y = clip(x, param, sr)
    elif kind == "packet_loss":
        y = packet_loss(x, param, sr, seed)
    else:
        raise ConfigError(f"distortion: unknown kind {kind!r} (one of {', '.join(KINDS)})")
    return y.astype(np.float32)


__all__ = [
    "DEFAULT_STEPS",
    "KINDS",
    "NONE",
    "PACKET_MS",
    "Spec",
    "apply",
    "check_specs",
    "clip",
    "draw_params",
    "enabled",
    "estimate_rt60",
    "list_rirs",
    "load_rir",
    "load_rirs",
    "pick_rir",
    "lost_frames",
    "lowpass",
    "mulaw",
    "packet_loss",
    "reshape_rir",
    "reverb",
    "specs",
    "synthetic_rir",
    "within_step",
]
