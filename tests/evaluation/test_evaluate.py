"""Evaluation: per-test-set and pooled metrics for each model, the change against scratch, the plot."""

from __future__ import annotations

import pytest
import torch

from jsqa.data.manifests import read_manifest
from jsqa.errors import ConfigError, ManifestError
from jsqa.evaluation.comparison_plots import predictor_scatter
from jsqa.evaluation.evaluate import evaluate_models, flat_metrics
from jsqa.evaluation.metrics import mos_metrics
from jsqa.models.mos import MOSModel, encoder_spec


def _model(seed: int, init_mos: float) -> MOSModel:
    """A random, untrained MOS model: it predicts about ``init_mos`` for every clip."""
    torch.manual_seed(seed)
    return MOSModel(encoder_spec("small"), init_mos=init_mos).eval()


class LevelMOS(torch.nn.Module):
    """A model that learned something: MOS from the clip's log energy (varies with the clip)."""

    sample_rate = 16000

    def __init__(self, offset: float) -> None:
        super().__init__()
        self.offset = offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        db = 10 * torch.log10(x.pow(2).mean(dim=-1) + 1e-10)
        return 1.0 + 4.0 * torch.sigmoid((db + 30.0) / 8.0) + self.offset


def test_reports_every_test_set_pooled_and_relative_change(small_corpus, tmp_path):
    manifest = read_manifest(small_corpus["mos"], "mos")
    models = {"pretrained": LevelMOS(0.0), "scratch": LevelMOS(-0.5)}
    report, preds = evaluate_models(models, manifest, root=small_corpus["root"], resamples=200)
    assert report["failed"] == {"pretrained": [], "scratch": []}
    test = manifest[manifest["split"] == "test"]
    assert set(report["models"]["scratch"]) == set(test["db"]) | {"pooled"}
    pooled = report["models"]["pretrained"]["pooled"]
    assert pooled["n"] == len(test) == len(preds)
    # pooled figures are the metrics of all test predictions together
    assert pooled == pytest.approx(mos_metrics(preds["mos"].to_numpy(), preds["pred_pretrained"].to_numpy()))
    rc = report["relative_change"]["pooled"]
    s, p = report["models"]["scratch"]["pooled"], pooled
    # Signed as the paper quotes it: a lower RMSE is a negative change.
    assert rc["rmse"] == pytest.approx((p["rmse"] - s["rmse"]) / s["rmse"] * 100)
    assert report["absolute_change"]["pooled"]["rmse"] == pytest.approx(p["rmse"] - s["rmse"])
    assert report["relative_change_of"] == "pretrained vs scratch"
    assert report["verdict"][0].startswith("pretrained vs scratch, pooled RMSE: ")
    assert all(1.0 <= v <= 5.0 for v in preds["pred_scratch"])
    assert "pretrained_pooled_srcc" in flat_metrics(report)
    predictor_scatter(preds, tmp_path / "scatter.png", list(models))
    assert (tmp_path / "scatter.png").read_bytes()[:4] == b"\x89PNG"


def test_unknown_test_set_is_named(small_corpus):
    manifest = read_manifest(small_corpus["mos"], "mos")
    with pytest.raises(ManifestError, match="NOPE"):
        evaluate_models({"m": _model(0, 3.0)}, manifest, test_sets=["NOPE"], root=small_corpus["root"])


def test_a_model_of_another_sample_rate_is_refused_naming_both_rates(small_corpus):
    manifest = read_manifest(small_corpus["mos"], "mos")
    m8 = MOSModel(encoder_spec("small"), sample_rate=8000).eval()
    with pytest.raises(ConfigError, match=r"model 'scratch' \(seed 0\).*8000 Hz.*data\.sample_rate is 16000 Hz"):
        evaluate_models({"pretrained": _model(0, 3.0), "scratch": m8}, manifest, root=small_corpus["root"])


def test_untrained_models_are_flagged_as_failed_and_not_compared(small_corpus):
    # An untrained head predicts about its initial MOS for every clip: both runs "failed to learn".
    manifest = read_manifest(small_corpus["mos"], "mos")
    report, _ = evaluate_models(
        {"pretrained": _model(0, 3.0), "scratch": {7: _model(1, 2.0)}},
        manifest,
        root=small_corpus["root"],
        resamples=50,
    )
    assert report["failed"] == {"pretrained": [0], "scratch": [7]}
    assert report["health"]["scratch"]["7"]["spread_ratio"] < 0.1
    assert "paired" not in report and "relative_change" not in report
    assert report["verdict"] == ["no seed where both pretrained and scratch learned: no paired comparison"]
