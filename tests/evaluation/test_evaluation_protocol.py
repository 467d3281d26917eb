"""The P.1401 / NISQA protocol: mapped RMSE, epsilon-insensitive RMSE, per-condition results, user splits."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jsqa.audio import write_audio
from jsqa.data.manifests import mos_manifest_from_csv
from jsqa.errors import ManifestError
from jsqa.evaluation.comparison import add_comparison, comparison_flat_metrics, metric_rows
from jsqa.evaluation.comparison_report import comparison_tables, html_report
from jsqa.evaluation.field_report import require_test_split
from jsqa.evaluation.protocol import (
    apply_mapping,
    ci95,
    condition_metrics,
    condition_table,
    epsilon_rmse,
    fit_mapping,
    is_monotonic,
    mapped_rmse,
    protocol_metrics,
)


def test_first_order_mapped_rmse_matches_the_hand_computed_value():
    # Least squares: y = 0.5 + 0.8 p; residuals -0.3, 0.9, -0.9, 0.3; SSE 1.8; N - d = 4 - 2.
    p, y = np.array([1.0, 2, 3, 4]), np.array([1.0, 3, 2, 4])
    assert fit_mapping(p, y, 1) == pytest.approx([0.5, 0.8])
    assert mapped_rmse(y, p, 1) == pytest.approx(math.sqrt(1.8 / 2))
    # A cubic through 4 points leaves no degree of freedom: not computable, not zero.
    assert mapped_rmse(y, p, 3) is None


def test_third_order_mapping_recovers_a_monotonic_cubic_exactly():
    p = np.array([0.0, 1, 2, 3, 4, 5])
    y = 1 + 0.5 * p - 0.1 * p**2 + 0.02 * p**3  # derivative 0.5 - 0.2p + 0.06p² > 0 everywhere
    assert fit_mapping(p, y, 3) == pytest.approx([1, 0.5, -0.1, 0.02], abs=1e-8)
    assert mapped_rmse(y, p, 3) == pytest.approx(0.0, abs=1e-8)


def test_third_order_mapping_stays_monotonic_where_least_squares_would_turn_back():
    p = np.array([1.0, 2, 3, 4, 5, 6, 7])
    y = np.array([1.0, 4.5, 3.0, 2.5, 3.0, 4.5, 5.0])
    free = np.polyfit(p, y, 3)[::-1]
    assert not is_monotonic(free, p.min(), p.max())  # the unconstrained cubic rises, falls, rises
    coef = fit_mapping(p, y, 3)
    assert is_monotonic(coef, p.min(), p.max())
    sse = lambda c: float(np.sum((apply_mapping(c, p) - y) ** 2))  # noqa: E731
    assert sse(free) <= sse(coef) <= sse(np.array([*fit_mapping(p, y, 1), 0, 0])) + 1e-9


def test_epsilon_insensitive_rmse_matches_the_hand_computed_value():
    # t(0.975, 4) = 2.7764: a 5-vote MOS with std 1 is known to ±1.2417.
    assert ci95(np.array([1.0]), np.array([5.0])) == pytest.approx([2.776445 / math.sqrt(5)], rel=1e-5)
    y = np.full(6, 3.0)
    mapped = np.array([3.5, 2.0, 3.0, 3.1, 4.0, 3.0])
    # errors beyond ±0.2: 0.3, 0.8, 0, 0, 0.8, 0 -> SSE 1.37, N - d = 6 - 4
    assert epsilon_rmse(y, mapped, np.full(6, 0.2)) == pytest.approx(math.sqrt(1.37 / 2))


def test_epsilon_rmse_needs_votes_and_std():
    y = np.array([1.0, 2, 3, 4, 5, 4, 2])
    p = y + np.array([0.1, -0.2, 0.3, 0.0, -0.1, 0.2, 0.1])
    assert protocol_metrics(y, p)["rmse_eps"] is None
    assert protocol_metrics(y, p, np.full(7, 0.5), np.zeros(7))["rmse_eps"] is None  # proxy labels: 0 votes
    m = protocol_metrics(y, p, np.full(7, 0.5), np.full(7, 20.0))
    assert m["rmse_eps"] is not None and 0.0 <= m["rmse_eps"] <= m["rmse_map3"]


def _rows() -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = pd.DataFrame(
        {
            "id": [f"f{i}" for i in range(10)],
            "db": ["A"] * 6 + ["B"] * 4,
            "mos": [2.0, 4.0, 1.0, 1.5, 4.5, 5.0, 2.0, 3.0, 4.0, 2.5],
            "condition": ["1", "1", "2", "2", "3", "3", None, None, None, None],
        }
    )
    preds = rows[["id", "db", "mos"]].copy()
    preds["pred_m"] = [2.5, 3.5, 1.5, 1.5, 4.0, 4.4, 2.2, 3.1, 3.7, 2.4]
    return rows, preds


def test_condition_mos_is_the_mean_over_its_files_compared_with_the_mean_prediction():
    rows, preds = _rows()
    table = condition_table(rows.assign(pred_m=preds["pred_m"]), "pred_m")
    assert list(table["condition"]) == ["1", "2", "3"] and list(table["n"]) == [2, 2, 2]
    assert table["mos"].tolist() == pytest.approx([3.0, 1.25, 4.75])
    assert table["pred"].tolist() == pytest.approx([3.0, 1.5, 4.2])
    m = condition_metrics(table)
    assert m["n_conditions"] == 3
    assert m["rmse"] == pytest.approx(math.sqrt((0 + 0.25**2 + 0.55**2) / 3))
    assert m["pcc"] == pytest.approx(np.corrcoef([3.0, 1.25, 4.75], [3.0, 1.5, 4.2])[0, 1])
    # Two conditions: a correlation would be ±1 whatever the predictor; reported as absent.
    two = condition_metrics(table.iloc[:2])
    assert two["pcc"] is None and two["srcc"] is None and two["n_conditions"] == 2


def test_the_demo_condition_is_its_degradation_and_snr_band():
    from jsqa.data.demo.label import demo_condition

    assert demo_condition("none", -3.0) == "none/snr<10"
    assert demo_condition("mulaw8", 10.0) == "mulaw8/snr10-25"
    assert demo_condition("clipping", 39.0) == "clipping/snr>=25"


def test_report_gains_mapped_rmse_conditions_and_says_which_set_has_no_conditions(tmp_path):
    rows, preds = _rows()
    report = {"models": {"m": {"A": {"rmse": 0.0}, "B": {"rmse": 0.0}, "pooled": {"rmse": 0.0}}}}
    conditions = add_comparison(report, preds, rows)
    assert set(report["models"]["m"]["A"]) >= {"rmse_map1", "rmse_map3"}
    assert "rmse_eps" not in report["models"]["m"]["A"]  # no raters: absent, every value stays a number
    assert set(report["conditions"]["m"]) == {"A", "pooled"}  # B has no conditions
    assert report["conditions"]["m"]["A"]["n_conditions"] == 3
    assert any("B has no condition column" in n for n in report["notes"])
    assert any("rmse_eps on A: not computable" in n for n in report["notes"])
    assert list(conditions.columns) == ["predictor", "db", "condition", "mos", "pred", "n"] and len(conditions) == 3
    assert "m_A_rmse_map1" in comparison_flat_metrics(report) and "con_m_A_pcc" in comparison_flat_metrics(report)
    assert set(metric_rows(report)["predictor"]) == {"m"}
    text = comparison_tables(report, "text")
    assert "Per condition" in text and "B has no condition column" in text and "RMSE map3" in text
    page = html_report(report, [])
    assert page.startswith("<!doctype html>") and "<table>" in page and "Per condition" in page


def _tiny_csv(folder: Path, split: list[str] | None, db: str = "MYDATA") -> Path:
    rows = []
    t = np.arange(8000) / 16000
    for i in range(6):
        rel = f"deg/c{i}.wav"
        write_audio(folder / rel, (0.1 * np.sin(2 * np.pi * 200 * t) * (i + 1) / 6).astype(np.float32), 16000)
        rows.append({"db": db, "filepath_deg": rel, "mos": 1.0 + i * 0.5, "condition": f"k{i % 2}"})
    table = pd.DataFrame(rows)
    if split is not None:
        table["split"] = split
    path = folder / "data.csv"
    table.to_csv(path, index=False)
    return path


def test_a_user_csv_takes_its_split_from_a_split_column_and_keeps_its_conditions(tmp_path):
    csv = _tiny_csv(tmp_path, ["train", "train", "val", "test", "TEST", "test"])
    manifest, quarantine = mos_manifest_from_csv(csv, root=tmp_path)
    assert quarantine == []
    assert manifest["split"].tolist() == ["train", "train", "val", "test", "test", "test"]
    assert manifest["condition"].tolist() == ["k0", "k1", "k0", "k1", "k0", "k1"]
    require_test_split(manifest, str(csv))  # has test rows: no error


def test_a_user_csv_without_a_test_split_is_refused_naming_the_split_column(tmp_path):
    csv = _tiny_csv(tmp_path, ["train"] * 4 + ["val"] * 2)
    manifest, _ = mos_manifest_from_csv(csv, root=tmp_path)
    with pytest.raises(ManifestError, match="'split' column"):
        require_test_split(manifest, str(csv))
    with pytest.raises(ManifestError, match="no 'split' column"):
        mos_manifest_from_csv(_tiny_csv(tmp_path / "nosplit", None), root=tmp_path)
    with pytest.raises(ManifestError, match="split 'later' is not one of"):
        mos_manifest_from_csv(_tiny_csv(tmp_path / "bad", ["later"] * 6), root=tmp_path)


def test_the_prefect_artifact_shows_peers_mapped_rmse_and_conditions(tmp_path):
    from flows.jsqa_flow import metrics_markdown

    rows, preds = _rows()
    report = {
        "models": {
            "m": {
                "A": {"rmse": 0.5, "mae": 0.4, "pcc": 0.9, "srcc": 0.8, "n": 6},
                "B": {"rmse": 0.5, "mae": 0.4, "pcc": 0.9, "srcc": 0.8, "n": 4},
                "pooled": {"rmse": 0.5, "mae": 0.4, "pcc": 0.9, "srcc": 0.8, "n": 10},
            }
        }
    }
    peer = pd.DataFrame({"stoi": np.linspace(0.5, 0.95, 10)})
    from jsqa.evaluation.peers import STOI

    add_comparison(report, preds, rows, peer, {"stoi": STOI.info})
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "evaluate.json").write_text(json.dumps(report))
    md = metrics_markdown(tmp_path)
    assert "| A | stoi |" in md and "RMSE map3" in md and "Per condition" in md
    assert "stoi: not on the MOS scale" in md and report["peers"]["stoi"]["pooled"]["rmse"] is None


def test_a_reference_based_peer_without_references_is_named_in_the_notes_with_the_reason():
    from jsqa.evaluation.peers import PeerInfo

    info = {"pesq": PeerInfo("pesq", "pesq", "wb", 16000, "MIT", "-", ("pesq",), needs_reference=True)}
    rows, preds = _rows()
    nothing = pd.DataFrame({"pesq": [np.nan] * 10})
    report: dict = {"models": {"m": {}}}
    add_comparison(report, preds, rows, nothing, info)
    assert any(
        n.startswith("pesq: skipped: it needs each clip's clean reference") and "ref_path" in n for n in report["notes"]
    )
    # Some clips with a reference, one of them unreadable: how many were scored, and why not the rest.
    rows["ref_path"] = ["r.wav"] * 3 + [None] * 7
    some = pd.DataFrame({"pesq": [3.0, 2.0] + [np.nan] * 8})
    report = {"models": {"m": {}}}
    add_comparison(report, preds, rows, some, info)
    assert any(
        "pesq: scored 2 of 10 test clips" in n and "7 have none; 1 more could not be scored" in n
        for n in report["notes"]
    )
