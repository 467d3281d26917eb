"""Throw-away DVC projects for flow and deployment tests: stages are one-line Python commands.

Import the ``blank_project`` fixture into a test module (``from dvc_projects import blank_project
# noqa: F401``) and build projects with :func:`make_project`.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

# Each stage appends its name to runs.log (not a DVC output), so tests can see what executed.
_LOG = "import pathlib; pathlib.Path('runs.log').open('a').write({name!r} + '\\n'); "


def stage_cmd(name: str, body: str) -> str:
    """A stage command that logs ``name`` to runs.log, then runs the Python statements ``body``."""
    # sys.executable: the shell DVC spawns may not have this venv's python (or yaml) on PATH.
    return shlex.join([sys.executable, "-c", _LOG.format(name=name) + body])


def runs(root: Path) -> list[str]:
    """The stage names logged to runs.log, in execution order."""
    path = root / "runs.log"
    return path.read_text().split() if path.exists() else []


@pytest.fixture(scope="session")
def blank_project(tmp_path_factory) -> Path:
    """An empty git + DVC repository; tests copy it (dvc init costs a second of CPU each time)."""
    root = tmp_path_factory.mktemp("blank")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=root, check=True)
    return root


def make_project(blank: Path, root: Path, stages: dict, params: dict | None = None) -> Path:
    """A copy of ``blank`` at ``root`` with ``stages`` as dvc.yaml and ``params`` as params.yaml."""
    shutil.copytree(blank, root, symlinks=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params or {"featurize": {"scale": 1}}))
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    return root
