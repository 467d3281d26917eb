"""The Prefect flow against real DVC projects built in tmp_path, on Prefect's test server."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

from flows.pipeline import ARTIFACT_KEY, jsqa_pipeline, main, read_stage_names

# Each stage appends its name to runs.log (not a DVC output), so tests can see what executed.
_LOG = "import pathlib; pathlib.Path('runs.log').open('a').write({name!r} + '\\n'); "

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


def _cmd(name: str, body: str) -> str:
    # sys.executable: the shell DVC spawns may not have this venv's python (or yaml) on PATH.
    return shlex.join([sys.executable, "-c", _LOG.format(name=name) + body])


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


@pytest.fixture(scope="session")
def blank_project(tmp_path_factory) -> Path:
    """An empty git + DVC repository; tests copy it (dvc init costs a second of CPU each time)."""
    root = tmp_path_factory.mktemp("blank")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=root, check=True)
    return root


def _make_project(blank: Path, root: Path, stages: dict, params: dict | None = None) -> Path:
    shutil.copytree(blank, root, symlinks=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params or {"featurize": {"scale": 1}}))
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    return root


def _runs(root: Path) -> list[str]:
    path = root / "runs.log"
    return path.read_text().split() if path.exists() else []


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
    with pytest.raises(RuntimeError, match="stage 'download' failed") as info:
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
    with pytest.raises(ValueError, match="unknown stage.*nope.*valid stages: prepare, featurize, evaluate"):
        jsqa_pipeline(project_dir=str(tmp_path), stages=["prepare", "nope"])
    with pytest.raises(ValueError, match="unknown stage.*bogus"):
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
