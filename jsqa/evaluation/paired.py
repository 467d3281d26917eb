"""Paired comparison of two inits (pretrained vs scratch) over seeds and test clips.

Seeds are paired: seed s of both inits was fine-tuned on the same split with the same seed, and
both are scored on the same clips. The uncertainty of a difference has two sources, which seeds
were drawn and which clips were tested, so the bootstrap resamples both: each draw picks k seeds
with replacement and n clips with replacement, computes every metric of each picked seed's
model on those clips, and averages over the picked seeds. The interval is the percentile interval
of the difference; the p-value is the two-sided bootstrap test of "no difference" (twice the
smaller share of draws on either side of 0). With two or more seeds a paired t-test over the
seeds' metrics is given too (it ignores clip sampling, so it is the more lenient of the two
only when clips vary little).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

from jsqa.evaluation.metrics import LOWER_IS_BETTER, METRICS, metric_draws, mos_metrics

ALPHA = 0.05  # the significance level the verdict states
# Fewer paired runs than this give figures but no verdict: with one or two seeds the seed
# resampling has (nearly) nothing to draw from, and a clip-only interval reads as a finding about
# the inits when it is one about those runs (docs/statistics.md).
MIN_PAIRED_SEEDS = 3


def paired_difference(
    y: np.ndarray,
    cand: Mapping[int, np.ndarray],
    base: Mapping[int, np.ndarray],
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """The difference ``cand - base`` of each metric, seed means over the seeds both share.

    ``cand`` and ``base`` map a seed to that run's predictions of the clips ``y``. Returns
    ``{"seeds": [...], "n": clips, metric: {cand, base, diff, rel, lo, hi, rel_lo, rel_hi,
    p, p_ttest}}``: ``rel`` is the signed percent change against ``base`` (RMSE -18% is a
    reduction), lo/hi the interval of ``diff``, rel_lo/rel_hi that of ``rel``, p the paired
    bootstrap p-value and p_ttest the paired t-test over seeds (None with one seed).
    """
    seeds = sorted(set(cand) & set(base))
    if not seeds:
        raise ValueError("no seed was run with both inits: nothing to pair")
    y = np.asarray(y, dtype=np.float64)
    if len(y) == 0:
        raise ValueError("cannot compare on an empty set")
    if resamples < 1 or not 0.0 < level < 1.0:
        raise ValueError(f"need resamples >= 1 and 0 < level < 1, got {resamples} and {level}")
    a = np.stack([np.asarray(cand[s], dtype=np.float64) for s in seeds])
    b = np.stack([np.asarray(base[s], dtype=np.float64) for s in seeds])
    rng = np.random.default_rng(seed)
    clip_idx = rng.integers(0, len(y), size=(resamples, len(y)))
    seed_idx = rng.integers(0, len(seeds), size=(resamples, len(seeds)))
    draws_a = [metric_draws(y, a[j], clip_idx) for j in range(len(seeds))]
    draws_b = [metric_draws(y, b[j], clip_idx) for j in range(len(seeds))]
    point_a = [mos_metrics(y, a[j]) for j in range(len(seeds))]
    point_b = [mos_metrics(y, b[j]) for j in range(len(seeds))]
    cols = np.arange(resamples)
    tail = (1.0 - level) / 2.0 * 100.0
    out: dict = {"seeds": [int(s) for s in seeds], "n": int(len(y))}
    for m in METRICS:
        per_a = np.array([p[m] for p in point_a])
        per_b = np.array([p[m] for p in point_b])
        mean_a, mean_b = float(per_a.mean()), float(per_b.mean())
        # [k, resamples] -> the picked seeds of each draw, averaged.
        ra = np.stack([d[m] for d in draws_a])[seed_idx.T, cols].mean(axis=0)
        rb = np.stack([d[m] for d in draws_b])[seed_idx.T, cols].mean(axis=0)
        diff = ra - rb
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(rb != 0, diff / np.abs(rb) * 100.0, np.nan)
        out[m] = {
            "cand": mean_a,
            "base": mean_b,
            "diff": mean_a - mean_b,
            "rel": (mean_a - mean_b) / abs(mean_b) * 100.0 if mean_b != 0 else None,
            "lo": float(np.percentile(diff, tail)),
            "hi": float(np.percentile(diff, 100.0 - tail)),
            "rel_lo": _finite(np.nanpercentile(rel, tail)) if np.isfinite(rel).any() else None,
            "rel_hi": _finite(np.nanpercentile(rel, 100.0 - tail)) if np.isfinite(rel).any() else None,
            "p": bootstrap_p(diff),
            "p_ttest": _ttest(per_a, per_b),
        }
    out["resamples"] = int(resamples)
    return out


def bootstrap_p(diff: np.ndarray) -> float:
    """Two-sided bootstrap p-value of "the difference is 0": twice the smaller tail share, at most 1.
    0 means no draw crossed 0 (report it as below 1/resamples)."""
    d = np.asarray(diff, dtype=np.float64)
    return min(1.0, 2.0 * min(float(np.mean(d <= 0)), float(np.mean(d >= 0))))


def _ttest(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 2:
        return None
    d = a - b
    if np.all(d == d[0]):  # no spread: the t statistic is undefined
        return None
    return _finite(stats.ttest_rel(a, b).pvalue)


def _finite(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def paired_by_set(
    dbs: Sequence[str],
    y: np.ndarray,
    cand: Mapping[int, np.ndarray],
    base: Mapping[int, np.ndarray],
    resamples: int = 1000,
    seed: int = 0,
    pooled: str = "pooled",
) -> dict[str, dict]:
    """:func:`paired_difference` for each test set (sorted) and for all clips pooled."""
    names = np.asarray(dbs, dtype=object)
    out = {}
    for db in sorted(set(names.tolist())):
        idx = np.flatnonzero(names == db)
        out[str(db)] = paired_difference(
            y[idx], {s: p[idx] for s, p in cand.items()}, {s: p[idx] for s, p in base.items()}, resamples, seed
        )
    out[pooled] = paired_difference(y, cand, base, resamples, seed)
    return out


def format_p(p: float | None, resamples: int) -> str:
    """``p = 0.031``, or ``p < 0.001`` when no bootstrap draw crossed 0."""
    if p is None:
        return "p = –"
    if p == 0:
        return f"p < {1.0 / resamples:.2g}"
    return f"p = {p:.3f}" if p >= 0.001 else f"p = {p:.1e}"


def verdict(result: Mapping, cand: str, base: str, where: str, metric: str = "rmse", alpha: float = ALPHA) -> str:
    """A plain sentence: "pretrained vs scratch, pooled RMSE: -6.2% (-0.046 MOS), 95% CI
    [-13.1%, +1.0%], p = 0.090, 3 paired seeds x 60 clips: not significant at the 5% level".
    With fewer than :data:`MIN_PAIRED_SEEDS` paired seeds the figures stay and the outcome is
    "too few paired runs (N < 3) for a verdict"."""
    r = result[metric]
    name = metric.upper()
    better = (r["diff"] < 0) == LOWER_IS_BETTER[metric] and r["diff"] != 0
    p = r["p"]
    significant = p is not None and p < alpha
    rel = f"{r['rel']:+.1f}%" if r.get("rel") is not None else "–"
    ci = (
        f"[{r['rel_lo']:+.1f}%, {r['rel_hi']:+.1f}%]"
        if r.get("rel_lo") is not None
        else f"[{r['lo']:+.3f}, {r['hi']:+.3f}]"
    )
    unit = " MOS" if metric in ("rmse", "mae") else ""
    k = len(result["seeds"])
    if k < MIN_PAIRED_SEEDS:
        outcome = f"too few paired runs ({k} < {MIN_PAIRED_SEEDS}) for a verdict"
    elif significant:
        outcome = f"{cand} is {'better' if better else 'worse'} than {base}"
    else:
        outcome = f"no significant difference at the {alpha:.0%} level"
    return (
        f"{cand} vs {base}, {where} {name}: {rel} ({r['diff']:+.3f}{unit}), 95% CI {ci}, "
        f"{format_p(p, result.get('resamples', 1000))}, {k} paired seeds × "
        f"{result['n']} clips: {outcome}"
    )
