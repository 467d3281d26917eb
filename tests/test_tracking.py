"""Tracking configuration: which MLflow store a call talks to, and the UI address of its runs."""

from pathlib import Path

import mlflow
import pytest

from jsqa import tracking

pytestmark = pytest.mark.integration


def test_switching_project_roots_in_one_process_follows_each_root(tmp_path, monkeypatch):
    """mlflow exports the URIs it is given; a second root must not stay pinned to the first."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    tracking.configure(a)
    assert mlflow.get_registry_uri().endswith("/a/mlflow.db")
    tracking.configure(b)
    assert mlflow.get_tracking_uri().endswith("/b/mlflow.db")
    assert mlflow.get_registry_uri().endswith("/b/mlflow.db")
    # a user's own setting still wins, and keeps winning on the next call
    user = f"sqlite:///{tmp_path / 'user.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", user)
    tracking.configure(b)
    tracking.configure(b)
    assert mlflow.get_tracking_uri() == user and mlflow.get_registry_uri() == user


def test_the_experiment_is_tagged_as_classic_ml(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    exp_id = tracking.configure(tmp_path)
    assert mlflow.get_experiment(exp_id).tags["mlflow.experimentKind"] == "custom_model_development"
    # an experiment created before the tag existed gets it on the next run
    client = mlflow.MlflowClient()
    client.delete_experiment_tag(exp_id, "mlflow.experimentKind")
    tracking.configure(tmp_path)
    assert mlflow.get_experiment(exp_id).tags["mlflow.experimentKind"] == "custom_model_development"


def test_the_ui_address_opens_the_runs_in_the_model_training_view():
    url = tracking.ui_url("http://127.0.0.1:5000/", "7")
    assert url == "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"


def test_the_installed_mlflow_ui_reads_its_view_from_that_address_parameter():
    """MLflow's UI bundle takes the GenAI / Model training view from `workflowType`; an upgrade
    that drops the parameter fails here rather than reopening jsqa on an empty GenAI page."""
    bundle = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
    js = "".join(p.read_text(encoding="utf-8") for p in bundle.glob("main.*.js"))
    key, value = tracking.UI_VIEW_QUERY.split("=")
    assert f'.get("{key}")' in js
    assert f'MACHINE_LEARNING="{value}"' in js


def test_project_root_is_found_from_a_subfolder(tmp_path):
    (tmp_path / "proj" / "data" / "raw").mkdir(parents=True)
    (tmp_path / "proj" / "params.yaml").write_text("seed: 0\n")
    assert tracking.project_root(tmp_path / "proj" / "data" / "raw") == (tmp_path / "proj").resolve()
    assert tracking.project_root(tmp_path / "proj") == (tmp_path / "proj").resolve()
    (tmp_path / "proj" / "data" / ".dvc").mkdir()  # the nearest marked folder wins
    assert tracking.project_root(tmp_path / "proj" / "data" / "raw") == (tmp_path / "proj" / "data").resolve()
