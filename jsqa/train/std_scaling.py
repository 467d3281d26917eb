"""Post-hoc calibration of predicted standard deviations: one factor per ``*_std`` output.

A network trained with the Gaussian NLL on a small training set tends to be over- or
under-confident on unseen clips. After training, each standard deviation is multiplied by the
factor ``s`` that maximises the Gaussian likelihood of the validation labels,
``y ~ N(mu, (s*sigma)^2 + se^2)`` (variance scaling, Levi et al. 2019, "Evaluating and
calibrating uncertainty prediction in regression tasks"). Means, and so RMSE and correlations,
do not change. With exact labels (``se`` = 0) the optimum is ``sqrt(mean(((y - mu) / sigma)^2))``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from jsqa.data.clips import ClipSet, label_se, label_targets
from jsqa.models.mos import STD_SUFFIX, MOSModel, is_std

log = logging.getLogger(__name__)

# Factors searched (log-spaced); a factor outside this range means the stds are meaningless.
SCALE_RANGE = (0.05, 20.0)
_GRID = np.exp(np.linspace(np.log(SCALE_RANGE[0]), np.log(SCALE_RANGE[1]), 2001))


def fit_std_scale(y: np.ndarray, mu: np.ndarray, sigma: np.ndarray, se: np.ndarray | None = None) -> float:
    """The factor ``s`` in :data:`SCALE_RANGE` that minimises the Gaussian NLL of ``y`` under
    N(mu, (s*sigma)² + se²); items with a missing label are left out; 1.0 with fewer than 2."""
    y, mu, sigma = (np.asarray(a, dtype=np.float64) for a in (y, mu, sigma))
    se2 = np.zeros_like(y) if se is None else np.asarray(se, dtype=np.float64) ** 2
    keep = np.isfinite(y) & np.isfinite(mu) & np.isfinite(sigma) & (sigma > 0)
    if int(keep.sum()) < 2:
        return 1.0
    r2, s2, e2 = (y[keep] - mu[keep]) ** 2, sigma[keep] ** 2, se2[keep]
    if not e2.any():
        return float(np.clip(np.sqrt(np.mean(r2 / s2)), *SCALE_RANGE))
    var = _GRID[:, None] ** 2 * s2[None, :] + e2[None, :]
    nll = np.mean(np.log(var) + r2[None, :] / var, axis=1)
    return float(_GRID[int(np.argmin(nll))])


def fit_std_scales(model: MOSModel, outputs: np.ndarray, clips: ClipSet) -> dict[str, float]:
    """One factor per ``*_std`` output of ``model``, from its ``outputs`` [N, K] on ``clips``
    (laid out as ``model.outputs``) and their labels; the MOS labels' own error enters the fit."""
    names: Sequence[str] = model.outputs
    targets = [o for o in names if not is_std(o)]
    labels = label_targets(clips.rows, model.outputs)
    se = label_se(clips.rows)
    scales: dict[str, float] = {}
    for t, target in enumerate(targets):
        std = target + STD_SUFFIX
        if std not in names:
            continue
        scales[std] = fit_std_scale(
            labels[:, t], outputs[:, names.index(target)], outputs[:, names.index(std)], se if target == "mos" else None
        )
    log.info("std calibration factors (validation, max likelihood): %s", {k: round(v, 3) for k, v in scales.items()})
    return scales
