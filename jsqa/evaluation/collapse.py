"""Did a MOS model learn? A run whose predictions hardly vary has collapsed onto the mean.

A collapsed regressor still gets a plausible RMSE (about the label spread), so averaging it in
with runs that learned would hide that it failed. One rule, used by fine-tuning (on the
validation split) and by evaluation (on each test set), flags it. A run whose best epoch is its
last (early stopping never triggered: it was still improving at the epoch cap) has not finished
learning either; it is flagged ``still_improving`` and treated like a collapsed run: left out
of seed statistics and the paired comparison (docs/statistics.md).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

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


def still_improving(best_epoch: float | None, epochs_run: float | None) -> bool:
    """True when a run's best epoch is its last one: early stopping never triggered, so it stopped
    at the epoch cap still improving (False when either figure is unknown)."""
    return best_epoch is not None and epochs_run is not None and float(best_epoch) >= float(epochs_run)


def is_failed(health: Mapping[str, object]) -> bool:
    """The one rule for a failed run: collapsed, or still improving at the epoch cap."""
    return bool(health.get("collapsed")) or bool(health.get("still_improving"))


def failure_summary(
    failed: Mapping[str, Sequence[int]],
    seeds: Mapping[str, Sequence[int]],
    health: Mapping[str, Mapping[str, Mapping[str, object]]] | None = None,
) -> list[str]:
    """One line per model and reason: "2 of 10 scratch runs failed to learn (seeds 3, 7)...",
    "1 of 10 scratch runs were still improving at the epoch cap (seeds 4)...". Without ``health``
    (reports written before the second reason) every failed run reads as collapsed."""
    lines = []
    for name, bad in failed.items():
        if not bad:
            continue
        total = len(seeds.get(name, [])) or len(bad)
        per = (health or {}).get(name, {})
        unfinished = [s for s in bad if per.get(str(s), {}).get("still_improving") and not per[str(s)].get("collapsed")]
        collapsed = [s for s in bad if s not in unfinished]
        if collapsed:
            lines.append(
                f"{len(collapsed)} of {total} {name} runs failed to learn "
                f"(seeds {', '.join(map(str, collapsed))}): predictions collapsed to a near-constant"
            )
        if unfinished:
            lines.append(
                f"{len(unfinished)} of {total} {name} runs were still improving at the epoch cap "
                f"(seeds {', '.join(map(str, unfinished))}): early stopping never triggered; left out like collapsed runs"
            )
    return lines
