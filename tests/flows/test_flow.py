"""The Prefect flow against real DVC projects built in tmp_path, on Prefect's test server."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from dvc_projects import blank_project  # noqa: F401 - fixture
from dvc_projects import make_project as _make_project
from dvc_projects import runs as _runs
from dvc_projects import stage_cmd as _cmd
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

from flows.jsqa_flow import ARTIFACT_KEY, jsqa_pipeline
from flows.pipeline import main
from flows.stages import read_stage_names
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
    # The first line (what the CLI prints) is the stage's own message, not DVC's report.
    assert str(info.value).splitlines()[0] == "stage 'download' failed: transient failure"
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
    from flows.stages import select_stages

    names = ["acquire", "pairs", "pretrain", "evaluate"]
    assert select_stages(names, None, ["pairs"]) == (names, {"pairs"})
    assert select_stages(names, None, ["pairs"], force_downstream=True) == (names, {"pairs", "pretrain", "evaluate"})
    assert select_stages(names, ["acquire", "pretrain"], ["acquire"], True) == (
        ["acquire", "pretrain"],
        {"acquire", "pretrain"},
    )
    assert select_stages(names, None, None, force_downstream=True) == (names, set())


@contextlib.contextmanager
def _held_by_another_run(root: Path, label: str, release_after: float | None = None):
    """The project's run lock, held by another thread for the ``with`` body (or ``release_after`` s).

    Another thread, because the holder's own context may re-enter the lock (the CLI's run holds
    it around the flow).
    """
    from flows.runlock import run_lock

    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with run_lock(root, label=label):
            held.set()
            release.wait(60)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(10)
    if release_after is not None:
        threading.Timer(release_after, release.set).start()
    try:
        yield
    finally:
        release.set()
        thread.join()


def test_second_run_of_a_project_is_refused_with_the_holder_named(first_run, tmp_path, capsys):
    from flows.runlock import PipelineBusy

    root = tmp_path / "proj"
    shutil.copytree(first_run[0], root, symlinks=True)
    with _held_by_another_run(root, "nightly run"):
        with pytest.raises(PipelineBusy, match=r"a pipeline run is already going .*nightly run"):
            jsqa_pipeline(project_dir=str(root), stages=["prepare"])
        assert main(["run", "--project-dir", str(root), "--stages", "prepare"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1
        assert "already going" in err[0]
        assert "waited 0 s" in err[0]
    n_runs = len(_runs(root))

    # With --wait the second run starts once the first lets go, instead of failing.
    with _held_by_another_run(root, "first", release_after=1.0):
        assert jsqa_pipeline(project_dir=str(root), stages=["prepare"], force=["prepare"], wait_s=30) == {
            "prepare": "ran"
        }
    assert _runs(root)[n_runs:] == ["prepare"]


def test_profile_parameter_switches_params_yaml_keeping_comments(tmp_path):
    from flows.profile_switch import set_profile

    repo_params = Path(__file__).resolve().parents[2] / "params.yaml"
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
    (root / "metrics" / "register.json").write_text(
        json.dumps(
            {"promoted": True, "mos_model": "jsqa-mos", "mos_version": "4", "run_id": "0f1e2d", "experiment_id": "7"}
        )
    )
    (root / "plots").mkdir()
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
    (root / "plots" / "scatter.png").write_bytes(png)
    state = jsqa_pipeline(
        project_dir=str(root), stages=["prepare"], mlflow_ui="http://mlflow.test:5000/", return_state=True
    )
    with get_client(sync_client=True) as client:
        found = {
            a.key: a
            for a in client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
                )
            )
        }
    assert found[LINK_KEY].type == "markdown"  # Prefect stores link artifacts as markdown links
    assert "(http://mlflow.test:5000/#/experiments/7/runs/0f1e2d?workflowType=machine_learning)" in found[LINK_KEY].data
    assert "jsqa-mos v4" in found[LINK_KEY].data
    import base64

    assert f"(data:image/png;base64,{base64.b64encode(png).decode()})" in found[PLOT_KEY].data
    # Without an explicit address: an http tracking server is the UI, else the local `make ui-mlflow`.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://mlflow.example.org/")
    assert mlflow_ui_base() == "https://mlflow.example.org"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///x.db")
    assert mlflow_ui_base() == "http://127.0.0.1:5000"


def test_cli_names_the_failed_stage_with_its_own_error_line(tmp_path, blank_project, capsys):
    # Like a jsqa stage: a traceback-free CLI error line among other output, exit code 2.
    body = (
        "import sys; print('reading manifests'); print('jsqa pairs: error: data/manifests/clean.csv: "
        "no utterances', file=sys.stderr); print('more noise'); sys.exit(2)"
    )
    root = _make_project(blank_project, tmp_path / "proj", {"pairs": {"cmd": _cmd("pairs", body), "outs": ["p"]}})
    assert main(["run", "--project-dir", str(root)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "jsqa-pipeline: error: stage 'pairs' failed: jsqa pairs: error: data/manifests/clean.csv: no utterances"
    ]


def test_error_line_prefers_the_stage_message_then_dvc():
    from flows.jsqa_flow import error_line

    dvc_error = "ERROR: failed to reproduce 'x': failed to run: python -c ..., exited with 1"
    traceback = [
        "Running stage 'x':",
        "> python -c ...",
        "Traceback (most recent call last):",
        '  File "<string>", line 1, in <module>',
        "ValueError: bad sample rate",
        dvc_error,
    ]
    assert error_line(traceback, 1) == "ValueError: bad sample rate"
    assert error_line(["Running stage 'x':", "> python -c ...", dvc_error], 1) == dvc_error
    assert error_line([], 255) == "dvc exited with code 255"


# --- the CLI as a user runs it: a separate process with Prefect's temporary server -------------
REPO = Path(__file__).resolve().parents[2]
REFUSAL_S = 3.0  # it used to take ~10 s (Prefect import and server start) and print a traceback


def _cli_env(tmp_path: Path) -> dict[str, str]:
    """No PREFECT_API_URL (the CLI starts its temporary server), a private PREFECT_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        {
            "PREFECT_HOME": str(tmp_path / "prefect-home"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
            "PYTHONPATH": str(REPO),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    )
    return env


def _cli(root: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "flows.pipeline", "run", "--project-dir", str(root), *args]


def test_cli_beside_a_running_run_is_refused_at_once_in_one_line(first_run, tmp_path):
    from flows.runlock import run_lock

    root = tmp_path / "proj"
    shutil.copytree(first_run[0], root, symlinks=True)
    with run_lock(root, label="nightly run"):
        start = time.monotonic()
        proc = subprocess.run(_cli(root), env=_cli_env(tmp_path), capture_output=True, text=True, timeout=60)
        elapsed = time.monotonic() - start
    print(f"second run refused in {elapsed:.2f} s")
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("jsqa-pipeline: error: ")
    assert "already going" in lines[0]
    assert f"pid {os.getpid()} on " in lines[0]
    assert "(nightly run)" in lines[0]
    assert elapsed < REFUSAL_S
    assert _runs(root) == ["prepare", "featurize", "evaluate"]  # nothing ran


def _children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _until(what: str, check, timeout: float, log: Path):
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n" + log.read_text()[-3000:])
        time.sleep(0.3)
    return result


def test_waiting_run_says_so_and_a_killed_run_leaves_no_server_in_the_way(blank_project, tmp_path):
    from flows.runlock import SERVER_APP, lock_path, run_lock

    # Holds inside its stage until the test creates `release` (at most 120 s).
    hold = (
        "import time; m = pathlib.Path('busy'); m.touch(); "
        "any(pathlib.Path('release').exists() or time.sleep(0.2) for _ in range(600)); "
        "pathlib.Path('held.txt').write_text('ok'); m.unlink()"
    )
    root = _make_project(blank_project, tmp_path / "proj", {"hold": {"cmd": _cmd("hold", hold), "outs": ["held.txt"]}})
    env, log = _cli_env(tmp_path), tmp_path / "first.log"
    leftovers: list[int] = []
    with open(log, "w") as out:
        first = subprocess.Popen(
            _cli(root, "--wait", "60"), env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        with run_lock(root, label="nightly run"):
            waiting = _until(
                "the waiting line",
                lambda: [ln for ln in log.read_text().splitlines() if "waiting up to 60 s" in ln],
                30,
                log,
            )
        assert len(waiting) == 1
        assert " INFO " in waiting[0]
        assert "(nightly run)" in waiting[0]

        _until("the first run's stage", (root / "busy").exists, 240, log)
        server = json.loads(lock_path(root).read_text())["server_pid"]
        assert SERVER_APP in Path(f"/proc/{server}/cmdline").read_bytes().decode()
        leftovers = [server, *_children(first.pid)]
        first.kill()  # SIGKILL the flow process alone, as the OOM killer does: its children stay
        first.wait(10)
        assert _alive(server)  # this is what a killed run leaves behind...
        (root / "release").touch()  # ...besides its stage command, which finishes on its own
        _until("the killed run's dvc to finish", lambda: not any(_alive(p) for p in leftovers if p != server), 60, log)

        second = subprocess.run(_cli(root, "--force", "hold"), env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stdout + second.stderr
        assert "hold: ran" in second.stdout.splitlines()
        assert f"stopping the temporary Prefect server (pid {server}) left by a killed run" in second.stderr
        assert not _alive(server)
        assert _runs(root) == ["hold", "hold"]
    finally:
        for pid in [first.pid, *leftovers]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_run_started_without_make_has_telemetry_off_in_its_stages(blank_project, tmp_path, monkeypatch):
    from flows.offline import TELEMETRY_OFF

    for name in TELEMETRY_OFF:
        monkeypatch.delenv(name, raising=False)
    body = f"import json, os; pathlib.Path('env.json').write_text(json.dumps({{k: os.environ.get(k) for k in {sorted(TELEMETRY_OFF)!r}}}))"
    root = _make_project(blank_project, tmp_path / "proj", {"env": {"cmd": _cmd("env", body), "outs": ["env.json"]}})
    assert main(["run", "--project-dir", str(root)]) == 0
    assert json.loads((root / "env.json").read_text()) == TELEMETRY_OFF


def test_sigterm_to_a_run_stops_its_dvc_and_stage(blank_project, tmp_path):
    body = "import os, time; pathlib.Path('stage.pid').write_text(str(os.getpid())); time.sleep(300)"
    root = _make_project(blank_project, tmp_path / "proj", {"slow": {"cmd": _cmd("slow", body), "outs": ["x"]}})
    log = tmp_path / "run.log"
    with open(log, "w") as out:
        run = subprocess.Popen(_cli(root), env=_cli_env(tmp_path), stdout=out, stderr=subprocess.STDOUT)
    try:
        stage = int(
            _until("the stage", lambda: (root / "stage.pid").exists() and (root / "stage.pid").read_text(), 240, log)
        )
        run.send_signal(signal.SIGTERM)
        assert run.wait(60) != 0
        _until("the stage to stop", lambda: not _alive(stage), 15, log)
    finally:
        run.kill()


def test_a_dvc_lock_is_not_retried_and_names_its_holder(blank_project, tmp_path):
    import zc.lockfile
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    root = _make_project(blank_project, tmp_path / "proj", {"acquire": {"cmd": _cmd("acquire", ""), "outs": []}})
    lock = zc.lockfile.LockFile(str(root / ".dvc" / "tmp" / "lock"))  # what a running `dvc` holds
    try:
        state = jsqa_pipeline(project_dir=str(root), return_state=True)
    finally:
        lock.close()
    with pytest.raises(StageFailed, match=f"DVC's lock on .* is held by pid {os.getpid()} "):
        state.result()
    with get_client(sync_client=True) as client:
        flow_filter = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        (task_run,) = client.read_task_runs(flow_run_filter=flow_filter)
    assert task_run.run_count == 1  # acquire is retried for downloads, not for a lock
    assert _runs(root) == []


def test_the_next_run_marks_a_killed_runs_flow_run_crashed(blank_project, tmp_path):
    from prefect.states import Running

    from flows.runlock import lock_path

    root = _make_project(blank_project, tmp_path / "proj", {"a": {"cmd": _cmd("a", ""), "outs": []}})
    with get_client(sync_client=True) as client:
        killed = client.create_flow_run(jsqa_pipeline, state=Running())
    # What a SIGKILLed run leaves: its flow run Running, its record in the run lock.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock_path(root).write_text(json.dumps({"pid": int(dead.stdout), "host": "h", "flow_run_id": str(killed.id)}))
    jsqa_pipeline(project_dir=str(root))
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(killed.id).state
    assert state.type.value == "CRASHED" and "was killed" in state.message
