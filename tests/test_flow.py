"""The Prefect flow against real DVC projects built in tmp_path, on Prefect's test server."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from dvc_projects import blank_project  # noqa: F401 - fixture
from dvc_projects import make_project as _make_project
from dvc_projects import runs as _runs
from dvc_projects import stage_cmd as _cmd
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

from flows.pipeline import ARTIFACT_KEY, jsqa_pipeline, main, read_stage_names
from jsqa.errors import ConfigError, StageFailed

pytestmark = pytest.mark.integration

EVALUATION = {
    "models": {
        "pretrained": {
            "tiny_db": {"rmse": 0.4321, "mae": 0.3456, "pcc": 0.8765, "srcc": 0.8642, "n": 40},
            "pooled": {"rmse": 0.5111, "mae": 0.4111, "pcc": 0.8111, "srcc": 0.8011, "n": 80},
        },
        "scratch": {
            "tiny_db": {"rmse": 0.6543, "mae": 0.5432, "pcc": 0.7012, "srcc": 0.6987, "n": 40},
            "pooled": {"rmse": 0.6222, "mae": 0.5222, "pcc": 0.7222, "srcc": 0.7122, "n": 80},
        },
    },
    "relative_change": {
        "tiny_db": {"rmse": -33.96, "mae": -36.38, "pcc": 25.0, "srcc": 23.69},
        "pooled": {"rmse": -17.86, "mae": -21.28, "pcc": 12.3, "srcc": 12.48},
    },
}
REGISTER = {"promoted": True, "mos_version": 3, "reason": "pcc improved on pooled"}


def _three_stages() -> dict:
    prepare = "pathlib.Path('raw.txt').write_text('raw\\n')"
    featurize = (
        "import yaml; scale = yaml.safe_load(open('params.yaml'))['featurize']['scale']; "
        "pathlib.Path('feats.txt').write_text(pathlib.Path('raw.txt').read_text() + str(scale))"
    )
    evaluate = (
        "import json; pathlib.Path('feats.txt').read_text(); pathlib.Path('metrics').mkdir(exist_ok=True); "
        f"pathlib.Path('metrics/evaluate.json').write_text(json.dumps({EVALUATION!r})); "
        f"pathlib.Path('metrics/register.json').write_text(json.dumps({REGISTER!r}))"
    )
    return {
        "prepare": {"cmd": _cmd("prepare", prepare), "outs": ["raw.txt"]},
        "featurize": {
            "cmd": _cmd("featurize", featurize),
            "deps": ["raw.txt"],
            "params": ["featurize.scale"],
            "outs": ["feats.txt"],
        },
        "evaluate": {
            "cmd": _cmd("evaluate", evaluate),
            "deps": ["feats.txt"],
            "metrics": [{"metrics/evaluate.json": {"cache": False}}, {"metrics/register.json": {"cache": False}}],
        },
    }


@pytest.fixture(autouse=True)
def _prefect(prefect_server):
    """Every test here talks to the session's Prefect test server (tests/conftest.py)."""


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, blank_project):
    root = _make_project(blank_project, tmp_path_factory.mktemp("first") / "proj", _three_stages())
    state = jsqa_pipeline(project_dir=str(root), return_state=True)
    return root, state


def test_stage_names_follow_dvc_yaml_order(tmp_path):
    stages = _three_stages()
    reordered = {k: stages[k] for k in ("evaluate", "prepare", "featurize")}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": reordered}, sort_keys=False))
    assert read_stage_names(tmp_path) == ["evaluate", "prepare", "featurize"]


def test_flow_runs_every_stage_in_order(first_run):
    root, state = first_run
    assert state.is_completed()
    assert state.result() == {"prepare": "ran", "featurize": "ran", "evaluate": "ran"}
    assert _runs(root) == ["prepare", "featurize", "evaluate"]
    assert (root / "feats.txt").read_text() == "raw\n1"
    assert json.loads((root / "metrics" / "evaluate.json").read_text()) == EVALUATION
    assert (root / "dvc.lock").exists()


def test_flow_publishes_metrics_artifact(first_run):
    _, state = first_run
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[ARTIFACT_KEY]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
            )
        )
    assert len(artifacts) == 1
    markdown = artifacts[0].data
    assert artifacts[0].type == "markdown"
    for value in ("0.4321", "0.3456", "0.8765", "0.8642", "0.6543", "0.7012"):
        assert value in markdown
    assert "| tiny_db | pretrained | 0.4321 | 0.3456 | 0.8765 | 0.8642 | 40 |" in markdown
    assert "| pooled | scratch | 0.6222 | 0.5222 | 0.7222 | 0.7122 | 80 |" in markdown
    assert "| tiny_db | -33.96% | -36.38% | +25.00% | +23.69% |" in markdown
    assert markdown.index("| tiny_db | scratch") < markdown.index("| pooled | pretrained")
    assert "| promoted | yes |" in markdown and "| mos_version | 3 |" in markdown
    assert "pcc improved on pooled" in markdown


def test_unchanged_stages_skip_and_a_param_change_reruns_downstream(first_run, tmp_path):
    # A copy of the already-run project (cache, dvc.lock and all) saves running it again here.
    root = tmp_path / "proj"
    shutil.copytree(first_run[0], root, symlinks=True)
    assert jsqa_pipeline(project_dir=str(root)) == dict.fromkeys(("prepare", "featurize", "evaluate"), "skipped")
    assert _runs(root) == ["prepare", "featurize", "evaluate"]

    (root / "params.yaml").write_text(yaml.safe_dump({"featurize": {"scale": 7}}))
    assert jsqa_pipeline(project_dir=str(root)) == {"prepare": "skipped", "featurize": "ran", "evaluate": "ran"}
    assert _runs(root)[3:] == ["featurize", "evaluate"]
    assert (root / "feats.txt").read_text() == "raw\n7"

    # --force re-runs an unchanged stage; --stages limits the run to the named ones.
    assert jsqa_pipeline(project_dir=str(root), stages=["prepare"], force=["prepare"]) == {"prepare": "ran"}
    assert _runs(root)[-1] == "prepare"


def _flaky_stage(name: str) -> dict:
    # Fails on the first attempt (marker absent), succeeds on the next: a transient download error.
    body = (
        "import sys; m = pathlib.Path('tried.marker'); seen = m.exists(); m.touch(); "
        "pathlib.Path(f'{m.stem}.txt').write_text('ok') if seen else sys.exit('transient failure')"
    )
    return {"cmd": _cmd(name, body), "outs": ["tried.txt"]}


def test_failing_stage_fails_the_flow_and_only_acquire_is_retried(tmp_path, blank_project):
    stages = {"download": _flaky_stage("download"), **_three_stages()}
    root = _make_project(blank_project, tmp_path / "proj", stages)
    with pytest.raises(StageFailed, match="stage 'download' failed") as info:
        jsqa_pipeline(project_dir=str(root))
    assert "transient failure" in str(info.value)  # the stage's own output is in the message
    assert _runs(root) == ["download"]  # not retried, and the next stages never started


def test_acquire_is_retried_after_a_transient_failure(tmp_path, blank_project):
    root = _make_project(blank_project, tmp_path / "proj", {"acquire": _flaky_stage("acquire")})
    assert jsqa_pipeline(project_dir=str(root)) == {"acquire": "ran"}
    assert _runs(root) == ["acquire", "acquire"]
    assert (root / "tried.txt").read_text() == "ok"


def test_unknown_stage_names_are_rejected_before_anything_runs(tmp_path):
    # Validation needs only dvc.yaml: nothing may run, so no DVC repository is needed either.
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": _three_stages()}, sort_keys=False))
    with pytest.raises(ConfigError, match="unknown stage.*nope.*valid stages: prepare, featurize, evaluate"):
        jsqa_pipeline(project_dir=str(tmp_path), stages=["prepare", "nope"])
    with pytest.raises(ConfigError, match="unknown stage.*bogus"):
        jsqa_pipeline(project_dir=str(tmp_path), force=["bogus"])
    assert _runs(tmp_path) == []


def test_cli_run_reports_outcomes_and_exits_1_with_one_line_on_failure(first_run, capsys):
    root, _ = first_run
    assert main(["run", "--project-dir", str(root), "--stages", "evaluate"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "evaluate: skipped"
    assert "# JSQA pipeline metrics" in out  # the metrics table follows the outcomes

    assert main(["run", "--project-dir", str(root), "--stages", "prepare,nope"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope" in err and err.startswith("jsqa-pipeline: error:")


def test_force_downstream_forces_every_later_selected_stage():
    from flows.pipeline import select_stages

    names = ["acquire", "pairs", "pretrain", "evaluate"]
    assert select_stages(names, None, ["pairs"]) == (names, {"pairs"})
    assert select_stages(names, None, ["pairs"], force_downstream=True) == (names, {"pairs", "pretrain", "evaluate"})
    assert select_stages(names, ["acquire", "pretrain"], ["acquire"], True) == (["acquire", "pretrain"],
                                                                                 {"acquire", "pretrain"})
    assert select_stages(names, None, None, force_downstream=True) == (names, set())


def test_second_run_of_a_project_is_refused_with_the_holder_named(first_run, tmp_path, capsys):
    import threading

    from flows.runlock import PipelineBusy, run_lock

    root = tmp_path / "proj"
    shutil.copytree(first_run[0], root, symlinks=True)
    with run_lock(root, label="nightly run"):
        with pytest.raises(PipelineBusy, match=r"a pipeline run is already going .*nightly run"):
            jsqa_pipeline(project_dir=str(root), stages=["prepare"])
        assert main(["run", "--project-dir", str(root), "--stages", "prepare"]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "already going" in err and "waited 0 s" in err
    n_runs = len(_runs(root))

    # With --wait the second run starts once the first lets go, instead of failing.
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with run_lock(root, label="first"):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(10)
    threading.Timer(1.0, release.set).start()
    assert jsqa_pipeline(project_dir=str(root), stages=["prepare"], force=["prepare"], wait_s=30) == {"prepare": "ran"}
    thread.join()
    assert _runs(root)[n_runs:] == ["prepare"]


def test_profile_parameter_switches_params_yaml_keeping_comments(tmp_path):
    from flows.profile_switch import set_profile

    repo_params = Path(__file__).resolve().parents[1] / "params.yaml"
    path = tmp_path / "params.yaml"
    shutil.copyfile(repo_params, path)
    before = path.read_text()
    assert set_profile(path, "paper") is True
    after = path.read_text()
    assert yaml.safe_load(after)["data"]["profile"] == "paper"
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
    assert changed == [("  profile: demo", "  profile: paper")]  # comments and everything else kept
    assert set_profile(path, "paper") is False
    with pytest.raises(ConfigError, match="data.profile.*'studio'"):
        set_profile(path, "studio")
    (tmp_path / "other.yaml").write_text("seed: 1\ndata:\n  sample_rate: 16000\nmodel:\n  profile: demo\n")
    with pytest.raises(ConfigError, match="no data.profile line"):
        set_profile(tmp_path / "other.yaml", "paper")


def test_flow_links_the_mlflow_run_and_embeds_the_scatter_plot(first_run, tmp_path, monkeypatch):
    from flows.artifacts import LINK_KEY, PLOT_KEY, mlflow_ui_base

    root = tmp_path / "proj"
    shutil.copytree(first_run[0], root, symlinks=True)
    (root / "metrics" / "register.json").write_text(json.dumps(
        {"promoted": True, "mos_model": "jsqa-mos", "mos_version": "4", "run_id": "0f1e2d", "experiment_id": "7"}))
    (root / "plots").mkdir()
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
    (root / "plots" / "scatter.png").write_bytes(png)
    state = jsqa_pipeline(project_dir=str(root), stages=["prepare"], mlflow_ui="http://mlflow.test:5000/",
                          return_state=True)
    with get_client(sync_client=True) as client:
        found = {a.key: a for a in client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))}
    assert found[LINK_KEY].type == "markdown"  # Prefect stores link artifacts as markdown links
    assert "(http://mlflow.test:5000/#/experiments/7/runs/0f1e2d)" in found[LINK_KEY].data
    assert "jsqa-mos v4" in found[LINK_KEY].data
    import base64

    assert f"(data:image/png;base64,{base64.b64encode(png).decode()})" in found[PLOT_KEY].data
    # Without an explicit address: an http tracking server is the UI, else the local `make ui-mlflow`.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://mlflow.example.org/")
    assert mlflow_ui_base() == "https://mlflow.example.org"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///x.db")
    assert mlflow_ui_base() == "http://127.0.0.1:5000"
