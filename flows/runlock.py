"""One pipeline run per project at a time: an exclusive lock file held for the whole run.

Two ``dvc repro`` on one repository fail on DVC's own lock part-way through; taking this lock
first turns that into a clean wait or a one-line refusal before any stage starts. The lock is an
``flock`` on ``.dvc/tmp/jsqa-pipeline.lock`` (DVC ignores that folder), so the kernel releases it
when the holder exits, even on a crash. The file records the holder for the refusal message.

The CLI takes the lock before it starts Prefect (a refusal is then immediate), and the flow it
runs takes it again: a caller that already holds the lock (same context, see ``_HELD``) re-enters
it and only updates the holder's label.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import fcntl
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from jsqa.errors import JsqaError

LOCK_NAME = Path(".dvc") / "tmp" / "jsqa-pipeline.lock"
POLL_S = 0.5
# What Prefect's temporary (ephemeral) API server runs: `python -m uvicorn --factory <this>`.
SERVER_APP = "prefect.server.api.server:create_app"
# Locks this caller holds, by path. A ContextVar rather than a global: a thread started while
# the lock is held does not inherit it, so another thread of the same process is still refused.
_HELD: contextvars.ContextVar[dict[Path, IO[str]] | None] = contextvars.ContextVar("jsqa_run_locks", default=None)

log = logging.getLogger(__name__)


class PipelineBusy(JsqaError):
    """Another pipeline run holds the project's lock."""


def lock_path(project_dir: str | Path) -> Path:
    """Where the run lock of ``project_dir`` lives."""
    return Path(project_dir) / LOCK_NAME


def _holder(fh: IO[str]) -> str:
    info = _read(fh)
    if not info:
        return "another process"
    who = f"pid {info.get('pid')} on {info.get('host')}"
    if info.get("label"):
        who += f" ({info['label']})"
    return f"{who} since {info.get('since')}"


def _read(fh: IO[str]) -> dict:
    fh.seek(0)
    try:
        info = json.loads(fh.read() or "{}")
    except json.JSONDecodeError:
        return {}
    return info if isinstance(info, dict) else {}


def _write(fh: IO[str], info: dict) -> None:
    fh.seek(0)
    fh.truncate()
    fh.write(json.dumps(info))
    fh.flush()


def _record(fh: IO[str], label: str) -> None:
    """Write this process as the holder into the (locked) lock file."""
    _write(
        fh,
        {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "label": label,
            "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        },
    )


def record_server(project_dir: str | Path, pid: int) -> None:
    """Note in the held lock that this run started the Prefect server ``pid``.

    A run whose process is killed alone (SIGKILL; SIGTERM too, which Prefect turns into an exit
    without cleanup) leaves the server it started running; the next run finds the pid here and
    stops it (:func:`_stop_leftover_server`).
    """
    fh = (_HELD.get() or {}).get(lock_path(project_dir).resolve())
    if fh is None:
        raise RuntimeError(f"record_server: the run lock of {project_dir} is not held here")
    _write(fh, {**_read(fh), "server_pid": pid})


def record_flow_run(project_dir: str | Path, flow_run_id: str) -> None:
    """Note in the held lock the Prefect flow run this is, so the next run can mark it Crashed if it dies."""
    fh = (_HELD.get() or {}).get(lock_path(project_dir).resolve())
    if fh is None:
        raise RuntimeError(f"record_flow_run: the run lock of {project_dir} is not held here")
    _write(fh, {**_read(fh), "flow_run_id": flow_run_id})


def killed_run(project_dir: str | Path) -> dict:
    """The lock record a killed run left (pid, host, flow_run_id, ...), as found by this run; {} if none."""
    fh = (_HELD.get() or {}).get(lock_path(project_dir).resolve())
    return _read(fh).get("killed_run") or {} if fh is not None else {}


def _is_prefect_server(pid: int) -> bool:
    # The pid may have been reused since: only a Prefect API server process qualifies.
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return SERVER_APP.encode() in cmdline


def _stop_leftover_server(info: dict, logger: logging.Logger | logging.LoggerAdapter) -> None:
    """Stop the temporary Prefect server of a killed run (named in its lock record), if still up."""
    pid = info.get("server_pid")
    if not isinstance(pid, int) or info.get("host") != socket.gethostname() or not _is_prefect_server(pid):
        return
    logger.warning("stopping the temporary Prefect server (pid %s) left by a killed run (pid %s)", pid, info.get("pid"))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + 5
        while _is_prefect_server(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not _is_prefect_server(pid):
            return


def _acquire(
    fh: IO[str], path: Path, project_dir: str | Path, wait_s: float, logger: logging.Logger | logging.LoggerAdapter
) -> None:
    """flock ``fh``, waiting up to ``wait_s`` s (saying so once); raise PipelineBusy after that."""
    deadline = time.monotonic() + max(wait_s, 0.0)
    announced = False
    while True:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise PipelineBusy(
                    f"{path}: a pipeline run is already going in {Path(project_dir)} "
                    f"({_holder(fh)}); waited {wait_s:g} s"
                ) from None
            if not announced:
                logger.info(
                    "waiting up to %g s for the pipeline run of %s to finish: %s",
                    wait_s,
                    Path(project_dir),
                    _holder(fh),
                )
                announced = True
            time.sleep(POLL_S)


@contextlib.contextmanager
def run_lock(
    project_dir: str | Path, wait_s: float = 0.0, label: str = "", logger: logging.Logger | logging.LoggerAdapter = log
) -> Iterator[Path]:
    """Hold the project's run lock for the ``with`` body.

    Waits up to ``wait_s`` seconds for a running pipeline to finish (logging one INFO line on
    ``logger`` that names the holder), then raises PipelineBusy naming the holder. ``label``
    (e.g. a flow run name) is recorded for that message. Re-entrant for a caller that holds it.
    """
    path = lock_path(project_dir).resolve()
    held = _HELD.get() or {}
    if path in held:
        if label:
            _write(held[path], {**_read(held[path]), "label": label})
        yield path
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    # a+ rather than w: truncating before holding the lock would wipe the holder's record.
    with open(path, "a+", encoding="utf-8") as fh:
        _acquire(fh, path, project_dir, wait_s, logger)
        # A record left in the file means its holder died without cleaning up.
        left = _read(fh)
        _stop_leftover_server(left, logger)
        token = _HELD.set({**held, path: fh})
        try:
            _record(fh, label)
            if left:  # kept for the flow, which marks the killed run's flow run Crashed
                _write(fh, {**_read(fh), "killed_run": left})
            yield path
        finally:
            _HELD.reset(token)
            fh.seek(0)
            fh.truncate()
            fcntl.flock(fh, fcntl.LOCK_UN)
