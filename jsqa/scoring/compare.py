"""Perceptual distance from the JND encoder, and its calibration to P(perceptibly different).

The distance between two recordings is the cosine distance ``1 - cos(z_ref, z_deg)`` between
their embeddings in the space pretraining compares: the projection head's L2-normalised
output (:class:`jsqa.models.mos.PretrainModel`; the encoder's own embedding when the checkpoint
has no projection head), averaged over the scoring windows. Both recordings are first brought
to the pairs' active speech level, as JND pairs are made. A :class:`Calibration` (a 1-D logistic
regression fitted on held-out JND pairs by ``jsqa calibrate``) maps a distance to the probability
that a listener hears the two as different (beyond one JND). A calibration marked unavailable
(``available: false``, with its ``reason``: the MOS data had no held-out references) gives the
distance alone, ``p_different`` None.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jsqa.errors import AudioError, JsqaError
from jsqa.io import read_json, write_json
from jsqa.models.encoder import EncoderSpec
from jsqa.models.mos import PretrainModel, checkpoint_sample_rate, model_sample_rate
from jsqa.scoring.limits import LIMITS, ScoringLimits, load_scoring_audio
from jsqa.scoring.windows import windowed_mean
from jsqa.signal.speech import normalise_level

CALIBRATION_FORMAT = "jsqa-jnd-calibration-v1"
DISTANCE = "cosine distance of the window-averaged, L2-normalised projection-head embeddings (pretraining's space)"


def distance_model_from_checkpoint(payload: dict) -> PretrainModel:
    """The embedding model the distance uses (eval mode): encoder plus the projection head when
    the checkpoint has one ('encoder' checkpoints from pretraining do), else the encoder alone."""
    spec = EncoderSpec(**payload["encoder"])
    state = payload["state_dict"]
    has_head = payload.get("kind") == "encoder" and any(k.startswith("projection.") for k in state)
    model = PretrainModel(spec, projection_head=has_head, sample_rate=checkpoint_sample_rate(payload))
    keep = {k: v for k, v in state.items() if k.startswith("encoder.") or (has_head and k.startswith("projection."))}
    model.load_state_dict(keep)
    return model.eval()


def model_rate(model: torch.nn.Module) -> int:
    """The input rate of a distance model (its encoder's)."""
    return model_sample_rate(model)


def level_normalise(x: np.ndarray, sample_rate: int, level_dbov: float, name: str = "audio") -> np.ndarray:
    """``x`` scaled to ``level_dbov`` active speech level; AudioError naming ``name`` when it
    holds no speech (silent, too faint or tonal: the rule MOS scoring applies, jsqa.signal.speech)."""
    try:
        return normalise_level(x, sample_rate, level_dbov)
    except AudioError as exc:
        raise AudioError(f"{name}: {exc}") from exc


def embed(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """Unit-norm embedding of one level-normalised clip at the model's rate (window mean)."""
    z = windowed_mean(model, x, model_rate(model)).numpy()
    return z / max(float(np.linalg.norm(z)), 1e-12)


def cosine_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``1 - cos`` of unit vectors, along the last axis (in [0, 2])."""
    return np.clip(1.0 - np.sum(np.asarray(a) * np.asarray(b), axis=-1), 0.0, 2.0)


@dataclass(frozen=True)
class Calibration:
    """``p_different(d) = 1 / (1 + exp(-(intercept + slope * d)))`` for a distance ``d``; slope >= 0.

    ``available`` False (``intercept``/``slope`` None): no calibration could be fitted, ``reason``
    says why; the encoder hash, JND, level and rate are still recorded.
    """

    intercept: float | None
    slope: float | None
    jnd_db: float
    speech_level_dbov: float
    sample_rate: int
    encoder_sha256: str
    distance: str = DISTANCE
    format: str = CALIBRATION_FORMAT
    available: bool = True
    reason: str | None = None

    @classmethod
    def unavailable(
        cls, reason: str, jnd_db: float, speech_level_dbov: float, sample_rate: int, encoder_sha256: str
    ) -> Calibration:
        """A calibration file that records why there is none."""
        return cls(None, None, jnd_db, speech_level_dbov, sample_rate, encoder_sha256, available=False, reason=reason)

    def p_different(self, d: float | np.ndarray) -> np.ndarray:
        """P(perceptibly different) for distances ``d`` (monotone non-decreasing)."""
        if self.intercept is None or self.slope is None:
            raise JsqaError(f"JND calibration unavailable: {self.reason}")
        z = self.intercept + self.slope * np.asarray(d, dtype=np.float64)
        return 1.0 / (1.0 + np.exp(-z))

    def threshold(self) -> float | None:
        """The distance at which ``p_different`` is 0.5 (inf when the slope is 0; None when unavailable)."""
        if self.intercept is None or self.slope is None:
            return None
        return -self.intercept / self.slope if self.slope > 0 else math.inf


def save_calibration(path: str | Path, cal: Calibration) -> None:
    """Write ``cal`` as JSON (atomic)."""
    write_json(path, asdict(cal))


def load_calibration(path: str | Path) -> Calibration:
    """Read a calibration file; JsqaError naming it when it is missing or not one."""
    path = Path(path)
    if not path.is_file():
        raise JsqaError(f"{path}: no JND calibration file (run `jsqa calibrate`)")
    try:
        raw = read_json(path)
        if raw.get("format") != CALIBRATION_FORMAT:
            raise ValueError(f"format {raw.get('format')!r}")
        cal = Calibration(**raw)
    except (ValueError, TypeError, AttributeError) as exc:
        raise JsqaError(f"{path}: not a JND calibration file ({exc})") from exc
    if not isinstance(cal.available, bool):
        raise JsqaError(f"{path}: 'available' must be true or false")
    if not cal.available:
        if cal.intercept is not None or cal.slope is not None:
            raise JsqaError(f"{path}: an unavailable calibration has no coefficients")
        return cal
    if not (
        isinstance(cal.intercept, (int, float))
        and isinstance(cal.slope, (int, float))
        and math.isfinite(cal.intercept)
        and math.isfinite(cal.slope)
        and cal.slope >= 0
    ):
        raise JsqaError(f"{path}: calibration coefficients must be finite with slope >= 0")
    return cal


def compare_waveforms(
    model: torch.nn.Module,
    ref: np.ndarray,
    deg: np.ndarray,
    cal: Calibration | None = None,
    level_dbov: float = -26.0,
) -> dict[str, Any]:
    """Distance (and, with ``cal``, ``p_different`` and ``verdict``; both None, with a ``note``,
    when ``cal`` is unavailable) of two mono clips at the model's rate, each level-normalised to
    ``cal.speech_level_dbov`` (else ``level_dbov``)."""
    sr = model_rate(model)
    level = cal.speech_level_dbov if cal is not None else level_dbov
    za = embed(model, level_normalise(ref, sr, level, "reference"))
    zb = embed(model, level_normalise(deg, sr, level, "degraded"))
    d = float(cosine_distance(za, zb))
    out: dict[str, Any] = {"distance": d}
    if cal is not None and not cal.available:
        out.update(p_different=None, verdict=None, note=f"JND calibration unavailable: {cal.reason}")
    elif cal is not None:
        p = float(cal.p_different(d))
        out.update(p_different=p, verdict="different" if p >= 0.5 else "same")
    return out


def compare_files(
    model: torch.nn.Module,
    ref: str | Path,
    deg: str | Path,
    cal: Calibration | None = None,
    limits: ScoringLimits = LIMITS,
) -> dict[str, Any]:
    """:func:`compare_waveforms` of two audio files (mono, resampled to the model's rate), each
    checked against the scoring ``limits`` before it is decoded, as `jsqa predict` does."""
    sr = model_rate(model)
    x = load_scoring_audio(ref, target_sr=sr, limits=limits)
    y = load_scoring_audio(deg, target_sr=sr, limits=limits)
    return {"ref": str(ref), "deg": str(deg), **compare_waveforms(model, x, y, cal)}


def load_distance_model(
    ref: str, calibration: str | Path | None = None, root: Path = Path(".")
) -> tuple[PretrainModel, Calibration | None, str]:
    """The distance model from a checkpoint, a logged model folder or an MLflow URI
    (``models:/jsqa-encoder@champion``), and its calibration: ``calibration`` when given, else
    the one a model folder carries, else None. Returns (model, calibration, description).

    JsqaError when the calibration was fitted on another encoder checkpoint (its sha256 differs).
    """
    import tempfile

    from jsqa.io import file_sha256
    from jsqa.models.mos import load_checkpoint
    from jsqa.scoring.model_uri import calibration_in, checkpoint_in, download_model, is_mlflow_uri

    def from_path(path: Path, described: str) -> tuple[PretrainModel, Calibration | None, str]:
        if not path.exists():
            raise JsqaError(f"{path}: no such encoder checkpoint or model folder (or use models:/NAME@alias)")
        carried = calibration_in(path) if path.is_dir() else None
        ckpt = checkpoint_in(path) if path.is_dir() else path
        model = distance_model_from_checkpoint(load_checkpoint(ckpt))
        source = calibration if calibration is not None else carried
        cal = load_calibration(source) if source is not None else None
        if cal is not None and cal.encoder_sha256 != file_sha256(ckpt):
            raise JsqaError(
                f"{source}: calibrated on another encoder checkpoint than {ckpt} "
                "(re-run `jsqa calibrate` for this encoder)"
            )
        return model, cal, described

    if is_mlflow_uri(str(ref)):
        with tempfile.TemporaryDirectory(prefix="jsqa-encoder-") as tmp:
            local, described = download_model(str(ref), Path(root), Path(tmp))
            return from_path(local, described)
    return from_path(Path(ref), f"checkpoint {ref}")
