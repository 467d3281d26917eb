"""The MLflow model registry: log the encoder and MOS model as pyfunc models, register a new
version of each, and move the champion alias only when the candidate beats the champion.

Security: nothing here is pickled. Both models are logged as MLflow "models from code" (the
wrappers in :mod:`jsqa.scoring.serving`, entry files in ``jsqa/pyfunc_code/``); the weights travel as a
plain checkpoint artifact opened with ``torch.load(weights_only=True)``. See docs/security.md.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, Schema

import jsqa
from jsqa import tracking
from jsqa.errors import ConfigError, JsqaError
from jsqa.models.mos import encoder_from_checkpoint, load_checkpoint
from jsqa.registry.champion import champion_version, promote
from jsqa.registry.provenance import provenance_tags
from jsqa.scoring.serving import CHECKPOINT_ARTIFACT, ENCODER_MODEL_CODE, MOS_MODEL_CODE
from jsqa.scoring.serving import input_schema as _input_schema

if TYPE_CHECKING:
    from jsqa.config import RegisterConfig

log = logging.getLogger(__name__)

ENCODER_MODEL_NAME = "encoder"
MOS_MODEL_NAME = "mos"

# Metric names (after any "val_"/"test_" prefix) and whether a larger value is better.
_HIGHER_IS_BETTER = {"pcc": True, "lcc": True, "srcc": True, "ktau": True, "r2": True,
                     "rmse": False, "mse": False, "mae": False, "loss": False}


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


def log_models(encoder_ckpt: Path, mos_ckpt: Path) -> dict[str, str]:
    """Log both checkpoints as pyfunc models in the active run; return {"encoder", "mos"} URIs."""
    if mlflow.active_run() is None:
        raise JsqaError("log_models needs an active MLflow run (use tracking.stage_run)")
    code = [str(Path(jsqa.__file__).resolve().parent)]
    reqs = _pip_requirements()
    encoder_dim = encoder_from_checkpoint(load_checkpoint(encoder_ckpt)).embedding_dim
    specs = {
        ENCODER_MODEL_NAME: (ENCODER_MODEL_CODE, encoder_ckpt,
                             Schema([ColSpec("double", f"e{i}") for i in range(encoder_dim)])),
        MOS_MODEL_NAME: (MOS_MODEL_CODE, mos_ckpt, Schema([ColSpec("double", "mos")])),
    }
    uris: dict[str, str] = {}
    for name, (wrapper, ckpt, outputs) in specs.items():
        with warnings.catch_warnings():
            # An input example would run the model at logging time; the signature is enough.
            warnings.filterwarnings("ignore", message=".*input example was not provided.*")
            info = mlflow.pyfunc.log_model(
                name=name,
                python_model=wrapper,
                artifacts={CHECKPOINT_ARTIFACT: str(Path(ckpt).resolve())},
                code_paths=code,
                pip_requirements=reqs,
                signature=ModelSignature(inputs=_input_schema(), outputs=outputs),
            )
        uris[name] = info.model_uri
        log.info("logged %s model from %s as %s", name, ckpt, info.model_uri)
    return uris


def higher_is_better(metric: str) -> bool:
    """Direction of a validation metric; ConfigError for a name we cannot tell."""
    base = metric
    for prefix in ("val_", "test_", "eval_"):
        if base.startswith(prefix):
            base = base[len(prefix):]
            break
    if base not in _HIGHER_IS_BETTER:
        raise ConfigError(
            f"register.metric: unknown metric '{metric}' (use e.g. val_rmse, val_pcc, val_srcc)"
        )
    return _HIGHER_IS_BETTER[base]


def check_direction(metric: str, direction: str) -> bool:
    """True when ``direction`` is "higher"; ConfigError when it contradicts a metric we know
    (val_rmse with "higher" would promote ever worse models)."""
    if direction not in ("higher", "lower"):
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
    candidate: float, champion: float | None, metric: str, min_improvement: float = 0.0,
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
    # A tolerance so that e.g. 0.5 -> 0.4 counts as an improvement of 0.1.
    promoted = gain >= min_improvement - 1e-9
    word = "higher" if up else "lower"
    op = ">=" if promoted else "<"
    return promoted, (
        f"candidate {metric}={candidate:.6g} vs champion {champion:.6g}: "
        f"gain {gain:.6g} {op} required {min_improvement:g} ({word} is better)"
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


def register(encoder_ckpt: Path, mos_ckpt: Path, cfg: RegisterConfig, root: Path = Path("."),
             extra_tags: dict | None = None, manifests: Path | None = None) -> dict:
    """Log and register both models, then promote them to ``@cfg.alias`` if the MOS model wins.

    Each version is tagged with its provenance (git commit, dvc.lock and manifest hashes, see
    :func:`jsqa.registry.provenance.provenance_tags`; manifests default to ``root/data/manifests``), its
    validation metrics and ``extra_tags`` (the CLI adds the test metrics).
    Returns a JSON-able summary of the decision (see the keys below).
    """
    encoder_ckpt, mos_ckpt = Path(encoder_ckpt), Path(mos_ckpt)
    # Fail before anything is logged when the inputs cannot lead to a decision.
    check_direction(cfg.metric, cfg.direction)
    metrics, init = _candidate_metrics(mos_ckpt, cfg.metric)
    candidate = metrics[cfg.metric]
    enc_kind = load_checkpoint(encoder_ckpt).get("kind")
    if enc_kind not in ("encoder", "mos"):
        raise JsqaError(f"{encoder_ckpt}: expected an encoder checkpoint, got kind '{enc_kind}'")

    params = {
        "encoder_name": cfg.encoder_name, "mos_name": cfg.mos_name, "alias": cfg.alias,
        "metric": cfg.metric, "direction": cfg.direction, "min_improvement": cfg.min_improvement,
        "encoder_checkpoint": str(encoder_ckpt), "mos_checkpoint": str(mos_ckpt),
    }
    with tracking.stage_run("register", params, root) as run:
        run_id = run.info.run_id
        extra = {str(k): str(v) for k, v in (extra_tags or {}).items()}
        if extra:
            mlflow.set_tags(extra)
        uris = log_models(encoder_ckpt, mos_ckpt)
        client = MlflowClient()
        champ_version, champion = _champion(client, cfg.mos_name, cfg.alias, cfg.metric)

        provenance = provenance_tags(root, manifests if manifests is not None else Path(root) / "data" / "manifests")
        version_tags = {**provenance, "init": init, "run_id": run_id,
                        **{k: repr(v) for k, v in metrics.items()}, **extra}
        enc_mv = mlflow.register_model(uris[ENCODER_MODEL_NAME], cfg.encoder_name, tags=version_tags)
        mos_mv = mlflow.register_model(
            uris[MOS_MODEL_NAME], cfg.mos_name, tags={**version_tags, "encoder_version": str(enc_mv.version)}
        )
        client.set_model_version_tag(cfg.encoder_name, enc_mv.version, "mos_version", str(mos_mv.version))

        if champ_version is not None and champion is None:
            promoted, reason = True, (
                f"champion {cfg.mos_name} v{champ_version} has no '{cfg.metric}' tag to compare with"
            )
        else:
            promoted, reason = decide(candidate, champion, cfg.metric, cfg.min_improvement, cfg.direction)
        if promoted:
            promote(client, cfg, cfg.mos_name, str(mos_mv.version))
        log.info("%s v%s %s: %s", cfg.mos_name, mos_mv.version,
                 f"promoted to @{cfg.alias}" if promoted else "not promoted", reason)

        mlflow.set_tags({
            "promoted": str(promoted).lower(), "reason": reason,
            "champion_version_before": champ_version or "none",
            "mos_version": str(mos_mv.version), "encoder_version": str(enc_mv.version),
        })
        mlflow.log_metric(f"candidate_{cfg.metric}", candidate)
        if champion is not None:
            mlflow.log_metric(f"champion_{cfg.metric}", champion)
        mlflow.log_metric("promoted", 1.0 if promoted else 0.0)

    return {
        "promoted": promoted,
        "reason": reason,
        "metric": cfg.metric,
        "candidate": candidate,
        "champion_before": champion,
        "mos_model": cfg.mos_name,
        "mos_version": str(mos_mv.version),
        "encoder_model": cfg.encoder_name,
        "encoder_version": str(enc_mv.version),
        "run_id": run_id,
        "experiment_id": run.info.experiment_id,
    }
