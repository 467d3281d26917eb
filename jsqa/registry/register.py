"""The MLflow model registry: log the encoder and MOS model as pyfunc models, register a new
version of each, and move the champion alias only when the candidate beats the champion.

Security: nothing here is pickled. Both models are logged as MLflow "models from code" (the
wrappers in :mod:`jsqa.scoring.serving`, entry files in ``jsqa/scoring/pyfunc_code/``); the weights travel as a
plain checkpoint artifact opened with ``torch.load(weights_only=True)``. See docs/security.md.
"""

from __future__ import annotations

import base64
import io
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import pandas as pd
import soundfile as sf
from mlflow.entities.model_registry import ModelVersion
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient

import jsqa
from jsqa import tracking
from jsqa.config import DIRECTIONS
from jsqa.data.demo.speech import make_talker, synth_utterance
from jsqa.errors import ConfigError, JsqaError
from jsqa.evaluation.metrics import LOWER_IS_BETTER
from jsqa.io import file_sha256
from jsqa.models.mos import checkpoint_sample_rate, encoder_from_checkpoint, load_checkpoint
from jsqa.registry.champion import champion_version, promote
from jsqa.registry.model_card import encoder_card, model_card
from jsqa.registry.provenance import provenance_tags
from jsqa.scoring.compare import Calibration, load_calibration
from jsqa.scoring.limits import training_note
from jsqa.scoring.model_uri import CALIBRATION_ARTIFACT, CHECKPOINT_ARTIFACT
from jsqa.scoring.serving import ENCODER_MODEL_CODE, MOS_MODEL_CODE, input_schema, output_schema

if TYPE_CHECKING:
    from jsqa.config import RegisterConfig

log = logging.getLogger(__name__)

ENCODER_MODEL_NAME = "encoder"
MOS_MODEL_NAME = "mos"

# Metric differences this small are rounding, not a change.
_TOLERANCE = 1e-9
# Version tags holding the sha256 of the checkpoint files a version was logged from.
MOS_SHA_TAG = "mos_checkpoint_sha256"
ENCODER_SHA_TAG = "encoder_checkpoint_sha256"
# The input example logged with each model: a synthetic utterance at the level scoring brings
# speech to, sent as an encoded WAV; speech the models accept (a tone is refused as no speech).
EXAMPLE_SECONDS = 2.0
EXAMPLE_LEVEL_DBOV = -26.0
EXAMPLE_SEED = 20240601


# ---------------------------------------------------------------------------------------------
# logging and registering


def _pip_requirements() -> list[str]:
    """Only what the pyfunc imports at load time, pinned to the versions that logged it."""
    import importlib.metadata as md

    reqs = []
    for dist in ("mlflow", "torch", "torchaudio", "numpy", "pandas", "soundfile", "pyyaml"):
        try:
            reqs.append(f"{dist}=={md.version(dist)}")
        except md.PackageNotFoundError:
            reqs.append(dist)
    return reqs


def input_example(sample_rate: int, seconds: float = EXAMPLE_SECONDS) -> pd.DataFrame:
    """A one-row request: ``audio_base64`` of a 16-bit WAV of one synthetic demo utterance
    (:func:`jsqa.data.demo.speech.synth_utterance`, :data:`EXAMPLE_LEVEL_DBOV` active level) at
    ``sample_rate``; the same bytes every time."""
    rng = np.random.default_rng(EXAMPLE_SEED)
    x = synth_utterance(make_talker("example", rng), seconds, sample_rate, rng, level_dbov=EXAMPLE_LEVEL_DBOV)
    buffer = io.BytesIO()
    sf.write(buffer, x, sample_rate, format="WAV", subtype="PCM_16")
    return pd.DataFrame({"audio_base64": [base64.b64encode(buffer.getvalue()).decode("ascii")]})


def log_models(encoder_ckpt: Path, mos_ckpt: Path, calibration: Path | None = None) -> dict[str, str]:
    """Log both checkpoints as pyfunc models in the active run; return {"encoder", "mos"} URIs.

    ``calibration`` (the ``jsqa calibrate`` file) goes with the encoder, which then serves
    ``p_different`` for rows with a reference."""
    if mlflow.active_run() is None:
        raise JsqaError("log_models needs an active MLflow run (use tracking.stage_run)")
    code = [str(Path(jsqa.__file__).resolve().parent)]
    reqs = _pip_requirements()
    encoder_dim = encoder_from_checkpoint(load_checkpoint(encoder_ckpt)).embedding_dim
    mos_payload = load_checkpoint(mos_ckpt)
    example = input_example(checkpoint_sample_rate(mos_payload))
    # mos, then mos_std and quality dimensions when the model predicts them (older checkpoints: mos).
    mos_outputs = list((mos_payload.get("head") or {}).get("outputs") or ["mos"])
    note = training_note(mos_payload) is not None
    specs = {
        ENCODER_MODEL_NAME: (ENCODER_MODEL_CODE, encoder_ckpt, output_schema(f"e{i}" for i in range(encoder_dim))),
        MOS_MODEL_NAME: (MOS_MODEL_CODE, mos_ckpt, output_schema(mos_outputs, note=note)),
    }
    extra_artifacts = {ENCODER_MODEL_NAME: _calibration_artifact(encoder_ckpt, calibration)}
    uris: dict[str, str] = {}
    for name, (wrapper, ckpt, outputs) in specs.items():
        # The example is scored once at logging time: a model that cannot serve it fails here.
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=wrapper,
            artifacts={CHECKPOINT_ARTIFACT: str(Path(ckpt).resolve()), **extra_artifacts.get(name, {})},
            code_paths=code,
            pip_requirements=reqs,
            signature=ModelSignature(inputs=input_schema(reference=name == ENCODER_MODEL_NAME), outputs=outputs),
            input_example=example,
        )
        uris[name] = info.model_uri
        log.info("logged %s model from %s as %s", name, ckpt, info.model_uri)
    return uris


def _calibration_artifact(encoder_ckpt: Path, calibration: Path | None) -> dict[str, str]:
    """``{CALIBRATION_ARTIFACT: path}`` for the encoder, empty without a calibration file;
    JsqaError when the file was fitted on another encoder checkpoint."""
    if calibration is None:
        return {}
    cal = load_calibration(calibration)
    if cal.encoder_sha256 != file_sha256(encoder_ckpt):
        raise JsqaError(
            f"{calibration}: calibrated on another encoder checkpoint than {encoder_ckpt} (re-run `jsqa calibrate`)"
        )
    if not cal.available:
        log.warning(
            "%s: JND calibration unavailable (%s); the encoder serves p_different as null", calibration, cal.reason
        )
    return {CALIBRATION_ARTIFACT: str(Path(calibration).resolve())}


def higher_is_better(metric: str) -> bool:
    """Direction of a validation metric; ConfigError for a name we cannot tell."""
    base = metric
    for prefix in ("val_", "test_", "eval_"):
        if base.startswith(prefix):
            base = base[len(prefix) :]
            break
    if base not in LOWER_IS_BETTER:
        raise ConfigError(f"register.metric: unknown metric '{metric}' (use e.g. val_rmse, val_pcc, val_srcc)")
    return not LOWER_IS_BETTER[base]


def check_direction(metric: str, direction: str) -> bool:
    """True when ``direction`` is "higher"; ConfigError when it contradicts a metric we know
    (val_rmse with "higher" would promote ever worse models)."""
    if direction not in DIRECTIONS:
        raise ConfigError(f"register.direction: '{direction}' is not 'higher' or 'lower'")
    up = direction == "higher"
    try:
        known = higher_is_better(metric)
    except ConfigError:
        return up  # a metric of the user's own: trust the configured direction
    if known != up:
        word = "higher" if known else "lower"
        raise ConfigError(f"register.direction: '{direction}' contradicts {metric} ({word} is better)")
    return up


def decide(
    candidate: float,
    champion: float | None,
    metric: str,
    min_improvement: float = 0.0,
    direction: str | None = None,
) -> tuple[bool, str]:
    """Whether the candidate replaces the champion, and why (one line).

    ``direction`` ("higher" | "lower") says which way ``metric`` improves; None infers it
    from the metric's name.
    """
    if champion is None:
        return True, "no champion yet"
    up = higher_is_better(metric) if direction is None else check_direction(metric, direction)
    gain = candidate - champion if up else champion - candidate
    # A tolerance so that e.g. 0.5 -> 0.4 counts as an improvement of 0.1, and a tie (equal up to
    # rounding) never does, whatever min_improvement: the champion moves only when validation improves.
    improved = gain > _TOLERANCE
    promoted = improved and gain >= min_improvement - _TOLERANCE
    word = "higher" if up else "lower"
    verdict = (
        f">= required {min_improvement:g}"
        if promoted
        else f"< required {min_improvement:g}"
        if improved
        else "is no improvement"
    )
    return promoted, (
        f"candidate {metric}={candidate:.6g} vs champion {champion:.6g}: gain {gain:.6g} {verdict} ({word} is better)"
    )


def _candidate_metrics(mos_ckpt: Path, metric: str) -> tuple[dict[str, float], str]:
    payload = load_checkpoint(mos_ckpt)
    if payload.get("kind") != "mos":
        raise JsqaError(f"{mos_ckpt}: expected a MOS checkpoint, got kind '{payload.get('kind')}'")
    metrics = payload.get("metrics") or {}
    if metric not in metrics:
        raise JsqaError(
            f"{mos_ckpt}: checkpoint has no metric '{metric}' (has: {', '.join(sorted(metrics)) or 'none'})"
        )
    value = float(metrics[metric])
    if not math.isfinite(value):
        raise JsqaError(f"{mos_ckpt}: metric '{metric}' is not finite ({value})")
    return {k: float(v) for k, v in metrics.items()}, str(payload.get("init", "unknown"))


def _champion(client: MlflowClient, name: str, alias: str, metric: str) -> tuple[str | None, float | None]:
    """(version, metric value) of ``name@alias``; (None, None) when there is none."""
    version = champion_version(client, name, alias)
    if version is None:
        return None, None
    raw = client.get_model_version(name, version).tags.get(metric)
    try:
        return version, float(raw) if raw is not None else None
    except ValueError:
        return version, None


def evaluation_tags(evaluation: dict, model: str = "pretrained") -> dict[str, str]:
    """``test_<metric>`` tags from an evaluate.json document: the pooled test metrics of ``model``."""
    pooled = (evaluation.get("models") or {}).get(model, {}).get("pooled", {})
    return {f"test_{k}": f"{float(v):.4f}" for k, v in pooled.items() if k != "n"}


def _same_version(client: MlflowClient, name: str, mos_sha: str, encoder_sha: str) -> ModelVersion | None:
    """The newest version of ``name`` logged from checkpoint files with these hashes, or None."""
    same = [
        mv
        for mv in client.search_model_versions(f"name='{name}'")
        if mv.tags.get(MOS_SHA_TAG) == mos_sha and mv.tags.get(ENCODER_SHA_TAG) == encoder_sha
    ]
    return max(same, key=lambda mv: int(mv.version), default=None)


def register(
    encoder_ckpt: Path,
    mos_ckpt: Path,
    cfg: RegisterConfig,
    root: Path = Path("."),
    extra_tags: dict | None = None,
    manifests: Path | None = None,
    evaluation: dict | None = None,
    profile: str | None = None,
    calibration: Path | None = None,
    jnd_metrics: Mapping[str, Any] | None = None,
) -> dict:
    """Log and register both models, then promote them to ``@cfg.alias`` if the MOS model wins.

    Each version is tagged with its provenance (git commit, dvc.lock and manifest hashes, see
    :func:`jsqa.registry.provenance.provenance_tags`; manifests default to ``root/data/manifests``)
    and the sha256 of both checkpoint files; the MOS version also with its validation metrics and
    ``extra_tags`` (the CLI adds the test metrics), the encoder version with its own figures
    (:func:`encoder_tags`). Each version's description is its model card (``evaluation``: an
    evaluate.json document, ``profile``: the data profile, used when the MOS checkpoint records
    none; ``jnd_metrics``: the calibrate stage's metrics/jnd.json). ``calibration``: the JND
    calibration file the encoder carries (:func:`log_models`). Checkpoints identical to an existing
    version's are not registered again (``unchanged`` in the result names that version).
    Returns a JSON-able summary of the decision (see the keys below).
    """
    encoder_ckpt, mos_ckpt = Path(encoder_ckpt), Path(mos_ckpt)
    metrics, init = _checked_inputs(encoder_ckpt, mos_ckpt, cfg)
    candidate = metrics[cfg.metric]
    hashes = {MOS_SHA_TAG: file_sha256(mos_ckpt), ENCODER_SHA_TAG: file_sha256(encoder_ckpt)}
    with tracking.stage_run("register", _run_params(encoder_ckpt, mos_ckpt, cfg), root) as run:
        run_id = run.info.run_id
        extra = {str(k): str(v) for k, v in (extra_tags or {}).items()}
        if extra:
            mlflow.set_tags(extra)
        client = MlflowClient()
        champ_version, champion = _champion(client, cfg.mos_name, cfg.alias, cfg.metric)
        same = _same_version(client, cfg.mos_name, hashes[MOS_SHA_TAG], hashes[ENCODER_SHA_TAG])
        if same is not None:
            # Same bytes as a registered version: a new version would only churn the registry.
            promoted, reason = False, f"unchanged: same as v{same.version}"
            mos_version, enc_version = str(same.version), same.tags.get("encoder_version", "")
            log.info("%s: %s (not registered again)", cfg.mos_name, reason)
        else:
            tags = {**hashes, "run_id": run_id}
            mos_tags = {"init": init, **{k: repr(v) for k, v in metrics.items()}, **extra}
            cards = _CardInputs(evaluation, profile, jnd_metrics)
            mos_version, enc_version = _register_versions(
                client, encoder_ckpt, mos_ckpt, cfg, (tags, mos_tags), root, manifests, calibration, cards
            )
            promoted, reason = _promote_if_better(client, cfg, metrics, mos_version, champ_version, champion)

        result = {"promoted": promoted, "unchanged": same is not None, "reason": reason, "metric": cfg.metric}
        result.update(candidate=candidate, champion_before=champion, mos_model=cfg.mos_name, mos_version=mos_version)
        result.update(encoder_model=cfg.encoder_name, encoder_version=enc_version, run_id=run_id)
        result.update(experiment_id=run.info.experiment_id)
        _log_outcome(result, champ_version)
    return result


def _run_params(encoder_ckpt: Path, mos_ckpt: Path, cfg: RegisterConfig) -> dict:
    """The register run's params: the registry settings and the two checkpoints."""
    return {
        "encoder_name": cfg.encoder_name,
        "mos_name": cfg.mos_name,
        "alias": cfg.alias,
        "metric": cfg.metric,
        "direction": cfg.direction,
        "min_improvement": cfg.min_improvement,
        "encoder_checkpoint": str(encoder_ckpt),
        "mos_checkpoint": str(mos_ckpt),
    }


def _promote_if_better(
    client: MlflowClient,
    cfg: RegisterConfig,
    metrics: dict,
    mos_version: str,
    champ_version: str | None,
    champion: float | None,
) -> tuple[bool, str]:
    """Move ``@cfg.alias`` to the new version (and its encoder) when :func:`_promotion` says so."""
    promoted, reason = _promotion(metrics, champ_version, champion, cfg)
    if promoted:
        promote(client, cfg, cfg.mos_name, mos_version)
    verdict = f"promoted to @{cfg.alias}" if promoted else "not promoted"
    log.info("%s v%s %s: %s", cfg.mos_name, mos_version, verdict, reason)
    return promoted, reason


def _log_outcome(result: dict, champ_version: str | None) -> None:
    """The decision as the register run's tags and metrics."""
    mlflow.set_tags(
        {
            "promoted": str(result["promoted"]).lower(),
            "reason": result["reason"],
            "unchanged": str(result["unchanged"]).lower(),
            "champion_version_before": champ_version or "none",
            "mos_version": result["mos_version"],
            "encoder_version": result["encoder_version"],
        }
    )
    mlflow.log_metric(f"candidate_{result['metric']}", result["candidate"])
    if result["champion_before"] is not None:
        mlflow.log_metric(f"champion_{result['metric']}", result["champion_before"])
    mlflow.log_metric("promoted", 1.0 if result["promoted"] else 0.0)


def _checked_inputs(encoder_ckpt: Path, mos_ckpt: Path, cfg: RegisterConfig) -> tuple[dict[str, float], str]:
    """The candidate's metrics and init, after checking that the inputs can lead to a decision
    (before anything is logged)."""
    check_direction(cfg.metric, cfg.direction)
    metrics, init = _candidate_metrics(mos_ckpt, cfg.metric)
    enc_kind = load_checkpoint(encoder_ckpt).get("kind")
    if enc_kind not in ("encoder", "mos"):
        raise JsqaError(f"{encoder_ckpt}: expected an encoder checkpoint, got kind '{enc_kind}'")
    return metrics, init


@dataclass(frozen=True)
class _CardInputs:
    """What the model cards say beyond the checkpoints: see :func:`register`."""

    evaluation: dict | None
    profile: str | None
    jnd_metrics: Mapping[str, Any] | None


def _register_versions(
    client: MlflowClient,
    encoder_ckpt: Path,
    mos_ckpt: Path,
    cfg: RegisterConfig,
    tags: tuple[dict[str, str], dict[str, str]],
    root: Path,
    manifests: Path | None,
    calibration: Path | None,
    cards: _CardInputs,
) -> tuple[str, str]:
    """Log both models and register a version of each, tagged with the provenance and ``tags``
    (those of both versions, those of the MOS version); each version's description is its model
    card. Returns (MOS version, encoder version)."""
    common, mos_tags = tags
    uris = log_models(encoder_ckpt, mos_ckpt, calibration)
    provenance = provenance_tags(root, manifests if manifests is not None else Path(root) / "data" / "manifests")
    enc_payload, mos_payload = load_checkpoint(encoder_ckpt), load_checkpoint(mos_ckpt)
    cal = load_calibration(calibration) if calibration is not None else None
    enc_tags = {**provenance, **common, **encoder_tags(enc_payload, cal, cards.jnd_metrics)}
    enc_mv = mlflow.register_model(uris[ENCODER_MODEL_NAME], cfg.encoder_name, tags=enc_tags)
    mos_mv = mlflow.register_model(
        uris[MOS_MODEL_NAME],
        cfg.mos_name,
        tags={**provenance, **common, **mos_tags, "encoder_version": str(enc_mv.version)},
    )
    mos_version, enc_version = str(mos_mv.version), str(enc_mv.version)
    client.set_model_version_tag(cfg.encoder_name, enc_version, "mos_version", mos_version)
    # What the checkpoint recorded at fine-tuning wins over the profile register runs under.
    profile = mos_payload.get("data_profile") or cards.profile
    card = model_card(mos_payload, provenance, cards.evaluation, profile)
    client.update_model_version(cfg.mos_name, mos_version, description=card)
    card = encoder_card(enc_payload, provenance, profile, cal, cards.jnd_metrics)
    client.update_model_version(cfg.encoder_name, enc_version, description=card)
    return mos_version, enc_version


def encoder_tags(
    checkpoint: Mapping[str, Any], calibration: Calibration | None, jnd_metrics: Mapping[str, Any] | None
) -> dict[str, str]:
    """The encoder version's own tags: its pretraining metrics (``pretrain_*``), whether it
    carries a JND calibration, and the held-out ``jnd_*`` figures of ``jnd_metrics``."""
    tags = {f"pretrain_{k}": repr(float(v)) for k, v in (checkpoint.get("metrics") or {}).items() if _finite(v)}
    if calibration is not None:
        tags["jnd_calibration"] = "available" if calibration.available else f"unavailable: {calibration.reason}"
    figures = {k: v for k, v in (jnd_metrics or {}).items() if k in ("accuracy", "majority_accuracy", "roc_auc")}
    tags.update({f"jnd_{k}": f"{float(v):.4f}" for k, v in figures.items() if _finite(v)})
    return tags


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _promotion(
    metrics: dict[str, float], champ_version: str | None, champion: float | None, cfg: RegisterConfig
) -> tuple[bool, str]:
    """Whether the registered candidate becomes ``@cfg.alias``, and why (one line)."""
    if metrics.get("collapsed"):
        # A model predicting one value for every clip is never served, whatever its RMSE.
        return False, (
            "candidate failed to learn: its validation predictions collapsed "
            f"(spread {metrics.get('val_spread_ratio', 0.0):.3f} of the labels')"
        )
    if champ_version is not None and champion is None:
        return True, f"champion {cfg.mos_name} v{champ_version} has no '{cfg.metric}' tag to compare with"
    return decide(metrics[cfg.metric], champion, cfg.metric, cfg.min_improvement, cfg.direction)
