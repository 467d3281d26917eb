"""Remote mode on one machine: an MLflow tracking server (SQL backend + artifact root) that
`jsqa register` writes to and `jsqa predict` / pyfunc read from, and a DVC remote that restores a
pipeline on a fresh clone without recomputing anything (see docs/remote.md)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from mlflow.tracking import MlflowClient

from jsqa.cli import main
from jsqa.models.mos import MOSModel, PretrainModel, encoder_spec, save_checkpoint
from jsqa.scoring.predict import load_model, score_files

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
CHAMPION = "models:/jsqa-mos@champion"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module", autouse=True)
def _server_process(tmp_path_factory, empty_mlflow_store):
    """Start `mlflow server` (SQLite backend, local artifact root) as the module begins: it takes
    tens of seconds to boot on a busy machine, which the DVC test below overlaps."""
    root = tmp_path_factory.mktemp("remote_mlflow")
    server_dir = root / "server"
    server_dir.mkdir()
    empty_mlflow_store(server_dir / "mlflow.db")
    port = _free_port()
    log = root / "server.log"
    bindir = str(Path(sys.executable).parent)  # the server execs uvicorn by name
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", "")}
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        env.pop(var, None)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                f"sqlite:///{server_dir / 'mlflow.db'}",
                "--artifacts-destination",
                str(server_dir / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            env=env,
            cwd=server_dir,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield {"proc": proc, "log": log, "url": f"http://127.0.0.1:{port}", "artifacts": server_dir / "artifacts"}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the server's own session: it and its workers
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture
def tracking_server(_server_process):
    """The server above, once it answers /health."""
    proc, log, url = _server_process["proc"], _server_process["log"], _server_process["url"]
    deadline = time.monotonic() + 180
    while True:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return _server_process
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"no answer from {url}:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


# --- DVC remote ---------------------------------------------------------------------------------

_STAGE_A = """import pathlib
with open("runs.log", "a") as f:
    f.write("make\\n")
pathlib.Path("data").mkdir(exist_ok=True)
pathlib.Path("data/numbers.txt").write_text("\\n".join(str(i * i) for i in range(1000)))
"""
_STAGE_B = """import pathlib
with open("runs.log", "a") as f:
    f.write("total\\n")
numbers = pathlib.Path("data/numbers.txt").read_text().split()
pathlib.Path("data/total.txt").write_text(str(sum(int(n) for n in numbers)))
"""


def _run(args: list[str], cwd: Path) -> str:
    env = {
        **os.environ,
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def _dvc(*args: str, cwd: Path) -> str:
    return _run([sys.executable, "-m", "dvc", *args], cwd)


def test_dvc_push_then_pull_on_a_fresh_clone_recomputes_nothing(tmp_path):
    repo, remote, clone = tmp_path / "repo", tmp_path / "remote-store", tmp_path / "clone"
    repo.mkdir()
    (repo / "make.py").write_text(_STAGE_A)
    (repo / "total.py").write_text(_STAGE_B)
    py = sys.executable
    (repo / "dvc.yaml").write_text(
        "stages:\n"
        f"  make:\n    cmd: {py} make.py\n    deps: [make.py]\n    outs: [data/numbers.txt]\n"
        f"  total:\n    cmd: {py} total.py\n    deps: [total.py, data/numbers.txt]\n    outs: [data/total.txt]\n"
    )
    (repo / ".gitignore").write_text("runs.log\n")
    _run(["git", "init", "-q", "-b", "main"], repo)
    _dvc("init", "-q", cwd=repo)
    _dvc("repro", cwd=repo)
    assert (repo / "runs.log").read_text().split() == ["make", "total"]
    _dvc("remote", "add", "-d", "store", str(remote), cwd=repo)
    _dvc("push", cwd=repo)
    assert any(p.is_file() for p in remote.rglob("*"))
    _run(["git", "add", "-A"], repo)
    _run(["git", "commit", "-qm", "pipeline, dvc.lock and remote"], repo)

    _run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    assert not (clone / "data" / "total.txt").exists()
    _dvc("pull", cwd=clone)
    assert (clone / "data" / "total.txt").read_text() == str(sum(i * i for i in range(1000)))
    assert "up to date" in _dvc("status", cwd=clone)
    assert "in sync" in _dvc("status", "--cloud", cwd=clone)
    out = _dvc("repro", cwd=clone)
    assert "didn't change, skipping" in out and "Running stage" not in out
    assert not (clone / "runs.log").exists()  # neither stage ran on the clone
    assert _run(["git", "status", "--porcelain"], clone).strip() == ""


# --- MLflow tracking server (runs last: the server boots while the DVC test runs) ----------


def test_register_through_the_server_then_score_from_it(tracking_server, tmp_path, monkeypatch, capsys):
    client_dir = tmp_path / "client"  # a different machine's working copy, in effect
    client_dir.mkdir()
    spec = encoder_spec("small")
    torch.manual_seed(5)
    m = MOSModel(spec)
    save_checkpoint(client_dir / "mos.pt", "mos", m, spec, head=m.head_config, metrics={"val_rmse": 0.5})
    save_checkpoint(client_dir / "enc.pt", "encoder", PretrainModel(spec), spec)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server["url"])
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)

    assert (
        main(
            [
                "register",
                "--params",
                str(REPO / "params.yaml"),
                "--root",
                str(client_dir),
                "--encoder",
                str(client_dir / "enc.pt"),
                "--mos",
                str(client_dir / "mos.pt"),
                "--evaluation",
                "",
                "--out",
                str(client_dir / "register.json"),
            ]
        )
        == 0
    )
    result = json.loads((client_dir / "register.json").read_text())
    assert result["promoted"] is True and "promoted to @champion" in capsys.readouterr().out

    # Nothing landed beside the client: runs in the server's database, files in its artifact root.
    assert not (client_dir / "mlflow.db").exists() and not (client_dir / "mlartifacts").exists()
    stored = [p.name for p in tracking_server["artifacts"].rglob("*") if p.is_file()]
    assert "mos.pt" in stored and "MLmodel" in stored
    mv = MlflowClient(tracking_server["url"]).get_model_version_by_alias("jsqa-mos", "champion")
    assert mv.version == result["mos_version"] and mv.source.startswith(("models:/", "mlflow-artifacts:"))

    wav = client_dir / "clip.wav"
    t = np.arange(24000) / 16000
    sf.write(wav, (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 16000)
    model, described = load_model(CHAMPION, root=client_dir)
    assert f"version {result['mos_version']}" in described
    [row] = score_files(model, [wav])
    mlflow.set_tracking_uri(tracking_server["url"])
    out = mlflow.pyfunc.load_model(CHAMPION).predict(pd.DataFrame({"path": [str(wav)]}))
    assert row["error"] is None and out["error"][0] is None
    assert out["mos"][0] == pytest.approx(row["mos"], abs=1e-6)
