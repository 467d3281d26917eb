"""Agreement between predicted and true MOS: RMSE, MAE, PCC, SRCC (as the JSQA paper reports)."""

from __future__ import annotations

import logging

import numpy as np
from scipy import stats

log = logging.getLogger(__name__)

METRICS = ("rmse", "mae", "pcc", "srcc")
# Which way each metric improves: the one table of directions, for the metrics above and the
# other names a validation metric may have (the registry compares runs by one of them).
LOWER_IS_BETTER: dict[str, bool] = {
    "rmse": True,
    "mae": True,
    "mse": True,
    "loss": True,
    "pcc": False,
    "srcc": False,
    "lcc": False,
    "ktau": False,
    "r2": False,
}


def _corr(fn, y: np.ndarray, p: np.ndarray, name: str) -> float:
    # A constant vector has no correlation; report 0 rather than NaN so metrics stay valid JSON.
    if len(y) < 2 or np.std(y) == 0 or np.std(p) == 0:
        log.warning("%s undefined (constant input or fewer than 2 items); reporting 0.0", name)
        return 0.0
    return float(fn(y, p)[0])


def mos_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """RMSE, MAE, PCC (Pearson), SRCC (Spearman) and n for one set."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D of one length, got {y.shape} and {p.shape}")
    if len(y) == 0:
        raise ValueError("cannot score an empty set")
    err = p - y
    return {
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mae": float(np.mean(np.abs(err))),
        "pcc": _corr(stats.pearsonr, y, p, "PCC"),
        "srcc": _corr(stats.spearmanr, y, p, "SRCC"),
        "n": int(len(y)),
    }


# Nominal coverage -> z: the central intervals mu ± z·sigma of a normal distribution.
COVERAGE_Z = {"coverage68": 1.0, "coverage95": 1.96}


def calibration(
    y_true: np.ndarray,
    mu: np.ndarray,
    sigma: np.ndarray,
    se: np.ndarray | None = None,
) -> dict[str, float]:
    """How well predicted standard deviations match the errors: ``coverage68`` / ``coverage95``,
    the share of items with ``|y - mu| <= z * sqrt(sigma² + se²)`` (z = 1, 1.96; a calibrated
    model gives about 0.68 and 0.95), ``mean_sigma`` and n. ``se``: the labels' standard errors."""
    y, m, s = (np.asarray(a, dtype=np.float64) for a in (y_true, mu, sigma))
    if not (y.shape == m.shape == s.shape) or y.ndim != 1 or len(y) == 0:
        raise ValueError(f"y_true, mu and sigma must be 1-D of one nonzero length, got {y.shape}, {m.shape}, {s.shape}")
    var = s**2 + (0.0 if se is None else np.asarray(se, dtype=np.float64) ** 2)
    err = np.abs(y - m)
    out = {k: float(np.mean(err <= z * np.sqrt(var))) for k, z in COVERAGE_Z.items()}
    return {**out, "mean_sigma": float(np.mean(s)), "n": int(len(y))}


def relative_change(model: dict[str, float], baseline: dict[str, float]) -> dict[str, float]:
    """Signed percent change of each metric against the baseline, as the paper quotes it:
    ``(model - baseline) / |baseline| * 100``, so "RMSE -18%" is a reduction (better) and
    "PCC +5%" a rise (better). A zero baseline gives 0 (undefined; the absolute change says more).
    """
    out = {}
    for m in METRICS:
        b = baseline[m]
        out[m] = 0.0 if b == 0 else float((model[m] - b) / abs(b) * 100.0)
    return out


def absolute_change(model: dict[str, float], baseline: dict[str, float]) -> dict[str, float]:
    """``model - baseline`` of each metric (MOS units for RMSE/MAE), beside the relative change."""
    return {m: float(model[m] - baseline[m]) for m in METRICS}


def improves(metric: str, difference: float) -> bool:
    """Whether a difference (model - baseline) of ``metric`` is an improvement."""
    return difference < 0 if LOWER_IS_BETTER[metric] else difference > 0


def seed_stats(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value) of one metric over seeds."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("no values to summarise")
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0}


def _rowwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    denom = np.sqrt((a**2).sum(axis=1) * (b**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(axis=1) / denom
    # A resample of identical items has no correlation; treated like mos_metrics does (0).
    return np.where(denom > 0, r, 0.0)


def bootstrap_ci(
    y_true: np.ndarray, y_pred: np.ndarray, resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, dict[str, float]]:
    """Percentile bootstrap interval of each metric: resample the clips with replacement.

    Returns {metric: {"lo", "hi"}}; deterministic for a given seed.
    """
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1 or len(y) == 0:
        raise ValueError(f"y_true and y_pred must be 1-D of one non-zero length, got {y.shape} and {p.shape}")
    if resamples < 1 or not 0.0 < level < 1.0:
        raise ValueError(f"need resamples >= 1 and 0 < level < 1, got {resamples} and {level}")
    idx = np.random.default_rng(seed).integers(0, len(y), size=(resamples, len(y)))
    dist = metric_draws(y, p, idx)
    tail = (1.0 - level) / 2.0 * 100.0
    return {
        m: {"lo": float(np.percentile(d, tail)), "hi": float(np.percentile(d, 100.0 - tail))} for m, d in dist.items()
    }


def metric_draws(y: np.ndarray, p: np.ndarray, idx: np.ndarray) -> dict[str, np.ndarray]:
    """Each metric on each resample of the clips: ``idx`` is [resamples, n] indices into y and p."""
    ys, ps = y[idx], p[idx]
    err = ps - ys
    return {
        "rmse": np.sqrt((err**2).mean(axis=1)),
        "mae": np.abs(err).mean(axis=1),
        "pcc": _rowwise_pearson(ys, ps),
        "srcc": _rowwise_pearson(stats.rankdata(ys, axis=1), stats.rankdata(ps, axis=1)),
    }
