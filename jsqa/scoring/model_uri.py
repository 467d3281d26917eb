"""Where a jsqa model comes from: an MLflow model URI, a downloaded model folder, and the
artifact names a logged model carries its files under.

Shared by `jsqa predict`, `jsqa compare`, `jsqa serve` and the registry (which logs the
artifacts under these names), so none of them imports another for it.
"""

from __future__ import annotations

import re
from pathlib import Path

import mlflow
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from jsqa import tracking
from jsqa.errors import JsqaError

# Artifact names in a logged pyfunc model: the checkpoint (both models) and the encoder's JND
# calibration (jsqa.scoring.serving reads them; jsqa.registry.register logs them).
CHECKPOINT_ARTIFACT = "checkpoint"
CALIBRATION_ARTIFACT = "jnd_calibration"

_MLFLOW_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))?/?$")


def is_mlflow_uri(ref: str) -> bool:
    """True for the MLflow URIs :func:`download_model` resolves through the tracking server."""
    return ref.startswith(_MLFLOW_SCHEMES)


def _artifact_rel(folder: Path, name: str) -> str:
    """The relative path of artifact ``name`` in a model folder's MLmodel file (KeyError etc. when absent)."""
    meta = yaml.safe_load((folder / "MLmodel").read_text()) or {}
    return str(meta["flavors"]["python_function"]["artifacts"][name]["path"])


def checkpoint_in(folder: Path) -> Path:
    """The checkpoint file inside a logged pyfunc model folder (read from its MLmodel file)."""
    mlmodel = folder / "MLmodel"
    if not mlmodel.is_file():
        raise JsqaError(f"{folder}: not an MLflow model folder (no MLmodel file)")
    try:
        rel = _artifact_rel(folder, CHECKPOINT_ARTIFACT)
    except (yaml.YAMLError, KeyError, TypeError) as exc:
        raise JsqaError(f"{mlmodel}: no '{CHECKPOINT_ARTIFACT}' artifact; not a jsqa model") from exc
    ckpt = (folder / rel).resolve()
    # The path comes from a file we downloaded; keep it inside the folder.
    if not ckpt.is_relative_to(folder.resolve()) or not ckpt.is_file():
        raise JsqaError(f"{mlmodel}: checkpoint artifact '{rel}' is missing")
    return ckpt


def calibration_in(folder: Path) -> Path | None:
    """The JND calibration file a logged encoder model folder carries, if any."""
    try:
        rel = _artifact_rel(folder, CALIBRATION_ARTIFACT)
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None
    path = (folder / rel).resolve()
    return path if path.is_relative_to(folder.resolve()) and path.is_file() else None


def existing_store(root: Path) -> str:
    """The tracking URI for ``root``; JsqaError when it names a SQLite file that does not exist."""
    store = tracking.tracking_uri(root)
    if store.startswith("sqlite:///"):
        db = Path(store[len("sqlite:///") :])
        # Opening a missing SQLite store would silently create an empty one.
        if not db.is_file():
            raise JsqaError(f"no MLflow store at {db}; run the pipeline's register stage (or set MLFLOW_TRACKING_URI)")
    return store


def download_model(uri: str, root: Path, dst: Path) -> tuple[Path, str]:
    """Download an MLflow model URI (an alias resolved to its version first) into ``dst``;
    returns (the local model folder or file, a one-line description)."""
    store = existing_store(root)
    tracking.configure(root)
    described = uri
    m = _MODELS_URI.match(uri)
    if m and (m["alias"] or m["version"]):
        client = MlflowClient()
        name = m["name"]
        try:
            if m["alias"]:
                mv = client.get_model_version_by_alias(name, m["alias"])
            else:
                mv = client.get_model_version(name, m["version"])
        except MlflowException as exc:
            what = f"alias '{m['alias']}'" if m["alias"] else f"version {m['version']}"
            raise JsqaError(
                f"no model '{name}' with {what} in {store}; run the pipeline's register stage "
                f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
            ) from exc
        # Download the resolved version, so an alias moved meanwhile cannot mix two versions.
        uri = f"models:/{name}/{mv.version}"
        described = f"{described} ({name} version {mv.version}, run {mv.run_id})"
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))
    except MlflowException as exc:
        raise JsqaError(f"cannot download {uri} from {store}: {str(exc).splitlines()[0]}") from exc
    return local, described
