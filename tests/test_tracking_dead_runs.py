"""A run whose process was killed (SIGKILL: no cleanup) does not stay RUNNING in MLflow for ever."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow

from jsqa.tracking import stage_run

ROOT = Path(__file__).resolve().parents[1]
HOLD = "import sys, time; from jsqa.tracking import stage_run\nwith stage_run('pretrain', {}, sys.argv[1]) as r:\n    print(r.info.run_id, flush=True); time.sleep(120)\n"


def test_the_next_stage_marks_a_killed_processs_run_killed(tmp_path, empty_mlflow_store, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    empty_mlflow_store(tmp_path / "mlflow.db")
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout is not None
    killed = proc.stdout.readline().strip()
    proc.kill()
    proc.wait(10)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_run(killed).info.status == "RUNNING"  # what SIGKILL leaves
    with stage_run("finetune", {}, tmp_path) as live:
        assert client.get_run(killed).info.status == "KILLED"
        assert client.get_run(live.info.run_id).info.status == "RUNNING"
