"""The layout of a multi-seed run on disk: ``models/mos_x.pt`` is the primary seed's model, and
``models/mos_x.seeds/`` holds the other seeds (``seed-N.pt``), their equal-compute models
(``budget-seed-N.pt``) and ``seeds.json``, the index. Fine-tuning writes it; evaluation and
the CLI read it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from jsqa.io import read_json, write_json
from jsqa.models.mos import load_checkpoint

SEEDS_INDEX = "seeds.json"


def seeds_dir(out_path: str | Path) -> Path:
    """Where the checkpoints of the other seeds live: ``models/mos_x.pt`` -> ``models/mos_x.seeds/``."""
    out_path = Path(out_path)
    return out_path.with_name(f"{out_path.stem}.seeds")


def seed_path(folder: Path, seed: int) -> Path:
    """A non-primary seed's checkpoint in the seeds folder."""
    return folder / f"seed-{int(seed)}.pt"


def budget_path(folder: Path, seed: int) -> Path:
    """A seed's equal-compute checkpoint in the seeds folder."""
    return folder / f"budget-seed-{int(seed)}.pt"


def write_seed_index(folder: Path, seeds: Sequence[int], budget_epochs: int) -> None:
    """``seeds.json``: the primary seed, every seed, and the equal-compute budget (0: none saved)."""
    write_json(folder / SEEDS_INDEX, {"primary": seeds[0], "seeds": list(seeds), "budget_epochs": budget_epochs})


def seed_checkpoints(out_path: str | Path, budget: bool = False) -> dict[int, Path]:
    """Every seed's checkpoint of a multi-seed run, primary first: {seed: path}.

    A checkpoint without a seeds folder (K = 1, or trained before seeds existed) is one entry.
    ``budget``: the equal-compute checkpoints instead (empty when the run saved none).
    """
    out_path = Path(out_path)
    primary = int(load_checkpoint(out_path).get("seed", -1))
    folder = seeds_dir(out_path)
    index = folder / SEEDS_INDEX
    listed = read_json(index) if index.is_file() else {"seeds": [primary]}
    if budget:
        if not listed.get("budget_epochs"):
            return {}
        return {int(s): budget_path(folder, s) for s in listed["seeds"]}
    found = {primary: out_path}
    for s in listed["seeds"]:
        if int(s) != primary:
            found[int(s)] = seed_path(folder, s)
    return found


def budget_epochs(out_path: str | Path) -> int | None:
    """The epoch budget of a run's equal-compute checkpoints (None when it saved none)."""
    index = seeds_dir(out_path) / SEEDS_INDEX
    if not index.is_file():
        return None
    return int(read_json(index).get("budget_epochs") or 0) or None
