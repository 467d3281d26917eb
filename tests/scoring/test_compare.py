"""Perceptual distance: held-out JND pairs, calibration, `jsqa compare`, the serving columns."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from jsqa.audio import load_audio
from jsqa.cli.app import main
from jsqa.config import PairsConfig
from jsqa.data.manifests import read_manifest, resolve, write_manifest
from jsqa.errors import JsqaError
from jsqa.evaluation.report import evaluation_tables, jnd_line
from jsqa.io import file_sha256
from jsqa.models.mos import PretrainModel, encoder_spec, save_checkpoint
from jsqa.pairs.heldout import heldout_clean, plan_heldout, split_halves
from jsqa.pairs.jnd import within_jnd
from jsqa.registry.register import _calibration_artifact
from jsqa.scoring.calibrate import fit_logistic
from jsqa.scoring.compare import Calibration, load_calibration, save_calibration
from jsqa.scoring.model_uri import CALIBRATION_ARTIFACT, CHECKPOINT_ARTIFACT
from jsqa.scoring.serving import EncoderPyfunc
from jsqa.signal.levels import mix_at_snr

REPO = Path(__file__).resolve().parents[2]
CFG = PairsConfig(pairs_per_utterance=8, segment_seconds=0.5)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> Path:
    """A small encoder checkpoint with a projection head, as pretraining writes (untrained weights)."""
    torch.manual_seed(0)
    spec = encoder_spec("small")
    path = tmp_path_factory.mktemp("enc") / "encoder.pt"
    save_checkpoint(path, "encoder", PretrainModel(spec).eval(), spec, sample_rate=16000, projection_head=True)
    return path


@pytest.fixture(scope="module")
def manifests(small_corpus) -> dict[str, pd.DataFrame]:
    return {k: read_manifest(small_corpus[k], k) for k in ("clean", "noise", "mos")}


@pytest.fixture(scope="module")
def clips(small_corpus, tmp_path_factory) -> dict[str, Path]:
    """A held-out clean reference, the same speech at 40 dB and at -5 dB SNR, a stereo copy,
    a silent file and a text file."""
    root, out = small_corpus["root"], tmp_path_factory.mktemp("clips")
    mos = read_manifest(small_corpus["mos"], "mos")
    ref_path = resolve(mos[mos["split"] == "test"]["ref_path"].iloc[0], root)
    ref, sr = load_audio(ref_path, 16000)
    noise = np.random.default_rng(0).standard_normal(ref.size).astype(np.float32)
    paths = {
        "ref": out / "ref.wav",
        "snr40": out / "snr40.wav",
        "snr-5": out / "snr-5.wav",
        "stereo": out / "stereo.wav",
        "silent": out / "silent.wav",
        "text": out / "notes.wav",
    }
    sf.write(paths["ref"], ref, sr)
    sf.write(paths["snr40"], mix_at_snr(ref, noise, 40.0, sr)[0], sr)
    sf.write(paths["snr-5"], mix_at_snr(ref, noise, -5.0, sr)[0], sr)
    sf.write(paths["stereo"], np.stack([ref, ref], 1), sr)
    sf.write(paths["silent"], np.zeros_like(ref), sr)
    paths["text"].write_text("not audio")
    return paths


@pytest.fixture(scope="module")
def calibration(encoder, tmp_path_factory) -> Path:
    """A calibration for ``encoder`` with known coefficients: p = 0.5 at distance 1e-9."""
    path = tmp_path_factory.mktemp("cal") / "jnd_calibration.json"
    save_calibration(
        path,
        Calibration(
            intercept=-4.0,
            slope=4e9,
            jnd_db=3.0,
            speech_level_dbov=-26.0,
            sample_rate=16000,
            encoder_sha256=file_sha256(encoder),
        ),
    )
    return path


def test_heldout_pairs_use_unseen_speech_follow_the_jnd_rule_and_are_balanced(manifests, small_corpus):
    held = heldout_clean(manifests["mos"], manifests["clean"], small_corpus["root"])
    # Only the test split's references, none of them a pretraining utterance.
    assert set(held["path"]) <= set(manifests["mos"].loc[manifests["mos"]["split"] == "test", "ref_path"])
    assert not set(held["path"]) & set(manifests["clean"]["path"])
    plan = plan_heldout(held, manifests["noise"], CFG, seed=5, sample_rate=16000)
    assert len(plan) == CFG.pairs_per_utterance * len(held)
    assert not set(plan["clean_path"]) & set(manifests["clean"]["path"])
    assert np.isfinite(plan[["snr_a", "snr_b"]].to_numpy()).all()  # no clean anchors
    # Noise level alone, even though CFG carries the demo's beyond-noise families.
    assert CFG.distortions.enabled
    assert "distortion" not in plan.columns or (plan["distortion"] == "none").all()
    assert (plan["different"] == ~within_jnd(plan["snr_a"].to_numpy(), plan["snr_b"].to_numpy(), 3.0)).all()
    assert plan["delta_db"].max() < 2 * 3.0
    assert 0.3 < plan["different"].mean() < 0.7
    # Deterministic from the seed; another seed draws other pairs.
    pd.testing.assert_frame_equal(plan, plan_heldout(held, manifests["noise"], CFG, seed=5, sample_rate=16000))
    assert not np.allclose(plan["snr_b"], plan_heldout(held, manifests["noise"], CFG, 6, 16000)["snr_b"])
    fit = split_halves(plan["utterance_id"], 5)
    assert 0 < fit.sum() < len(fit)
    assert not set(plan["utterance_id"][fit]) & set(plan["utterance_id"][~fit])


def test_heldout_pairs_need_test_references(manifests, small_corpus):
    with pytest.raises(JsqaError, match="ref_path"):
        heldout_clean(manifests["mos"].drop(columns="ref_path"), manifests["clean"], small_corpus["root"])


def test_calibration_is_monotone_in_distance_and_round_trips(tmp_path, encoder):
    rng = np.random.default_rng(0)
    different = rng.random(200) < 0.5
    distance = np.abs(rng.normal(np.where(different, 0.3, 0.1), 0.05))
    intercept, slope = fit_logistic(distance, different)
    assert slope > 0
    cal = Calibration(intercept, slope, 3.0, -26.0, 16000, file_sha256(encoder))
    p = cal.p_different(np.linspace(0, 1, 50))
    assert np.all(np.diff(p) >= 0) and np.all(np.diff(p[:10]) > 0) and p[0] < 0.5 < p[-1]
    save_calibration(tmp_path / "c.json", cal)
    assert load_calibration(tmp_path / "c.json") == cal
    # A distance that shrinks with the SNR difference is never read as evidence of sameness.
    _, reversed_slope = fit_logistic(distance, ~different)
    assert reversed_slope == 0.0
    (tmp_path / "bad.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(JsqaError, match="not a JND calibration"):
        load_calibration(tmp_path / "bad.json")
    with pytest.raises(JsqaError, match="jsqa calibrate"):
        load_calibration(tmp_path / "missing.json")


def test_calibrate_stage_writes_calibration_and_held_out_metrics(
    small_corpus, encoder, tmp_path, monkeypatch, empty_mlflow_store, capsys
):
    empty_mlflow_store(tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    params = tmp_path / "params.yaml"
    params.write_text("pairs: {segment_seconds: 0.5}\ncalibrate: {pairs_per_utterance: 8}\n")
    out, metrics = tmp_path / "jnd_calibration.json", tmp_path / "jnd.json"
    code = main(
        [
            "calibrate",
            "--params",
            str(params),
            "--root",
            str(small_corpus["root"]),
            "--encoder",
            str(encoder),
            "--manifests",
            str(small_corpus["clean"].parent),
            "--out",
            str(out),
            "--metrics",
            str(metrics),
        ]
    )
    assert code == 0
    cal = load_calibration(out)
    assert cal.encoder_sha256 == file_sha256(encoder) and cal.slope >= 0 and cal.jnd_db == 3.0
    m = json.loads(metrics.read_text())
    assert m["n_fit"] + m["n_report"] == m["n_pairs"] > 0
    assert 0 <= m["accuracy"] <= 1 and 0 <= m["majority_accuracy"] <= 1
    assert "same/different accuracy" in capsys.readouterr().out
    assert "accuracy" in jnd_line(m) and "majority rule" in jnd_line(m)
    # The evaluation's tables (text, and the markdown of the HTML page) carry the same line.
    for fmt in ("text", "markdown"):
        assert jnd_line(m) in evaluation_tables({"models": {}, "jnd": m}, fmt)


def _calibrate(small_corpus, encoder, tmp_path, mos: pd.DataFrame) -> tuple[int, Path, Path]:
    """Run the calibrate stage on the small corpus with ``mos`` as the MOS manifest."""
    mdir = tmp_path / "manifests"
    mdir.mkdir()
    for kind in ("clean", "noise"):
        (mdir / f"{kind}.parquet").write_bytes(small_corpus[kind].read_bytes())
    write_manifest(mdir / "mos.parquet", mos, "mos")
    params = tmp_path / "params.yaml"
    params.write_text("pairs: {segment_seconds: 0.5}\ncalibrate: {pairs_per_utterance: 8}\n")
    out, metrics = tmp_path / "jnd_calibration.json", tmp_path / "jnd.json"
    code = main(
        [
            "calibrate",
            "--params",
            str(params),
            "--root",
            str(small_corpus["root"]),
            "--encoder",
            str(encoder),
            "--manifests",
            str(mdir),
            "--out",
            str(out),
            "--metrics",
            str(metrics),
        ]
    )
    return code, out, metrics


@pytest.mark.parametrize("case", ["no ref_path column", "references in train only"])
def test_calibration_is_unavailable_not_an_error_without_test_references(
    case, small_corpus, manifests, encoder, clips, tmp_path, monkeypatch, empty_mlflow_store, capsys, caplog
):
    empty_mlflow_store(tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mos = manifests["mos"].copy()
    if case == "no ref_path column":  # a user's MOS CSV in the NISQA layout without filepath_ref
        mos = mos.drop(columns="ref_path")
    else:
        mos.loc[mos["split"] == "test", "ref_path"] = None
        assert mos["ref_path"].notna().any()
    code, out, metrics = _calibrate(small_corpus, encoder, tmp_path, mos)
    assert code == 0
    printed = capsys.readouterr().out
    assert "calibration unavailable" in printed and "no test-split clean references (ref_path)" in printed
    assert any(r.levelname == "WARNING" and "unavailable" in r.getMessage() for r in caplog.records)
    cal = load_calibration(out)
    assert not cal.available and "ref_path" in (cal.reason or "") and cal.intercept is None and cal.slope is None
    assert cal.encoder_sha256 == file_sha256(encoder) and cal.sample_rate == 16000
    m = json.loads(metrics.read_text())
    assert m["available"] is False and m["reason"] == cal.reason
    assert m["accuracy"] is None and m["roc_auc"] is None and m["n_pairs"] == 0
    assert jnd_line(m).endswith(f"same/different accuracy: not available ({cal.reason})")
    # compare: the distance, p_different n/a with the reason, exit 0.
    code, text, err = _compare(
        capsys, str(clips["ref"]), str(clips["snr-5"]), "--encoder", str(encoder), "--calibration", str(out)
    )
    assert code == 0 and err == "" and "distance" in text and "p_different  n/a (JND calibration unavailable" in text
    row = json.loads(
        _compare(
            capsys,
            str(clips["ref"]),
            str(clips["snr-5"]),
            "--encoder",
            str(encoder),
            "--calibration",
            str(out),
            "--format",
            "json",
        )[1]
    )
    assert row["distance"] > 0 and row["p_different"] is None and row["verdict"] is None and cal.reason in row["note"]
    # Serving: the distance, p_different null; register still carries the file.
    served = EncoderPyfunc()
    served.load_context(SimpleNamespace(artifacts={CHECKPOINT_ARTIFACT: str(encoder), CALIBRATION_ARTIFACT: str(out)}))
    pred = served.predict(None, pd.DataFrame({"path": [str(clips["snr-5"])], "ref_path": [str(clips["ref"])]}))
    assert pred.loc[0, "jnd_distance"] > 0 and pred.loc[0, "p_different"] is None and pred.loc[0, "error"] is None
    assert _calibration_artifact(encoder, out) == {CALIBRATION_ARTIFACT: str(out.resolve())}


def test_calibration_still_fails_on_other_errors(
    small_corpus, manifests, encoder, tmp_path, monkeypatch, empty_mlflow_store, capsys
):
    empty_mlflow_store(tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mos = manifests["mos"].copy()
    mos.loc[mos["split"] == "test", "ref_path"] = "raw/missing-reference.wav"
    code, out, _ = _calibrate(small_corpus, encoder, tmp_path, mos)
    assert code == 2 and not out.exists()
    assert "missing-reference.wav" in capsys.readouterr().err


def _compare(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["compare", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_compare_a_file_with_itself_and_with_much_noisier_speech(clips, encoder, calibration, capsys):
    enc = ["--encoder", str(encoder), "--calibration", str(calibration), "--format", "json"]
    code, out, _ = _compare(capsys, str(clips["ref"]), str(clips["ref"]), *enc)
    assert code == 0
    same = json.loads(out)
    assert same["distance"] < 1e-12 and same["p_different"] < 0.5 and same["verdict"] == "same"
    noisy = json.loads(_compare(capsys, str(clips["ref"]), str(clips["snr-5"]), *enc)[1])
    slight = json.loads(_compare(capsys, str(clips["ref"]), str(clips["snr40"]), *enc)[1])
    assert noisy["distance"] > slight["distance"] > same["distance"]
    assert noisy["p_different"] >= slight["p_different"] >= same["p_different"]
    # A stereo file is mixed to mono, so it is the same recording.
    assert json.loads(_compare(capsys, str(clips["ref"]), str(clips["stereo"]), *enc)[1])["distance"] < 1e-6
    code, out, _ = _compare(capsys, str(clips["ref"]), str(clips["snr-5"]), "--encoder", str(encoder))
    assert code == 0 and "distance" in out and "no calibration" in out


def test_compare_errors_are_one_clear_line(clips, encoder, calibration, tmp_path, capsys):
    enc = ["--encoder", str(encoder), "--calibration", str(calibration)]
    for deg, says in (
        (tmp_path / "missing.wav", "missing.wav"),
        (clips["text"], "notes.wav"),
        (clips["silent"], "degraded"),
    ):
        code, out, err = _compare(capsys, str(clips["ref"]), str(deg), *enc)
        assert code == 2 and out == "" and says in err and err.startswith("jsqa compare: error:"), err
        if deg == clips["silent"]:  # the scoring's own no-speech rule, not a bare level error
            assert "no active speech found" in err, err
    other = tmp_path / "other.json"
    save_calibration(other, replace(load_calibration(calibration), encoder_sha256="0" * 64))
    code, _, err = _compare(
        capsys, str(clips["ref"]), str(clips["ref"]), "--encoder", str(encoder), "--calibration", str(other)
    )
    assert code == 2 and "another encoder" in err
    code, _, err = _compare(capsys, str(clips["ref"]), str(clips["ref"]), "--encoder", str(tmp_path / "none.pt"))
    assert code == 2 and "none.pt" in err
    # Files are checked against the scoring limits before decoding, as `jsqa predict` does.
    code, out, err = _compare(capsys, str(clips["ref"]), str(clips["ref"]), *enc, "--max-seconds", "0.1")
    assert code == 2 and out == "" and "over the 0.1 s limit (raise it with --max-seconds)" in err, err


def test_served_encoder_adds_distance_columns_for_rows_with_a_reference(clips, encoder, calibration):
    model = EncoderPyfunc()
    model.load_context(
        SimpleNamespace(artifacts={CHECKPOINT_ARTIFACT: str(encoder), CALIBRATION_ARTIFACT: str(calibration)})
    )
    rows = pd.DataFrame(
        {
            "path": [str(clips["snr-5"]), str(clips["ref"]), str(clips["ref"])],
            "ref_path": [str(clips["ref"]), None, str(clips["silent"])],
        }
    )
    out = model.predict(None, rows)
    assert {"e0", "jnd_distance", "p_different", "error"} <= set(out.columns)
    assert out.loc[0, "jnd_distance"] > 0 and 0 <= out.loc[0, "p_different"] <= 1 and out.loc[0, "error"] is None
    assert out.loc[1, "jnd_distance"] is None and out.loc[1, "p_different"] is None and out.loc[1, "error"] is None
    assert out.loc[2, "jnd_distance"] is None and "reference" in out.loc[2, "error"]
    assert out.loc[2, "e0"] is not None  # the row's own embedding is still given
    # Without a reference column the output is the embedding alone, as before.
    assert "jnd_distance" not in model.predict(None, rows[["path"]]).columns


def test_registered_encoder_carries_only_its_own_calibration(encoder, calibration, tmp_path):
    assert _calibration_artifact(encoder, calibration) == {CALIBRATION_ARTIFACT: str(calibration.resolve())}
    assert _calibration_artifact(encoder, None) == {}
    other = tmp_path / "other.json"
    save_calibration(other, replace(load_calibration(calibration), encoder_sha256="0" * 64))
    with pytest.raises(JsqaError, match="another encoder"):
        _calibration_artifact(encoder, other)


def test_registered_encoder_serves_distance_and_compare_reads_it_from_the_registry(
    clips, encoder, calibration, tmp_path, monkeypatch, empty_mlflow_store, capsys
):
    import mlflow

    from jsqa import tracking
    from jsqa.config import RegisterConfig
    from jsqa.models.mos import MOSModel
    from jsqa.registry.register import register

    empty_mlflow_store(tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    spec = encoder_spec("small")
    mos = tmp_path / "mos.pt"
    m = MOSModel(spec)
    save_checkpoint(mos, "mos", m, spec, head=m.head_config, metrics={"val_rmse": 0.5}, init="pretrained")
    register(encoder, mos, RegisterConfig(), root=tmp_path, calibration=calibration)
    tracking.configure(tmp_path)
    served = mlflow.pyfunc.load_model("models:/jsqa-encoder@champion")
    out = served.predict(
        pd.DataFrame({"path": [str(clips["snr-5"]), str(clips["ref"])], "ref_path": [str(clips["ref"]), None]})
    )
    assert out.loc[0, "p_different"] is not None and out.loc[0, "jnd_distance"] > 0
    assert out.loc[1, "jnd_distance"] is None
    # `jsqa compare` takes the registry's encoder and the calibration it carries.
    code, out_text, _ = _compare(
        capsys,
        str(clips["ref"]),
        str(clips["snr-5"]),
        "--encoder",
        "models:/jsqa-encoder@champion",
        "--root",
        str(tmp_path),
        "--format",
        "json",
    )
    assert code == 0 and "p_different" in json.loads(out_text)
