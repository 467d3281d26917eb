"""Prefect flow that runs the project's DVC stages one at a time and publishes the metrics.

The command line is :mod:`flows.pipeline` (``python -m flows.pipeline run|serve``); this module
holds what runs under Prefect. Every run holds the project's run lock (:mod:`flows.runlock`).
"""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.exceptions import MissingContextError, ObjectNotFound
from prefect.runtime import flow_run

from flows.artifacts import publish_mlflow_link, publish_scatter
from flows.profile_switch import set_profile
from flows.runlock import killed_run, record_flow_run, run_lock
from flows.stages import check_params, read_stage_names, select_stages
from jsqa.errors import JsqaError, StageFailed
from jsqa.evaluation.comparison_report import comparison_tables
from jsqa.evaluation.report import evaluation_tables

log = logging.getLogger(__name__)

ARTIFACT_KEY = "jsqa-metrics"
TAIL_LINES = 20
# "jsqa pairs: error: ..." (jsqa's CLI) or "prog: error: ..." (argparse).
_CLI_ERROR = re.compile(r"^[\w.-]+( [\w.-]+)?: error: ")
# Only stages that reach outside the machine (downloads; the MLflow server when
# MLFLOW_TRACKING_URI is remote) are worth retrying; the others are deterministic, so a retry
# would fail the same way. Value: (retries, delay before each retry, s). A retried register may
# leave one extra, unpromoted version behind; the champion decision is taken afresh.
RETRIED_STAGES: dict[str, tuple[int, list[float]]] = {"acquire": (2, [2.0, 10.0]), "register": (1, [10.0])}
# What `dvc repro` prints when another DVC process holds the repository's lock (dvc/lock.py).
DVC_LOCKED = "Unable to acquire lock"
# Deployment runs of one project must not overlap (DVC's lock would fail the second part-way).
ONE_AT_A_TIME = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)


# Process groups of the `dvc repro` commands running now: each starts in its own group (so a
# Ctrl-C in the terminal does not hit DVC and the stage half-way) and stop_stages() ends them all.
_RUNNING: set[int] = set()


def stop_stages(grace_s: float = 10.0) -> None:
    """SIGTERM every running ``dvc repro`` with its stage processes; SIGKILL what is left after ``grace_s``."""
    groups = list(_RUNNING)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pgid in groups:
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                _RUNNING.discard(pgid)
        deadline = time.monotonic() + grace_s
        while sig == signal.SIGTERM and time.monotonic() < deadline and any(_group_alive(g) for g in groups):
            time.sleep(0.1)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


class DvcLocked(StageFailed):
    """Another DVC process holds the repository's lock: not worth a retry (it is no download blip)."""


def dvc_lock_holder(project_dir: str | Path) -> str:
    """Who holds DVC's repository lock: "pid N (command line)" from ``.dvc/tmp/lock`` (zc.lockfile writes the pid)."""
    try:
        pid = int((Path(project_dir) / ".dvc" / "tmp" / "lock").read_text().strip())
    except (OSError, ValueError):
        return "another DVC process"
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return f"pid {pid}"
    return f"pid {pid} ({cmdline})"


def _not_locked(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's retry condition: retry a retried stage unless DVC's lock stopped it."""
    return not isinstance(state.data, DvcLocked)


def _logger() -> logging.Logger | logging.LoggerAdapter:
    # The run logger ships lines to the Prefect UI; outside a run (task.fn() called directly)
    # there is none, so fall back to the module logger.
    try:
        return get_run_logger()
    except MissingContextError:
        return log


def _crash_killed_flow_run(root: Path, logger: logging.Logger | logging.LoggerAdapter) -> None:
    """Mark Crashed the flow run of a killed run of this project (named in the lock) if still Running.

    A SIGKILLed flow process reports nothing, so Prefect would show its run as Running for ever.
    """
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    left = killed_run(root).get("flow_run_id")
    current = flow_run.get_id()
    if left and left != current:
        with get_client(sync_client=True) as client:
            try:
                state = client.read_flow_run(left).state
            except ObjectNotFound:  # recorded on another Prefect server
                state = None
            if state is not None and state.is_running():
                message = f"its process (pid {killed_run(root).get('pid')}) was killed; marked by the next run"
                client.set_flow_run_state(left, Crashed(message=message), force=True)
                logger.warning("flow run %s was left Running by a killed process: marked Crashed", left)
    if current:
        record_flow_run(root, current)


@task(name="run_stage", task_run_name="{stage}", cache_policy=NO_CACHE)
def run_stage(stage: str, project_dir: str, force: bool = False) -> str:
    """Run ``dvc repro --single-item <stage>`` in ``project_dir``; return "ran" or "skipped".

    Raises StageFailed on failure: its first line is ``stage '<stage>' failed: <error line>``
    (see :func:`error_line`), then the last lines of DVC's output (all of which are in the log).
    """
    logger = _logger()
    # The interpreter running the flow has dvc installed (a package dependency); PATH may not.
    cmd = [sys.executable, "-m", "dvc", "repro", "--single-item", stage]
    if force:
        cmd.append("--force")
    logger.info("dvc repro %s%s in %s", stage, " --force" if force else "", project_dir)
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    # DVC prints this only when it executes the command (not for unchanged or run-cache hits).
    started = f"Running stage '{stage}'"
    ran = False
    # Stage commands call `jsqa`, installed beside this interpreter: put its bin dir first.
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    with subprocess.Popen(
        cmd,
        cwd=project_dir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        errors="replace",
        bufsize=1,
        start_new_session=True,
    ) as proc:
        assert proc.stdout is not None
        _RUNNING.add(proc.pid)
        try:
            for raw in proc.stdout:
                line = raw.rstrip()
                if not line:
                    continue
                tail.append(line)
                ran = ran or started in line
                logger.info("[%s] %s", stage, line)
            code = proc.wait()
        except BaseException:
            stop_stages()  # the flow is stopping (a signal, a crash): DVC and the stage go with it
            raise
        finally:
            _RUNNING.discard(proc.pid)
    if code != 0 and any(DVC_LOCKED in line for line in tail):
        raise DvcLocked(
            f"stage '{stage}' failed: DVC's lock on {project_dir} is held by {dvc_lock_holder(project_dir)}; "
            "wait for it to finish or stop it, then run again"
        )
    if code != 0:
        raise StageFailed(
            f"stage '{stage}' failed: {error_line(list(tail), code)}\nlast output of dvc repro:\n" + "\n".join(tail)
        )
    return "ran" if ran else "skipped"


def error_line(output: list[str], code: int) -> str:
    """The line of a failed ``dvc repro``'s output that says what went wrong.

    In order: the stage command's own ``<prog>: error: ...`` line (the jsqa CLI's, argparse's);
    else the command's last line before DVC's ``ERROR:`` report (a traceback's exception line,
    a ``sys.exit`` message); else DVC's first ``ERROR:`` line; else the exit code.
    """
    own = [line for line in output if _CLI_ERROR.match(line)]
    if own:
        return own[-1].strip()
    first_dvc_error = next((i for i, line in enumerate(output) if line.startswith("ERROR:")), len(output))
    # DVC echoes the command as "> cmd" before running it; what follows is the command's output.
    start = max((i + 1 for i, line in enumerate(output[:first_dvc_error]) if line.startswith("> ")), default=0)
    command_output = [line for line in output[start:first_dvc_error] if line.strip()]
    if command_output:
        return command_output[-1].strip()
    if first_dvc_error < len(output):
        return output[first_dvc_error].strip()
    return f"dvc exited with code {code}"


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise JsqaError(f"{path}: not valid JSON (line {exc.lineno})") from None
    if not isinstance(doc, dict):
        raise JsqaError(f"{path}: expected a JSON object")
    return doc


def metrics_markdown(project_dir: str | Path) -> str | None:
    """Render metrics/evaluate.json and metrics/register.json as markdown; None if neither exists."""
    root = Path(project_dir)
    evaluation = _read_json(root / "metrics" / "evaluate.json")
    register = _read_json(root / "metrics" / "register.json")
    if evaluation is None and register is None:
        return None
    lines = ["# JSQA pipeline metrics", ""]
    if evaluation is not None:
        if not isinstance(evaluation.get("models") or {}, dict):
            raise JsqaError(f"{root / 'metrics' / 'evaluate.json'}: 'models' must be an object")
        lines += ["## Evaluation", "", evaluation_tables(evaluation, "markdown", level=3)]
        compared = comparison_tables(evaluation, "markdown", level=3)  # peers, mapped RMSE, conditions
        if compared:
            lines += ["", compared]
    if register is not None:
        lines += ["", "## Registration", "", "| key | value |", "|---|---|"]
        lines += [f"| {_cell(key)} | {_cell(value)} |" for key, value in register.items()]
    return "\n".join(lines) + "\n"


@flow(name="jsqa-pipeline")
def jsqa_pipeline(
    project_dir: str = ".",
    stages: list[str] | None = None,
    force: list[str] | None = None,
    force_downstream: bool = False,
    profile: str | None = None,
    wait_s: float = 0.0,
    mlflow_ui: str | None = None,
) -> dict[str, str]:
    """Run the selected DVC stages in dvc.yaml order, one at a time; publish the artifacts.

    ``force`` re-runs the named stages even if unchanged (``force_downstream``: and every stage
    after the first of them). ``profile`` ("demo" | "paper") switches ``data.profile`` in
    params.yaml first; the change stays, as with ``dvc exp run -S``. ``wait_s`` is how long to
    wait for another run of this project to finish before failing. ``mlflow_ui`` is the MLflow
    UI address the run link points at (default: an http MLFLOW_TRACKING_URI, else
    http://127.0.0.1:5000).
    Returns {stage: "ran" | "skipped"}; "skipped" means DVC found the stage unchanged (or
    restored its outputs from the run cache) and did not execute its command.
    """
    logger = _logger()
    root = Path(project_dir).resolve()
    names = read_stage_names(root)
    selected, forced = select_stages(names, stages, force, force_downstream)
    outcome: dict[str, str] = {}
    with run_lock(root, wait_s, label=f"flow run {flow_run.get_name() or 'outside Prefect'}", logger=logger):
        if profile is not None and set_profile(root / "params.yaml", profile):
            logger.info("params.yaml: data.profile set to %s", profile)
        check_params(root, names)
        _crash_killed_flow_run(root, logger)
        # Sequential on purpose: two `dvc repro` on one repository fail on DVC's lock.
        for stage in selected:
            options: dict[str, Any] = {"name": f"dvc-{stage}", "task_run_name": stage}
            if stage in RETRIED_STAGES:
                options["retries"], options["retry_delay_seconds"] = RETRIED_STAGES[stage]
                options["retry_condition_fn"] = _not_locked
            outcome[stage] = run_stage.with_options(**options)(stage, str(root), force=stage in forced)
    logger.info("stages: %s", ", ".join(f"{s}={r}" for s, r in outcome.items()))
    report = metrics_markdown(root)
    if report is not None:
        create_markdown_artifact(markdown=report, key=ARTIFACT_KEY, description="JSQA evaluation metrics")
    url = publish_mlflow_link(root, mlflow_ui)
    if url:
        logger.info("MLflow run: %s", url)
    publish_scatter(root)
    return outcome


def start_temporary_server() -> int | None:
    """Start Prefect's temporary API server now, as the flow's first API call would; return its pid.

    None when PREFECT_API_URL names a server (nothing to start). Starting it here lets the CLI
    record the pid in the run lock, so the next run can stop it if this one is SIGKILLed.
    """
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return None
    # Prefect keeps one instance per port (None: any free one), so its client reuses this one.
    server = SubprocessASGIServer()
    server.start()
    return server.server_process.pid if server.server_process else None


def serve(name: str, cron: str | None, parameters: dict[str, Any]) -> None:
    """Register the deployment ``jsqa-pipeline/<name>`` and run its flow runs until stopped.

    At most one of its runs goes at a time (deployment concurrency limit, enqueue on collision).
    """
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise JsqaError(
            "serve needs a Prefect server: run `make ui-prefect` and set PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    jsqa_pipeline.serve(
        name=name,
        cron=cron or None,
        parameters=parameters,
        global_limit=ONE_AT_A_TIME,
        description="The jsqa DVC pipeline, one stage per task; one run at a time.",
        tags=["jsqa"],
    )
