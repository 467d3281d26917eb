"""Typed configuration: params.yaml is read once, at the CLI edge, into these dataclasses.

Unknown keys are errors (a typo must not silently fall back to a default), and the message
names the full dotted key and the closest valid one.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from jsqa.errors import ConfigError


@dataclass(frozen=True)
class DemoConfig:
    n_talkers: int = 8
    utterances_per_talker: int = 12
    utterance_seconds: tuple[float, float] = (2.0, 4.0)
    noise_seconds: float = 20.0
    noise_families: tuple[str, ...] = ("white", "pink", "brown", "babble", "hum", "transients")
    noise_per_family: int = 2
    mos_clips: int = 400
    mos_sample_rate: int = 48000
    mos_splits: dict[str, float] = field(
        default_factory=lambda: {"train": 0.7, "val": 0.15, "test": 0.15}
    )
    mos_snr_db: tuple[float, float] = (-5.0, 40.0)
    label_noise_std: float = 0.15


@dataclass(frozen=True)
class CorporaConfig:
    """Real corpora for the ``paper`` profile (see docs/data.md)."""

    download_dir: str = "data/downloads"
    librispeech_subsets: tuple[str, ...] = ("train-clean-100", "train-clean-360")
    noise_sources: tuple[str, ...] = ("demand",)
    chime3_path: str = ""
    demand_environments: tuple[str, ...] = ("TBUS", "SCAFE", "PCAFETER", "SPSQUARE", "STRAFFIC")
    noise_folders: tuple[str, ...] = ()
    nisqa_subsets: tuple[str, ...] = (
        "NISQA_TRAIN_SIM", "NISQA_TRAIN_LIVE", "NISQA_VAL_SIM", "NISQA_VAL_LIVE",
        "NISQA_TEST_FOR", "NISQA_TEST_LIVETALK", "NISQA_TEST_P501",
    )
    accept_nisqa_licence: bool = False
    user_mos_csv: str = ""
    mirrors: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DataConfig:
    profile: str = "demo"
    sample_rate: int = 16000
    demo: DemoConfig = field(default_factory=DemoConfig)
    corpora: CorporaConfig = field(default_factory=CorporaConfig)


@dataclass(frozen=True)
class ValidateConfig:
    min_duration_s: float = 0.5
    max_duration_s: float = 30.0
    mos_range: tuple[float, float] = (1.0, 5.0)
    # Per-file audio checks (validate decodes every listed file; docs/data.md). A file whose
    # RMS level is below min_rms_dbov is digital silence (-90 dBov: under the dither of 16-bit
    # audio); clean and MOS files need a P.56 active speech level within speech_level_dbov
    # (noise is not speech). workers: decoding threads, an execution setting (same verdict).
    min_rms_dbov: float = -90.0
    speech_level_dbov: tuple[float, float] = (-60.0, 0.0)
    workers: int = 2


@dataclass(frozen=True)
class ReverbConfig:
    """Room reverberation; step: RT60 ratio within 10% (jsqa/distortions.py).

    rir_folder: measured room responses (.wav/.flac, relative to the data root) reshaped to
    the drawn RT60; empty: synthetic responses.
    """

    prob: float = 0.0
    rt60_s: tuple[float, float] = (0.2, 1.0)
    step: float = 0.1
    rir_folder: str = ""


@dataclass(frozen=True)
class LowpassConfig:
    """Band-limiting; step: cutoff ratio within 5%."""

    prob: float = 0.0
    cutoff_hz: tuple[float, float] = (2000.0, 7000.0)
    step: float = 0.05


@dataclass(frozen=True)
class MulawConfig:
    """Codec-like mu-law quantisation; both members share the bit depth (1 bit is audible)."""

    prob: float = 0.0
    bits: tuple[int, int] = (4, 8)


@dataclass(frozen=True)
class ClipConfig:
    """Clipping at a threshold in dB below the peak; step: 1 dB."""

    prob: float = 0.0
    threshold_db: tuple[float, float] = (-20.0, -1.0)
    step_db: float = 1.0


@dataclass(frozen=True)
class PacketLossConfig:
    """Zeroed 20 ms frames; step: loss rate within 1 percentage point."""

    prob: float = 0.0
    rate: tuple[float, float] = (0.01, 0.2)
    step: float = 0.01


@dataclass(frozen=True)
class DistortionsConfig:
    """Per-pair distortions beyond noise; at most one per pair, all off by default."""

    reverb: ReverbConfig = field(default_factory=ReverbConfig)
    lowpass: LowpassConfig = field(default_factory=LowpassConfig)
    mulaw: MulawConfig = field(default_factory=MulawConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    packet_loss: PacketLossConfig = field(default_factory=PacketLossConfig)


@dataclass(frozen=True)
class PairsConfig:
    jnd_db: float = 3.0
    snr_db: tuple[float, float] = (-5.0, 40.0)
    clean_anchor_prob: float = 0.05
    pairs_per_utterance: int = 4
    shared_segment: bool = True
    segment_seconds: float = 1.0
    speech_level_dbov: float = -26.0
    shard_size: int = 256
    workers: int = 2
    distortions: DistortionsConfig = field(default_factory=DistortionsConfig)


@dataclass(frozen=True)
class ModelConfig:
    size: str = "small"
    projection_head: bool = True


@dataclass(frozen=True)
class PretrainConfig:
    epochs: int = 10
    batch_size: int = 32
    group_size: int = 4
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    temperature: float = 0.1
    mask_jnd_negatives: bool = True
    threads: int = 2
    device: str = "auto"
    precision: str = "auto"
    warmup_steps: int = 0
    clip_norm: float = 5.0
    checkpoint_every: int = 500


@dataclass(frozen=True)
class FinetuneConfig:
    epochs: int = 15
    batch_size: int = 16
    learning_rate: float = 5e-4
    encoder_learning_rate: float = 2e-4
    weight_decay: float = 1e-4
    dropout: float = 0.1
    loss: str = "mse"
    crop_seconds: float = 1.5
    patience: int = 5
    threads: int = 2
    device: str = "auto"
    seeds: int = 3


@dataclass(frozen=True)
class EvaluateConfig:
    test_sets: tuple[str, ...] = ()
    bootstrap_resamples: int = 1000


@dataclass(frozen=True)
class RegisterConfig:
    encoder_name: str = "jsqa-encoder"
    mos_name: str = "jsqa-mos"
    alias: str = "champion"
    metric: str = "val_rmse"
    min_improvement: float = 0.0
    direction: str = "lower"


@dataclass(frozen=True)
class Params:
    seed: int = 1234
    data: DataConfig = field(default_factory=DataConfig)
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    register: RegisterConfig = field(default_factory=RegisterConfig)


_CHOICES = {
    "data.profile": ("demo", "paper"),
    "model.size": ("small", "paper"),
    "finetune.loss": ("mse", "l1"),
    "pretrain.device": ("auto", "cpu", "cuda"),
    "pretrain.precision": ("auto", "fp32", "bf16"),
    "finetune.device": ("auto", "cpu", "cuda"),
    "register.direction": ("higher", "lower"),
}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML value to the annotated type, or raise ConfigError naming the key."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
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
        raise ConfigError(f"{key}: unsupported union type")  # pragma: no cover - not used
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
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        choices = _CHOICES.get(key)
        if choices and value not in choices:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(choices)}")
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
