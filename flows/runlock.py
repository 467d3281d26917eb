"""One pipeline run per project at a time: an exclusive lock file held for the whole run.

Two ``dvc repro`` on one repository fail on DVC's own lock part-way through; taking this lock
first turns that into a clean wait or a one-line refusal before any stage starts. The lock is an
``flock`` on ``.dvc/tmp/jsqa-pipeline.lock`` (DVC ignores that folder), so the kernel releases it
when the holder exits, even on a crash. The file records the holder for the refusal message.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from jsqa.errors import JsqaError

LOCK_NAME = Path(".dvc") / "tmp" / "jsqa-pipeline.lock"
POLL_S = 0.5


class PipelineBusy(JsqaError):
    """Another pipeline run holds the project's lock."""


def lock_path(project_dir: str | Path) -> Path:
    """Where the run lock of ``project_dir`` lives."""
    return Path(project_dir) / LOCK_NAME


def _holder(fh) -> str:
    fh.seek(0)
    try:
        info = json.loads(fh.read() or "{}")
    except json.JSONDecodeError:
        info = {}
    if not info:
        return "another process"
    who = f"pid {info.get('pid')} on {info.get('host')}"
    if info.get("label"):
        who += f" ({info['label']})"
    return f"{who} since {info.get('since')}"


@contextlib.contextmanager
def run_lock(project_dir: str | Path, wait_s: float = 0.0, label: str = "") -> Iterator[Path]:
    """Hold the project's run lock for the ``with`` body.

    Waits up to ``wait_s`` seconds for a running pipeline to finish, then raises PipelineBusy
    naming the holder. ``label`` (e.g. a flow run name) is recorded for that message.
    """
    path = lock_path(project_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + max(wait_s, 0.0)
    # a+ rather than w: truncating before holding the lock would wipe the holder's record.
    with open(path, "a+", encoding="utf-8") as fh:
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise PipelineBusy(
                        f"{path}: a pipeline run is already going in {Path(project_dir)} "
                        f"({_holder(fh)}); waited {wait_s:g} s"
                    ) from None
                time.sleep(POLL_S)
        try:
            fh.seek(0)
            fh.truncate()
            fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "label": label,
                                 "since": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}))
            fh.flush()
            yield path
        finally:
            fh.seek(0)
            fh.truncate()
            fcntl.flock(fh, fcntl.LOCK_UN)
