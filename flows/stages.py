"""The stages of a DVC project and which of them a run executes (no Prefect here: the CLI checks
its arguments with these before it pays for starting Prefect)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import yaml

from jsqa.config import load_params
from jsqa.errors import ConfigError
from jsqa.stages import STAGES

# The stage that checks the whole of params.yaml (jsqa/stages.py): its presence marks a jsqa project.
PARAMS_CHECK_STAGE = STAGES[0].name


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
    all_stages: Sequence[str],
    stages: Iterable[str] | None,
    force: Iterable[str] | None,
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


def check_params(project_dir: str | Path, stage_names: Sequence[str]) -> None:
    """Read a jsqa project's params.yaml as the stages will, before any of them runs.

    Raises ConfigError naming the file and key (with "did you mean"), so a mistyped key fails the
    run at once, even when DVC would find every stage up to date. Projects without the params
    check stage (not jsqa's) are left alone.
    """
    if PARAMS_CHECK_STAGE in stage_names:
        load_params(Path(project_dir) / "params.yaml")
