"""Predicted uncertainty (mos_std) and quality-dimension outputs: loss, model, scoring, outputs, evaluation."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from jsqa.audio import load_audio, write_audio
from jsqa.config import FinetuneConfig, ModelConfig, ValidateConfig
from jsqa.data.clips import label_se, label_targets
from jsqa.data.manifests import mos_manifest_from_csv, read_manifest
from jsqa.data.validate import suite_for
from jsqa.errors import JsqaError
from jsqa.evaluation.evaluate import evaluate_models, flat_metrics
from jsqa.evaluation.metrics import calibration
from jsqa.evaluation.report import evaluation_tables
from jsqa.models.mos import (
    MOSModel,
    encoder_spec,
    load_checkpoint,
    mos_model_from_checkpoint,
    output_layout,
    save_checkpoint,
)
from jsqa.scoring.predict import format_rows, score_files
from jsqa.scoring.serving import score_rows
from jsqa.scoring.windows import score_blocks, score_blocks_all, score_waveforms, score_waveforms_all
from jsqa.train.finetune import finetune
from jsqa.train.losses import gaussian_nll, target_loss
from jsqa.train.std_scaling import fit_std_scale

SR = 16000


def _tone(amplitude: float, n: int = 4000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    return (amplitude * np.sin(2 * np.pi * 440 * t) + 0.001 * rng.standard_normal(n)).astype(np.float32)


def test_gaussian_nll_matches_hand_values_with_and_without_label_error():
    mu, sigma, y = torch.tensor([3.0]), torch.tensor([0.5]), torch.tensor([4.0])
    # 0.5 * (ln(2π · 0.25) + 1² / 0.25)
    assert gaussian_nll(mu, sigma, y).item() == pytest.approx(2.2257914, abs=1e-6)
    # se = mos_std / sqrt(votes) = 0.9 / 3: var = 0.25 + 0.09 = 0.34
    se = torch.from_numpy(label_se(pd.DataFrame({"mos_std": [0.9], "votes": [9]})))
    assert se.item() == pytest.approx(0.3)
    assert gaussian_nll(mu, sigma, y, se).item() == pytest.approx(1.8501219, abs=1e-6)
    # No raters (the demo's votes 0) or no columns: the label counts as exact.
    assert label_se(pd.DataFrame({"mos_std": [0.9, np.nan], "votes": [0, 5]})).tolist() == [0.0, 0.0]
    assert label_se(pd.DataFrame({"mos": [3.0]})).tolist() == [0.0]


def test_target_loss_leaves_out_missing_dimension_labels():
    outputs = output_layout(("noi",))
    pred = torch.tensor([[3.0, 0.5, 2.0, 1.0], [2.0, 0.5, 9.0, 1.0]])
    rows = pd.DataFrame({"mos": [4.0, 2.0], "noi": [2.0, np.nan]})
    y = torch.from_numpy(label_targets(rows, outputs))
    loss = target_loss("gnll", outputs, pred, y)
    # MOS: mean over both clips; noi: only the first clip (exact, so 0.5·ln 2π).
    mos = (
        gaussian_nll(torch.tensor([3.0]), torch.tensor([0.5]), torch.tensor([4.0]))
        + gaussian_nll(torch.tensor([2.0]), torch.tensor([0.5]), torch.tensor([2.0]))
    ) / 2
    assert loss.item() == pytest.approx(mos.item() + 0.5 * math.log(2 * math.pi), abs=1e-5)
    mse = target_loss("mse", ("mos", "noi"), pred[:, [0, 2]], y)
    assert mse.item() == pytest.approx((1.0 + 0.0) / 2 + 0.0)


def test_gnll_training_predicts_larger_std_for_the_noisier_group():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = MOSModel(encoder_spec("small"), dropout=0.0, init_mos=3.0, outputs=output_layout())
    clean = [_tone(0.3, seed=i) for i in range(30)]
    # Three noise waveforms, ten clips each with different labels: the head cannot memorise each
    # noisy clip's label (a distinct input per clip let it, and the std then shrank), so the
    # labels' spread has to show up in the predicted std.
    noisy = [(0.05 * np.random.default_rng(100 + i % 3).standard_normal(4000)).astype(np.float32) for i in range(30)]
    y = np.concatenate([3.5 + 0.05 * rng.standard_normal(30), 2.5 + 0.8 * rng.standard_normal(30)])
    x = torch.from_numpy(np.stack(clean + noisy))
    with torch.no_grad():
        # An untrained encoder's BatchNorm statistics are the defaults; set them from these clips
        # (one cumulative pass), so its embeddings tell the two groups apart. Only the head is trained.
        for bn in (m for m in model.encoder.modules() if isinstance(m, torch.nn.BatchNorm1d)):
            bn.reset_running_stats()
            bn.momentum = None
        model.train().encoder(x)
        z = model.eval().encoder(x)
    labels = torch.from_numpy(y.astype(np.float32))[:, None]
    opt = torch.optim.Adam(model.head.parameters(), lr=1e-2)
    for _ in range(400):
        loss = target_loss("gnll", model.outputs, model.head_outputs(z), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    scores = score_waveforms_all(model, clean + noisy, SR)
    std = scores[:, model.outputs.index("mos_std")]
    assert std[30:].mean() > 3 * std[:30].mean()
    assert scores[:30, 0].mean() == pytest.approx(3.5, abs=0.1)
    cal = calibration(y, scores[:, 0], std)
    assert 0.8 <= cal["coverage95"] <= 1.0 and 0.45 <= cal["coverage68"] <= 0.9


def test_old_checkpoint_loads_and_scores_as_before(tmp_path):
    torch.manual_seed(1)
    spec = encoder_spec("small")
    old = MOSModel(spec, init_mos=3.3).eval()
    with torch.no_grad():
        old.head.net[-1].weight.mul_(20)
    assert not any("std" in k for k in old.state_dict())  # the weights' layout is unchanged
    # written before outputs existed: no "outputs" in the head config
    legacy = {k: v for k, v in old.head_config.items() if k != "outputs"}
    save_checkpoint(tmp_path / "old.pt", "mos", old, spec, head=legacy)
    model = mos_model_from_checkpoint(load_checkpoint(tmp_path / "old.pt"))
    assert model.outputs == ("mos",)
    clips = [_tone(a, 6000 + 1000 * i) for i, a in enumerate((0.01, 0.1, 0.5))]
    with torch.no_grad():
        # the MOS-only model as it was: the head's single output, squeezed and clamped
        direct = [
            min(max(float(old.head.net(old.encoder(torch.from_numpy(c)[None])).squeeze(-1)), 1.0), 5.0) for c in clips
        ]
    assert score_waveforms(model, clips).tolist() == pytest.approx(direct, abs=1e-6)
    assert score_blocks(model, [clips[1][:2000], clips[1][2000:]]) == pytest.approx(direct[1], abs=1e-6)
    assert score_waveforms_all(model, clips).shape == (3, 1)
    assert list(score_blocks_all(model, [clips[0]])) == ["mos"]
    # the TorchScript-facing forward is still [B]
    assert model(torch.from_numpy(np.stack(clips[:1]))).shape == (1,)


def test_checkpoint_round_trip_keeps_outputs(tmp_path):
    spec = encoder_spec("small")
    m = MOSModel(spec, outputs=output_layout(("noi", "col"))).eval()
    save_checkpoint(tmp_path / "m.pt", "mos", m, spec, head=m.head_config)
    m2 = mos_model_from_checkpoint(load_checkpoint(tmp_path / "m.pt"))
    assert m2.outputs == ("mos", "mos_std", "noi", "noi_std", "col", "col_std")
    x = torch.randn(2, 9000)
    with torch.no_grad():
        out = m2.all_outputs(x)
        torch.testing.assert_close(out, m.all_outputs(x))
    assert out.shape == (2, 6) and bool((out[:, 1::2] > 0).all())
    torch.testing.assert_close(m2(x), out[:, 0])


class StepModel(torch.nn.Module):
    """Per window: MOS = 1 + 10·rms, std = 10·rms; a noi output and its std."""

    sample_rate = SR
    outputs = ("mos", "mos_std", "noi", "noi_std")

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def all_outputs(self, x: torch.Tensor) -> torch.Tensor:
        rms = x.pow(2).mean(-1).sqrt() + self.w
        return torch.stack([1 + 10 * rms, 10 * rms, 2 + 0 * rms, 0.1 + 0 * rms], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.all_outputs(x)[:, 0]


def test_windows_average_means_and_root_mean_variances_batched_and_streamed():
    # Two 8 s windows with rms 0.1 and 0.3: mos mean of 2 and 4, std sqrt((1 + 9) / 2).
    x = np.concatenate([np.full(8 * SR, 0.1), np.full(8 * SR, 0.3)]).astype(np.float32)
    model = StepModel()
    batched = score_waveforms_all(model, [x])[0]
    assert batched == pytest.approx([3.0, math.sqrt(5.0), 2.0, 0.1], abs=1e-5)
    streamed = score_blocks_all(model, [x[:5000], x[5000:]])
    assert list(streamed) == list(StepModel.outputs)
    assert list(streamed.values()) == pytest.approx(batched.tolist(), abs=1e-5)
    assert score_waveforms(model, [x]).tolist() == pytest.approx([3.0], abs=1e-5)


def test_predict_csv_json_table_and_serving_carry_mos_std(tmp_path):
    write_audio(tmp_path / "a.wav", _tone(0.2, SR), SR)
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    rows = score_files(StepModel(), [tmp_path / "a.wav", tmp_path / "bad.wav"])
    assert rows[0]["mos_std"] == pytest.approx(10 * 0.2 / math.sqrt(2), rel=1e-2) and rows[0]["noi"] == 2.0
    assert rows[1]["error"] and rows[1]["mos_std"] is None
    table = list(csv.DictReader(io.StringIO(format_rows(rows, "csv"))))
    assert list(table[0]) == ["path", "mos", "mos_std", "noi", "noi_std", "error", "warning"]
    assert float(table[0]["mos_std"]) == pytest.approx(rows[0]["mos_std"]) and table[1]["mos_std"] == ""
    js = json.loads(format_rows(rows, "json"))
    assert js[0]["mos_std"] == pytest.approx(rows[0]["mos_std"]) and js[1]["mos_std"] is None
    assert format_rows(rows, "table").splitlines()[0].split() == ["path", "mos", "mos_std", "noi", "noi_std", "error"]
    served = score_rows(StepModel(), [{"audio": _tone(0.2, SR).tolist(), "sample_rate": SR}])
    assert list(served.columns) == ["mos", "mos_std", "noi", "noi_std", "error", "warning"]
    assert served["mos_std"][0] == pytest.approx(rows[0]["mos_std"], rel=1e-3)
    # a MOS-only model: no mos_std column anywhere
    legacy = MOSModel(encoder_spec("small")).eval()
    assert "mos_std" not in format_rows(score_files(legacy, [tmp_path / "a.wav"]), "csv").splitlines()[0]
    assert list(score_rows(legacy, [{"audio": _tone(0.2, SR).tolist(), "sample_rate": SR}]).columns) == [
        "mos",
        "error",
        "warning",
    ]


class GaussLevel(StepModel):
    """Like StepModel with a MOS that follows level; std 0.5 everywhere."""

    def all_outputs(self, x: torch.Tensor) -> torch.Tensor:
        db = 10 * torch.log10(x.pow(2).mean(dim=-1) + 1e-10)
        mos = 1.0 + 4.0 * torch.sigmoid((db + 30.0) / 8.0) + self.w
        return torch.stack([mos, 0.5 + 0 * mos, mos, 0.3 + 0 * mos], dim=1)


def test_evaluate_reports_calibration_and_dimension_metrics(small_corpus):
    manifest = read_manifest(small_corpus["mos"], "mos")
    manifest["noi"] = np.where(np.arange(len(manifest)) % 3 == 0, np.nan, manifest["mos"])
    report, preds = evaluate_models(
        {"pretrained": GaussLevel(), "scratch": MOSModel(encoder_spec("small")).eval()},
        manifest,
        root=small_corpus["root"],
        resamples=50,
    )
    # predictions.csv carries each file's predicted std beside its prediction, for models that have one.
    assert [c for c in preds.columns if c.startswith(("pred_", "std_"))] == [
        "pred_pretrained",
        "pred_scratch",
        "std_pretrained",
    ]
    assert preds["std_pretrained"].to_numpy() == pytest.approx(0.5)
    cal = report["calibration"]
    assert list(cal) == ["pretrained"]  # the MOS-only model has no mos_std
    test = manifest[manifest["split"] == "test"]
    assert set(cal["pretrained"]) == set(test["db"]) | {"pooled"}
    pooled = cal["pretrained"]["pooled"]
    assert 0.0 <= pooled["coverage68"] <= pooled["coverage95"] <= 1.0
    assert pooled["mean_sigma"] == pytest.approx(0.5) and pooled["n"] == len(test)
    noi = report["dimensions"]["pretrained"]["noi"]["pooled"]
    assert noi["n"] == int(test["noi"].notna().sum()) and noi["pcc"] == pytest.approx(
        report["models"]["pretrained"]["pooled"]["pcc"], abs=0.2
    )
    flat = flat_metrics(report)
    assert "pretrained_pooled_coverage95" in flat and "pretrained_noi_pooled_rmse" in flat
    for fmt in ("text", "markdown"):
        text = evaluation_tables(report, fmt)
        assert "Calibration" in text and "Quality dimensions" in text


def test_manifests_keep_quality_dimensions_and_validation_accepts_them(tmp_path):
    for i in range(2):
        write_audio(tmp_path / f"c{i}.wav", _tone(0.1, SR), SR)
    pd.DataFrame(
        {
            "filepath_deg": ["c0.wav", "c1.wav"],
            "mos": [3.0, 4.0],
            "db": ["X_TEST"] * 2,
            "noi": [2.5, None],
            "col": [3.0, 4.0],
            "dis": [4.5, 5.0],
            "loud": [1.0, 3.5],
        }
    ).to_csv(tmp_path / "corpus.csv", index=False)
    manifest, _ = mos_manifest_from_csv(tmp_path / "corpus.csv", root=tmp_path)
    assert manifest[["col", "dis", "loud"]].to_numpy().tolist() == [[3.0, 4.5, 1.0], [4.0, 5.0, 3.5]]
    assert manifest["noi"].iloc[0] == 2.5 and pd.isna(manifest["noi"].iloc[1])
    ranges = {
        e.column: (e.min_value, e.max_value)
        for e in suite_for("mos", ValidateConfig(), SR)
        if type(e).__name__ == "ExpectColumnValuesToBeBetween"
    }
    assert all(ranges[d] == (1.0, 5.0) for d in ("noi", "col", "dis", "loud"))


def test_finetune_with_gnll_learns_the_manifest_dimensions(small_corpus, tmp_path):
    # The demo's own proxies replaced by two dimensions, one of them half missing.
    manifest = read_manifest(small_corpus["mos"], "mos").drop(columns=["noi", "col", "dis", "loud"], errors="ignore")
    manifest["col"] = manifest["mos"]
    manifest["loud"] = np.where(np.arange(len(manifest)) % 2 == 0, np.nan, 3.0)
    cfg = FinetuneConfig(epochs=1, batch_size=8, crop_seconds=1.0, threads=2)
    finetune(manifest, ModelConfig(size="small"), cfg, seed=0, out_path=tmp_path / "m.pt", root=small_corpus["root"])
    model = mos_model_from_checkpoint(load_checkpoint(tmp_path / "m.pt"))
    assert model.outputs == ("mos", "mos_std", "col", "col_std", "loud", "loud_std")
    rows = score_files(model, [small_corpus["root"] / manifest["path"].iloc[0]])
    assert rows[0]["mos_std"] > 0 and 1.0 <= rows[0]["loud"] <= 5.0


def test_std_scale_is_the_likelihood_optimum_with_and_without_label_error():
    rng = np.random.default_rng(0)
    mu, sigma = rng.uniform(1, 5, 4000), rng.uniform(0.2, 0.8, 4000)
    y = mu + 2.0 * sigma * rng.standard_normal(4000)  # the model's stds are half the real spread
    assert fit_std_scale(y, mu, sigma) == pytest.approx(2.0, rel=0.03)
    # Exact case: residual variance 5 = s² · 1 + 1 (label error) -> s = 2 (grid step 0.3%).
    r = np.array([-1.0, 1.0]) * math.sqrt(5.0)
    assert fit_std_scale(r, np.zeros(2), np.ones(2), se=np.ones(2)) == pytest.approx(2.0, rel=0.01)
    # Missing labels are left out; fewer than two labels leave the stds as they are.
    assert fit_std_scale(np.append(y, np.nan), np.append(mu, 3.0), np.append(sigma, 0.5)) == pytest.approx(
        fit_std_scale(y, mu, sigma)
    )
    assert fit_std_scale(np.array([np.nan, 3.0]), np.array([3.0, 3.0]), np.array([1.0, 1.0])) == 1.0


def test_a_std_scale_multiplies_the_stds_only_and_travels_in_the_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = MOSModel(encoder_spec("small"), outputs=output_layout(("noi",))).eval()
    x = torch.from_numpy(np.stack([_tone(0.1, SR), _tone(0.3, SR, seed=1)])).float()
    before = model.all_outputs(x).detach()
    model.set_std_scale({"mos_std": 2.0, "noi_std": 0.5})
    after = model.all_outputs(x).detach()
    torch.testing.assert_close(after[:, [0, 2]], before[:, [0, 2]])
    torch.testing.assert_close(after[:, 1], 2.0 * before[:, 1])
    torch.testing.assert_close(after[:, 3], 0.5 * before[:, 3])
    save_checkpoint(tmp_path / "m.pt", "mos", model, model.encoder.spec, head=model.head_config)
    again = mos_model_from_checkpoint(load_checkpoint(tmp_path / "m.pt"))
    torch.testing.assert_close(again.all_outputs(x).detach(), after)
    with pytest.raises(JsqaError, match="not a standard-deviation output"):
        model.set_std_scale({"mos": 2.0})
    with pytest.raises(JsqaError, match="positive"):
        model.set_std_scale({"mos_std": 0.0})


@pytest.mark.parametrize("calibrate", [True, False])
def test_finetune_calibrates_the_stds_on_the_validation_split(small_corpus, tmp_path, calibrate):
    manifest = read_manifest(small_corpus["mos"], "mos")
    cfg = FinetuneConfig(epochs=1, batch_size=8, crop_seconds=1.0, threads=2, calibrate_std=calibrate)
    best = finetune(
        manifest, ModelConfig(size="small"), cfg, seed=0, out_path=tmp_path / "m.pt", root=small_corpus["root"]
    )
    payload = load_checkpoint(tmp_path / "m.pt")
    model = mos_model_from_checkpoint(payload)
    if not calibrate:
        assert "std_scale" not in payload["head"] and "val_std_scale" not in best
        return
    assert set(payload["head"]["std_scale"]) == {o for o in model.outputs if o.endswith("_std")}
    assert best["val_std_scale"] == payload["head"]["std_scale"]["mos_std"]
    # The saved model's validation intervals: the mean squared standardised error is 1 (the
    # likelihood optimum, demo labels are exact), whatever it was before the factor.
    val = manifest[manifest["split"] == "val"]
    out = score_waveforms_all(model, [load_audio(small_corpus["root"] / p, SR)[0] for p in val["path"]], SR)
    z2 = ((val["mos"].to_numpy() - out[:, 0]) / out[:, 1]) ** 2
    assert float(np.mean(z2)) == pytest.approx(1.0, rel=1e-3)
