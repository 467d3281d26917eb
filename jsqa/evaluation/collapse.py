"""Did a MOS model learn? A run whose predictions hardly vary has collapsed onto the mean.

A collapsed regressor still gets a plausible RMSE (about the label spread), so averaging it in
with runs that learned would hide that it failed. One rule, used by fine-tuning (on the
validation split) and by evaluation (on each test set), flags it.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

# Predictions spread less than this share of the labels' spread: the model has not learned to
# rank clips, it predicts (nearly) one value. Learned demo and NISQA models sit at 0.5-1.0;
# runs that never left the initial mean at 0.00-0.03 (docs/statistics.md).
MIN_SPREAD_RATIO = 0.1


def spread_ratio(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Standard deviation of the predictions over that of the labels (nan when labels are constant)."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    sy = float(np.std(y))
    return float(np.std(p)) / sy if sy > 0 else float("nan")


def run_health(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float | bool]:
    """``pred_std``, ``spread_ratio`` and ``collapsed`` (spread ratio below :data:`MIN_SPREAD_RATIO`,
    or constant predictions; never for constant labels, which cannot tell)."""
    p = np.asarray(y_pred, dtype=np.float64)
    ratio = spread_ratio(y_true, p)
    collapsed = bool(np.std(p) == 0 or (np.isfinite(ratio) and ratio < MIN_SPREAD_RATIO))
    return {"pred_std": float(np.std(p)), "spread_ratio": ratio, "collapsed": collapsed}


def failure_summary(failed: dict[str, list[int]], seeds: dict[str, list[int]]) -> list[str]:
    """One line per model with failed runs: "2 of 10 scratch runs failed to learn (seeds 3, 7)"."""
    lines = []
    for name, bad in failed.items():
        if bad:
            total = len(seeds.get(name, [])) or len(bad)
            lines.append(
                f"{len(bad)} of {total} {name} runs failed to learn "
                f"(seeds {', '.join(map(str, bad))}): predictions collapsed to a near-constant"
            )
    return lines
