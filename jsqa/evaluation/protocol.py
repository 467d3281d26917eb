"""The ITU-T P.1401 / NISQA evaluation protocol: mapped RMSE, epsilon-insensitive RMSE, conditions.

* **Mapped RMSE.** Predictions are first mapped onto the subjective scale by a polynomial fitted
  per test set by least squares (first order: ``a + b p``; third order: ``a + b p + c p² + d p³``
  constrained to be monotonic over the observed prediction range), then
  ``rmse = sqrt(sum(err²) / (N - d))`` with ``d`` the mapping's number of parameters (2 or 4),
  as P.1401 (clause 7) prescribes. The third-order fit is the plain least-squares cubic when that
  is monotonic on ``[min p, max p]``; otherwise it is re-fitted with SLSQP under the constraint
  that its derivative keeps the sign of the first-order slope over the whole range (at 64 grid
  points, and exactly: the derivative is a quadratic, so its minimum on the range is at an end or
  its vertex). The first-order fit is a feasible start and the fallback, so the constrained fit
  is never worse than it.
* **Epsilon-insensitive RMSE** (P.1401 ``rmse*``): per file ``eps = t(0.975, votes-1) *
  mos_std / sqrt(votes)`` (the 95% interval of the file's MOS), error ``max(0, |mos - mapped| -
  eps)`` on the third-order mapped prediction, ``d = 4``. Needs ``mos_std`` and ``votes >= 2``.
* **Per condition**: the condition MOS is the mean over the files of a condition (within one
  test set; NISQA numbers conditions per database), compared with the mean prediction.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import optimize, stats

from jsqa.evaluation.metrics import mos_metrics

log = logging.getLogger(__name__)

PROTOCOL_METRICS = ("rmse_map1", "rmse_map3", "rmse_eps")
CONDITION_METRICS = ("pcc", "srcc", "rmse", "rmse_map1", "rmse_map3")
MAP_DOF = {1: 2, 3: 4}
_GRID = 64


def dof_rmse(y: np.ndarray, mapped: np.ndarray, d: int) -> float | None:
    """``sqrt(sum((y - mapped)²) / (N - d))``; None when N <= d (no degrees of freedom left)."""
    n = len(y)
    if n - d < 1:
        return None
    return float(np.sqrt(np.sum((np.asarray(y) - np.asarray(mapped)) ** 2) / (n - d)))


def _fit_linear(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    if np.ptp(p) == 0:
        return np.array([float(np.mean(y)), 0.0])
    b, a = np.polyfit(p, y, 1)
    return np.array([a, b])


def min_slope(coef: np.ndarray, lo: float, hi: float) -> float:
    """The smallest derivative of the cubic ``coef`` (constant first) on ``[lo, hi]``, exactly:
    the derivative is a quadratic, so its minimum is at an end or at its vertex."""
    c = np.zeros(4)
    c[: len(coef)] = coef
    points = [lo, hi]
    if c[3] != 0:
        vertex = -c[2] / (3 * c[3])
        if lo < vertex < hi:
            points.append(vertex)
    return float(min(c[1] + 2 * c[2] * x + 3 * c[3] * x**2 for x in points))


def fit_mapping(p: np.ndarray, y: np.ndarray, order: int) -> np.ndarray:
    """Coefficients (constant first) of the order-1 or monotonic order-3 mapping from ``p`` to ``y``."""
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if order not in MAP_DOF:
        raise ValueError(f"mapping order must be 1 or 3, got {order}")
    lin = _fit_linear(p, y)
    if order == 1 or np.ptp(p) == 0 or len(p) < 4:
        return lin if order == 1 else np.array([*lin, 0.0, 0.0])
    sign = 1.0 if lin[1] >= 0 else -1.0
    lo, hi = float(p.min()), float(p.max())
    with warnings.catch_warnings():  # near-constant predictions: the minimum-norm fit is fine
        warnings.simplefilter("ignore", np.exceptions.RankWarning)
        coef = np.polyfit(p, y, 3)[::-1]
    if min_slope(sign * coef, lo, hi) >= 0:
        return coef
    grid = np.linspace(lo, hi, _GRID)
    slope = np.stack([np.zeros_like(grid), np.ones_like(grid), 2 * grid, 3 * grid**2], axis=1)
    design = np.stack([np.ones_like(p), p, p**2, p**3], axis=1)
    res = optimize.minimize(
        lambda c: float(np.sum((design @ c - y) ** 2)),
        np.array([*lin, 0.0, 0.0]),
        jac=lambda c: 2 * design.T @ (design @ c - y),
        constraints=[
            {"type": "ineq", "fun": lambda c: sign * (slope @ c), "jac": lambda c: sign * slope},
            # exact: the derivative's minimum over the range (its vertex may fall between grid points)
            {"type": "ineq", "fun": lambda c: min_slope(sign * c, lo, hi)},
        ],
        method="SLSQP",
        options={"maxiter": 500, "ftol": 1e-12},
    )
    best = res.x
    linear = np.array([*lin, 0.0, 0.0])
    # Never non-monotonic, never worse than the (feasible) linear fit, whatever the optimiser did.
    if (
        not res.success
        or min_slope(sign * best, lo, hi) < -1e-9
        or np.sum((design @ best - y) ** 2) > np.sum((design @ linear - y) ** 2)
    ):
        best = linear
    return best


def apply_mapping(coef: np.ndarray, p: np.ndarray) -> np.ndarray:
    """The mapped predictions ``sum(coef[k] * p**k)``."""
    p = np.asarray(p, dtype=np.float64)
    return np.asarray(sum(c * p**k for k, c in enumerate(coef)), dtype=np.float64)


def ci95(mos_std: np.ndarray, votes: np.ndarray) -> np.ndarray:
    """Per-file 95% interval half-width of the MOS: ``t(0.975, votes-1) * std / sqrt(votes)``."""
    v = np.asarray(votes, dtype=np.float64)
    return stats.t.ppf(0.975, v - 1) * np.asarray(mos_std, dtype=np.float64) / np.sqrt(v)


def epsilon_rmse(y: np.ndarray, mapped: np.ndarray, eps: np.ndarray, d: int = 4) -> float | None:
    """P.1401 epsilon-insensitive RMSE: errors within each file's interval ``eps`` count as 0."""
    err = np.maximum(0.0, np.abs(np.asarray(y) - np.asarray(mapped)) - np.asarray(eps))
    return dof_rmse(err, np.zeros_like(err), d)


def mapped_rmse(y: np.ndarray, p: np.ndarray, order: int) -> float | None:
    """RMSE after the order-``order`` mapping fitted on (p, y), with P.1401's degrees of freedom."""
    return dof_rmse(y, apply_mapping(fit_mapping(p, y, order), p), MAP_DOF[order])


def eps_reason(mos_std: np.ndarray | None, votes: np.ndarray | None) -> str | None:
    """Why the epsilon-insensitive RMSE cannot be computed for a set, or None when it can."""
    if mos_std is None or votes is None:
        return "needs per-file mos_std and votes columns"
    v = np.asarray(votes, dtype=np.float64)
    s = np.asarray(mos_std, dtype=np.float64)
    if not (np.all(np.isfinite(v)) and np.all(v >= 2) and np.all(np.isfinite(s))):
        return "needs mos_std and votes >= 2 on every file (proxy labels have no raters)"
    return None


def protocol_metrics(
    y: np.ndarray, p: np.ndarray, mos_std: np.ndarray | None = None, votes: np.ndarray | None = None
) -> dict[str, float | None]:
    """rmse_map1, rmse_map3 and rmse_eps of one set (None where not computable)."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    coef3 = fit_mapping(p, y, 3)
    out: dict[str, float | None] = {
        "rmse_map1": mapped_rmse(y, p, 1),
        "rmse_map3": dof_rmse(y, apply_mapping(coef3, p), MAP_DOF[3]),
    }
    out["rmse_eps"] = None
    if eps_reason(mos_std, votes) is None:
        assert mos_std is not None and votes is not None
        out["rmse_eps"] = epsilon_rmse(y, apply_mapping(coef3, p), ci95(mos_std, votes), MAP_DOF[3])
    return out


def condition_table(rows: pd.DataFrame, pred: str) -> pd.DataFrame:
    """Condition-level MOS and prediction: one row per (db, condition) with mos, pred and n files.

    ``rows`` needs db, condition, mos and the prediction column ``pred``; rows without a
    condition or a finite prediction are left out.
    """
    ok = rows["condition"].notna() & np.isfinite(rows[pred].to_numpy(dtype=np.float64))
    g = rows[ok].groupby(["db", "condition"], sort=True)
    return g.agg(mos=("mos", "mean"), pred=(pred, "mean"), n=("mos", "size")).reset_index()


MIN_CONDITIONS = 3  # fewer and a correlation is undefined (1) or trivially ±1 (2)


def condition_metrics(table: pd.DataFrame) -> dict[str, float | int | None]:
    """PCC, SRCC, RMSE and mapped RMSE at condition level, and the number of conditions
    (correlations None below :data:`MIN_CONDITIONS` conditions)."""
    y = table["mos"].to_numpy(dtype=np.float64)
    p = table["pred"].to_numpy(dtype=np.float64)
    base = mos_metrics(y, p)
    out: dict[str, float | int | None] = {k: base[k] for k in ("pcc", "srcc", "rmse")}
    if len(table) < MIN_CONDITIONS:
        out["pcc"] = out["srcc"] = None
    out["rmse_map1"] = mapped_rmse(y, p, 1)
    out["rmse_map3"] = mapped_rmse(y, p, 3)
    out["n_conditions"] = int(len(table))
    return out


def is_monotonic(coef: np.ndarray, lo: float, hi: float, increasing: bool = True) -> bool:
    """Whether the cubic ``coef`` (constant first) never turns back on ``[lo, hi]``."""
    c = np.asarray(coef, dtype=np.float64)
    return min_slope(c if increasing else -c, lo, hi) >= -1e-9


def column_or_none(rows: pd.DataFrame, name: str, idx: Sequence[int] | np.ndarray) -> np.ndarray | None:
    """``rows[name]`` at ``idx`` as float, or None when the column is absent."""
    if name not in rows.columns:
        return None
    return rows[name].to_numpy(dtype=np.float64)[np.asarray(idx)]
