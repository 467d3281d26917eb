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


REPO = Path(__file__).resolve().parents[1]
# What a checkout holds that git does not hand a new user: environments, outputs, caches.
NOT_IN_GIT = {
    ".venv", ".venv-lint", ".git", "mlflow.db", "mlartifacts", "mlruns", ".prefect", "models", "metrics",
    "plots", "reports", "dvc.lock", "dvc_plots", "gx", "build", ".whl", ".pytest_cache", ".ruff_cache",
    ".mypy_cache",
}  # fmt: skip
# The demo corpus of the pipeline tests: 4 talkers, 16 utterances, 64 MOS clips.
TINY_DEMO = {
    "n_talkers": 4,
    "utterances_per_talker": 4,
    "utterance_seconds": [1.5, 2.5],
    "noise_seconds": 4.0,
    "noise_per_family": 1,
    "mos_clips": 64,
}


def merge_params(base: dict, over: dict) -> dict:
    """``base`` with ``over``'s keys replaced, section by section."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge_params(base.get(k, {}), v) if isinstance(v, dict) else v
    return out


def copy_repo(dst: Path, params: dict | None = None) -> Path:
    """This repository at ``dst`` as git hands it to a user (no environment, outputs or DVC
    cache), with ``params`` merged into params.yaml, in a fresh git repository, committed."""

    def ignore(folder: str, names: list[str]) -> set[str]:
        skip = {n for n in names if n == "__pycache__" or n.endswith(".egg-info")}
        if Path(folder) == REPO:
            skip |= NOT_IN_GIT & set(names)
        if Path(folder) == REPO / "data":
            skip |= set(names) - {".gitignore"}
        if Path(folder) == REPO / ".dvc":
            skip |= set(names) - {"config", ".gitignore"}
        return skip

    shutil.copytree(REPO, dst, ignore=ignore)
    if params:
        base = yaml.safe_load((dst / "params.yaml").read_text())
        (dst / "params.yaml").write_text(yaml.safe_dump(merge_params(base, params), sort_keys=False))
    for cmd in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"],
    ):
        subprocess.run(cmd, cwd=dst, check=True, capture_output=True)
    return dst
