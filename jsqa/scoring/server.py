"""Running MLflow's scoring server for a jsqa model, independent of the caller's PATH.

``mlflow models serve`` starts ``uvicorn`` by name, found on PATH: run from a venv that is not
activated it fails with ``exec: uvicorn: not found``. The command built here runs MLflow with
this interpreter and puts this interpreter's bin folder first on PATH.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from jsqa.scoring.model_uri import existing_store, is_mlflow_uri


def serve_command(model: str, host: str, port: int, workers: int, root: Path) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that serve ``model`` (an MLflow model URI or a model folder) on
    ``host:port``, with the project's tracking store unless ``MLFLOW_TRACKING_URI`` is set."""
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    if is_mlflow_uri(model):
        env["MLFLOW_TRACKING_URI"] = existing_store(root)
    argv = [
        sys.executable,
        "-m",
        "mlflow",
        "models",
        "serve",
        "-m",
        model,
        "--env-manager",
        "local",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    return argv, env
