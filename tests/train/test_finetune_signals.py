"""A stopped fine-tuning (SIGTERM, as from the flow or a scheduler) leaves nothing half-written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration
def test_sigterm_stops_finetune_cleanly_and_a_killed_runs_temp_folder_goes(small_corpus, tmp_path, empty_mlflow_store):
    empty_mlflow_store(tmp_path / "mlflow.db")
    params = {
        "seed": 1,
        "model": {"size": "small"},
        "finetune": {"epochs": 200, "patience": 200, "seeds": 2, "threads": 1},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "models" / "mos.pt"
    stale = tmp_path / "models" / ".mos.seeds.killed"  # what atomic_dir leaves after a SIGKILL
    stale.mkdir(parents=True)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": uri}
    cmd = [sys.executable, "-m", "jsqa.cli", "finetune", "--params", str(tmp_path / "params.yaml")]
    cmd += ["--root", str(small_corpus["root"]), "--manifest", str(small_corpus["mos"]), "--out", str(out)]
    cmd += ["--metrics", str(tmp_path / "finetune.json")]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:  # the handler is in place before training logs its first seed
        if "fine-tuning seed" in line:
            break
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "finetune_scratch: stopped by SIGTERM; the stage did not finish, run it again" in err
    assert sorted(p.name for p in out.parent.iterdir()) == []  # no model, no seeds folder, no temp folder
    assert not (tmp_path / "finetune.json").exists()
    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("jsqa").experiment_id])
    assert run.info.status in ("FAILED", "KILLED")
