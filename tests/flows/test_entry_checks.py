"""What a user sees before any stage runs: a mistyped params.yaml key fails `dvc repro` and the flow.

No Prefect server here: the flow's checks come before Prefect starts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from dvc_projects import (
    blank_project,  # noqa: F401 - fixture
    make_project,
    runs,
    stage_cmd,
)

from jsqa.stages import STAGES

REPO = Path(__file__).resolve().parents[2]
TYPO = "did you mean 'finetune.epochs'?"


def _jsqa_project(blank: Path, root: Path) -> Path:
    """A DVC project with the real params check stage (first in dvc.yaml) and one stage reading ``seed``."""
    check = STAGES[0]
    stages = {
        check.name: {"cmd": check.cmd, "params": list(check.params)},
        "prepare": {"cmd": stage_cmd("prepare", "pathlib.Path('raw.txt').write_text('x')"), "params": ["seed"]},
    }
    make_project(blank, root, stages, {"seed": 1})
    (root / "bin").mkdir()
    shutil.copy(REPO / "bin" / "jsqa", root / "bin" / "jsqa")
    return root


def _env() -> dict[str, str]:
    return {**os.environ, "JSQA_PYTHON": sys.executable, "PYTHONPATH": str(REPO)}


def _dvc_repro(root: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "dvc", "repro"]
    return subprocess.run(cmd, cwd=root, env=_env(), capture_output=True, text=True, timeout=120)


def _typo(root: Path) -> None:
    (root / "params.yaml").write_text(yaml.safe_dump({"seed": 1, "finetune": {"epoch": 3}}))


def test_dvc_repro_fails_on_a_mistyped_key_even_when_no_stage_reads_it(blank_project, tmp_path):
    root = _jsqa_project(blank_project, tmp_path / "proj")
    assert _dvc_repro(root).returncode == 0
    _typo(root)
    done = _dvc_repro(root)
    assert done.returncode != 0
    assert f"jsqa check-params: error: params.yaml: unknown key 'finetune.epoch' ({TYPO})" in done.stderr + done.stdout
    assert runs(root) == ["prepare"]  # the stage the typo does not touch was not re-run


def test_flow_run_fails_on_a_mistyped_key_at_once_in_one_line(blank_project, tmp_path):
    root = _jsqa_project(blank_project, tmp_path / "proj")
    _typo(root)
    cmd = [sys.executable, "-m", "flows.pipeline", "run", "--project-dir", str(root)]
    done = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"jsqa-pipeline: error: {root / 'params.yaml'}: unknown key 'finetune.epoch' ({TYPO})"
    ]
    assert runs(root) == []


def test_serve_without_a_prefect_server_says_what_to_run_in_one_line(tmp_path):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/api"
    env = {**_env(), "PREFECT_API_URL": url}
    cmd = [sys.executable, "-m", "flows.pipeline", "serve", "--project-dir", str(tmp_path)]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert url in done.stderr and "make ui-prefect" in done.stderr


def test_a_moved_project_says_what_to_run_before_any_stage(blank_project, tmp_path, empty_mlflow_store, monkeypatch):
    from jsqa.tracking import configure

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # configure() exports it: restored after

    old = _jsqa_project(blank_project, tmp_path / "old")
    empty_mlflow_store(old / "mlflow.db")
    configure(old)  # the store records old/mlartifacts, as after a first run
    new = tmp_path / "new"
    old.rename(new)
    cmd = [sys.executable, "-m", "flows.pipeline", "run", "--project-dir", str(new)]
    env = {k: v for k, v in _env().items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert f"keeps its artifacts in {old / 'mlartifacts'}" in line and f"`mv {new / 'mlflow.db'} " in line
    assert runs(new) == []
