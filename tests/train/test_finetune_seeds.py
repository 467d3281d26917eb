"""K seeds under one schedule, evaluated with mean ± std and intervals; any NISQA-layout CSV via the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from jsqa.audio import write_audio
from jsqa.cli import main
from jsqa.config import FinetuneConfig, ModelConfig
from jsqa.data.manifests import read_manifest
from jsqa.evaluation.evaluate import evaluate_models
from jsqa.evaluation.metrics import mos_metrics
from jsqa.models.mos import load_checkpoint, mos_model_from_checkpoint
from jsqa.models.seeds import seed_checkpoints, seeds_dir
from jsqa.train.finetune import finetune_seeds

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
FAST = FinetuneConfig(epochs=2, batch_size=8, crop_seconds=1.0, patience=5, threads=2, seeds=2)


def test_k_seeds_save_primary_and_others_and_evaluate_reports_mean_std_and_intervals(small_corpus, tmp_path):
    manifest = read_manifest(small_corpus["mos"], "mos")
    out = tmp_path / "mos.pt"
    summary = finetune_seeds(
        manifest, ModelConfig(projection_head=False), FAST, seed=5, out_path=out, root=small_corpus["root"]
    )
    assert set(summary["seeds"]) == {"5", "6"}
    assert summary["val_rmse"] == summary["seeds"]["5"]["val_rmse"]  # the first seed is the primary
    vals = [m["val_rmse"] for m in summary["seeds"].values()]
    assert summary["seed_mean"]["val_rmse"] == pytest.approx(np.mean(vals))
    assert summary["seed_std"]["val_rmse"] == pytest.approx(np.std(vals, ddof=1))
    ckpts = seed_checkpoints(out)
    assert list(ckpts) == [5, 6] and ckpts[6] == seeds_dir(out) / "seed-6.pt"
    assert load_checkpoint(ckpts[6])["seed"] == 6
    models = {
        name: {s: mos_model_from_checkpoint(load_checkpoint(p)) for s, p in ckpts.items()}
        for name in ("pretrained", "scratch")
    }
    report, preds = evaluate_models(models, manifest, root=small_corpus["root"], resamples=200, seed=1)
    per = report["per_seed"]["pretrained"]
    assert report["seeds"]["pretrained"] == [5, 6] and set(per) == {"5", "6"}
    assert per["5"]["pooled"] != per["6"]["pooled"]  # two seeds, two models
    st = report["seed_stats"]["pretrained"]["pooled"]["rmse"]
    assert st["mean"] == pytest.approx(np.mean([per[s]["pooled"]["rmse"] for s in per]))
    assert st["std"] == pytest.approx(np.std([per[s]["pooled"]["rmse"] for s in per], ddof=1))
    # the primary's figures are seed 5's, its interval brackets them
    assert report["models"]["pretrained"]["pooled"] == per["5"]["pooled"]
    ci = report["ci95"]["pretrained"]["pooled"]["pcc"]
    assert ci["lo"] <= report["models"]["pretrained"]["pooled"]["pcc"] <= ci["hi"]
    # Two epochs on 33 clips do not get a model off its initial mean: every run is flagged, the
    # statistics say they cover failed runs, and no comparison is made from them.
    assert report["failed"] == {"pretrained": [5, 6], "scratch": [5, 6]} and summary["failed_seeds"] == [5, 6]
    assert report["seed_stats_of"]["pretrained"] == "all runs (none learned)"
    assert "relative_change" not in report
    pooled = mos_metrics(preds["mos"].to_numpy(), preds["pred_pretrained"].to_numpy())
    assert pooled == pytest.approx(report["models"]["pretrained"]["pooled"])


def test_one_seed_keeps_the_single_checkpoint_layout(small_corpus, tmp_path):
    manifest = read_manifest(small_corpus["mos"], "mos")
    cfg = FinetuneConfig(epochs=1, batch_size=8, crop_seconds=1.0, threads=2, seeds=1)
    summary = finetune_seeds(
        manifest, ModelConfig(projection_head=True), cfg, seed=3, out_path=tmp_path / "m.pt", root=small_corpus["root"]
    )
    assert list(summary["seeds"]) == ["3"] and summary["seed_std"]["val_rmse"] == 0.0
    assert seed_checkpoints(tmp_path / "m.pt") == {3: tmp_path / "m.pt"}
    assert load_checkpoint(tmp_path / "m.pt")["head"]["projection"] is True


def _nisqa_csv(folder: Path) -> Path:
    """A tiny corpus in the NISQA CSV layout: tones in noise, MOS rising with SNR, three dbs."""
    rng = np.random.default_rng(0)
    rows = []
    t = np.arange(16000) / 16000
    for db, n in (("MINE_TRAIN", 16), ("MINE_VAL", 6), ("MINE_TEST_A", 8)):
        for i in range(n):
            snr = rng.uniform(-5, 30)
            clean = 0.3 * np.sin(2 * np.pi * rng.uniform(150, 400) * t)
            noise = rng.standard_normal(len(t)) * 0.3 * 10 ** (-snr / 20)
            rel = f"deg/{db}/c{i:02d}.wav"
            write_audio(folder / rel, (clean + noise).astype(np.float32), 16000)
            rows.append({"db": db, "filepath_deg": rel, "mos": float(np.clip(1 + 4 * (snr + 5) / 35, 1, 5))})
    path = folder / "NISQA_corpus_file.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_finetune_and_evaluate_take_a_nisqa_layout_csv(tmp_path, empty_mlflow_store, monkeypatch, capsys):
    corpus = tmp_path / "corpus"
    csv = _nisqa_csv(corpus)
    db = tmp_path / "mlflow.db"
    empty_mlflow_store(db)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["finetune"].update(epochs=1, batch_size=8, crop_seconds=1.0, seeds=2)
    params["evaluate"]["bootstrap_resamples"] = 100
    params["evaluate"]["peers"] = []  # peers have their own tests (test_peers.py)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    common = ["--params", str(tmp_path / "params.yaml"), "--root", str(tmp_path), "--csv", str(csv)]
    assert main(["finetune", *common, "--out", str(tmp_path / "m.pt"), "--metrics", str(tmp_path / "ft.json")]) == 0
    assert set(json.loads((tmp_path / "ft.json").read_text())["seeds"]) == {"1234", "1235"}
    assert (
        main(
            [
                "evaluate",
                *common,
                "--audio-root",
                str(corpus),
                "--model",
                f"mine={tmp_path / 'm.pt'}",
                "--metrics",
                str(tmp_path / "ev.json"),
                "--plots",
                str(tmp_path / "plots"),
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "ev.json").read_text())
    assert set(report["models"]["mine"]) == {"MINE_TEST_A", "pooled"}
    assert report["models"]["mine"]["pooled"]["n"] == 8 and report["seeds"]["mine"] == [1234, 1235]
    printed = capsys.readouterr().out
    # One epoch does not teach anything: the table says so rather than averaging silently.
    assert "mine (2 seeds, all failed)" in printed and "±" in printed and "[" in printed
    assert "2 of 2 mine runs failed to learn" in printed
