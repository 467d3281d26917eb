"""Label-efficiency: a stratified, seeded share of the fine-tuning split's labelled clips."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

MOS_BINS = 5  # MOS quantile bins per test set: the subset keeps the label distribution


def label_subset(train: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """About ``fraction`` of ``train``'s rows, drawn without replacement within each stratum
    (``db`` x MOS quantile bin), at least one row per stratum; rows keep their order.

    ``fraction`` 1 returns ``train`` unchanged. The draw depends only on ``seed`` and the rows,
    so both inits of one seed fine-tune on the same clips (the comparison stays paired). Only
    the training split is ever passed here: validation and test sets are untouched.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if fraction == 1.0 or train.empty:
        return train
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x1ABE1]))
    strata = _strata(train)
    keep: list[int] = []
    for key in sorted(set(strata)):
        members = np.flatnonzero(strata == key)
        k = max(1, int(round(fraction * len(members))))
        keep.extend(rng.choice(members, size=k, replace=False).tolist())
    out = train.iloc[sorted(keep)]
    log.info(
        "label_fraction %.3g: %d of %d training clips (%d strata)", fraction, len(out), len(train), len(set(strata))
    )
    return out


def _strata(train: pd.DataFrame) -> np.ndarray:
    """One label per row: its db and the MOS quantile bin within that db."""
    db = train["db"].astype(str).to_numpy() if "db" in train else np.full(len(train), "")
    bins = np.zeros(len(train), dtype=int)
    mos = train["mos"].to_numpy(dtype=np.float64)
    for name in set(db):
        idx = np.flatnonzero(db == name)
        n_bins = min(MOS_BINS, len(idx))
        ranks = mos[idx].argsort(kind="stable").argsort(kind="stable")
        bins[idx] = ranks * n_bins // len(idx)
    return np.array([f"{d}|{b}" for d, b in zip(db, bins)], dtype=object)
