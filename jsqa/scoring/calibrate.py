"""Calibrating the encoder's distance on held-out JND pairs (the ``calibrate`` stage).

The held-out pairs (:mod:`jsqa.pairs.heldout`) are split by utterance into a fitting half and a
reporting half. A 1-D logistic regression P(different | distance) is fitted on the first; the
second gives the same/different accuracy at p = 0.5, the ROC AUC of the distance, and the
accuracy of the trivial rule that always answers the fitting half's majority class.

When the MOS manifest has no held-out references (:class:`jsqa.pairs.heldout.NoHeldoutReferences`)
the calibration is recorded as unavailable, with the reason, rather than failing the pipeline;
every other error still raises.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jsqa.config import PairsConfig
from jsqa.errors import JsqaError
from jsqa.io import file_sha256
from jsqa.models.mos import load_checkpoint
from jsqa.pairs.heldout import NoHeldoutReferences, heldout_clean, plan_heldout, render_heldout, split_halves
from jsqa.scoring.compare import Calibration, cosine_distance, distance_model_from_checkpoint, embed, model_rate

log = logging.getLogger(__name__)


def fit_logistic(distance: np.ndarray, different: np.ndarray) -> tuple[float, float]:
    """(intercept, slope) of P(different | distance), the slope held >= 0 (a larger distance is
    never evidence of sameness; a non-positive fit falls back to the base rate, with a warning)."""
    from sklearn.linear_model import LogisticRegression

    d = np.asarray(distance, dtype=np.float64)
    y = np.asarray(different, dtype=bool)
    if y.all() or not y.any():
        raise JsqaError("held-out JND pairs: the fitting half has only one class; use more pairs")
    scale = float(d.std()) or 1.0
    # Standardised so the (weak) default-free regularisation does not depend on the distance's units.
    lr = LogisticRegression(C=1e4).fit(((d - d.mean()) / scale)[:, None], y)
    slope = float(lr.coef_[0, 0]) / scale
    intercept = float(lr.intercept_[0]) - slope * float(d.mean())
    if not slope > 0:
        log.warning(
            "the distance does not increase with the SNR difference on held-out pairs (slope %.3g); "
            "p_different falls back to the base rate",
            slope,
        )
        rate = float(np.clip(y.mean(), 1e-6, 1 - 1e-6))
        return float(np.log(rate / (1 - rate))), 0.0
    return intercept, slope


def _auc(y: np.ndarray, score: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, score)) if 0 < y.sum() < len(y) else None


def report_metrics(pairs: pd.DataFrame, fit: np.ndarray, cal: Calibration) -> dict[str, Any]:
    """Metrics of ``cal`` on the reporting half (``~fit``) of ``pairs`` (columns distance, different)."""
    d = pairs["distance"].to_numpy(dtype=np.float64)
    y = pairs["different"].to_numpy(dtype=bool)
    d_rep, y_rep = d[~fit], y[~fit]
    pred = cal.p_different(d_rep) >= 0.5
    majority = bool(y[fit].mean() >= 0.5)
    return {
        "n_pairs": int(len(pairs)),
        "n_fit": int(fit.sum()),
        "n_report": int((~fit).sum()),
        "share_different": float(y.mean()),
        "accuracy": float((pred == y_rep).mean()) if len(y_rep) else None,
        "roc_auc": _auc(y_rep, d_rep),
        "majority_accuracy": float((y_rep == majority).mean()) if len(y_rep) else None,
        "mean_distance_same": float(d[~y].mean()) if (~y).any() else None,
        "mean_distance_different": float(d[y].mean()) if y.any() else None,
        "threshold_distance": cal.threshold(),
        "intercept": cal.intercept,
        "slope": cal.slope,
        "available": True,
    }


def unavailable_metrics(reason: str) -> dict[str, Any]:
    """``metrics/jnd.json`` when no calibration could be fitted: the reason, null figures."""
    figures = (
        "accuracy",
        "roc_auc",
        "majority_accuracy",
        "share_different",
        "mean_distance_same",
        "mean_distance_different",
        "threshold_distance",
        "intercept",
        "slope",
    )
    return {
        "available": False,
        "reason": reason,
        "n_pairs": 0,
        "n_fit": 0,
        "n_report": 0,
        "n_utterances": 0,
        **dict.fromkeys(figures),
    }


def calibrate(
    encoder_ckpt: Path,
    clean: pd.DataFrame,
    noise: pd.DataFrame,
    mos: pd.DataFrame,
    cfg: PairsConfig,
    seed: int,
    max_delta_jnd: float = 2.0,
    root: Path = Path("."),
) -> tuple[Calibration, dict[str, Any], pd.DataFrame]:
    """Render held-out JND pairs, measure their distances, fit and report the calibration.

    Returns (calibration, metrics, the pairs with ``distance`` and ``fit`` columns). Without
    held-out references: an unavailable calibration, :func:`unavailable_metrics` and no pairs.
    """
    payload = load_checkpoint(encoder_ckpt)
    model = distance_model_from_checkpoint(payload)
    sr = model_rate(model)
    try:
        heldout = heldout_clean(mos, clean, root)
    except NoHeldoutReferences as exc:
        reason = str(exc)
        log.warning("JND calibration unavailable: %s", reason)
        cal = Calibration.unavailable(
            reason, float(cfg.jnd_db), float(cfg.speech_level_dbov), sr, file_sha256(encoder_ckpt)
        )
        return cal, unavailable_metrics(reason), pd.DataFrame()
    plan = plan_heldout(heldout, noise, cfg, seed, sr, max_delta_jnd)
    pairs, members = render_heldout(plan, cfg, sr, root)
    # Members are made at the pairs' level already: embedded as they are.
    za = np.stack([embed(model, m[0]) for m in members])
    zb = np.stack([embed(model, m[1]) for m in members])
    pairs["distance"] = cosine_distance(za, zb)
    fit = split_halves(pairs["utterance_id"], seed)
    pairs["fit"] = fit
    intercept, slope = fit_logistic(pairs["distance"].to_numpy()[fit], pairs["different"].to_numpy()[fit])
    cal = Calibration(
        intercept=intercept,
        slope=slope,
        jnd_db=float(cfg.jnd_db),
        speech_level_dbov=float(cfg.speech_level_dbov),
        sample_rate=sr,
        encoder_sha256=file_sha256(encoder_ckpt),
    )
    metrics = report_metrics(pairs, fit, cal)
    metrics["n_utterances"] = int(heldout.shape[0])
    log.info(
        "JND calibration: %s", {k: v for k, v in metrics.items() if k in ("accuracy", "roc_auc", "majority_accuracy")}
    )
    return cal, metrics, pairs
