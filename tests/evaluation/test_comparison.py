"""Is pretraining better? Paired statistics over seeds and clips, failed-run detection, label subsets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from jsqa.evaluation.collapse import MIN_SPREAD_RATIO, failure_summary, run_health, still_improving
from jsqa.evaluation.evaluate import _compare
from jsqa.evaluation.paired import bootstrap_p, format_p, paired_by_set, paired_difference, verdict
from jsqa.evaluation.report import evaluation_tables
from jsqa.train.label_subset import label_subset


def _runs(y: np.ndarray, noise: float, seeds: range, offset: int) -> dict[int, np.ndarray]:
    """One run per seed: the labels plus Gaussian error of std ``noise``."""
    return {s: y + np.random.default_rng(offset + s).normal(0.0, noise, len(y)) for s in seeds}


def test_paired_bootstrap_finds_a_known_difference_with_an_interval_around_it():
    y = np.random.default_rng(0).uniform(1.0, 5.0, 400)
    cand, base = _runs(y, 0.5, range(5), 100), _runs(y, 0.8, range(5), 200)
    r = paired_difference(y, cand, base, resamples=2000, seed=1)
    d = r["rmse"]
    # RMSE of N(0, s) errors is about s: the true difference is -0.3 MOS, -37.5%.
    assert d["diff"] == pytest.approx(-0.3, abs=0.04)
    assert d["rel"] == pytest.approx(-37.5, abs=5.0)
    assert d["lo"] < d["diff"] < d["hi"] < 0
    assert d["rel_lo"] < d["rel"] < d["rel_hi"] < 0
    assert d["p"] < 0.001 and d["p_ttest"] < 0.001
    assert r["seeds"] == [0, 1, 2, 3, 4] and r["n"] == 400
    assert r["pcc"]["diff"] > 0 and r["pcc"]["lo"] > 0  # less noise, higher correlation


def test_no_difference_gives_an_interval_around_zero_and_a_large_p():
    y = np.random.default_rng(1).uniform(1.0, 5.0, 300)
    cand, base = _runs(y, 0.6, range(4), 10), _runs(y, 0.6, range(4), 50)
    r = paired_difference(y, cand, base, resamples=2000, seed=2)
    assert r["rmse"]["lo"] < 0 < r["rmse"]["hi"]
    assert r["rmse"]["p"] > 0.05
    same = paired_difference(y, cand, cand, resamples=200, seed=2)
    assert same["rmse"]["diff"] == 0 and same["rmse"]["p"] == 1.0 and same["rmse"]["p_ttest"] is None


def test_seed_spread_widens_the_interval_beyond_clip_sampling():
    # Runs that disagree with each other (a per-seed bias) make the difference less certain
    # than one run's clips alone suggest: the bootstrap resamples seeds as well as clips.
    y = np.random.default_rng(2).uniform(1.0, 5.0, 300)
    base = _runs(y, 0.7, range(4), 0)
    steady = {s: y + 0.4 * np.random.default_rng(50 + s).normal(size=len(y)) for s in range(4)}
    shaky = {s: y + (0.1 + 0.25 * s) * np.random.default_rng(50 + s).normal(size=len(y)) for s in range(4)}
    width = {
        name: (lambda r: r["hi"] - r["lo"])(paired_difference(y, c, base, 2000, 3)["rmse"])
        for name, c in (("steady", steady), ("shaky", shaky))
    }
    assert width["shaky"] > 1.5 * width["steady"]


def test_only_seeds_run_with_both_inits_are_paired():
    y = np.linspace(1, 5, 50)
    r = paired_difference(y, _runs(y, 0.3, range(3), 0), _runs(y, 0.3, range(1, 5), 9), resamples=100)
    assert r["seeds"] == [1, 2]
    with pytest.raises(ValueError, match="both inits"):
        paired_difference(y, {0: y}, {1: y})


def test_per_set_and_pooled_comparisons_use_each_sets_clips():
    y = np.random.default_rng(3).uniform(1.0, 5.0, 200)
    dbs = np.array(["A"] * 120 + ["B"] * 80)
    cand = _runs(y, 0.4, range(3), 0)
    base = _runs(y, 0.4, range(3), 7)
    base = {s: np.where(dbs == "B", p + 0.5, p) for s, p in base.items()}  # baseline worse on B only
    r = paired_by_set(dbs, y, cand, base, resamples=1000, seed=0)
    assert set(r) == {"A", "B", "pooled"} and r["A"]["n"] == 120 and r["B"]["n"] == 80
    assert r["B"]["rmse"]["hi"] < 0 and r["A"]["rmse"]["lo"] < 0 < r["A"]["rmse"]["hi"]


def test_bootstrap_p_value_and_its_formatting():
    assert bootstrap_p(np.array([-1.0, -2.0, -0.5])) == 0.0
    assert bootstrap_p(np.array([-1.0, 1.0])) == 1.0
    assert bootstrap_p(np.array([-1.0] * 9 + [1.0])) == pytest.approx(0.2)
    assert format_p(0.0, 1000) == "p < 0.001"
    assert format_p(0.0312, 1000) == "p = 0.031"


def test_verdict_reads_as_a_sentence_with_sign_interval_p_and_counts():
    y = np.random.default_rng(0).uniform(1.0, 5.0, 200)
    r = paired_difference(y, _runs(y, 0.5, range(3), 1), _runs(y, 0.8, range(3), 2), resamples=500)
    text = verdict(r, "pretrained", "scratch", "pooled")
    assert text.startswith("pretrained vs scratch, pooled RMSE: -")
    assert "MOS" in text and "95% CI [-" in text and "3 paired seeds × 200 clips" in text
    assert text.endswith("pretrained is better than scratch")
    null = paired_difference(y, _runs(y, 0.6, range(3), 1), _runs(y, 0.6, range(3), 5), resamples=500)
    assert verdict(null, "pretrained", "scratch", "pooled").endswith("no significant difference at the 5% level")


def test_fewer_than_three_paired_seeds_give_the_figures_but_no_verdict():
    y = np.random.default_rng(0).uniform(1.0, 5.0, 200)
    # A large, clip-wise clear difference: with enough seeds this would read "better".
    for k in (1, 2):
        r = paired_difference(y, _runs(y, 0.3, range(k), 1), _runs(y, 0.9, range(k), 2), resamples=300)
        text = verdict(r, "pretrained", "scratch", "pooled")
        assert f"{k} paired seeds × 200 clips" in text and "95% CI [" in text and "p " in text
        assert text.endswith(f"too few paired runs ({k} < 3) for a verdict")
        assert "better" not in text and "worse" not in text


def test_a_run_still_improving_at_the_epoch_cap_is_flagged_and_left_out_like_a_collapsed_one():
    assert still_improving(best_epoch=60, epochs_run=60) and not still_improving(best_epoch=41, epochs_run=51)
    assert not still_improving(None, 60)  # unknown (a checkpoint without training metrics): not flagged
    y = np.random.default_rng(4).uniform(1.0, 5.0, 120)
    dbs = pd.Series(["T"] * 120)
    scores = {"pretrained": _runs(y, 0.5, range(4), 0), "scratch": _runs(y, 0.6, range(4), 10)}
    training = {n: {s: {"best_epoch": 12.0, "epochs_run": 22.0} for s in range(4)} for n in scores}
    training["pretrained"][1] = {"best_epoch": 60.0, "epochs_run": 60.0}  # early stopping never triggered
    out = _compare(dbs, y, scores, "scratch", resamples=300, seed=0, training=training)
    assert out["health"]["pretrained"]["1"]["still_improving"] and not out["health"]["pretrained"]["1"]["collapsed"]
    assert out["failed"] == {"pretrained": [1], "scratch": []}
    assert out["paired"]["pooled"]["seeds"] == [0, 2, 3]
    assert any("1 of 4 pretrained runs were still improving at the epoch cap (seeds 1)" in v for v in out["verdict"])
    report = {
        "models": {n: {"pooled": {"rmse": 0.5, "mae": 0.4, "pcc": 0.9, "srcc": 0.9, "n": 120}} for n in scores},
        "seeds": {n: [0, 1, 2, 3] for n in scores},
        **out,
    }
    text = evaluation_tables(report, "text")
    assert "pretrained (3 seeds, 1 failed)" in text and "still improving at the epoch cap" in text


def test_collapse_rule_flags_constant_and_near_constant_predictions_only():
    y = np.linspace(1.0, 5.0, 100)
    assert run_health(y, np.full(100, 3.0))["collapsed"]
    assert run_health(y, 3.0 + (MIN_SPREAD_RATIO / 2) * (y - 3.0))["collapsed"]
    ok = run_health(y, 3.0 + 0.5 * (y - 3.0))
    assert not ok["collapsed"] and ok["spread_ratio"] == pytest.approx(0.5)
    assert not run_health(np.full(10, 3.0), np.linspace(2, 4, 10))["collapsed"]  # constant labels cannot tell
    assert failure_summary({"scratch": [3, 7], "pretrained": []}, {"scratch": list(range(10))}) == [
        "2 of 10 scratch runs failed to learn (seeds 3, 7): predictions collapsed to a near-constant"
    ]


def test_failed_runs_are_reported_and_left_out_of_statistics_and_pairing():
    y = np.random.default_rng(4).uniform(1.0, 5.0, 120)
    dbs = pd.Series(["T"] * 120)
    scores = {"pretrained": _runs(y, 0.5, range(4), 0), "scratch": _runs(y, 0.6, range(4), 10)}
    scores["scratch"][2] = np.full(120, float(y.mean()))  # seed 2 never left the mean
    out = _compare(dbs, y, scores, "scratch", resamples=300, seed=0)
    assert out["failed"] == {"pretrained": [], "scratch": [2]}
    assert out["health"]["scratch"]["2"]["collapsed"] and out["health"]["scratch"]["2"]["pred_std"] == 0
    assert out["paired"]["pooled"]["seeds"] == [0, 1, 3]
    # The failed run's RMSE (about the label spread) is not averaged in.
    learned = [np.sqrt(np.mean((scores["scratch"][s] - y) ** 2)) for s in (0, 1, 3)]
    assert out["seed_stats"]["scratch"]["pooled"]["rmse"]["mean"] == pytest.approx(np.mean(learned))
    assert any("1 of 4 scratch runs failed to learn (seeds 2)" in v for v in out["verdict"])
    report = {
        "models": {n: {"pooled": {"rmse": 0.5, "mae": 0.4, "pcc": 0.9, "srcc": 0.9, "n": 120}} for n in scores},
        "seeds": {n: [0, 1, 2, 3] for n in scores},
        **out,
    }
    text = evaluation_tables(report, "text")
    assert "scratch (3 seeds, 1 failed)" in text and "failed to learn" in text and "Paired difference" in text


def test_label_subset_is_stratified_seeded_and_keeps_the_label_distribution():
    rng = np.random.default_rng(0)
    train = pd.DataFrame(
        {
            "id": range(400),
            "db": ["A"] * 300 + ["B"] * 100,
            "mos": np.r_[rng.uniform(1, 5, 300), rng.uniform(3, 5, 100)],
            "split": "train",
        }
    )
    sub = label_subset(train, 0.2, seed=7)
    assert len(sub) == 80 and sub["db"].value_counts().to_dict() == {"A": 60, "B": 20}
    for db, g in train.groupby("db"):
        s = sub[sub["db"] == db]["mos"]
        # Every MOS quintile of the full set is represented in proportion.
        edges = np.quantile(g["mos"], [0.2, 0.4, 0.6, 0.8])
        assert np.bincount(np.searchsorted(edges, s), minlength=5).tolist() == [len(s) // 5] * 5
    assert sub.equals(label_subset(train, 0.2, seed=7))
    assert not sub.equals(label_subset(train, 0.2, seed=8))
    assert list(sub.index) == sorted(sub.index)
    assert label_subset(train, 1.0, seed=7) is train
    assert len(label_subset(train.head(3), 0.01, seed=0)) >= 1
    with pytest.raises(ValueError, match="fraction"):
        label_subset(train, 0.0, seed=0)


@pytest.mark.integration
def test_fine_tuning_flags_a_model_that_outputs_a_constant_and_keeps_label_fraction_to_train(
    small_corpus, tmp_path, monkeypatch
):
    import jsqa.train.finetune as ft
    from jsqa.config import FinetuneConfig, ModelConfig
    from jsqa.data.manifests import read_manifest
    from jsqa.models import seeds

    manifest = read_manifest(small_corpus["mos"], "mos")
    real_build = ft.build_model

    def constant_model(*args, **kwargs):
        # The head's output layer has no weights left and does not learn: MOS = its bias, always.
        model = real_build(*args, **kwargs)
        torch.nn.init.zeros_(model.head.net[-1].weight)
        return model

    monkeypatch.setattr(ft, "build_model", constant_model)
    cfg = FinetuneConfig(
        epochs=2,
        batch_size=8,
        crop_seconds=1.0,
        threads=2,
        seeds=2,
        learning_rate=0.0,
        label_fraction=0.5,
        equal_compute_epochs=1,
    )
    summary = ft.finetune_seeds(
        manifest, ModelConfig(projection_head=False), cfg, seed=3, out_path=tmp_path / "m.pt", root=small_corpus["root"]
    )
    assert summary["failed_seeds"] == [3, 4] and summary["collapsed"] is True
    assert summary["seeds"]["3"]["val_pred_std"] == 0.0
    n_train = int((manifest["split"] == "train").sum())
    assert summary["train_clips"] == len(label_subset(manifest[manifest["split"] == "train"], 0.5, 3)) < n_train
    assert [m["epoch"] for m in summary["curves"]["4"]] == [1.0, 2.0]
    # Equal-compute checkpoints: one per seed, at the budget.
    budget = seeds.seed_checkpoints(tmp_path / "m.pt", budget=True)
    assert sorted(budget) == [3, 4] and all(p.is_file() for p in budget.values())
    assert seeds.budget_epochs(tmp_path / "m.pt") == 1


def test_model_selection_never_prefers_a_collapsed_epoch():
    from jsqa.train.finetune import _better

    learned = {"collapsed": False}
    flat = {"collapsed": True}
    # Predicting the mean has a low RMSE on a small set; a learned epoch still replaces it...
    assert _better(learned, 0.95, {"collapsed": True, "val_rmse": 0.90})
    # ...and a collapsed epoch never replaces a learned one, however low its RMSE.
    assert not _better(flat, 0.50, {"collapsed": False, "val_rmse": 0.90})
    assert _better(learned, 0.80, {"collapsed": False, "val_rmse": 0.90})
    assert not _better(learned, 0.95, {"collapsed": False, "val_rmse": 0.90})
    assert _better(flat, 0.80, {"collapsed": True, "val_rmse": 0.90}) and _better(flat, 9.9, None)
