"""Plots of every predictor (models and peers): per-file and per-condition true vs predicted."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from jsqa.io import atomic_path

COLUMNS = 4


def _limits(values: np.ndarray) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if v.size and v.min() >= -0.05 and v.max() <= 1.05:
        return (0.0, 1.0)  # an index such as STOI
    return (1.0, 5.0)


def _grid(n: int) -> tuple[plt.Figure, np.ndarray]:
    cols = min(COLUMNS, max(n, 1))
    rows = math.ceil(max(n, 1) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.9 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes


def _save(fig: plt.Figure, path: Path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def predictor_scatter(table: pd.DataFrame, path: Path, predictors: Sequence[str]) -> None:
    """Predicted vs true MOS per file, one panel per predictor (``pred_<name>`` columns of
    ``table``, with ``mos`` and ``db``), colour per test set; PNG written atomically."""
    fig, axes = _grid(len(predictors))
    for ax, name in zip(axes.flat, predictors):
        values = table[f"pred_{name}"].to_numpy(dtype=np.float64)
        lo, hi = _limits(values)
        for db, g in table.groupby("db", sort=True):
            ax.scatter(g["mos"], g[f"pred_{name}"], s=10, alpha=0.7, label=str(db))
        if (lo, hi) == (1.0, 5.0):
            ax.plot([1, 5], [1, 5], color="grey", lw=1, ls="--")
        ax.set(xlim=(1, 5), ylim=(lo, hi), xlabel="true MOS", ylabel=name, title=name)
        ax.legend(fontsize=6, loc="upper left")
    _save(fig, path)


def condition_scatter(conditions: pd.DataFrame, path: Path) -> bool:
    """Condition MOS vs mean prediction, one panel per predictor; with no conditions, a panel that
    says so (the file always exists: it is a DVC plot). Returns whether there were conditions."""
    if conditions.empty:
        fig, axes = _grid(1)
        axes[0, 0].text(0.5, 0.5, "no test set has conditions", ha="center", va="center")
        axes[0, 0].set_axis_off()
        _save(fig, path)
        return False
    names = list(dict.fromkeys(conditions["predictor"]))
    fig, axes = _grid(len(names))
    for ax, name in zip(axes.flat, names):
        c = conditions[conditions["predictor"] == name]
        lo, hi = _limits(c["pred"].to_numpy(dtype=np.float64))
        for db, g in c.groupby("db", sort=True):
            ax.scatter(g["mos"], g["pred"], s=18, alpha=0.8, label=str(db))
        if (lo, hi) == (1.0, 5.0):
            ax.plot([1, 5], [1, 5], color="grey", lw=1, ls="--")
        ax.set(xlim=(1, 5), ylim=(lo, hi), xlabel="condition MOS", ylabel=f"mean {name}", title=f"{name} per condition")
        ax.legend(fontsize=6, loc="upper left")
    _save(fig, path)
    return True
