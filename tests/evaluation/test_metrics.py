"""Metrics and the relative change against scratch, signed as the paper quotes it."""

import itertools

import numpy as np
import pytest

from jsqa.evaluation.metrics import absolute_change, bootstrap_ci, improves, mos_metrics, relative_change, seed_stats
from jsqa.scoring.windows import windows


def test_metrics_match_hand_computed_values():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    p = np.array([1.5, 2.0, 2.5, 5.0])
    m = mos_metrics(y, p)
    assert m["rmse"] == pytest.approx(np.sqrt((0.25 + 0 + 0.25 + 1) / 4))
    assert m["mae"] == pytest.approx(0.5)
    assert m["pcc"] == pytest.approx(np.corrcoef(y, p)[0, 1])
    assert m["srcc"] == pytest.approx(1.0)
    assert m["n"] == 4


def test_constant_predictions_give_zero_correlation_not_nan():
    m = mos_metrics(np.array([1.0, 2.0, 3.0]), np.array([3.0, 3.0, 3.0]))
    assert m["pcc"] == 0.0 and m["srcc"] == 0.0


def test_relative_change_is_signed_as_the_paper_quotes_it():
    # "RMSE -18%" is a reduction (better); "PCC +15%" a rise (better); absolute changes beside.
    base = {"rmse": 0.5, "mae": 0.4, "pcc": 0.8, "srcc": 0.7}
    better = {"rmse": 0.41, "mae": 0.324, "pcc": 0.92, "srcc": 0.819}
    rc = relative_change(better, base)
    assert rc["rmse"] == pytest.approx(-18.0)
    assert rc["mae"] == pytest.approx(-19.0)
    assert rc["pcc"] == pytest.approx(15.0)
    assert rc["srcc"] == pytest.approx(17.0)
    assert absolute_change(better, base) == pytest.approx({"rmse": -0.09, "mae": -0.076, "pcc": 0.12, "srcc": 0.119})
    assert all(improves(m, d) for m, d in absolute_change(better, base).items())
    # A PCC moving from 0.15 to 0.77 is +413%, which only the absolute change makes readable.
    assert absolute_change({**base, "pcc": 0.77}, {**base, "pcc": 0.15})["pcc"] == pytest.approx(0.62)


def test_windows_cover_the_clip_and_end_aligned():
    assert windows(100, 200, 50) == [(0, 100)]
    spans = windows(1000, 300, 200)
    assert spans[0] == (0, 300) and spans[-1] == (700, 1000)
    assert all(b - a == 300 for a, b in spans)


def test_tiling_windows_score_each_sample_once_and_fold_a_short_tail_into_the_last():
    assert windows(1000, 300, 300) == [(0, 300), (300, 600), (600, 1000)]  # 100-sample tail joins
    assert windows(1200, 300, 300) == [(0, 300), (300, 600), (600, 900), (900, 1200)]
    assert windows(1050, 300, 300)[-1] == (900, 1050)  # a tail of half a window or more stands alone
    assert windows(350, 300, 300) == [(0, 350)]
    for n in (301, 999, 4321):
        spans = windows(n, 300, 300)
        assert spans[0][0] == 0 and spans[-1][1] == n
        assert all(a2 == b1 for (_, b1), (a2, _) in itertools.pairwise(spans))


def test_bootstrap_interval_brackets_the_estimate_is_seeded_and_narrows_with_more_clips():
    rng = np.random.default_rng(0)
    y = rng.uniform(1, 5, 400)
    p = y + rng.normal(0, 0.4, 400)
    full = mos_metrics(y, p)
    ci = bootstrap_ci(y, p, resamples=500, seed=7)
    for k in ("rmse", "mae", "pcc", "srcc"):
        assert ci[k]["lo"] < full[k] < ci[k]["hi"]
    assert ci == bootstrap_ci(y, p, resamples=500, seed=7)  # same seed, same interval
    assert bootstrap_ci(y, p, resamples=500, seed=8) != ci
    small = bootstrap_ci(y[:40], p[:40], resamples=500, seed=7)
    assert small["rmse"]["hi"] - small["rmse"]["lo"] > ci["rmse"]["hi"] - ci["rmse"]["lo"]
    # RMSE's sampling error is about 0.4 / sqrt(2 n): the 95% interval spans about 4 of those
    assert ci["rmse"]["hi"] - ci["rmse"]["lo"] == pytest.approx(4 * 0.4 / np.sqrt(800), rel=0.35)


def test_bootstrap_of_perfect_predictions_is_a_point():
    y = np.linspace(1, 5, 30)
    ci = bootstrap_ci(y, y.copy(), resamples=200, seed=0)
    assert ci["rmse"] == {"lo": 0.0, "hi": 0.0} and ci["mae"] == {"lo": 0.0, "hi": 0.0}
    assert ci["pcc"]["lo"] == pytest.approx(1.0) and ci["srcc"]["lo"] == pytest.approx(1.0)


def test_seed_stats_use_the_sample_standard_deviation():
    assert seed_stats([0.5, 0.7, 0.6]) == pytest.approx({"mean": 0.6, "std": 0.1})
    assert seed_stats([0.42]) == {"mean": 0.42, "std": 0.0}
