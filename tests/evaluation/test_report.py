"""One renderer for the evaluation table: the CLI's text and the Prefect artifact's markdown."""

from __future__ import annotations

import pytest

from jsqa.evaluation.report import evaluation_tables

M = {"rmse": 0.5, "mae": 0.4, "pcc": 0.8, "srcc": 0.7, "n": 30}
REPORT = {
    "models": {
        "pretrained": {"TEST_A": M, "pooled": {**M, "n": 60}},
        "scratch": {"TEST_A": M, "pooled": {**M, "n": 60}},
    },
    "ci95": {
        "pretrained": {
            "TEST_A": {k: {"lo": 0.25, "hi": 0.75} for k in ("rmse", "mae", "pcc", "srcc")},
            "pooled": {k: {"lo": 0.3, "hi": 0.7} for k in ("rmse", "mae", "pcc", "srcc")},
        }
    },
    "seeds": {"pretrained": [1, 2, 3], "scratch": [1, 2, 3]},
    "seed_stats": {
        name: {
            db: {k: {"mean": 0.61, "std": 0.02} for k in ("rmse", "mae", "pcc", "srcc")} for db in ("TEST_A", "pooled")
        }
        for name in ("pretrained", "scratch")
    },
    "bootstrap": {"resamples": 1000, "seed": 1, "level": 0.95},
    "relative_change": {
        "pooled": {"rmse": 18.0, "mae": 19.0, "pcc": 15.0, "srcc": -1.5},
        "TEST_A": {"rmse": 1.0, "mae": 2.0, "pcc": 3.0, "srcc": 4.0},
    },
    "relative_change_of": "pretrained vs scratch",
}


def test_markdown_shows_primary_with_interval_seed_mean_std_and_change():
    md = evaluation_tables(REPORT, "markdown")
    assert "| TEST_A | pretrained | 0.5000 [0.2500, 0.7500] | 0.4000 [0.2500, 0.7500] |" in md
    assert "| pooled | scratch | 0.5000 | 0.4000 | 0.8000 | 0.7000 | 60 |" in md  # no interval computed
    assert "| pooled | pretrained (3 seeds) | 0.6100 ± 0.0200 |" in md
    assert "| pooled | +18.00% | +19.00% | +15.00% | -1.50% |" in md
    assert md.index("| TEST_A | +1.00%") < md.index("| pooled | +18.00%")  # pooled reads last
    assert "95% bootstrap" in md


def test_text_table_carries_the_same_figures_aligned():
    text = evaluation_tables(REPORT, "text")
    assert "|" not in text
    rows = [line for line in text.splitlines() if line.startswith("pooled")]
    assert any("pretrained (3 seeds)" in r and "0.610 ± 0.020" in r for r in rows)
    assert any("0.500 [0.300, 0.700]" in r for r in rows)
    header = next(line for line in text.splitlines() if line.startswith("test set") and "n" in line.split())
    first = next(line for line in text.splitlines() if line.startswith("TEST_A"))
    assert len(header) == len(first)  # columns padded to one width


def test_a_report_from_before_seeds_renders_its_primary_figures():
    old = {"models": REPORT["models"], "relative_change": REPORT["relative_change"]}
    text = evaluation_tables(old, "text")
    assert "seeds" not in text and "bootstrap" not in text and "0.500" in text
    with pytest.raises(ValueError, match="html"):
        evaluation_tables(old, "html")
