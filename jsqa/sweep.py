"""Run a study's grid as DVC experiments, one after another, each in a temporary copy.

A grid is DVC's own ``-S`` syntax (``finetune.label_fraction=0.1,0.3``), expanded by DVC's own
sweep expansion, so ``jsqa study -S ...`` accepts exactly what ``dvc exp run --queue -S ...``
accepts. Each setting runs as ``dvc exp run --temp``: in-process, no queue workers. DVC's
Celery queue (``--queue`` then ``--run-all``) can hang for good after an experiment
(treeverse/dvc#10398, #10428, open), which once stopped this project's CI for 90 minutes.

Each experiment is named after its setting. Rerunning a study replaces the experiment of the
same name on the same commit, and DVC's run cache restores any stage that already ran with the
same code and params, so an interrupted study resumes instead of starting over.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from jsqa.errors import JsqaError

log = logging.getLogger(__name__)

DEFAULT_PARAMS = "params.yaml"
# Characters git refuses in a ref name (DVC keeps experiments as refs), and the rest we avoid.
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]+")


@dataclass(frozen=True)
class Setting:
    """One experiment of a grid: its ``-S`` overrides and its name."""

    overrides: tuple[str, ...]
    name: str


def expand_grid(overrides: Sequence[str]) -> list[Setting]:
    """Every combination of the ``-S`` overrides (``key=a,b`` is a sweep), in DVC's order.

    Raises JsqaError for an override DVC cannot parse.
    """
    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.cli_parse import to_path_overrides
    from dvc.utils.hydra import get_hydra_sweeps
    from hydra.errors import HydraException

    if not overrides:
        raise JsqaError("a study needs at least one -S setting, e.g. -S 'finetune.label_fraction=0.1,0.3'")
    try:
        sweeps = get_hydra_sweeps(to_path_overrides(list(overrides)))
    except (InvalidArgumentError, HydraException, ValueError) as e:
        raise JsqaError(f"cannot read the study's -S settings {list(overrides)}: {e}") from e
    settings = [
        tuple(o if path == DEFAULT_PARAMS else f"{path}:{o}" for path, ovs in s.items() for o in ovs) for s in sweeps
    ]
    # Name by what differs between the settings (all overrides for a grid of one).
    varying = {i for i in range(len(settings[0])) if len({s[i] for s in settings}) > 1}
    return [Setting(s, experiment_name([o for i, o in enumerate(s) if i in varying or not varying])) for s in settings]


def experiment_name(overrides: Sequence[str]) -> str:
    """A readable, git-safe experiment name: ``label_fraction=0.1`` for ``finetune.label_fraction=0.1``."""
    parts = []
    for o in overrides:
        key, _, value = o.partition("=")
        parts.append(f"{key.rsplit('.', 1)[-1]}={value}")
    name = _UNSAFE.sub("-", "_".join(parts)).strip("-.")
    name = re.sub(r"\.{2,}", ".", name)
    return name.removesuffix(".lock") or "setting"


def _dvc(root: Path, args: Sequence[str], *, capture: bool) -> subprocess.CompletedProcess:
    # Stage commands (`jsqa finetune ...`) are looked up on PATH: put this interpreter's bin first,
    # so `.venv/bin/jsqa study` works without an activated environment.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=root, env=env, text=True, capture_output=capture, check=False
    )


def existing_experiments(root: Path) -> set[str]:
    """Names of the experiments DVC keeps on the current commit."""
    done = _dvc(root, ["exp", "list", "--name-only"], capture=True)
    if done.returncode != 0:
        raise JsqaError(f"`dvc exp list` failed in {root}: {done.stderr.strip()}")
    return {line.strip() for line in done.stdout.splitlines() if line.strip()}


def run_settings(
    root: str | Path,
    settings: Sequence[Setting],
    targets: Sequence[str] = ("evaluate",),
    copy_paths: Sequence[str] = ("dvc.lock",),
) -> list[str]:
    """Run each setting as ``dvc exp run --temp -n NAME -S ... TARGETS``, one after another.

    ``copy_paths`` that exist are copied into each experiment (``-C``: an uncommitted dvc.lock
    keeps the upstream stages cached). A failed setting is logged and the rest still run.
    Returns the names of the settings that failed.
    """
    root = Path(root)
    names = [s.name for s in settings]
    if len(set(names)) != len(names):
        raise JsqaError(f"two settings of the study would share an experiment name: {names}")
    copies = [a for p in copy_paths if (root / p).exists() for a in ("-C", p)]
    before = existing_experiments(root)
    failed = []
    for i, s in enumerate(settings, 1):
        if s.name in before:
            log.info("replacing experiment %s of this commit (unchanged stages come from the run cache)", s.name)
            removed = _dvc(root, ["exp", "remove", s.name], capture=True)
            if removed.returncode != 0:
                raise JsqaError(f"cannot replace experiment {s.name}: {removed.stderr.strip()}")
        log.info("study setting %d/%d: %s", i, len(settings), " ".join(s.overrides))
        args = ["exp", "run", "--temp", "-n", s.name, *copies, *(a for o in s.overrides for a in ("-S", o)), *targets]
        done = _dvc(root, args, capture=False)
        if done.returncode != 0:
            log.warning("study setting %s failed (dvc exit %d); the others still run", s.name, done.returncode)
            failed.append(s.name)
    return failed
