"""Prefect flow that runs the project's DVC stages one at a time and publishes the metrics.

CLI:
    python -m flows.pipeline run   [--project-dir .] [--stages a,b] [--force x,y] [--force-downstream]
                                   [--profile demo|paper] [--wait SECONDS] [--mlflow-ui URL]
    python -m flows.pipeline serve [same options] [--cron "0 3 * * *"] [--name jsqa-nightly]

``serve`` registers the deployment ``jsqa-pipeline/<name>`` (cron schedule, the options above
as default parameters, at most one run at a time: a second trigger waits in the state
``AwaitingConcurrencySlot``) and runs what is triggered until stopped; it needs a running
``prefect server start`` and ``PREFECT_API_URL=http://127.0.0.1:4200/api``. Every run also holds
the project's run lock (:mod:`flows.runlock`), so a ``run`` beside a served run waits
``--wait`` seconds and is then refused with a message naming the holder.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.exceptions import MissingContextError
from prefect.runtime import flow_run

from flows.artifacts import publish_mlflow_link, publish_scatter
from flows.profile_switch import set_profile
from flows.runlock import run_lock
from jsqa.errors import ConfigError, JsqaError, StageFailed
from jsqa.evaluation.report import evaluation_tables

log = logging.getLogger(__name__)

ARTIFACT_KEY = "jsqa-metrics"
TAIL_LINES = 20
# Only stages that reach outside the machine (downloads; the MLflow server when
# MLFLOW_TRACKING_URI is remote) are worth retrying; the others are deterministic, so a retry
# would fail the same way. Value: (retries, delay before each retry, s). A retried register may
# leave one extra, unpromoted version behind; the champion decision is taken afresh.
RETRIED_STAGES: dict[str, tuple[int, list[float]]] = {"acquire": (2, [2.0, 10.0]), "register": (1, [10.0])}
# A scheduled run waits this long for a manual run of the same project to finish.
SERVE_WAIT_S = 3600.0
# Deployment runs of one project must not overlap (DVC's lock would fail the second part-way).
ONE_AT_A_TIME = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)


def _logger() -> logging.Logger | logging.LoggerAdapter:
    # The run logger ships lines to the Prefect UI; outside a run (task.fn() called directly)
    # there is none, so fall back to the module logger.
    try:
        return get_run_logger()
    except MissingContextError:
        return log


def read_stage_names(project_dir: str | Path) -> list[str]:
    """Return the stage names of ``<project_dir>/dvc.yaml`` in file order."""
    path = Path(project_dir) / "dvc.yaml"
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found (is --project-dir the DVC project root?)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc.__class__.__name__})") from None
    stages = doc.get("stages") if isinstance(doc, dict) else None
    if not isinstance(stages, dict) or not stages:
        raise ConfigError(f"{path}: has no 'stages' mapping")
    return [str(name) for name in stages]


def select_stages(
    all_stages: Sequence[str], stages: Iterable[str] | None, force: Iterable[str] | None,
    force_downstream: bool = False,
) -> tuple[list[str], set[str]]:
    """Check the requested names and return (stages to run in dvc.yaml order, stages to force).

    With ``force_downstream`` every selected stage after the first forced one is forced too
    (``dvc repro --force-downstream``). Raises ConfigError naming the valid stages when a name
    is unknown, or when a forced stage is not among the selected ones (it would silently not run).
    """
    valid = list(all_stages)
    wanted = set(valid) if stages is None else set(stages)
    forced = set(force or ())
    unknown = sorted((wanted | forced) - set(valid))
    if unknown:
        raise ConfigError(f"unknown stage(s) {', '.join(unknown)}; valid stages: {', '.join(valid)}")
    if not wanted:
        raise ConfigError(f"no stage selected; valid stages: {', '.join(valid)}")
    not_selected = sorted(forced - wanted)
    if not_selected:
        raise ConfigError(f"forced stage(s) {', '.join(not_selected)} are not among the selected stages")
    selected = [name for name in valid if name in wanted]
    if force_downstream and forced:
        first = min(selected.index(name) for name in forced)
        forced = set(selected[first:])
    return selected, forced


@task(name="run_stage", task_run_name="{stage}", cache_policy=NO_CACHE)
def run_stage(stage: str, project_dir: str, force: bool = False) -> str:
    """Run ``dvc repro --single-item <stage>`` in ``project_dir``; return "ran" or "skipped".

    Raises StageFailed naming the stage, with the last lines of DVC's output, on failure.
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
    ) as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip()
            if not line:
                continue
            tail.append(line)
            ran = ran or started in line
            logger.info("[%s] %s", stage, line)
        code = proc.wait()
    if code != 0:
        raise StageFailed(
            f"stage '{stage}' failed (dvc exit code {code}); last output:\n" + "\n".join(tail)
        )
    return "ran" if ran else "skipped"


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
    selected, forced = select_stages(read_stage_names(root), stages, force, force_downstream)
    outcome: dict[str, str] = {}
    with run_lock(root, wait_s, label=f"flow run {flow_run.get_name() or 'outside Prefect'}"):
        if profile is not None and set_profile(root / "params.yaml", profile):
            logger.info("params.yaml: data.profile set to %s", profile)
        # Sequential on purpose: two `dvc repro` on one repository fail on DVC's lock.
        for stage in selected:
            options: dict[str, Any] = {"name": f"dvc-{stage}", "task_run_name": stage}
            if stage in RETRIED_STAGES:
                options["retries"], options["retry_delay_seconds"] = RETRIED_STAGES[stage]
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


def _names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [name.strip() for name in text.split(",") if name.strip()]


def build_parser() -> argparse.ArgumentParser:
    """Argument parser for ``python -m flows.pipeline``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--project-dir", default=".", help="DVC project root (default: .)")
    common.add_argument("--stages", help="comma-separated stages to run (default: all)")
    common.add_argument("--force", help="comma-separated stages to re-run even if unchanged")
    common.add_argument("--force-downstream", action="store_true",
                        help="also force every stage after the first forced one")
    common.add_argument("--profile", choices=("demo", "paper"), default=None,
                        help="set data.profile in params.yaml before running (default: leave it)")
    common.add_argument("--wait", type=float, default=None, metavar="SECONDS",
                        help="wait this long for another run of the project to finish "
                             f"(default: run 0, i.e. refuse; serve {SERVE_WAIT_S:g})")
    common.add_argument("--mlflow-ui", default=None, metavar="URL",
                        help="MLflow UI address for the run link (default: http MLFLOW_TRACKING_URI or "
                             "http://127.0.0.1:5000)")
    parser = argparse.ArgumentParser(prog="python -m flows.pipeline", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", parents=[common], help="run the pipeline once")
    serve = sub.add_parser(
        "serve",
        parents=[common],
        help="serve a scheduled deployment (needs `prefect server start` and PREFECT_API_URL)",
    )
    serve.add_argument("--cron", default="0 3 * * *",
                       help='cron schedule (default: "0 3 * * *"; "" for runs triggered by hand only)')
    serve.add_argument("--name", default="jsqa-nightly", help="deployment name (default: jsqa-nightly)")
    return parser


def serve(name: str, cron: str | None, parameters: dict[str, Any]) -> None:
    """Register the deployment ``jsqa-pipeline/<name>`` and run its flow runs until stopped.

    At most one of its runs goes at a time (deployment concurrency limit, enqueue on collision).
    """
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise JsqaError(
            "serve needs a Prefect server: run `prefect server start` and set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    jsqa_pipeline.serve(
        name=name,
        cron=cron or None,
        parameters=parameters,
        global_limit=ONE_AT_A_TIME,
        description="The jsqa DVC pipeline, one stage per task; one run at a time.",
        tags=["jsqa"],
    )


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the process exit code (1 on any failure)."""
    args = build_parser().parse_args(argv)
    parameters = {
        "project_dir": str(Path(args.project_dir).resolve()),
        "stages": _names(args.stages),
        "force": _names(args.force),
        "force_downstream": args.force_downstream,
        "profile": args.profile,
        "wait_s": args.wait if args.wait is not None else (SERVE_WAIT_S if args.command == "serve" else 0.0),
        "mlflow_ui": args.mlflow_ui,
    }
    try:
        if args.command == "serve":
            serve(args.name, args.cron, parameters)
            return 0
        outcome = jsqa_pipeline(**parameters)
    except JsqaError as exc:
        # The full DVC output is already in the run log; the first line says which stage failed.
        # Anything else is a bug and keeps its traceback.
        log.debug("pipeline failed", exc_info=True)
        first = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        print(f"jsqa-pipeline: error: {first}", file=sys.stderr)
        return 1
    for stage, result in outcome.items():
        print(f"{stage}: {result}")
    report = metrics_markdown(parameters["project_dir"])
    if report is not None:
        print("\n" + report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
