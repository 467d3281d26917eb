"""The served deployment, as the Prefect UI drives it: `python -m flows.pipeline serve` in a
subprocess against the session's Prefect server, runs triggered through the API."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dvc_projects import (
    blank_project,  # noqa: F401 - fixture
    make_project,
    stage_cmd,
)
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    DeploymentFilter,
    DeploymentFilterId,
)
from prefect.client.schemas.objects import ConcurrencyLimitStrategy
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.artifacts import LINK_KEY, PLOT_KEY
from flows.jsqa_flow import ARTIFACT_KEY

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DEPLOYMENT = "jsqa-pipeline/test-nightly"
CRON = "0 3 * * *"
PNG = base64.b64decode(  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
REGISTER = '{"promoted": true, "mos_model": "jsqa-mos", "mos_version": "2", "run_id": "ab12", "experiment_id": "3"}'


def _stages() -> dict:
    # One stage (each `dvc repro` costs seconds here). It fails if another copy of itself is
    # running (a marker file), holds until the test creates `release` (at most 120 s: so a second trigger
    # certainly arrives while it runs), then writes what the artifacts are made from.
    work = (
        "import json, time, sys; m = pathlib.Path('busy'); m.exists() and sys.exit('overlap'); m.touch(); "
        "any(pathlib.Path('release').exists() or time.sleep(0.2) for _ in range(600)); "
        "pathlib.Path('metrics').mkdir(exist_ok=True); "
        "pathlib.Path('metrics/evaluate.json').write_text(json.dumps({'models': {}})); "
        f"pathlib.Path('metrics/register.json').write_text({REGISTER!r}); m.unlink()"
    )
    return {"work": {"cmd": stage_cmd("work", work), "metrics": [{"metrics/register.json": {"cache": False}}]}}


@pytest.fixture(scope="module")
def served(prefect_server, blank_project, tmp_path_factory):
    """A cheap project, served as a deployment by a `serve` subprocess; yields (project, client)."""
    root = make_project(blank_project, tmp_path_factory.mktemp("deploy") / "proj", _stages())
    (root / "plots").mkdir()
    (root / "plots" / "scatter.png").write_bytes(PNG)
    env = {
        **os.environ,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "PYTHONPATH": str(REPO),
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    log = open(root.parent / "serve.log", "w")  # noqa: SIM115 - the served process writes it until the fixture ends
    cmd = [
        sys.executable,
        "-m",
        "flows.pipeline",
        "serve",
        "--project-dir",
        str(root),
        "--name",
        "test-nightly",
        "--cron",
        CRON,
        "--mlflow-ui",
        "http://mlflow.test:5000",
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        with get_client(sync_client=True) as client:
            deadline = time.monotonic() + 90
            while True:
                try:
                    client.read_deployment_by_name(DEPLOYMENT)
                    break
                except ObjectNotFound:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise AssertionError(
                            "serve did not register the deployment:\n" + (root.parent / "serve.log").read_text()[-3000:]
                        ) from None
                    time.sleep(1)
            yield root, client
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _until(what: str, done, root: Path, timeout: float):
    deadline = time.monotonic() + timeout
    while not (result := done()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n" + (root.parent / "serve.log").read_text()[-3000:])
        time.sleep(0.5)
    return result


@pytest.fixture(scope="module")
def two_runs(served):
    """A second run triggered while the first is inside its stage; both waited to a final state."""
    root, client = served

    def trigger():
        return run_deployment(DEPLOYMENT, parameters={"force": ["work"]}, timeout=0).id

    first = trigger()
    _until(
        "the first run's stage to start",
        lambda: (root / "busy").exists() or client.read_flow_run(first).state.is_final(),
        root,
        120,
    )
    assert (root / "busy").exists(), client.read_flow_run(first).state.message
    second = trigger()
    _until(
        "the second run to wait for the slot",
        lambda: any(s.name == "AwaitingConcurrencySlot" for s in client.read_flow_run_states(second)),
        root,
        60,
    )
    (root / "release").touch()

    def finished():
        runs = [client.read_flow_run(i) for i in (first, second)]
        return runs if all(r.state.is_final() for r in runs) else None

    return _until("both runs to finish", finished, root, 150)


def test_deployment_has_schedule_parameters_and_a_limit_of_one(served):
    root, client = served
    dep = client.read_deployment_by_name(DEPLOYMENT)
    assert [s.schedule.cron for s in dep.schedules] == [CRON]
    assert dep.parameters["project_dir"] == str(root)
    assert dep.parameters["mlflow_ui"] == "http://mlflow.test:5000"
    assert dep.parameters["wait_s"] == 3600  # a nightly run waits for a manual one rather than failing
    schema = dep.parameter_openapi_schema["properties"]
    assert {"project_dir", "stages", "force", "force_downstream", "profile", "wait_s"} <= set(schema)
    assert dep.global_concurrency_limit is not None and dep.global_concurrency_limit.limit == 1
    assert dep.concurrency_options.collision_strategy == ConcurrencyLimitStrategy.ENQUEUE


def test_second_trigger_waits_for_the_first_and_both_complete(served, two_runs):
    _, client = served
    first, second = two_runs
    assert [r.state.name for r in two_runs] == ["Completed", "Completed"]
    assert first.end_time <= second.start_time  # never overlapping (the stage would also have failed)
    # The UI shows why the second one is not running yet: its history holds the waiting state.
    states = [s.name for s in client.read_flow_run_states(second.id)]
    assert "AwaitingConcurrencySlot" in states and states[-1] == "Completed"
    assert "AwaitingConcurrencySlot" not in [s.name for s in client.read_flow_run_states(first.id)]


def test_each_run_publishes_metrics_link_and_plot(served, two_runs):
    _, client = served
    for run in two_runs:
        artifacts = {
            a.key: a
            for a in client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
            )
        }
        assert set(artifacts) >= {ARTIFACT_KEY, LINK_KEY, PLOT_KEY}
        assert "| mos_version | 2 |" in artifacts[ARTIFACT_KEY].data
        assert (
            "(http://mlflow.test:5000/#/experiments/3/runs/ab12?workflowType=machine_learning)"
            in artifacts[LINK_KEY].data
        )
        assert "data:image/png;base64," in artifacts[PLOT_KEY].data


# --- the nightly schedule, against a real `prefect server start` ------------------------------
# The session's test server (prefect_test_harness) runs no scheduler service, and a stored cron
# is not proof that runs get created: with SQLAlchemy 2.1 the scheduler failed every minute and
# "Upcoming" stayed empty. So this serves the flow on a real server and waits for real runs.
EVERY_MINUTE = "* * * * *"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group (server or serve and its children), SIGKILL it after 20 s."""
    for sig, grace in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """``cmd`` in its own session (so _stop reaches what it spawns), output to ``log``."""
    with open(log, "w") as out:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture(scope="module")
def prefect_server_process(tmp_path_factory):
    """`prefect server start` on a free loopback port, PREFECT_HOME in tmp; yields (API URL, env)."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_UI_ENABLED": "false",
            "PYTHONPATH": str(REPO),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    )
    log = home / "server.log"
    proc = _start(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)], env, log
    )
    try:
        _wait_for(lambda: _healthy(api), "prefect server to start", 120, proc, log)
        yield api, {**env, "PREFECT_API_URL": api, "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    finally:
        _stop(proc)
        # A failing scheduler service logs here: show it beside the test's own failure.
        print(log.read_text()[-3000:])


def _healthy(api: str) -> bool:
    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        return client.api_healthcheck() is None


def _wait_for(check, what: str, timeout: float, proc: subprocess.Popen, log: Path):
    """Poll ``check`` until it returns something truthy; fail naming ``what`` (with the log tail)."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n" + log.read_text()[-3000:])
        time.sleep(1)
    return result


def test_served_cron_schedule_creates_runs_and_a_scheduled_run_completes(
    prefect_server_process, blank_project, tmp_path
):
    api, env = prefect_server_process
    work = "pathlib.Path('done.txt').write_text('ok')"
    root = make_project(
        blank_project, tmp_path / "proj", {"tick": {"cmd": stage_cmd("tick", work), "outs": ["done.txt"]}}
    )
    log = tmp_path / "serve.log"
    proc = _start(
        [
            sys.executable,
            "-m",
            "flows.pipeline",
            "serve",
            "--project-dir",
            str(root),
            "--name",
            "every-minute",
            "--cron",
            EVERY_MINUTE,
            "--wait",
            "0",
        ],
        env,
        log,
    )
    try:
        with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:

            def deployment():
                try:
                    return client.read_deployment_by_name("jsqa-pipeline/every-minute")
                except ObjectNotFound:
                    return None

            dep = _wait_for(deployment, "serve to register the deployment", 90, proc, log)
            assert [s.schedule.cron for s in dep.schedules] == [EVERY_MINUTE]

            def runs():
                return client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])))

            # What "Upcoming" shows: runs the scheduler created for the cron (it looks at recently
            # changed deployments every 5 s).
            scheduled = _wait_for(runs, "the scheduler to create runs", 45, proc, log)
            assert all(r.auto_scheduled for r in scheduled)
            # The first one fires at the next minute, and the served process runs it.
            done = _wait_for(
                lambda: [r for r in runs() if r.state.is_final()], "a scheduled run to finish", 150, proc, log
            )
            assert done[0].state.name == "Completed", done[0].state.message
            assert (root / "done.txt").read_text() == "ok"
    finally:
        _stop(proc)
