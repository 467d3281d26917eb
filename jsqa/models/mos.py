"""The MOS model (encoder + regression head) and the one checkpoint format every stage shares.

A checkpoint is a plain dict of primitives and tensors, loaded with ``weights_only=True`` so a
checkpoint can never run code when opened.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from jsqa.errors import ConfigError, JsqaError
from jsqa.io import save_torch
from jsqa.models.encoder import DEFAULT_SAMPLE_RATE, ENCODER_SIZES, Encoder, EncoderSpec
from jsqa.models.heads import MOSHead, ProjectionHead
from jsqa.mos_scale import clamp_mos

CHECKPOINT_FORMAT = "jsqa-checkpoint-v1"
# The input rate of checkpoints that do not record one (written before they did).
LEGACY_SAMPLE_RATE = DEFAULT_SAMPLE_RATE
# The output layout of checkpoints that do not record one: the mean MOS alone.
LEGACY_OUTPUTS: tuple[str, ...] = ("mos",)
STD_SUFFIX = "_std"
# Smallest predicted standard deviation (MOS units): keeps the likelihood finite.
STD_FLOOR = 0.02
# Predicted standard deviation of an untrained model.
INIT_STD = 0.5


def output_layout(dims: tuple[str, ...] | list[str] = (), gaussian: bool = True) -> tuple[str, ...]:
    """The model outputs for MOS plus ``dims``: each target, followed by its ``<target>_std``
    when ``gaussian`` (e.g. ("mos", "mos_std", "noi", "noi_std"))."""
    out: list[str] = []
    for target in ("mos", *dims):
        out += [target, target + STD_SUFFIX] if gaussian else [target]
    return tuple(out)


def is_std(name: str) -> bool:
    """Whether output ``name`` is a predicted standard deviation."""
    return name.endswith(STD_SUFFIX)


def encoder_spec(size: str) -> EncoderSpec:
    """The encoder architecture for a named size ('small' or 'paper')."""
    try:
        return ENCODER_SIZES[size]
    except KeyError as exc:
        raise JsqaError(f"unknown model size '{size}' (choose {', '.join(ENCODER_SIZES)})") from exc


def projection_dims(spec: EncoderSpec) -> tuple[int, int]:
    """(hidden, out) of the projection head: 512 -> 256 for the paper size, scaled down for small."""
    d = spec.embedding_dim
    return min(512, d), min(256, max(d // 2, 16))


class MOSModel(nn.Module):
    """Waveform [B, T] at ``sample_rate`` (16 kHz by default) -> MOS [B].

    ``outputs`` names the head's outputs (:func:`output_layout`); "mos" is first, ``*_std``
    outputs are standard deviations (softplus + :data:`STD_FLOOR`); :meth:`all_outputs` gives
    them all [B, K], ``forward`` the mean MOS only.

    ``projection=True`` puts the pretraining projection head between encoder and MOS head (the
    MOS head reads its output before L2 normalisation); ``False`` regresses MOS directly on the
    encoder embedding. Comparing the two is the paper's projection-head ablation.

    ``input_level_dbov``: scoring and training scale each window (clip) to this P.56 active
    speech level before the encoder (:mod:`jsqa.signal.speech`), and audio without speech gets
    no score; None (checkpoints without it) takes the input as it comes.
    """

    def __init__(
        self,
        spec: EncoderSpec,
        hidden: int = 64,
        dropout: float = 0.1,
        init_mos: float = 3.0,
        projection: bool = False,
        sample_rate: int = LEGACY_SAMPLE_RATE,
        outputs: tuple[str, ...] | list[str] = LEGACY_OUTPUTS,
        input_level_dbov: float | None = None,
        std_scale: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        self.encoder = Encoder(spec, sample_rate)
        # The input rate the model is trained for: saved in its checkpoint, resampled to when scoring.
        self.sample_rate = int(sample_rate)
        in_dim = spec.embedding_dim
        self.projection: ProjectionHead | None = None
        if projection:
            proj_hidden, in_dim = projection_dims(spec)
            self.projection = ProjectionHead(spec.embedding_dim, proj_hidden, in_dim)
        self.outputs = tuple(str(o) for o in outputs)
        if not self.outputs or self.outputs[0] != "mos" or len(set(self.outputs)) != len(self.outputs):
            raise JsqaError(f"model outputs must start with 'mos' and not repeat, got {self.outputs}")
        std = [is_std(o) for o in self.outputs]
        init_std = float(np.log(np.expm1(INIT_STD - STD_FLOOR)))  # softplus inverse
        self.head = MOSHead(
            in_dim,
            hidden=hidden,
            dropout=dropout,
            init_mos=init_mos,
            n_out=len(self.outputs),
            init_bias=[init_std if s else init_mos for s in std],
        )
        # Not saved: rebuilt from "outputs", so checkpoints without it load unchanged.
        self.std_mask: torch.Tensor
        self.register_buffer("std_mask", torch.tensor(std), persistent=False)
        self.has_std = any(std)
        self.std_scale_vec: torch.Tensor
        self.register_buffer("std_scale_vec", torch.ones(len(self.outputs)), persistent=False)
        # Checkpoints without "projection" (older ones) rebuild as projection=False, without
        # "outputs" as the MOS-only head.
        self.head_config: dict[str, Any] = {
            "hidden": hidden,
            "dropout": dropout,
            "init_mos": init_mos,
            "projection": projection,
            "outputs": list(self.outputs),
        }
        # Checkpoints without it (older ones) rebuild as None: no level normalisation.
        self.input_level_dbov = None if input_level_dbov is None else float(input_level_dbov)
        if self.input_level_dbov is not None:
            self.head_config["input_level_dbov"] = self.input_level_dbov
        if std_scale:
            self.set_std_scale(std_scale)

    def set_std_scale(self, scales: Mapping[str, float]) -> None:
        """Multiply the named ``*_std`` outputs by these factors (post-hoc calibration; kept in
        :attr:`head_config`, so checkpoints carry it; checkpoints without it use 1)."""
        vec = torch.ones(len(self.outputs))
        for name, s in scales.items():
            if name not in self.outputs or not is_std(name):
                raise JsqaError(f"std scale for '{name}': not a standard-deviation output of {self.outputs}")
            if not (math.isfinite(s) and s > 0):
                raise JsqaError(f"std scale for '{name}' must be a positive number, got {s}")
            vec[self.outputs.index(name)] = float(s)
        self.std_scale_vec.copy_(vec)
        if scales:
            self.head_config["std_scale"] = {k: float(v) for k, v in scales.items()}
        else:
            self.head_config.pop("std_scale", None)

    def all_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """Every output [B, K] in the order of :attr:`outputs` (unclamped)."""
        z = self.encoder(x)
        if self.projection is not None:
            z = self.projection.features(z)
        return self.head_outputs(z)

    def head_outputs(self, z: torch.Tensor) -> torch.Tensor:
        """The head's outputs [B, K] for features ``z`` (what the head reads): standard
        deviations through softplus plus :data:`STD_FLOOR`, times their calibration factor
        (:meth:`set_std_scale`), the rest as they are."""
        raw = self.head(z)
        if not self.has_std:
            return raw
        return torch.where(self.std_mask, (nn.functional.softplus(raw) + STD_FLOOR) * self.std_scale_vec, raw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.all_outputs(x)[:, 0]

    @torch.inference_mode()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Evaluation-mode prediction clamped to the MOS scale."""
        was_training = self.training
        self.eval()
        try:
            return clamp_mos(self(x))
        finally:
            self.train(was_training)


def save_checkpoint(
    path: str | Path,
    kind: str,
    model: nn.Module,
    spec: EncoderSpec,
    *,
    sample_rate: int | None = None,
    **extra: Any,
) -> None:
    """Save ``model``'s weights with everything needed to rebuild it (atomic), including the
    input ``sample_rate`` it was trained at (default: the model's own, :func:`model_sample_rate`)."""
    if sample_rate is None:
        sample_rate = model_sample_rate(model)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "kind": kind,
        "encoder": spec.to_dict(),
        "sample_rate": int(sample_rate),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **extra,
    }
    save_torch(path, payload)


def model_sample_rate(model: nn.Module) -> int:
    """The input rate of a MOS model, encoder or pretraining model (its encoder's)."""
    encoder = model if isinstance(model, Encoder) else getattr(model, "encoder", None)
    return int(getattr(model, "sample_rate", getattr(encoder, "sample_rate", LEGACY_SAMPLE_RATE)))


def checkpoint_sample_rate(payload: dict) -> int:
    """The input sample rate a checkpoint's model was trained at (16000 for older files)."""
    return int(payload.get("sample_rate", LEGACY_SAMPLE_RATE))


def check_sample_rate(model_rate: int, sample_rate: int, source: str | Path) -> None:
    """ConfigError naming both rates when ``data.sample_rate`` differs from the rate the model
    (of checkpoint or description ``source``) was trained at."""
    if int(model_rate) != int(sample_rate):
        raise ConfigError(
            f"{source}: the model was trained at {int(model_rate)} Hz but data.sample_rate is "
            f"{int(sample_rate)} Hz (set data.sample_rate to the model's rate, or retrain)"
        )


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint dict; raise JsqaError naming the file when it is not one of ours."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise JsqaError(f"{path}: checkpoint not found") from exc
    except Exception as exc:  # torch raises many types for corrupt files
        raise JsqaError(f"{path}: not a readable jsqa checkpoint ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise JsqaError(f"{path}: not a jsqa checkpoint (format {CHECKPOINT_FORMAT} expected)")
    return payload


def encoder_from_checkpoint(payload: dict) -> Encoder:
    """Rebuild the encoder from an 'encoder' or 'mos' checkpoint."""
    spec = EncoderSpec(**payload["encoder"])
    enc = Encoder(spec, checkpoint_sample_rate(payload))
    # Both the pretraining and the MOS model keep their encoder under "encoder.".
    prefix = "encoder."
    enc.load_state_dict({k[len(prefix) :]: v for k, v in payload["state_dict"].items() if k.startswith(prefix)})
    return enc


def mos_model_from_checkpoint(payload: dict) -> MOSModel:
    """Rebuild a MOS model (eval mode) from a 'mos' checkpoint."""
    if payload.get("kind") != "mos":
        raise JsqaError(f"expected a MOS checkpoint, got kind '{payload.get('kind')}'")
    model = MOSModel(
        EncoderSpec(**payload["encoder"]), **payload.get("head", {}), sample_rate=checkpoint_sample_rate(payload)
    )
    model.load_state_dict(payload["state_dict"])
    return model.eval()


class PretrainModel(nn.Module):
    """Encoder plus optional projection head, as trained contrastively."""

    def __init__(self, spec: EncoderSpec, projection_head: bool = True, sample_rate: int = LEGACY_SAMPLE_RATE) -> None:
        super().__init__()
        self.encoder = Encoder(spec, sample_rate)
        if projection_head:
            hidden, out = projection_dims(spec)
            self.projection: nn.Module = ProjectionHead(spec.embedding_dim, hidden, out)
        else:
            self.projection = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.projection(self.encoder(x))
        return nn.functional.normalize(z, dim=-1)
