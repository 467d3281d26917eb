"""MLflow tracking: where runs go, and one run per DVC stage tagged with stage and git commit."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow

import jsqa

log = logging.getLogger(__name__)

EXPERIMENT = "jsqa"
DEFAULT_DB = "mlflow.db"
ARTIFACT_DIR = "mlartifacts"
# The experiment's kind as MLflow records it: classic ML (model training), not GenAI.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
# MLflow 3.17's UI does not pick its view from that tag: its GenAI / Model training switch does,
# read from the address's `workflowType` parameter, else from the browser's saved choice, else
# GenAI (an empty overview here). Addresses into the UI carry the parameter.
UI_VIEW_QUERY = "workflowType=machine_learning"
# The process that owns a run, so a later run can tell one whose process died (SIGKILL, a power
# cut) from one still going: MLflow leaves a killed process's run RUNNING for ever.
PID_TAG = "jsqa.pid"
HOST_TAG = "jsqa.host"


# URIs this process derived itself. mlflow.set_tracking_uri / set_registry_uri also export
# MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI, so such a value in the environment is not the user's
# choice and must not pin a later call (another project root) to an earlier store.
_derived: dict[str, set[str]] = {"MLFLOW_TRACKING_URI": set(), "MLFLOW_REGISTRY_URI": set()}


def _user_env(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value and value not in _derived[name] else None


# What marks a jsqa project's root folder: the DVC pipeline, its parameters, the store itself.
ROOT_MARKERS = (DEFAULT_DB, "params.yaml", "dvc.yaml", ".dvc")


def project_root(start: str | Path = ".") -> Path:
    """The nearest folder from ``start`` upwards that holds one of :data:`ROOT_MARKERS`, so a
    command run from a subfolder finds the project's store; ``start`` itself when none does."""
    here = Path(start).resolve()
    for folder in (here, *here.parents):
        if any((folder / marker).exists() for marker in ROOT_MARKERS):
            return folder
    return here


def tracking_uri(root: str | Path = ".") -> str:
    """``MLFLOW_TRACKING_URI`` when the user set it, else a SQLite file in the project root."""
    env = _user_env("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{(Path(root).resolve() / DEFAULT_DB).as_posix()}"


def configure(root: str | Path = ".", experiment: str = EXPERIMENT) -> str:
    """Point MLflow at the tracking store and the experiment; return the experiment id."""
    uri = tracking_uri(root)
    if uri != os.environ.get("MLFLOW_TRACKING_URI"):
        _derived["MLFLOW_TRACKING_URI"].add(uri)
    mlflow.set_tracking_uri(uri)
    registry = _user_env("MLFLOW_REGISTRY_URI")
    if registry is None:
        registry = uri
        _derived["MLFLOW_REGISTRY_URI"].add(uri)
    mlflow.set_registry_uri(registry)
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        # With the default SQLite store, keep artifacts beside it rather than in the cwd.
        location = None
        if uri.startswith("sqlite:"):
            location = (Path(root).resolve() / ARTIFACT_DIR).as_uri()
        exp_id = mlflow.create_experiment(
            experiment, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
        )
    else:
        exp_id = exp.experiment_id
        if EXPERIMENT_KIND_TAG not in exp.tags:  # created before jsqa set it; a kind chosen in the UI stays
            mlflow.MlflowClient().set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def ui_url(base: str, experiment_id: str) -> str:
    """The MLflow UI address of an experiment's runs, in the UI's Model training view."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{UI_VIEW_QUERY}"


def git_commit(root: str | Path = ".") -> str:
    """HEAD's commit hash, with '+dirty' appended for uncommitted changes; 'unknown' outside git."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")


@contextlib.contextmanager
def stage_run(stage: str, params: dict[str, Any], root: str | Path = ".") -> Iterator[mlflow.ActiveRun]:
    """An MLflow run for one pipeline stage, tagged with the stage, git commit, version and process.

    Runs left RUNNING by a dead process of this host are marked KILLED first (:func:`end_dead_runs`).
    """
    end_dead_runs(configure(root))
    tags = {
        "dvc_stage": stage,
        "git_commit": git_commit(root),
        "jsqa_version": jsqa.__version__,
        PID_TAG: str(os.getpid()),
        HOST_TAG: socket.gethostname(),
    }
    with mlflow.start_run(run_name=stage, tags=tags) as run:
        mlflow.log_params({k: _param_str(v) for k, v in params.items()})
        yield run


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def end_dead_runs(experiment_id: str) -> list[str]:
    """Mark KILLED the experiment's RUNNING runs whose process (pid tag, this host) is gone; return their ids."""
    client = mlflow.MlflowClient()
    host = socket.gethostname()
    running = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'")
    dead = [
        r.info.run_id
        for r in running
        if r.data.tags.get(HOST_TAG) == host
        and r.data.tags.get(PID_TAG, "").isdigit()
        and not _alive(int(r.data.tags[PID_TAG]))
    ]
    for run_id in dead:
        log.warning("MLflow run %s was left RUNNING by a process that is gone: marked KILLED", run_id)
        client.set_terminated(run_id, status="KILLED")
    return dead


def _param_str(v: Any) -> str:
    s = str(v)
    return s if len(s) <= 500 else s[:497] + "..."


def log_epoch(metrics: dict[str, float], step: int) -> None:
    """Log per-epoch metrics to the active run."""
    mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)
