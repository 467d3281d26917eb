"""`jsqa register` then `jsqa models list | promote | rollback` on a real SQLite MLflow store."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from jsqa.cli import main
from jsqa.models.mos import MOSModel, PretrainModel, encoder_spec, save_checkpoint

pytestmark = pytest.mark.integration

EVALUATION = {"models": {"pretrained": {"pooled": {"rmse": 0.61, "mae": 0.5, "pcc": 0.8, "srcc": 0.79, "n": 40}}}}


def _git(root: Path, *args: str) -> str:
    cmd = ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args]
    return subprocess.run(cmd, cwd=root, check=True, capture_output=True, text=True).stdout.strip()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _mos(path: Path, val_rmse: float, seed: int) -> Path:
    torch.manual_seed(seed)
    spec = encoder_spec("small")
    model = MOSModel(spec)
    save_checkpoint(path, "mos", model, spec, head=model.head_config,
                    metrics={"val_rmse": val_rmse, "val_pcc": 0.9}, init="pretrained")
    return path


@pytest.fixture(scope="module")
def project(tmp_path_factory, empty_mlflow_store):
    """A committed git project with dvc.lock and manifests, and two registrations (v1, then v2 better)."""
    root = tmp_path_factory.mktemp("models") / "proj"
    (root / "data" / "manifests").mkdir(parents=True)
    for name in ("clean", "mos"):
        frame = pd.DataFrame({"id": [name], "path": [f"{name}.wav"]})
        frame.to_parquet(root / "data" / "manifests" / f"{name}.parquet")
    (root / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    (root / "metrics").mkdir()
    (root / "metrics" / "evaluate.json").write_text(json.dumps(EVALUATION))
    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "init")
    empty_mlflow_store(root / "mlflow.db")
    spec = encoder_spec("small")
    torch.manual_seed(0)
    save_checkpoint(root / "encoder.pt", "encoder", PretrainModel(spec), spec)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # the CLI's defaults (params.yaml, mlflow.db, metrics/) are relative to the cwd
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
        for i, rmse in enumerate((0.5, 0.4), start=1):
            _mos(root / f"mos{i}.pt", rmse, seed=i)
            assert main(["register", "--encoder", "encoder.pt", "--mos", f"mos{i}.pt"]) == 0
        yield root


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def _client(root: Path) -> MlflowClient:
    uri = f"sqlite:///{root / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _champions(root: Path) -> tuple[str, str]:
    client = _client(root)
    return tuple(str(client.get_model_version_by_alias(n, "champion").version) for n in ("jsqa-mos", "jsqa-encoder"))


def test_versions_carry_provenance_and_metrics(project):
    client = _client(project)
    head = _git(project, "rev-parse", "HEAD")
    for name in ("jsqa-mos", "jsqa-encoder"):
        tags = client.get_model_version(name, "2").tags
        # mos*.pt, encoder.pt and mlflow.db are untracked, so the tree is clean.
        assert tags["git_commit"] == head
        assert tags["dvc_lock_sha256"] == _sha(project / "dvc.lock")
        assert tags["manifest_clean_sha256"] == _sha(project / "data" / "manifests" / "clean.parquet")
        assert tags["manifest_mos_sha256"] == _sha(project / "data" / "manifests" / "mos.parquet")
        assert float(tags["val_rmse"]) == pytest.approx(0.4) and float(tags["val_pcc"]) == pytest.approx(0.9)
        assert float(tags["test_rmse"]) == pytest.approx(0.61) and float(tags["test_srcc"]) == pytest.approx(0.79)
    register = json.loads((project / "metrics" / "register.json").read_text())
    assert register["promoted"] is True and register["mos_version"] == "2"
    assert register["experiment_id"] == client.get_run(register["run_id"]).info.experiment_id


def test_list_shows_both_versions_aliases_and_metrics(project, capsys, monkeypatch):
    monkeypatch.chdir(project)
    code, out, _ = _cli(capsys, "models", "list")
    assert code == 0
    lines = out.splitlines()
    header = lines[0].split()
    assert header[:3] == ["version", "aliases", "created"]
    for column in ("git_commit", "dvc_lock_sha256", "val_rmse", "test_rmse"):
        assert column in header
    rows = [line.split() for line in lines[1:3]]
    assert [r[0] for r in rows] == ["2", "1"]  # newest first
    assert rows[0][1] == "champion"
    assert "0.4000" in rows[0] and "0.5000" in rows[1] and "0.6100" in rows[0]
    assert lines[-1] == "@champion history (oldest first): 1, 2"
    code, out, _ = _cli(capsys, "models", "list", "--name", "jsqa-encoder")
    assert code == 0 and out.splitlines()[1].split()[:2] == ["2", "champion"]


def test_promote_rollback_walk_back_through_champions_together(project, capsys, monkeypatch):
    monkeypatch.chdir(project)
    assert _champions(project) == ("2", "2")

    code, out, _ = _cli(capsys, "models", "promote", "1")
    assert code == 0 and "jsqa-mos@champion v2 -> v1" in out and "jsqa-encoder@champion v2 -> v1" in out
    assert _champions(project) == ("1", "1")
    assert _client(project).get_model_version("jsqa-mos", "1").tags["previous_champion"] == "2"

    code, out, _ = _cli(capsys, "models", "rollback")
    assert code == 0 and "jsqa-mos@champion v1 -> v2" in out
    assert _champions(project) == ("2", "2")

    # Naming the encoder moves the pair just the same; v1 was the first champion.
    assert _cli(capsys, "models", "rollback", "--name", "jsqa-encoder")[0] == 0
    assert _champions(project) == ("1", "1")

    code, out, err = _cli(capsys, "models", "rollback")
    assert code == 2 and out == ""
    assert err.strip() == ("jsqa models: error: jsqa-mos@champion is v1 and no earlier champion is "
                           "recorded: nothing to roll back to")
    assert _champions(project) == ("1", "1")

    assert _cli(capsys, "models", "promote", "2")[0] == 0
    assert _champions(project) == ("2", "2")


def test_bad_version_or_name_is_one_clear_line(project, capsys, monkeypatch):
    monkeypatch.chdir(project)
    before = _champions(project)
    code, _, err = _cli(capsys, "models", "promote", "9")
    assert code == 2 and err.strip() == "jsqa models: error: jsqa-mos has no version 9"
    code, _, err = _cli(capsys, "models", "promote", "1", "--name", "jsqa-other")
    assert code == 2 and "unknown model 'jsqa-other'" in err and len(err.splitlines()) == 1
    assert _champions(project) == before


def test_promotion_rule_respects_direction_and_min_improvement(project, capsys, monkeypatch, tmp_path):
    """A second project sharing nothing: pcc, higher is better, needs +0.05 to move the champion."""
    monkeypatch.chdir(project)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["register"].update(mos_name="rule-mos", encoder_name="rule-enc", metric="val_pcc",
                              direction="higher", min_improvement=0.05)
    (tmp_path / "rule.yaml").write_text(yaml.safe_dump(params))
    spec = encoder_spec("small")

    def register_with(pcc: float, seed: int) -> dict:
        torch.manual_seed(seed)
        model = MOSModel(spec)
        ckpt = tmp_path / f"m{seed}.pt"
        save_checkpoint(ckpt, "mos", model, spec, head=model.head_config, metrics={"val_pcc": pcc}, init="pretrained")
        out = tmp_path / f"r{seed}.json"
        args = ["register", "--params", str(tmp_path / "rule.yaml"), "--encoder", "encoder.pt", "--mos", str(ckpt),
                "--out", str(out)]
        assert main(args) == 0
        return json.loads(out.read_text())

    assert register_with(0.80, 1)["promoted"] is True
    assert register_with(0.84, 2)["promoted"] is False  # better, by less than 0.05
    assert register_with(0.70, 3)["promoted"] is False  # lower is worse here
    third = register_with(0.85, 4)
    assert third["promoted"] is True and third["champion_before"] == pytest.approx(0.80)
    capsys.readouterr()

    params["register"]["direction"] = "lower"  # contradicts val_pcc: refused before logging anything
    (tmp_path / "rule.yaml").write_text(yaml.safe_dump(params))
    code, _, err = _cli(capsys, "register", "--params", str(tmp_path / "rule.yaml"), "--encoder", "encoder.pt",
                        "--mos", str(tmp_path / "m4.pt"))
    assert code == 2 and "register.direction" in err and "val_pcc" in err
    assert len(_client(project).search_model_versions("name='rule-mos'")) == 4
