"""Export a MOS checkpoint for use without jsqa: TorchScript, waveform batch [B, T] -> MOS [B].

The exported module is the evaluation-mode model with the MOS clamp, for mono input at the
checkpoint's sample rate (16 kHz unless it records another);
long recordings are scored by the caller in windows (as :mod:`jsqa.scoring.windows` does: 8 s windows).
ONNX is not offered: torch.onnx needs the ``onnx`` (and ``onnxscript``) packages, not in the stack.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from jsqa.errors import JsqaError
from jsqa.io import atomic_path
from jsqa.models.mos import MOSModel, load_checkpoint, mos_model_from_checkpoint
from jsqa.mos_scale import clamp_mos

log = logging.getLogger(__name__)

FORMATS = ("torchscript",)


class ClampedMOS(nn.Module):
    """The MOS model as scoring uses it: eval mode, output clamped to the MOS scale."""

    def __init__(self, model: MOSModel) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return clamp_mos(self.model(x))


def export_model(checkpoint: Path, out: Path, fmt: str = "torchscript") -> Path:
    """Write ``checkpoint``'s MOS model to ``out`` in ``fmt`` (atomic); returns ``out``."""
    if fmt not in FORMATS:
        raise JsqaError(f"unknown export format '{fmt}' (choose {', '.join(FORMATS)})")
    model = mos_model_from_checkpoint(load_checkpoint(checkpoint))
    wrapped = ClampedMOS(model)
    # Tracing, not scripting: the encoder's config object is not a TorchScript type, and the
    # network has no data-dependent control flow, so a trace is exact for any [B, T]. The trace is
    # checked against the eager model at a second length.
    example = torch.zeros(2, model.sample_rate)  # one second
    check = (torch.randn(1, 24_321, generator=torch.Generator().manual_seed(0)) * 0.1,)
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation notice
            traced = torch.jit.trace(wrapped, example, check_inputs=[check], check_tolerance=1e-4)
    except Exception as exc:  # tracing raises several types for unsupported code
        raise JsqaError(f"{checkpoint}: cannot be exported to TorchScript ({str(exc).splitlines()[0]})") from exc
    with atomic_path(out) as tmp:
        traced.save(str(tmp))
    log.info("exported %s to %s", checkpoint, out)
    if model.input_level_dbov is not None:
        log.warning("%s: the model expects each window scaled to %.1f dBov active speech level (ITU-T P.56) "
                    "and no score for audio without speech; the exported module does neither: the caller must",
                    checkpoint, model.input_level_dbov)
    return Path(out)
