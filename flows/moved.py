"""A copied or moved project: say in one line what to run, before any stage writes to the old place.

The default MLflow store (``mlflow.db`` in the project) records where artifacts go as an absolute
``file://`` URI (the experiment's artifact root; MLflow has no relative one). In a copy or a moved
project that URI still names the old folder, so new runs would write their artifacts there, or
fail part-way when it is gone. Prefect's home is the project's ``.prefect`` (set by the Makefile
and by :func:`flows.pipeline.main`), so it moves with the project.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from urllib.parse import unquote, urlparse

from jsqa.errors import ConfigError
from jsqa.tracking import ARTIFACT_DIR, DEFAULT_DB, EXPERIMENT


def recorded_artifact_root(db: Path) -> Path | None:
    """The local artifact root the store at ``db`` records for the jsqa experiment; None if none."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
            row = con.execute("SELECT artifact_location FROM experiments WHERE name = ?", (EXPERIMENT,)).fetchone()
    except sqlite3.Error:
        return None  # not initialised yet, or not ours: MLflow will say
    if not row or not str(row[0]).startswith("file:"):
        return None
    return Path(unquote(urlparse(row[0]).path))


def check_not_moved(project_dir: str | Path) -> None:
    """Raise ConfigError in one line when the project's ``mlflow.db`` points artifacts at another folder."""
    root = Path(project_dir).resolve()
    db = root / DEFAULT_DB
    if os.environ.get("MLFLOW_TRACKING_URI") or not db.is_file():
        return
    recorded = recorded_artifact_root(db)
    here = root / ARTIFACT_DIR
    if recorded is not None and recorded != here:
        raise ConfigError(
            f"{db} keeps its artifacts in {recorded}, not in this project's {here} (the project was copied "
            f"or moved): move the old store aside to start a fresh one, `mv {db} {db}.moved`, or run from {recorded.parent}"
        )
