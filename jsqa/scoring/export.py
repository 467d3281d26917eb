"""Export a MOS checkpoint for use without jsqa: waveform batch [B, T] -> (MOS [B], speech found [B]).

Formats: TorchScript (always), ONNX (with the optional extra, ``pip install jsqa[onnx]``: the
``onnx`` and ``onnxscript`` packages torch's exporter needs). The exported module scores each row
of a mono float32 batch at the checkpoint's sample rate (16 kHz unless it records another) as
``jsqa predict`` scores one window: a model that records an input level scales the row to that
P.56 active speech level and gives MOS NaN, ``speech_found`` False, for a row without speech
(:class:`jsqa.scoring.export_rules.SpeechRule`); MOS is clamped to the MOS scale. The ONNX graph
has input ``waveform`` [B, T] with dynamic batch and time axes and outputs ``mos`` [B] float32
and ``speech_found`` [B] bool. A row is one window: recordings longer than
:data:`jsqa.scoring.windows.WINDOW_S` are cut by the caller into the windows of
:func:`jsqa.scoring.windows.windows` and their MOS averaged (``docs/scoring.md``).
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
from jsqa.scoring.export_rules import SpeechRule
from jsqa.scoring.windows import WINDOW_S

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


class ScoredMOS(nn.Module):
    """Waveform batch [B, T] -> (MOS [B], speech found [B]): each row scored as ``jsqa predict``
    scores one window. ``level_dbov`` None (a model without a recorded input level): rows as
    they come, every row scored."""

    def __init__(self, network: nn.Module, sample_rate: int, level_dbov: float | None) -> None:
        super().__init__()
        self.network = network
        self.normalise = level_dbov is not None
        self.rule = SpeechRule(sample_rate, -26.0 if level_dbov is None else level_dbov)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.normalise:
            return self.network(x), torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        gain, speech = self.rule(x)
        mos = self.network((x.double() * gain.unsqueeze(1)).float())
        return torch.where(speech, mos, torch.full_like(mos, float("nan"))), speech


def export_model(checkpoint: Path, out: Path, fmt: str = "torchscript") -> Path:
    """Write ``checkpoint``'s MOS model to ``out`` in ``fmt`` (atomic); returns ``out``."""
    if fmt not in FORMATS:
        raise JsqaError(f"unknown export format '{fmt}' (choose {', '.join(FORMATS)})")
    if fmt == "onnx":
        _require_onnx()
    model = mos_model_from_checkpoint(load_checkpoint(checkpoint))
    wrapped = ClampedMOS(model).eval()
    if fmt == "onnx":
        _export_onnx(ScoredMOS(wrapped, model.sample_rate, model.input_level_dbov).eval(), checkpoint, out)
    else:
        _export_torchscript(wrapped, model, checkpoint, out)
    log.info("exported %s to %s (%s)", checkpoint, out, fmt)
    if model.input_level_dbov is None:
        log.warning(
            "%s records no input level: the exported model scores rows as they come and finds speech in every row",
            checkpoint,
        )
    else:
        log.info(
            "%s: each row is scaled to %.1f dBov active speech level (ITU-T P.56); rows without speech get MOS NaN; "
            "recordings longer than %.0f s are scored in windows by the caller (docs/scoring.md)",
            checkpoint,
            model.input_level_dbov,
            WINDOW_S,
        )
    return Path(out)


def _export_torchscript(wrapped: ClampedMOS, model: MOSModel, checkpoint: Path, out: Path) -> None:
    # The network is traced, not scripted: the encoder's config object is not a TorchScript type,
    # and it has no data-dependent control flow, so a trace is exact for any [B, T] (checked against
    # the eager model at a second length). The scoring rule around it is scripted: its sizes
    # follow the input's length.
    example = torch.zeros(2, model.sample_rate)  # one second
    check = (torch.randn(1, 24_321, generator=torch.Generator().manual_seed(0)) * 0.1,)
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation notice
            traced = torch.jit.trace(wrapped, example, check_inputs=[check], check_tolerance=1e-4)
            scripted = torch.jit.script(ScoredMOS(traced, model.sample_rate, model.input_level_dbov).eval())
    except Exception as exc:  # tracing raises several types for unsupported code
        raise JsqaError(f"{checkpoint}: cannot be exported to TorchScript ({_first_line(exc)})") from exc
    with atomic_path(out) as tmp:
        scripted.save(str(tmp))


def _first_line(exc: Exception) -> str:
    """The first non-blank line of an exporter's message (some start with a blank line)."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


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


def _export_onnx(scored: ScoredMOS, checkpoint: Path, out: Path) -> None:
    # torch.export traces the eval-mode graph with symbolic batch and time sizes, so one file
    # scores any [B, T]; the example's batch of 2 keeps the batch axis from being specialised.
    example = (torch.zeros(2, int(scored.rule.sample_rate)),)
    dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("time")}
    try:
        with warnings.catch_warnings(), _quiet(_ONNX_LOGGERS), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's notices
            program = torch.onnx.export(
                scored,
                example,
                input_names=["waveform"],
                output_names=["mos", "speech_found"],
                dynamic_shapes=(dims,),
                opset_version=ONNX_OPSET,
                dynamo=True,
                verbose=False,
            )
    except Exception as exc:  # the exporter raises several types for unsupported code
        raise JsqaError(f"{checkpoint}: cannot be exported to ONNX ({_first_line(exc)})") from exc
    if program is None:  # only the legacy exporter returns None
        raise JsqaError(f"{checkpoint}: the ONNX exporter returned no program")
    with atomic_path(out) as tmp:
        program.save(str(tmp), external_data=False)
