"""Export a MOS checkpoint for use without jsqa: waveform batch [B, T] -> MOS [B].

Formats: TorchScript (always), ONNX (with the optional extra, ``pip install jsqa[onnx]``: the
``onnx`` and ``onnxscript`` packages torch's exporter needs). The exported module is the
evaluation-mode model with the MOS clamp, for mono float32 input at the checkpoint's sample rate
(16 kHz unless it records another); the ONNX graph has input ``waveform`` [B, T] with dynamic batch
and time axes and output ``mos`` [B]. Long recordings are scored by the caller in windows (as
:mod:`jsqa.scoring.windows` does: 8 s windows).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from jsqa.errors import JsqaError
from jsqa.io import atomic_path
from jsqa.models.mos import MOSModel, load_checkpoint, mos_model_from_checkpoint
from jsqa.mos_scale import clamp_mos

log = logging.getLogger(__name__)

FORMATS = ("torchscript", "onnx")
# What torch.onnx.export (the dynamo exporter) imports; installed by the ``onnx`` extra.
ONNX_PACKAGES = ("onnx", "onnxscript")
ONNX_OPSET = 18
# The exporter's own chatter (a line per optimisation pass, missing torchvision ops) at INFO/WARNING.
_ONNX_LOGGERS = ("torch.onnx", "onnxscript", "onnx_ir")


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
    if fmt == "onnx":
        _require_onnx()
    model = mos_model_from_checkpoint(load_checkpoint(checkpoint))
    wrapped = ClampedMOS(model).eval()
    if fmt == "onnx":
        _export_onnx(wrapped, model.sample_rate, checkpoint, out)
    else:
        _export_torchscript(wrapped, model.sample_rate, checkpoint, out)
    log.info("exported %s to %s (%s)", checkpoint, out, fmt)
    if model.input_level_dbov is not None:
        log.warning(
            "%s: the model expects each window scaled to %.1f dBov active speech level (ITU-T P.56) "
            "and no score for audio without speech; the exported module does neither: the caller must",
            checkpoint,
            model.input_level_dbov,
        )
    return Path(out)


def _export_torchscript(wrapped: ClampedMOS, sample_rate: int, checkpoint: Path, out: Path) -> None:
    # Tracing, not scripting: the encoder's config object is not a TorchScript type, and the
    # network has no data-dependent control flow, so a trace is exact for any [B, T]. The trace is
    # checked against the eager model at a second length.
    example = torch.zeros(2, sample_rate)  # one second
    check = (torch.randn(1, 24_321, generator=torch.Generator().manual_seed(0)) * 0.1,)
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation notice
            traced = torch.jit.trace(wrapped, example, check_inputs=[check], check_tolerance=1e-4)
    except Exception as exc:  # tracing raises several types for unsupported code
        raise JsqaError(f"{checkpoint}: cannot be exported to TorchScript ({str(exc).splitlines()[0]})") from exc
    with atomic_path(out) as tmp:
        traced.save(str(tmp))


def _require_onnx() -> None:
    """JsqaError naming the extra to install when the ONNX exporter's packages are missing."""
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise JsqaError(
            f"ONNX export needs the {' and '.join(missing)} package{'s' if len(missing) > 1 else ''}: "
            "pip install 'jsqa[onnx]'"
        )


@contextlib.contextmanager
def _quiet(names: tuple[str, ...], level: int = logging.ERROR) -> Iterator[None]:
    """Loggers ``names`` at ``level`` or above only, for the duration."""
    loggers = [logging.getLogger(name) for name in names]
    before = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(level)
    try:
        yield
    finally:
        for lg, lvl in zip(loggers, before):
            lg.setLevel(lvl)


def _export_onnx(wrapped: ClampedMOS, sample_rate: int, checkpoint: Path, out: Path) -> None:
    # torch.export traces the eval-mode graph with symbolic batch and time sizes, so one file
    # scores any [B, T]; the example's batch of 2 keeps the batch axis from being specialised.
    example = (torch.zeros(2, sample_rate),)
    dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("time")}
    try:
        with warnings.catch_warnings(), _quiet(_ONNX_LOGGERS), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's notices
            program = torch.onnx.export(
                wrapped,
                example,
                input_names=["waveform"],
                output_names=["mos"],
                dynamic_shapes=(dims,),
                opset_version=ONNX_OPSET,
                dynamo=True,
                verbose=False,
            )
    except Exception as exc:  # the exporter raises several types for unsupported code
        raise JsqaError(f"{checkpoint}: cannot be exported to ONNX ({str(exc).splitlines()[0]})") from exc
    if program is None:  # only the legacy exporter returns None
        raise JsqaError(f"{checkpoint}: the ONNX exporter returned no program")
    with atomic_path(out) as tmp:
        program.save(str(tmp), external_data=False)
