"""Typed configuration: params.yaml is read once, at the CLI edge, into these dataclasses.

Unknown keys are errors (a typo must not silently fall back to a default), and the message
names the full dotted key and the closest valid one. Every section is validated once, when it
is built: choices by ``Literal`` annotations, ranges in the section's ``_check``; library code
takes a built config as valid and checks only what needs runtime facts (the sample rate).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml

from jsqa.errors import ConfigError

NoiseFamily = Literal["white", "pink", "brown", "babble", "hum", "transients"]
# Each Literal below is the one list of its names; the tuples are the same names at run time.
Profile = Literal["demo", "paper"]  # data profiles (docs/data.md)
PROFILES: tuple[Profile, ...] = typing.get_args(Profile)
ModelSize = Literal["small", "paper"]
Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "fp32", "bf16"]
Loss = Literal["gnll", "mse", "l1"]
Direction = Literal["higher", "lower"]
DIRECTIONS: tuple[Direction, ...] = typing.get_args(Direction)
# The established predictors jsqa.evaluation.peers implements (its PEERS checks it has exactly
# these), named here so that validating params needs no evaluation code.
PeerName = Literal["dnsmos", "distillmos", "pesq", "stoi"]
PEER_NAMES: tuple[PeerName, ...] = typing.get_args(PeerName)
# The NISQA corpus's databases (its CSV files); the paper profile uses all of them by default.
NISQA_SUBSETS: tuple[str, ...] = (
    "NISQA_TRAIN_SIM",
    "NISQA_TRAIN_LIVE",
    "NISQA_VAL_SIM",
    "NISQA_VAL_LIVE",
    "NISQA_TEST_FOR",
    "NISQA_TEST_LIVETALK",
    "NISQA_TEST_P501",
)


def _choices(tp: Any) -> tuple[Any, ...] | None:
    """The allowed values of a ``Literal`` annotation, else None."""
    return typing.get_args(tp) if typing.get_origin(tp) is Literal else None


def _check_choice(value: Any, tp: Any, key: str) -> None:
    allowed = _choices(tp)
    if allowed is not None and value not in allowed:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, allowed))}")


def _finite_range(lo: float, hi: float, strict: bool = True) -> bool:
    return math.isfinite(lo) and math.isfinite(hi) and (lo < hi if strict else lo <= hi)


@dataclass(frozen=True)
class _Section:
    """Base of every params section: validated once, when built (from params.yaml or in code).

    ``_key`` is the section's dotted place in params.yaml, so an error names the full key
    however the section was built. Choices come from ``Literal`` annotations; subclasses
    check ranges in :meth:`_check`.
    """

    _key: ClassVar[str] = ""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value, tp = getattr(self, f.name), hints[f.name]
            if typing.get_origin(tp) is tuple and typing.get_args(tp)[-1] is Ellipsis:
                for v in value:  # a tuple of choices: each one must be allowed
                    _check_choice(v, typing.get_args(tp)[0], self._where(f.name))
            else:
                _check_choice(value, tp, self._where(f.name))
        self._check()

    def _check(self) -> None:
        """Range checks of the section (none by default)."""

    def _where(self, name: str) -> str:
        return f"{self._key}.{name}" if self._key else name

    def _require(self, ok: bool, name: str, why: str) -> None:
        """Raise ConfigError naming ``<section>.<name>`` with ``why`` unless ``ok``."""
        if not ok:
            raise ConfigError(f"{self._where(name) if name else self._key}: {why}, got {self._value(name)}")

    def _value(self, name: str) -> str:
        return repr(getattr(self, name)) if name else "this section"


@dataclass(frozen=True)
class DemoConfig(_Section):
    """The synthetic demo corpus (``data.profile: demo``), generated offline."""

    _key: ClassVar[str] = "data.demo"
    n_talkers: int = 8  # synthetic talkers (at least 2: train and test talkers differ)
    utterances_per_talker: int = 12  # clean utterances written per talker
    utterance_seconds: tuple[float, float] = (2.0, 4.0)  # [low, high] length of a clean utterance
    noise_seconds: float = 20.0  # length of each noise file
    noise_families: tuple[NoiseFamily, ...] = ("white", "pink", "brown", "babble", "hum", "transients")
    noise_per_family: int = 2  # noise files per family
    mos_clips: int = 400  # degraded, MOS-labelled clips (split train/val/test by mos_splits)
    mos_sample_rate: int = 48000  # written like NISQA (48 kHz) to exercise resampling
    mos_splits: dict[str, float] = field(
        default_factory=lambda: {"train": 0.7, "val": 0.15, "test": 0.15}
    )  # shares of the MOS clips per split (train, val, test; summing to 1)
    mos_snr_db: tuple[float, float] = (-5.0, 40.0)  # [low, high] SNR of the MOS clips' noise
    label_noise_std: float = 0.15  # rater-like scatter added to the objective proxy label

    def _check(self) -> None:
        lo, hi = self.utterance_seconds
        self._require(self.n_talkers >= 2, "n_talkers", "needs at least 2 talkers (train and test)")
        self._require(self.utterances_per_talker >= 1, "utterances_per_talker", "must be >= 1")
        self._require(
            0.3 <= lo <= hi and math.isfinite(hi), "utterance_seconds", "must be [low, high] with 0.3 <= low <= high"
        )
        self._require(self.noise_seconds > 0, "noise_seconds", "must be > 0")
        self._require(len(self.noise_families) > 0, "noise_families", "needs at least one family")
        self._require(self.noise_per_family >= 1, "noise_per_family", "must be >= 1")
        self._require(self.mos_clips >= 1, "mos_clips", "must be >= 1")
        self._require(self.mos_sample_rate >= 8000, "mos_sample_rate", "must be >= 8000")
        shares = self.mos_splits
        self._require(
            set(shares) == {"train", "val", "test"} and min(shares.values()) > 0,
            "mos_splits",
            "needs positive shares for train, val and test",
        )
        self._require(math.isclose(sum(shares.values()), 1.0, abs_tol=1e-9), "mos_splits", "shares must sum to 1")
        self._require(_finite_range(*self.mos_snr_db, strict=False), "mos_snr_db", "must be [low, high], finite")
        self._require(self.label_noise_std >= 0, "label_noise_std", "must be >= 0")


# The corpora data.corpora.mirrors may point elsewhere (the ones the acquire stage downloads).
MIRRORED_CORPORA: tuple[str, ...] = ("librispeech", "demand", "musan", "nisqa")
_DIGEST_HEX = {"md5": 32, "sha256": 64}


def parse_digest(value: str) -> tuple[str, str]:
    """Split a ``data.corpora.checksums`` value into (algorithm, lower-case hex digest).

    Written ``md5:<32 hex>`` or ``sha256:<64 hex>``; a bare hex string names its algorithm by
    its length. Raises ValueError saying what is wrong.
    """
    if not isinstance(value, str):
        raise ValueError("expected md5:<32 hex> or sha256:<64 hex>")
    algorithm, sep, digest = value.strip().partition(":")
    if not sep:
        algorithm, digest = {32: "md5", 64: "sha256"}.get(len(algorithm), ""), algorithm
        if not algorithm:
            raise ValueError(f"a bare digest has 32 (md5) or 64 (sha256) hex digits, not {len(digest)}")
    algorithm = algorithm.strip().lower()
    if algorithm not in _DIGEST_HEX:
        raise ValueError(f"unknown digest '{algorithm}' (use md5:<32 hex> or sha256:<64 hex>)")
    digest = digest.strip()
    if not re.fullmatch(f"[0-9a-fA-F]{{{_DIGEST_HEX[algorithm]}}}", digest):
        raise ValueError(f"{algorithm} needs {_DIGEST_HEX[algorithm]} hex digits")
    return algorithm, digest.lower()


@dataclass(frozen=True)
class CorporaConfig(_Section):
    """Real corpora for the ``paper`` profile (see docs/data.md)."""

    _key: ClassVar[str] = "data.corpora"
    download_dir: str = "data/downloads"  # not a DVC output: tens of GB are not copied into its cache
    librispeech_subsets: tuple[str, ...] = ("train-clean-100", "train-clean-360")
    noise_sources: tuple[str, ...] = ("demand",)  # any of chime3 (licensed, local copy), demand, musan, folders
    chime3_path: str = ""  # CHiME3 folder or the LDC2017S24 archive you have
    demand_environments: tuple[str, ...] = ("TBUS", "SCAFE", "PCAFETER", "SPSQUARE", "STRAFFIC")
    noise_folders: tuple[str, ...] = ()  # your own folders of noise, for noise_sources: [folders]
    nisqa_subsets: tuple[str, ...] = NISQA_SUBSETS
    accept_nisqa_licence: bool = False  # read the NISQA licence note first (shown when false)
    user_mos_csv: str = ""  # your MOS dataset in the NISQA CSV layout, instead of NISQA
    mirrors: dict[str, str] = field(default_factory=dict)  # e.g. {librispeech: "https://us.openslr.org/resources/12"}
    # Archive file name -> its digest, md5:<hex> or sha256:<hex>; replaces the pinned checksum and size.
    checksums: dict[str, str] = field(default_factory=dict)
    keep_archives: bool = False  # false: each archive is deleted once extracted (the corpus on disk once, not twice)

    def _check(self) -> None:
        unknown = sorted(set(self.mirrors) - set(MIRRORED_CORPORA))
        self._require(
            not unknown, "mirrors", f"unknown corpus {', '.join(unknown)}; known: {', '.join(MIRRORED_CORPORA)}"
        )
        for name, value in self.checksums.items():
            try:
                parse_digest(value)
            except ValueError as exc:
                raise ConfigError(f"{self._where('checksums')}.{name}: {exc}, got {value!r}") from exc


@dataclass(frozen=True)
class DataConfig(_Section):
    _key: ClassVar[str] = "data"
    profile: Profile = "demo"  # demo: synthetic corpus generated offline; paper: real corpora below
    sample_rate: int = 16000  # everything is resampled to this on load (mono); models are trained at it
    demo: DemoConfig = field(default_factory=DemoConfig)
    corpora: CorporaConfig = field(default_factory=CorporaConfig)

    def _check(self) -> None:
        self._require(self.sample_rate > 0, "sample_rate", "must be positive")


@dataclass(frozen=True)
class ValidateConfig(_Section):
    _key: ClassVar[str] = "validate"
    min_duration_s: float = 0.5  # shorter clips are quarantined
    max_duration_s: float = 30.0  # longer clips are quarantined
    mos_range: tuple[float, float] = (1.0, 5.0)  # MOS labels outside it are quarantined
    # Per-file audio checks (validate decodes every listed file; docs/data.md).
    min_rms_dbov: float = -90.0  # below: digital silence (under the dither of 16-bit audio)
    speech_level_dbov: tuple[float, float] = (
        -60.0,
        0.0,
    )  # P.56 active level of clean and MOS files (noise is not speech)
    workers: int = 2  # decoding threads: an execution setting, the verdict is the same

    def _check(self) -> None:
        self._require(
            0 <= self.min_duration_s < self.max_duration_s and math.isfinite(self.max_duration_s),
            "min_duration_s",
            f"must be >= 0 and below validate.max_duration_s ({self.max_duration_s})",
        )
        self._require(_finite_range(*self.mos_range), "mos_range", "must be [low, high], finite, low < high")
        self._require(
            math.isfinite(self.min_rms_dbov) and self.min_rms_dbov < 0, "min_rms_dbov", "must be finite and below 0"
        )
        self._require(
            _finite_range(*self.speech_level_dbov), "speech_level_dbov", "must be [low, high], finite, low < high"
        )
        self._require(self.workers >= 1, "workers", "must be >= 1")


@dataclass(frozen=True)
class DistortionSection(_Section):
    """One ``pairs.distortions.<kind>`` section: the share of pairs (``prob``), the [low, high]
    range of the kind's parameter and, unless the kind has none, its within-one-JND step.

    Subclasses name the kind (the section's key, the recipes' ``distortion`` value and the
    transform's name in :data:`jsqa.signal.distortions.REGISTRY`, whose class binds to its
    section), which field holds the range (``param``) and the step (``step_field``; None when
    both members share the parameter), and ``shipped_prob``, the kind's share in the mix
    params.yaml ships. The checks shared by every kind run here; each kind's own bounds (bit
    depths, thresholds below the peak, a cutoff below Nyquist) are its transform's rule, checked
    when the pairs stage parses the settings (:func:`jsqa.signal.distortions.parse_specs`):
    importing the transforms here would make every stage depend on the signal code.
    """

    kind: ClassVar[str]
    param: ClassVar[str]
    step_field: ClassVar[str | None] = "step"
    shipped_prob: ClassVar[float]
    prob: float = 0.0  # share of pairs given this distortion

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._key = f"pairs.distortions.{cls.kind}"

    @classmethod
    def default_step(cls) -> float:
        """The step a section gets when params.yaml leaves it out (0: the parameter is shared)."""
        if cls.step_field is None:
            return 0.0
        return float(getattr(cls, cls.step_field))  # a dataclass field's default is a class attribute

    @property
    def param_range(self) -> tuple[float, float]:
        """The configured [low, high] of the parameter, as floats."""
        lo, hi = getattr(self, self.param)
        return float(lo), float(hi)

    @property
    def jnd_step(self) -> float:
        """The configured within-one-JND step (0 when the kind has none)."""
        return 0.0 if self.step_field is None else float(getattr(self, self.step_field))

    def _check(self) -> None:
        self._require(0.0 <= self.prob <= 1.0, "prob", "must be in [0, 1]")
        self._require(_finite_range(*self.param_range, strict=False), self.param, "range must be finite and ordered")
        if self.step_field is not None:
            step = self.jnd_step
            self._require(step >= 0 and math.isfinite(step), self.step_field, "step must be non-negative")


@dataclass(frozen=True)
class ReverbConfig(DistortionSection):
    """Room reverberation; step: RT60 ratio within 10% (jsqa/signal/distortions.py)."""

    kind, param, shipped_prob = "reverb", "rt60_s", 0.07
    rt60_s: tuple[float, float] = (0.2, 1.0)  # [low, high] RT60 in seconds
    step: float = 0.1  # within one JND: RT60 ratio within 10%
    rir_folder: str = ""  # measured room responses (.wav/.flac, relative to the data root); "": synthetic


@dataclass(frozen=True)
class LowpassConfig(DistortionSection):
    """Band-limiting; step: cutoff ratio within 5%."""

    kind, param, shipped_prob = "lowpass", "cutoff_hz", 0.06
    cutoff_hz: tuple[float, float] = (2000.0, 7000.0)  # [low, high] cutoff; high below data.sample_rate / 2
    step: float = 0.05  # within one JND: cutoff ratio within 5%


@dataclass(frozen=True)
class MulawConfig(DistortionSection):
    """Codec-like mu-law quantisation; both members share the bit depth (1 bit is audible)."""

    kind, param, step_field, shipped_prob = "mulaw", "bits", None, 0.06
    bits: tuple[int, int] = (4, 8)  # [low, high] bit depth, within [2, 16]


@dataclass(frozen=True)
class ClipConfig(DistortionSection):
    """Clipping at a threshold in dB below the peak; step: 1 dB."""

    kind, param, step_field, shipped_prob = "clip", "threshold_db", "step_db", 0.06
    threshold_db: tuple[float, float] = (-20.0, -1.0)  # [low, high] dB below the peak (< 0)
    step_db: float = 1.0  # within one JND: thresholds less than 1 dB apart


@dataclass(frozen=True)
class PacketLossConfig(DistortionSection):
    """Zeroed 20 ms frames; step: loss rate within 1 percentage point."""

    kind, param, shipped_prob = "packet_loss", "rate", 0.06
    rate: tuple[float, float] = (0.01, 0.2)  # [low, high] share of 20 ms frames zeroed (high < 1)
    step: float = 0.01  # within one JND: rates less than 1 percentage point apart

    def _check(self) -> None:
        super()._check()
        self._require(self.rate[1] < 1, "rate", "must stay below 1 (a member of silence)")


@dataclass(frozen=True)
class MnruConfig(DistortionSection):
    """ITU-T P.810 modulated noise (speech-correlated noise Q dB below the signal); step: 2 dB."""

    kind, param, step_field, shipped_prob = "mnru", "q_db", "step_db", 0.07
    q_db: tuple[float, float] = (5.0, 40.0)  # [low, high] Q in dB, within [-20, 80]
    step_db: float = 2.0  # within one JND: Qs less than 2 dB apart


@dataclass(frozen=True)
class BandpassConfig(DistortionSection):
    """Band-limited coding from a fixed 300 Hz lower edge to an upper cutoff; step: cutoff ratio within 5%."""

    kind, param, shipped_prob = "bandpass", "high_hz", 0.06
    high_hz: tuple[float, float] = (3400.0, 7000.0)  # [low, high] upper cutoff: narrow-band .. wideband
    step: float = 0.05  # within one JND: cutoff ratio within 5%


@dataclass(frozen=True)
class DistortionsConfig(_Section):
    """Per-pair distortions beyond noise; at most one per pair (probabilities sum to <= 1),
    applied to both members after mixing with one seed.

    The probabilities apply in the data profiles listed in ``profiles`` (default: the demo);
    in any other profile the pairs are additive noise only, the paper's setting
    (:meth:`for_profile` resolves this; the pairs stage passes ``data.profile``). Each family
    is off unless given a probability; :class:`PairsConfig`'s default is the shipped mix.

    Every other field is one kind's :class:`DistortionSection`, named by its kind: these fields
    are the list of kinds (:data:`DISTORTION_KINDS`), in planning order. Adding a kind is a
    section class above, a field here (last: each kind takes the next slice of the plan's
    uniform, so appending leaves the other kinds' pairs where they were) and its transform class
    in jsqa/signal/distortions.py.
    """

    _key: ClassVar[str] = "pairs.distortions"
    profiles: tuple[Profile, ...] = ("demo",)  # data profiles the probabilities apply in; elsewhere noise only
    reverb: ReverbConfig = field(default_factory=ReverbConfig)
    lowpass: LowpassConfig = field(default_factory=LowpassConfig)
    mulaw: MulawConfig = field(default_factory=MulawConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    packet_loss: PacketLossConfig = field(default_factory=PacketLossConfig)
    mnru: MnruConfig = field(default_factory=MnruConfig)
    bandpass: BandpassConfig = field(default_factory=BandpassConfig)

    def for_profile(self, profile: str) -> DistortionsConfig:
        """These settings when ``profile`` is listed in ``profiles``; else every probability 0
        (additive noise only), ranges and steps kept."""
        if profile in self.profiles:
            return self
        off: dict[str, Any] = {s.kind: dataclasses.replace(s, prob=0.0) for s in self.sections()}
        return dataclasses.replace(self, **off)

    def _check(self) -> None:
        total = sum(s.prob for s in self.sections())
        if total > 1.0 + 1e-12:
            raise ConfigError(f"{self._key}: probabilities sum to {total:g} (> 1; one distortion per pair)")

    def sections(self) -> tuple[DistortionSection, ...]:
        """Each kind's section, in planning order."""
        return tuple(getattr(self, kind) for kind in DISTORTION_KINDS)

    def settings(self) -> tuple[tuple[str, float, tuple[float, float], float], ...]:
        """(kind, prob, (low, high), step) per kind, in planning order; a kind without a step
        (mu-law: both members share the bit depth) has 0. :func:`jsqa.signal.distortions.parse_specs`
        turns these into the planner's specs."""
        return tuple((s.kind, s.prob, s.param_range, s.jnd_step) for s in self.sections())

    @property
    def steps(self) -> dict[str, float]:
        """Each kind's within-one-JND step as configured."""
        return {s.kind: s.jnd_step for s in self.sections()}

    @property
    def enabled(self) -> bool:
        """True when any distortion has a positive probability."""
        return any(s.prob > 0 for s in self.sections())


def _distortion_sections() -> dict[str, type[DistortionSection]]:
    """Kind -> section class, from :class:`DistortionsConfig`'s fields (each named by its kind)."""
    hints = typing.get_type_hints(DistortionsConfig)
    out: dict[str, type[DistortionSection]] = {}
    for f in dataclasses.fields(DistortionsConfig):
        tp = hints[f.name]
        if isinstance(tp, type) and issubclass(tp, DistortionSection):
            if tp.kind != f.name:
                raise TypeError(f"DistortionsConfig.{f.name} holds the section of kind {tp.kind!r}")
            out[f.name] = tp
    return out


# The distortion kinds, in planning order (the order of pairs.distortions in params.yaml).
DISTORTION_SECTIONS: dict[str, type[DistortionSection]] = _distortion_sections()
DISTORTION_KINDS: tuple[str, ...] = tuple(DISTORTION_SECTIONS)


def _shipped_distortions() -> DistortionsConfig:
    """The mix params.yaml ships: every family beyond noise at its ``shipped_prob`` (44% of
    pairs), in the demo profile only.

    (A family's own default is off, so a params.yaml that lists some families uses just those.)
    """
    shipped: dict[str, Any] = {kind: cls(prob=cls.shipped_prob) for kind, cls in DISTORTION_SECTIONS.items()}
    return DistortionsConfig(**shipped)


@dataclass(frozen=True)
class PairsConfig(_Section):
    _key: ClassVar[str] = "pairs"
    jnd_db: float = 3.0  # SNR just-noticeable difference (McShefferty et al. 2015)
    snr_db: tuple[float, float] = (-5.0, 40.0)  # range the first SNR of a pair is drawn from
    clean_anchor_prob: float = 0.05  # share of pairs whose first member is clean (snr = inf)
    pairs_per_utterance: int = 4  # pairs drawn per utterance, at different SNRs
    shared_segment: bool = True  # an utterance's pairs share crop and noise segment: they differ only in SNR
    segment_seconds: float = 1.0  # length of each pair member
    speech_level_dbov: float = -26.0  # active speech level clean speech is normalised to (P.56 style)
    shard_size: int = 256  # pairs per shard
    workers: int = 2  # rendering processes
    distortions: DistortionsConfig = field(default_factory=_shipped_distortions)

    def for_profile(self, profile: str) -> PairsConfig:
        """These settings with the distortions of data profile ``profile`` (:meth:`DistortionsConfig.for_profile`)."""
        return dataclasses.replace(self, distortions=self.distortions.for_profile(profile))

    def _check(self) -> None:
        self._require(self.jnd_db > 0 and math.isfinite(self.jnd_db), "jnd_db", "must be positive")
        self._require(_finite_range(*self.snr_db), "snr_db", "must be [low, high], finite, low < high")
        self._require(0.0 <= self.clean_anchor_prob <= 1.0, "clean_anchor_prob", "must be in [0, 1]")
        self._require(self.pairs_per_utterance >= 1, "pairs_per_utterance", "must be >= 1")
        self._require(
            self.segment_seconds > 0 and math.isfinite(self.segment_seconds), "segment_seconds", "must be positive"
        )
        self._require(self.shard_size >= 1, "shard_size", "must be >= 1")
        self._require(self.workers >= 1, "workers", "must be >= 1")
        self._require(
            math.isfinite(self.speech_level_dbov) and self.speech_level_dbov < 0,
            "speech_level_dbov",
            "must be below 0 dBov",
        )


@dataclass(frozen=True)
class ModelConfig(_Section):
    _key: ClassVar[str] = "model"
    size: ModelSize = "small"  # paper: CDPAM-like, 26,065,920 encoder parameters; small: for CPUs and tests
    projection_head: bool = True  # pretrain with it and fine-tune the MOS head on its output (paper ablation)


@dataclass(frozen=True)
class TrainConfig(_Section):
    """Settings both training stages (pretrain, finetune) share."""

    _key: ClassVar[str] = "train"
    # Deterministic kernels only (torch.use_deterministic_algorithms, cuDNN benchmark off, fixed
    # cuBLAS workspace): same params and seed give the same checkpoint bytes on a CPU and the
    # same metrics on one GPU, at some GPU speed (docs/determinism.md). Free on a CPU.
    deterministic: bool = True


@dataclass(frozen=True)
class PretrainConfig(_Section):
    _key: ClassVar[str] = "pretrain"
    epochs: int = 10
    batch_size: int = 32
    group_size: int = 4  # pairs of one utterance kept together in a batch (hard negatives)
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    temperature: float = 0.1  # contrastive softmax temperature
    mask_jnd_negatives: bool = True  # never push apart in-batch "negatives" within one JND of the anchor
    threads: int = 2  # CPU threads for torch
    device: Device = "auto"  # auto: GPU when visible
    precision: Precision = "auto"  # auto: bf16 autocast on GPUs that support it, else fp32
    warmup_steps: int = 0  # linear warmup before the cosine decay; 0: 5% of the total steps
    clip_norm: float = 5.0  # gradient clipping (max global L2 norm); 0: off
    checkpoint_every: int = 500  # optimizer steps between resumable checkpoints (0: only on SIGTERM/SIGINT)
    max_steps: int = 0  # stop after this many optimizer steps, the schedule decaying over them (0: all epochs)

    def _check(self) -> None:
        for name in ("epochs", "batch_size", "group_size", "threads"):
            self._require(getattr(self, name) >= 1, name, "must be >= 1")
        self._require(self.learning_rate > 0, "learning_rate", "must be > 0")
        self._require(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        self._require(self.temperature > 0, "temperature", "must be > 0")
        for name in ("warmup_steps", "clip_norm", "checkpoint_every", "max_steps"):
            self._require(getattr(self, name) >= 0, name, "must be >= 0")


@dataclass(frozen=True)
class FinetuneConfig(_Section):
    _key: ClassVar[str] = "finetune"
    # Max epochs; early stopping ends most runs well before (docs/statistics.md: the learning curves).
    epochs: int = 60
    batch_size: int = 16
    learning_rate: float = 5e-4  # MOS head
    encoder_learning_rate: float = 2e-4
    weight_decay: float = 1e-4
    dropout: float = 0.1  # in the MOS head
    loss: Loss = "gnll"  # gnll: Gaussian NLL, the model also predicts mos_std (docs/architecture.md)
    crop_seconds: float = 1.5  # training crop of each clip
    patience: int = 10  # epochs without a better validation RMSE before stopping
    threads: int = 2  # CPU threads for torch
    device: Device = "auto"  # auto: GPU when visible
    seeds: int = 3  # K models per init (seed, seed+1, ...); the first is registered and scored
    # Share of the train split used (stratified by db and MOS, drawn per seed); val/test untouched.
    label_fraction: float = 1.0
    # Also keep each run's best model within this many epochs: the equal-compute comparison. 0: off.
    equal_compute_epochs: int = 15
    # P.56 active speech level (dBov) every clip and scoring window is scaled to before the
    # encoder; recorded in the checkpoint (jsqa.signal.speech). None: input as it comes.
    input_level_dbov: float | None = -26.0
    # Random gain, uniform in +-this many dB, on each training crop (after normalisation). 0: off.
    gain_augment_db: float = 6.0
    # Rescale each predicted standard deviation by one factor fitted on the validation split
    # after training (jsqa/train/std_scaling.py), so its intervals hold what they claim.
    calibrate_std: bool = True

    def _check(self) -> None:
        for name in ("epochs", "batch_size", "patience", "threads", "seeds"):
            self._require(getattr(self, name) >= 1, name, "must be >= 1")
        self._require(0 < self.label_fraction <= 1, "label_fraction", "must be in (0, 1]")
        self._require(self.equal_compute_epochs >= 0, "equal_compute_epochs", "must be >= 0")
        # 0 is allowed: a frozen encoder (or head) is a legitimate ablation.
        for name in ("learning_rate", "encoder_learning_rate", "weight_decay"):
            self._require(getattr(self, name) >= 0, name, "must be >= 0")
        self._require(self.crop_seconds > 0, "crop_seconds", "must be > 0")
        self._require(0 <= self.dropout < 1, "dropout", "must be in [0, 1)")
        level = self.input_level_dbov
        self._require(level is None or -60 <= level <= 0, "input_level_dbov", "must be in [-60, 0] dBov or null")
        self._require(0 <= self.gain_augment_db <= 40, "gain_augment_db", "must be in [0, 40] dB")


@dataclass(frozen=True)
class EvaluateConfig(_Section):
    _key: ClassVar[str] = "evaluate"
    test_sets: tuple[str, ...] = ()  # empty: every db in the test split; else a list of db names
    bootstrap_resamples: int = 1000  # resamples of the test clips for the 95% percentile intervals
    device: Device = "auto"  # where models score (auto: GPU when visible); `jsqa evaluate --device` overrides
    # Established predictors scored on the same clips (docs/evaluation.md); [] turns them off.
    # pesq and stoi need a clean reference (ref_path) and skip rows without one.
    peers: tuple[PeerName, ...] = PEER_NAMES

    def _check(self) -> None:
        self._require(self.bootstrap_resamples >= 1, "bootstrap_resamples", "must be >= 1")


@dataclass(frozen=True)
class CalibrateConfig(_Section):
    """Held-out JND pairs that calibrate the encoder's distance (``jsqa calibrate``)."""

    _key: ClassVar[str] = "calibrate"
    pairs_per_utterance: int = 8  # held-out pairs per test-split clean reference
    max_delta_jnd: float = 2.0  # |snr_a - snr_b| drawn over [0, this * pairs.jnd_db): 2 balances same/different

    def _check(self) -> None:
        self._require(self.pairs_per_utterance >= 1, "pairs_per_utterance", "must be >= 1")
        self._require(
            self.max_delta_jnd > 1 and math.isfinite(self.max_delta_jnd),
            "max_delta_jnd",
            "must be above 1 (else no pair is beyond one JND)",
        )


@dataclass(frozen=True)
class RegisterConfig(_Section):
    _key: ClassVar[str] = "register"
    encoder_name: str = "jsqa-encoder"  # registered model name of the encoder
    mos_name: str = "jsqa-mos"  # registered model name of the MOS model
    alias: str = "champion"  # alias moved to a new version that beats the current one
    metric: str = "val_rmse"  # the validation metric compared
    min_improvement: float = 0.0  # how much better the new model must be
    direction: Direction = "lower"  # which way `metric` improves (checked against known metrics)

    def _check(self) -> None:
        self._require(self.min_improvement >= 0, "min_improvement", "must be >= 0")


@dataclass(frozen=True)
class Params(_Section):
    seed: int = 1234  # the run seed every stage derives its randomness from
    data: DataConfig = field(default_factory=DataConfig)
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    calibrate: CalibrateConfig = field(default_factory=CalibrateConfig)
    register: RegisterConfig = field(default_factory=RegisterConfig)

    def _check(self) -> None:
        self._require(self.seed >= 0, "seed", "must be a non-negative integer")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML value to the annotated type, or raise ConfigError naming the key."""
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return _build(tp, value, key + ".")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], key) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        _, vt = typing.get_args(tp)
        return {str(k): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        # Only "T | None" (YAML null for None) is used.
        args = typing.get_args(tp)
        if len(args) != 2 or type(None) not in args:
            raise ConfigError(f"{key}: unsupported union type")  # pragma: no cover - not used
        return None if value is None else _coerce(value, next(a for a in args if a is not type(None)), key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if origin is Literal:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        _check_choice(value, tp, key)
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {tp}")  # pragma: no cover


def _build(cls: type, raw: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for k in raw:
        if k not in names:
            close = difflib.get_close_matches(str(k), names, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown key '{prefix}{k}'{hint}")
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in raw.items()}
    return cls(**kwargs)


def params_from_dict(raw: dict) -> Params:
    """Build typed params from a plain mapping (keys absent take the defaults)."""
    if not isinstance(raw, dict):
        raise ConfigError("params must be a mapping at the top level")
    return _build(Params, raw)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read params.yaml into :class:`Params`; raise ConfigError naming the file and key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    try:
        return params_from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def to_flat_dict(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten a params dataclass to dotted keys (for MLflow log_params)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            out.update(to_flat_dict(v, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = v
    return out
