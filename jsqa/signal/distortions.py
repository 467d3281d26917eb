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
mnru           Q in dB (ITU-T P.810) less than 2 dB apart
bandpass       upper cutoff in Hz    ratio within 5% (the lower edge is fixed at 300 Hz)
=============  ====================  =====================================================

Each kind is a transform class that validates its parameter and carries its step rule, bound
to its params section (``class Reverb(Distortion, section=ReverbConfig)``: the section of
``pairs.distortions.<kind>`` in jsqa/config.py, which names the kind and holds its default step).
Binding registers the class: :data:`REGISTRY` maps kind -> class in planning order (the order
of :data:`jsqa.config.DISTORTION_KINDS`), and importing this module fails when a configured kind
has no transform. The settings are parsed once into :class:`Spec` by :func:`parse_specs`;
:func:`within_step` is the rule. The filters (:class:`Lowpass`, :class:`Bandpass`) design their
coefficients once per sample rate: pass ``sample_rate`` to build them bound to it.
"""

from __future__ import annotations

import abc
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from jsqa.audio import load_audio
from jsqa.config import (
    DISTORTION_KINDS,
    BandpassConfig,
    ClipConfig,
    DistortionsConfig,
    DistortionSection,
    LowpassConfig,
    MnruConfig,
    MulawConfig,
    PacketLossConfig,
    ReverbConfig,
)
from jsqa.errors import AudioError, ConfigError
from jsqa.signal.levels import active_speech_level, db_to_gain

log = logging.getLogger(__name__)

NONE = "none"
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
    cls = transform(kind)
    step = cls.default_step if step is None else float(step)
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if step == 0:
        out = x == y
    elif cls.relative:
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


# Kind -> transform class, filled as the classes bind to their sections; REGISTRY orders it.
_BOUND: dict[str, type[Distortion]] = {}


class Distortion(abc.ABC):
    """A distortion with its parameter fixed, applied by calling it on a float signal.

    A subclass binds to its params section (``section=`` in the class statement), which gives
    it ``kind`` (the recipe name) and ``default_step`` and registers it; it sets the step rule:
    a ratio when ``relative`` (``abs(ln(b / a)) < ln(1 + step)``), else a difference
    (``abs(b - a) < step``); a step of 0 means both members share the parameter.
    ``integer``: the parameter takes whole values. The constructor checks the parameter
    (:meth:`check`, ConfigError naming the kind); the random parts of a call come from
    ``seed`` alone.
    """

    kind: ClassVar[str]
    default_step: ClassVar[float]
    relative: ClassVar[bool] = False
    integer: ClassVar[bool] = False
    section: ClassVar[type[DistortionSection]]

    def __init_subclass__(cls, section: type[DistortionSection] | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if section is None:
            return  # an intermediate base (or a test's ad-hoc kind): not a configured kind
        if section.kind in _BOUND:
            raise TypeError(f"distortion kind {section.kind!r} has two transforms: {_BOUND[section.kind]} and {cls}")
        cls.section, cls.kind, cls.default_step = section, section.kind, section.default_step()
        _BOUND[section.kind] = cls

    @classmethod
    @abc.abstractmethod
    def check(cls, param: float) -> None:
        """Raise ConfigError when ``param`` is outside the kind's bounds (any sample rate)."""

    @classmethod
    def from_param(cls, param: float, rir: np.ndarray | None = None, sample_rate: int | None = None) -> Distortion:
        """The transform for a recipe's float parameter (``rir``: reverb's measured response;
        ``sample_rate``: the rate the filters bind to)."""
        return cls(param)  # type: ignore[call-arg]

    @abc.abstractmethod
    def __call__(self, x: np.ndarray, sr: int, seed: int = 0) -> np.ndarray:
        """The distorted signal (float32 in, float32 out); random parts come from ``seed``."""


class Reverb(Distortion, section=ReverbConfig):
    """Convolution with a room response of ``rt60_s`` seconds, cut to the input length (the
    tail past the end is dropped, as in a fixed-length segment).

    Without ``rir`` the response is :func:`synthetic_rir` from the call's seed; with a
    measured one (the recipe's ``rir_path``, chosen by :func:`pick_rir`), that response
    reshaped to ``rt60_s`` by :func:`reshape_rir`.
    """

    relative = True

    def __init__(self, rt60_s: float, rir: np.ndarray | None = None) -> None:
        self.check(rt60_s)
        self.rt60_s, self.rir = float(rt60_s), rir

    @classmethod
    def check(cls, param: float) -> None:
        if not (param > 0 and math.isfinite(param)):
            raise ConfigError(f"reverb: RT60 must be positive, got {param}")

    @classmethod
    def from_param(cls, param: float, rir: np.ndarray | None = None, sample_rate: int | None = None) -> Reverb:
        return cls(param, rir)

    def __call__(self, x: np.ndarray, sr: int, seed: int = 0) -> np.ndarray:
        h = synthetic_rir(self.rt60_s, sr, seed) if self.rir is None else reshape_rir(self.rir, sr, self.rt60_s)
        from scipy import signal  # here, not at the top: scipy.signal costs pair workers 2 s to import

        return signal.fftconvolve(np.asarray(x, dtype=np.float64), h)[: len(x)]


class _Filter(Distortion):
    """A zero-phase Butterworth filter (forward and back) whose second-order sections are
    designed once per sample rate: in the constructor for ``sample_rate`` (then the transform is
    bound to it: calling it at another rate is an error), else on the first call at a rate.

    Subclasses check and keep their parameter, then call this constructor; they give
    :meth:`check` (with the Nyquist rule once the rate is known) and :meth:`design`.
    """

    def __init__(self, sample_rate: int | None = None) -> None:
        self.sample_rate = sample_rate
        self._sos: dict[int, np.ndarray] = {}
        if sample_rate is not None:
            self.sos(sample_rate)

    @classmethod
    def from_param(cls, param: float, rir: np.ndarray | None = None, sample_rate: int | None = None) -> _Filter:
        return cls(param, sample_rate)  # type: ignore[call-arg, arg-type]

    @classmethod
    @abc.abstractmethod
    def check(cls, param: float, sr: int | None = None) -> None:
        """Raise ConfigError when ``param`` is out of bounds (at rate ``sr`` when given)."""

    @abc.abstractmethod
    def design(self, sr: int) -> np.ndarray:
        """The filter's second-order sections at rate ``sr`` (scipy's ``sos`` layout), after
        checking the parameter at that rate (:meth:`check`)."""

    def sos(self, sr: int) -> np.ndarray:
        """The sections at rate ``sr``, designed (and the parameter checked against Nyquist) once."""
        if self.sample_rate is not None and sr != self.sample_rate:
            raise ConfigError(f"{self.kind}: built for {self.sample_rate} Hz, called at {sr} Hz")
        if sr not in self._sos:
            self._sos[sr] = self.design(sr)
        return self._sos[sr]

    def __call__(self, x: np.ndarray, sr: int | None = None, seed: int = 0) -> np.ndarray:
        if sr is None:
            if self.sample_rate is None:
                raise ConfigError(f"{self.kind}: no sample rate (pass sample_rate when building it, or sr)")
            sr = self.sample_rate
        sos = self.sos(sr)
        from scipy import signal  # lazily, as in Reverb

        x = np.asarray(x, dtype=np.float64)
        # sosfiltfilt needs a minimum length; shorter segments go through the causal filter.
        if x.size <= 3 * (2 * len(sos) + 1):
            return signal.sosfilt(sos, x)
        return signal.sosfiltfilt(sos, x)


class Lowpass(_Filter, section=LowpassConfig):
    """Band-limiting to ``cutoff_hz`` with an 8th-order Butterworth, zero phase."""

    relative = True

    def __init__(self, cutoff_hz: float, sample_rate: int | None = None) -> None:
        self.check(cutoff_hz)
        self.cutoff_hz = float(cutoff_hz)
        super().__init__(sample_rate)

    @classmethod
    def check(cls, param: float, sr: int | None = None) -> None:
        """Positive, and below Nyquist when the sample rate ``sr`` is known."""
        nyquist = math.inf if sr is None else sr / 2
        if not 0 < param < nyquist:
            raise ConfigError(f"lowpass: cutoff {param} Hz must be in (0, {nyquist})")

    def design(self, sr: int) -> np.ndarray:
        self.check(self.cutoff_hz, sr)
        from scipy import signal  # lazily, as in Reverb

        return signal.butter(8, self.cutoff_hz, btype="low", fs=sr, output="sos")


class MuLaw(Distortion, section=MulawConfig):
    """Codec-like quantisation: mu-law compand with mu = 2**bits - 1, quantise to ``bits``, expand.

    Input beyond [-1, 1] is clipped first (as a codec would). Both members of a pair share
    the bit depth (one bit is audible).
    """

    integer = True

    def __init__(self, bits: int) -> None:
        self.check(bits)
        self.bits = int(bits)

    @classmethod
    def check(cls, param: float) -> None:
        if not (math.isfinite(param) and param == int(param) and 2 <= param <= 16):
            raise ConfigError(f"mulaw: bits must be a whole number in [2, 16], got {param}")

    @classmethod
    def from_param(cls, param: float, rir: np.ndarray | None = None, sample_rate: int | None = None) -> MuLaw:
        return cls(int(round(param)))

    def __call__(self, x: np.ndarray, sr: int = 0, seed: int = 0) -> np.ndarray:
        mu = 2.0**self.bits - 1.0
        x = np.clip(np.asarray(x, dtype=np.float64), -1.0, 1.0)
        y = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
        levels = 2.0 ** (self.bits - 1)
        q = np.clip(np.round(y * levels), -levels, levels - 1) / levels
        return np.sign(q) * np.expm1(np.abs(q) * np.log1p(mu)) / mu


class Clip(Distortion, section=ClipConfig):
    """Hard clipping at ``threshold_db`` below the segment's own peak, then the active level
    restored, so the parameter means the same on loud and quiet segments."""

    def __init__(self, threshold_db: float) -> None:
        self.check(threshold_db)
        self.threshold_db = float(threshold_db)

    @classmethod
    def check(cls, param: float) -> None:
        if not param < 0:
            raise ConfigError(f"clip: threshold must be below the peak (< 0 dB), got {param}")

    def __call__(self, x: np.ndarray, sr: int, seed: int = 0) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        peak = float(np.max(np.abs(x))) if x.size else 0.0
        if peak == 0.0:
            return x.copy()
        limit = peak * db_to_gain(self.threshold_db)
        y = np.clip(x, -limit, limit)
        return y * db_to_gain(active_speech_level(x, sr) - active_speech_level(y, sr))


class PacketLoss(Distortion, section=PacketLossConfig):
    """Whole 20 ms frames zeroed (no concealment), chosen by :func:`lost_frames` from the seed:
    one seed and two rates give nested losses."""

    def __init__(self, rate: float) -> None:
        self.check(rate)
        self.rate = float(rate)

    @classmethod
    def check(cls, param: float) -> None:
        if not 0.0 <= param <= 1.0:
            raise ConfigError(f"packet_loss: rate must be in [0, 1], got {param}")

    def __call__(self, x: np.ndarray, sr: int, seed: int = 0) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        frame = max(1, int(round(PACKET_MS * sr / 1000.0)))
        n_frames = -(-x.size // frame)
        keep = ~np.repeat(lost_frames(n_frames, self.rate, seed), frame)[: x.size]
        return x * keep


class Mnru(Distortion, section=MnruConfig):
    """Modulated noise reference unit (ITU-T P.810): ``y = x * (1 + 10**(-Q/20) * N)``.

    N is white Gaussian noise of unit variance from the seed, so the speech-correlated noise
    lies ``Q`` dB below the signal (over a long signal) and one seed with two Qs gives the
    same noise, scaled. Full-band (P.810's wideband form, without its output filter).
    """

    def __init__(self, q_db: float) -> None:
        self.check(q_db)
        self.q_db = float(q_db)

    @classmethod
    def check(cls, param: float) -> None:
        if not (math.isfinite(param) and -20.0 <= param <= 80.0):
            raise ConfigError(f"mnru: Q must be in [-20, 80] dB, got {param}")

    def __call__(self, x: np.ndarray, sr: int = 0, seed: int = 0) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        n = np.random.default_rng(seed).standard_normal(x.size).reshape(x.shape)
        return x * (1.0 + db_to_gain(-self.q_db) * n)


class Bandpass(_Filter, section=BandpassConfig):
    """Band-limited coding: ``LOW_HZ`` (300 Hz, the telephone band's lower edge) to
    ``high_hz``, an 8th-order Butterworth band-pass, zero phase. ``high_hz`` 3400 is
    narrow-band telephony, 7000 wideband's upper edge."""

    relative = True
    LOW_HZ: ClassVar[float] = 300.0

    def __init__(self, high_hz: float, sample_rate: int | None = None) -> None:
        self.check(high_hz)
        self.high_hz = float(high_hz)
        super().__init__(sample_rate)

    @classmethod
    def check(cls, param: float, sr: int | None = None) -> None:
        """Above the 300 Hz lower edge, and below Nyquist when the sample rate ``sr`` is known."""
        nyquist = math.inf if sr is None else sr / 2
        if not cls.LOW_HZ < param < nyquist:
            raise ConfigError(f"bandpass: upper cutoff {param} Hz must be in ({cls.LOW_HZ:g}, {nyquist})")

    def design(self, sr: int) -> np.ndarray:
        self.check(self.high_hz, sr)
        from scipy import signal  # lazily, as in Reverb

        return signal.butter(4, [self.LOW_HZ, self.high_hz], btype="bandpass", fs=sr, output="sos")


def _registry() -> dict[str, type[Distortion]]:
    """Every configured kind's transform, in planning order; TypeError naming a kind without one."""
    missing = [kind for kind in DISTORTION_KINDS if kind not in _BOUND]
    if missing:
        raise TypeError(f"distortion kinds without a transform class: {', '.join(missing)}")
    return {kind: _BOUND[kind] for kind in DISTORTION_KINDS}


# Every distortion kind, in planning order (the order of pairs.distortions in params.yaml).
REGISTRY: dict[str, type[Distortion]] = _registry()
KINDS = tuple(REGISTRY)
DEFAULT_STEPS = {kind: cls.default_step for kind, cls in REGISTRY.items()}


def transform(kind: str) -> type[Distortion]:
    """The class of distortion ``kind``; ConfigError for an unknown one."""
    try:
        return REGISTRY[kind]
    except KeyError:
        raise ConfigError(f"distortion: unknown kind {kind!r} (one of {', '.join(KINDS)})") from None


def spec(kind: str, prob: float, low: float, high: float, step: float) -> Spec:
    """The planner's view of one configured distortion (step rule from its class)."""
    cls = transform(kind)
    return Spec(kind, prob, low, high, step, relative=cls.relative, integer=cls.integer)


def parse_specs(cfg: DistortionsConfig, sample_rate: int) -> tuple[Spec, ...]:
    """The configured distortions as the planner uses them, in planning order: parsed once, at
    the pairs stage's edge, with each kind's bounds (its class's rule) and the checks that need
    the sample rate. ConfigError names the key."""
    specs = []
    for kind, prob, (low, high), step in cfg.settings():
        for v in (low, high):
            try:
                transform(kind).check(v)
            except ConfigError as exc:
                raise ConfigError(f"pairs.distortions.{kind}: range ({low}, {high}) out of bounds ({exc})") from None
        specs.append(spec(kind, prob, low, high, step))
    check_sample_rate(specs, sample_rate)
    return tuple(specs)


def check_sample_rate(specs: Sequence[Spec], sample_rate: int) -> None:
    """The checks that need the sample rate (a filter's cutoff below Nyquist), naming the key."""
    for s in specs:
        cls = transform(s.kind)
        if issubclass(cls, _Filter):
            try:
                cls.check(s.high, sample_rate)
            except ConfigError as exc:
                raise ConfigError(
                    f"pairs.distortions.{s.kind}: range ({s.low}, {s.high}) out of bounds ({exc})"
                ) from None


def reverb(x: np.ndarray, rt60: float, sr: int, seed: int, rir: np.ndarray | None = None) -> np.ndarray:
    """:class:`Reverb` as a function."""
    return Reverb(rt60, rir)(x, sr, seed)


def lowpass(x: np.ndarray, cutoff_hz: float, sr: int) -> np.ndarray:
    """:class:`Lowpass` as a function."""
    return Lowpass(cutoff_hz, sr)(x)


def mulaw(x: np.ndarray, bits: int) -> np.ndarray:
    """:class:`MuLaw` as a function."""
    return MuLaw(bits)(x)


def clip(x: np.ndarray, threshold_db: float, sr: int) -> np.ndarray:
    """:class:`Clip` as a function."""
    return Clip(threshold_db)(x, sr)


def lost_frames(n_frames: int, rate: float, seed: int) -> np.ndarray:
    """Bool mask of lost frames: frame i is lost when its uniform from ``seed`` is below ``rate``.

    One seed and two rates give nested losses (the lower rate's frames are a subset).
    """
    PacketLoss.check(rate)
    return np.random.default_rng(seed).random(n_frames) < rate


def packet_loss(x: np.ndarray, rate: float, sr: int, seed: int) -> np.ndarray:
    """:class:`PacketLoss` as a function."""
    return PacketLoss(rate)(x, sr, seed)


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
        return np.asarray(x).astype(np.float32)
    return transform(kind).from_param(param, rir, sr)(x, sr, seed).astype(np.float32)


__all__ = [
    "DEFAULT_STEPS",
    "KINDS",
    "NONE",
    "PACKET_MS",
    "REGISTRY",
    "Bandpass",
    "Clip",
    "Distortion",
    "Lowpass",
    "Mnru",
    "MuLaw",
    "PacketLoss",
    "Reverb",
    "Spec",
    "apply",
    "check_sample_rate",
    "clip",
    "draw_params",
    "estimate_rt60",
    "list_rirs",
    "load_rir",
    "load_rirs",
    "lost_frames",
    "lowpass",
    "mulaw",
    "packet_loss",
    "pick_rir",
    "reshape_rir",
    "reverb",
    "spec",
    "synthetic_rir",
    "transform",
    "within_step",
]
