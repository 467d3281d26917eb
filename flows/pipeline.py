"""Run the project's DVC stages as a Prefect flow, once or as a scheduled deployment.

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

This module imports no Prefect at load time: ``run`` checks its arguments and takes the run lock
first, so a refused run says so at once instead of after Prefect's import and server start
(10-20 s here). The flow itself is :mod:`flows.jsqa_flow`.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flows.moved import check_not_moved
from flows.offline import telemetry_off
from flows.runlock import record_server, run_lock
from flows.stages import check_params, read_stage_names, select_stages
from jsqa.config import PROFILES
from jsqa.errors import JsqaError

log = logging.getLogger(__name__)

# A scheduled run waits this long for a manual run of the same project to finish.
SERVE_WAIT_S = 3600.0
RUN_LABEL = "python -m flows.pipeline run"


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
    common.add_argument(
        "--force-downstream", action="store_true", help="also force every stage after the first forced one"
    )
    common.add_argument(
        "--profile",
        choices=PROFILES,
        default=None,
        help="set data.profile in params.yaml before running (default: leave it)",
    )
    common.add_argument(
        "--wait",
        type=float,
        default=None,
        metavar="SECONDS",
        help="wait this long for another run of the project to finish "
        f"(default: run 0, i.e. refuse; serve {SERVE_WAIT_S:g})",
    )
    common.add_argument(
        "--mlflow-ui",
        default=None,
        metavar="URL",
        help="MLflow UI address for the run link (default: http MLFLOW_TRACKING_URI or http://127.0.0.1:5000)",
    )
    parser = argparse.ArgumentParser(prog="python -m flows.pipeline", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", parents=[common], help="run the pipeline once")
    serve = sub.add_parser(
        "serve",
        parents=[common],
        help="serve a scheduled deployment (needs `prefect server start` and PREFECT_API_URL)",
    )
    serve.add_argument(
        "--cron", default="0 3 * * *", help='cron schedule (default: "0 3 * * *"; "" for runs triggered by hand only)'
    )
    serve.add_argument("--name", default="jsqa-nightly", help="deployment name (default: jsqa-nightly)")
    return parser


def _log_to_stderr() -> None:
    """Show this package's INFO lines (e.g. waiting for the run lock) on stderr.

    Needed before Prefect is imported (it configures only its own loggers, root at WARNING).
    """
    logger = logging.getLogger("flows")
    logger.setLevel(logging.INFO)
    if not any(getattr(h, "_jsqa", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(
            logging.Formatter("%(asctime)s | %(levelname)-7s | %(name)s - %(message)s", datefmt="%H:%M:%S")
        )
        handler._jsqa = True  # type: ignore[attr-defined]
        logger.addHandler(handler)


def run(parameters: dict[str, Any]) -> dict[str, str]:
    """Run the flow once in this process, holding the project's run lock from before Prefect starts.

    Raises ConfigError for a bad stage name or params.yaml key and PipelineBusy when another run holds the lock,
    both before Prefect is imported.
    """
    root = Path(parameters["project_dir"])
    names = read_stage_names(root)
    select_stages(names, parameters["stages"], parameters["force"], parameters["force_downstream"])
    check_params(root, names)
    check_not_moved(root)
    with run_lock(root, parameters["wait_s"], label=RUN_LABEL):
        from flows.jsqa_flow import jsqa_pipeline, start_temporary_server

        server_pid = start_temporary_server()
        if server_pid is not None:
            record_server(root, server_pid)
        return jsqa_pipeline(**parameters)


def check_server(api_url: str, timeout_s: float = 3.0) -> None:
    """Raise JsqaError in one line, saying what to run, when no Prefect server answers at ``api_url``."""
    try:
        with urllib.request.urlopen(api_url.rstrip("/") + "/health", timeout=timeout_s):
            return
    except (urllib.error.URLError, OSError, ValueError):
        pass
    raise JsqaError(
        f"no Prefect server answers at PREFECT_API_URL={api_url}: start one with `make ui-prefect` "
        "in another terminal, then serve again"
    )


def _stop_on_term(signum: int, frame: object) -> None:
    """SIGTERM: stop the running stage's process group now, then unwind as Ctrl-C does."""
    from flows.jsqa_flow import stop_stages

    stop_stages()
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the process exit code (1 on any failure)."""
    # OpenMP threads sleep between parallel regions instead of spinning (as in jsqa.cli, which
    # says why), for anything this process and the stages it starts import torch into.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    telemetry_off()
    args = build_parser().parse_args(argv)
    # Prefect's database in the project, as under make: it moves with it, and runs are per project.
    os.environ.setdefault("PREFECT_HOME", str(Path(args.project_dir).resolve() / ".prefect"))
    _log_to_stderr()
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
            # Before Prefect's import (seconds): an absent server is named at once.
            if os.environ.get("PREFECT_API_URL"):  # unset: serve() reads Prefect's profile, and says
                check_server(os.environ["PREFECT_API_URL"])
            from flows.jsqa_flow import serve

            serve(args.name, args.cron, parameters)
            return 0
        signal.signal(signal.SIGTERM, _stop_on_term)
        try:
            outcome = run(parameters)
        except BaseException:  # Ctrl-C, a crash: no stage keeps running behind the user's back
            if "flows.jsqa_flow" in sys.modules:
                sys.modules["flows.jsqa_flow"].stop_stages()
            raise
        from flows.jsqa_flow import metrics_markdown

        report = metrics_markdown(parameters["project_dir"])
    except JsqaError as exc:
        # The full DVC output is already in the run log; the first line says which stage failed
        # and why. Anything else is a bug and keeps its traceback.
        log.debug("pipeline failed", exc_info=True)
        first = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        print(f"jsqa-pipeline: error: {first}", file=sys.stderr)
        return 1
    for stage, result in outcome.items():
        print(f"{stage}: {result}")
    if report is not None:
        print("\n" + report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
