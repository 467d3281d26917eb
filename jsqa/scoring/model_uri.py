"""Where a jsqa model comes from: an MLflow model URI, a downloaded model folder, and the
artifact names a logged model carries its files under.

Shared by `jsqa predict`, `jsqa compare`, `jsqa serve` and the registry (which logs the
artifacts under these names), so none of them imports another for it. MLflow is imported only
where a URI is resolved: scoring a local checkpoint never pays for it (seconds at start-up).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from jsqa.errors import JsqaError

# Artifact names in a logged pyfunc model: the checkpoint (both models) and the encoder's JND
# calibration (jsqa.scoring.serving reads them; jsqa.registry.register logs them).
CHECKPOINT_ARTIFACT = "checkpoint"
CALIBRATION_ARTIFACT = "jnd_calibration"

PROGRESS_BAR_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
_MLFLOW_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))?/?$")


def is_mlflow_uri(ref: str) -> bool:
    """True for the MLflow URIs :func:`download_model` resolves through the tracking server."""
    return ref.startswith(_MLFLOW_SCHEMES)


def check_model_ref(ref: str) -> None:
    """JsqaError unless ``ref`` is an MLflow URI or an existing checkpoint file or model folder."""
    if not is_mlflow_uri(ref) and not Path(ref).exists():
        raise JsqaError(f"{ref}: no such checkpoint or model folder (or use models:/NAME@alias)")


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
    from jsqa import tracking

    store = tracking.tracking_uri(root)
    if store.startswith("sqlite:///"):
        db = Path(store[len("sqlite:///") :])
        # Opening a missing SQLite store would silently create an empty one.
        if not db.is_file():
            raise JsqaError(f"no MLflow store at {db}; run the pipeline's register stage (or set MLFLOW_TRACKING_URI)")
    return store


def download_model(uri: str, root: Path, dst: Path) -> tuple[Path, str]:
    """Download an MLflow model URI (an alias resolved to its version first) into ``dst``;
    returns (the local model folder or file, a one-line description).

    Of a logged jsqa model only the MLmodel file and the artifacts it names are fetched (the
    checkpoint, the calibration): not the bundled code and environment files scoring never reads.
    """
    from mlflow.exceptions import MlflowException

    from jsqa import tracking

    store = existing_store(root)
    tracking.configure(root)
    uri, described = _resolve_version(uri, store)
    try:
        with _no_progress_bar():
            local = _download_used(uri, dst)
    except MlflowException as exc:
        raise JsqaError(f"cannot download {uri} from {store}: {str(exc).splitlines()[0]}") from exc
    return local, described


@contextlib.contextmanager
def _no_progress_bar() -> Iterator[None]:
    """MLflow's "Downloading artifacts" bar off (unless the user set MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR):
    it drew on every `jsqa predict` call, for files that take milliseconds to copy."""
    if PROGRESS_BAR_ENV in os.environ:
        yield
        return
    os.environ[PROGRESS_BAR_ENV] = "false"
    try:
        yield
    finally:
        os.environ.pop(PROGRESS_BAR_ENV, None)


def _resolve_version(uri: str, store: str) -> tuple[str, str]:
    """``models:/NAME@alias`` or ``models:/NAME/N`` as ``models:/NAME/N`` (so an alias moved
    meanwhile cannot mix two versions), with a description; other URIs unchanged."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    m = _MODELS_URI.match(uri)
    if not (m and (m["alias"] or m["version"])):
        return uri, uri
    client = MlflowClient()
    name = m["name"]
    try:
        mv = (
            client.get_model_version_by_alias(name, m["alias"])
            if m["alias"]
            else client.get_model_version(name, m["version"])
        )
    except MlflowException as exc:
        what = f"alias '{m['alias']}'" if m["alias"] else f"version {m['version']}"
        raise JsqaError(
            f"no model '{name}' with {what} in {store}; run the pipeline's register stage "
            f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        ) from exc
    return f"models:/{name}/{mv.version}", f"{uri} ({name} version {mv.version}, run {mv.run_id})"


def _download_used(uri: str, dst: Path) -> Path:
    """The MLmodel file and the pyfunc artifacts it names, into ``dst`` (the model folder); the
    whole of ``uri`` when it holds no MLmodel file (a bare checkpoint, another layout)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    base = uri.rstrip("/")
    try:
        mlmodel = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{base}/MLmodel", dst_path=str(dst)))
    except MlflowException:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))
    folder = mlmodel.parent
    for rel in _artifact_paths(folder):
        # The path comes from a downloaded file; keep what it names inside the folder.
        if (folder / rel).resolve().is_relative_to(folder.resolve()):
            mlflow.artifacts.download_artifacts(artifact_uri=f"{base}/{rel}", dst_path=str(folder))
    return folder


def _artifact_paths(folder: Path) -> list[str]:
    """The relative paths of every pyfunc artifact a model folder's MLmodel file names."""
    try:
        meta: Any = yaml.safe_load((folder / "MLmodel").read_text()) or {}
        artifacts = meta["flavors"]["python_function"].get("artifacts") or {}
        return [str(a["path"]) for a in artifacts.values()]
    except (yaml.YAMLError, KeyError, TypeError, AttributeError):
        return []
