"""Metrics and the relative change against scratch, signed as the paper quotes it."""

import numpy as np
import pytest

from jsqa.inference import windows
from jsqa.metrics import mos_metrics, relative_change


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


def test_relative_change_reports_improvements_as_positive():
    base = {"rmse": 0.5, "mae": 0.4, "pcc": 0.8, "srcc": 0.7}
    better = {"rmse": 0.41, "mae": 0.324, "pcc": 0.92, "srcc": 0.819}
    rc = relative_change(better, base)
    assert rc["rmse"] == pytest.approx(18.0)
    assert rc["mae"] == pytest.approx(19.0)
    assert rc["pcc"] == pytest.approx(15.0)
    assert rc["srcc"] == pytest.approx(17.0)


def test_windows_cover_the_clip_and_end_aligned():
    assert windows(100, 200, 50) == [(0, 100)]
    spans = windows(1000, 300, 200)
    assert spans[0] == (0, 300) and spans[-1] == (700, 1000)
    assert all(b - a == 300 for a, b in spans)
