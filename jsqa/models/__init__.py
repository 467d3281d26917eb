"""Networks: the waveform encoder, its projection head, and the MOS regression model."""

from jsqa.models.encoder import ENCODER_SIZES, Encoder, EncoderSpec
from jsqa.models.heads import MOSHead, ProjectionHead
from jsqa.models.mos import MOSModel, load_checkpoint, save_checkpoint

__all__ = [
    "ENCODER_SIZES",
    "Encoder",
    "EncoderSpec",
    "MOSHead",
    "MOSModel",
    "ProjectionHead",
    "load_checkpoint",
    "save_checkpoint",
]
