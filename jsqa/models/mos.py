"""The MOS model (encoder + regression head) and the one checkpoint format every stage shares.

A checkpoint is a plain dict of primitives and tensors, loaded with ``weights_only=True`` so a
checkpoint can never run code when opened.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from jsqa.errors import JsqaError
from jsqa.io import atomic_path
from jsqa.models.encoder import ENCODER_SIZES, Encoder, EncoderSpec
from jsqa.models.heads import MOSHead, ProjectionHead

CHECKPOINT_FORMAT = "jsqa-checkpoint-v1"
MOS_RANGE = (1.0, 5.0)


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
    """Waveform [B, T] at 16 kHz -> MOS [B].

    ``projection=True`` puts the pretraining projection head between encoder and MOS head (the
    MOS head reads its output before L2 normalisation); ``False`` regresses MOS directly on the
    encoder embedding. Comparing the two is the paper's projection-head ablation.
    """

    def __init__(
        self, spec: EncoderSpec, hidden: int = 64, dropout: float = 0.1, init_mos: float = 3.0,
        projection: bool = False,
    ) -> None:
        super().__init__()
        self.encoder = Encoder(spec)
        in_dim = spec.embedding_dim
        self.projection: ProjectionHead | None = None
        if projection:
            proj_hidden, in_dim = projection_dims(spec)
            self.projection = ProjectionHead(spec.embedding_dim, proj_hidden, in_dim)
        self.head = MOSHead(in_dim, hidden=hidden, dropout=dropout, init_mos=init_mos)
        # Checkpoints without "projection" (older ones) rebuild as projection=False.
        self.head_config = {"hidden": hidden, "dropout": dropout, "init_mos": init_mos, "projection": projection}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(x)
        if self.projection is not None:
            z = self.projection.features(z)
        return self.head(z)

    @torch.inference_mode()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Evaluation-mode prediction clamped to the MOS scale."""
        was_training = self.training
        self.eval()
        try:
            return self(x).clamp(*MOS_RANGE)
        finally:
            self.train(was_training)


def save_checkpoint(path: str | Path, kind: str, model: nn.Module, spec: EncoderSpec, **extra: Any) -> None:
    """Save ``model``'s weights with everything needed to rebuild it (atomic)."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "kind": kind,
        "encoder": spec.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **extra,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


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
    enc = Encoder(spec)
    # Both the pretraining and the MOS model keep their encoder under "encoder.".
    prefix = "encoder."
    enc.load_state_dict(
        {k[len(prefix):]: v for k, v in payload["state_dict"].items() if k.startswith(prefix)}
    )
    return enc


def mos_model_from_checkpoint(payload: dict) -> MOSModel:
    """Rebuild a MOS model (eval mode) from a 'mos' checkpoint."""
    if payload.get("kind") != "mos":
        raise JsqaError(f"expected a MOS checkpoint, got kind '{payload.get('kind')}'")
    model = MOSModel(EncoderSpec(**payload["encoder"]), **payload.get("head", {}))
    model.load_state_dict(payload["state_dict"])
    return model.eval()


class PretrainModel(nn.Module):
    """Encoder plus optional projection head, as trained contrastively."""

    def __init__(self, spec: EncoderSpec, projection_head: bool = True) -> None:
        super().__init__()
        self.encoder = Encoder(spec)
        if projection_head:
            hidden, out = projection_dims(spec)
            self.projection: nn.Module = ProjectionHead(spec.embedding_dim, hidden, out)
        else:
            self.projection = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.projection(self.encoder(x))
        return nn.functional.normalize(z, dim=-1)
