"""The register stage: versions, tags, and when the champion alias moves (real SQLite MLflow store)."""

from __future__ import annotations

import base64
import io
from dataclasses import replace
from pathlib import Path

import mlflow
import pytest
import soundfile as sf
import torch
from mlflow.tracking import MlflowClient

from jsqa import tracking
from jsqa.config import RegisterConfig
from jsqa.errors import ConfigError, JsqaError
from jsqa.io import file_sha256
from jsqa.models.mos import MOSModel, PretrainModel, encoder_spec, save_checkpoint
from jsqa.registry.register import decide, higher_is_better, input_example, register
from jsqa.scoring.compare import Calibration, save_calibration
from jsqa.scoring.limits import DEMO_NOTE
from jsqa.signal.speech import check_speech

pytestmark = pytest.mark.integration

# What the calibrate stage writes to metrics/jnd.json (the figures the encoder's card reads).
JND_METRICS = {"accuracy": 0.8125, "majority_accuracy": 0.5, "roc_auc": 0.9, "available": True}


def _mos_ckpt(path: Path, metrics: dict, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    spec = encoder_spec("small")
    # As fine-tuning saves them: scoring brings speech to -26 dBov and refuses audio without it;
    # the profile the model was trained under is recorded.
    m = MOSModel(spec, input_level_dbov=-26.0)
    meta = {"init": "pretrained", "data_profile": "demo"}
    save_checkpoint(path, "mos", m, spec, head=m.head_config, metrics=metrics, **meta)
    return path


@pytest.fixture(scope="module")
def scenario(tmp_path_factory, empty_mlflow_store):
    """Five candidates registered in turn into one store, as successive pipeline runs would."""
    root = tmp_path_factory.mktemp("registry")
    empty_mlflow_store(root / "mlflow.db")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
        spec = encoder_spec("small")
        torch.manual_seed(1)
        enc = root / "encoder.pt"
        save_checkpoint(enc, "encoder", PretrainModel(spec), spec, metrics={"val_loss": 0.25}, n_parameters=1234)
        calibration = root / "jnd_calibration.json"
        save_calibration(calibration, Calibration(-2.0, 20.0, 3.0, -26.0, 16000, file_sha256(enc)))
        cards = {"profile": "demo", "calibration": calibration, "jnd_metrics": JND_METRICS}
        cfg = RegisterConfig()
        strict = replace(cfg, min_improvement=0.1)
        steps = [
            ("first", 0.5, cfg),
            ("worse", 0.6, cfg),
            ("better", 0.4, cfg),
            ("small_gain", 0.35, strict),
            ("exact_gain", 0.3, strict),
        ]
        results = {}
        for i, (label, rmse, c) in enumerate(steps):
            mos = _mos_ckpt(root / f"mos_{label}.pt", {"val_rmse": rmse, "val_pcc": 0.9}, seed=i)
            results[label] = register(enc, mos, c, root=root, extra_tags={"trigger": label}, **cards)
        yield {"root": root, "results": results, "client": MlflowClient(), "cfg": cfg, "encoder": enc}


def _alias_version(client: MlflowClient, name: str, alias: str = "champion") -> str:
    return str(client.get_model_version_by_alias(name, alias).version)


def test_first_candidate_is_promoted_and_alias_resolves(scenario):
    r = scenario["results"]["first"]
    assert r["promoted"] is True and r["champion_before"] is None
    assert r["candidate"] == 0.5 and r["metric"] == "val_rmse"
    assert r["mos_model"] == "jsqa-mos" and r["encoder_model"] == "jsqa-encoder"
    assert r["mos_version"] == "1" and r["encoder_version"] == "1"


def test_worse_candidate_keeps_champion_and_run_records_both_values(scenario):
    r = scenario["results"]["worse"]
    client = scenario["client"]
    assert r["promoted"] is False
    assert r["candidate"] == pytest.approx(0.6) and r["champion_before"] == pytest.approx(0.5)
    assert "0.6" in r["reason"] and "0.5" in r["reason"]
    run = client.get_run(r["run_id"])
    assert run.data.tags["promoted"] == "false"
    assert run.data.tags["dvc_stage"] == "register"
    assert run.data.tags["trigger"] == "worse"
    assert run.data.metrics["candidate_val_rmse"] == pytest.approx(0.6)
    assert run.data.metrics["champion_val_rmse"] == pytest.approx(0.5)
    assert run.data.metrics["promoted"] == 0.0
    # The version exists even though it did not win.
    assert str(client.get_model_version("jsqa-mos", r["mos_version"]).version) == "2"


def test_better_candidate_moves_alias_on_both_models(scenario):
    r = scenario["results"]["better"]
    assert r["promoted"] is True and r["champion_before"] == pytest.approx(0.5)
    assert r["mos_version"] == "3" and r["encoder_version"] == "3"
    run = scenario["client"].get_run(r["run_id"])
    assert run.data.tags["promoted"] == "true" and run.data.metrics["promoted"] == 1.0


def test_min_improvement_is_respected(scenario):
    results = scenario["results"]
    small = results["small_gain"]
    assert small["promoted"] is False and small["champion_before"] == pytest.approx(0.4)
    # 0.4 -> 0.3 is exactly the required 0.1, despite floating-point rounding.
    exact = results["exact_gain"]
    assert exact["promoted"] is True and exact["champion_before"] == pytest.approx(0.4)


def test_final_aliases_point_at_the_last_promoted_versions(scenario):
    client, exact = scenario["client"], scenario["results"]["exact_gain"]
    assert _alias_version(client, "jsqa-mos") == exact["mos_version"] == "5"
    assert _alias_version(client, "jsqa-encoder") == exact["encoder_version"] == "5"
    tracking.configure(scenario["root"])
    info = mlflow.models.get_model_info("models:/jsqa-mos@champion")
    assert info.signature.outputs.input_names() == ["mos", "error", "warning", "note"]
    assert "audio_base64" in info.signature.inputs.input_names()


def test_models_carry_an_input_example_that_they_score(scenario):
    tracking.configure(scenario["root"])
    for name, column in (("jsqa-mos", "mos"), ("jsqa-encoder", "e0")):
        uri = f"models:/{name}@champion"
        example = mlflow.models.Model.load(uri).load_input_example(uri)
        assert list(example.columns) == ["audio_base64"] and len(example) == 1
        scored = mlflow.pyfunc.load_model(uri).predict(example)
        assert scored[column].notna().all()
        assert scored["error"].isna().all() and scored["warning"].isna().all()


def test_identical_checkpoints_are_not_registered_again(scenario):
    client, root = scenario["client"], scenario["root"]
    again = register(scenario["encoder"], root / "mos_worse.pt", scenario["cfg"], root=root)
    assert again["unchanged"] is True and again["promoted"] is False
    assert again["reason"] == "unchanged: same as v2" and again["mos_version"] == "2"
    assert len(client.search_model_versions("name='jsqa-mos'")) == 5
    assert _alias_version(client, "jsqa-mos") == "5"


def test_versions_are_tagged_with_commit_metrics_init_and_link(scenario):
    client, root = scenario["client"], scenario["root"]
    r = scenario["results"]["worse"]
    mv = client.get_model_version("jsqa-mos", r["mos_version"])
    assert mv.tags["git_commit"] == tracking.git_commit(root)
    assert float(mv.tags["val_rmse"]) == pytest.approx(0.6)
    assert float(mv.tags["val_pcc"]) == pytest.approx(0.9)
    assert mv.tags["init"] == "pretrained"
    assert mv.tags["encoder_version"] == r["encoder_version"]
    assert mv.tags["trigger"] == "worse"
    ev = client.get_model_version("jsqa-encoder", r["encoder_version"])
    assert ev.tags["mos_version"] == r["mos_version"] and ev.tags["run_id"] == r["run_id"]
    # No dvc.lock or manifests in this root: the tags say so rather than being left out.
    assert mv.tags["dvc_lock_sha256"] == "none"
    assert not any(k.startswith("manifest_") for k in mv.tags)
    assert r["experiment_id"] == client.get_run(r["run_id"]).info.experiment_id


def test_automatic_promotions_are_recorded_for_rollback(scenario):
    from jsqa.registry.champion import champion_history

    client = scenario["client"]
    # Promoted: first (v1), better (v3), exact_gain (v5); each names the champion it replaced.
    for name in ("jsqa-mos", "jsqa-encoder"):
        assert champion_history(client, name) == ["1", "3", "5"]
        assert client.get_model_version(name, "3").tags["previous_champion"] == "1"
        assert client.get_model_version(name, "1").tags["previous_champion"] == "none"
        assert "previous_champion" not in client.get_model_version(name, "2").tags


def test_direction_must_agree_with_a_known_metric():
    from jsqa.registry.register import check_direction

    assert check_direction("val_rmse", "lower") is False and check_direction("val_srcc", "higher") is True
    assert check_direction("val_custom_score", "higher") is True  # unknown names trust the setting
    with pytest.raises(ConfigError, match="register.direction.*val_rmse.*lower is better"):
        check_direction("val_rmse", "higher")


def test_missing_metric_fails_before_anything_is_logged(scenario, tmp_path):
    client = scenario["client"]
    mos = _mos_ckpt(tmp_path / "no_metric.pt", {"val_pcc": 0.8})
    before = client.search_model_versions("name='jsqa-mos'")
    with pytest.raises(JsqaError, match=r"no_metric\.pt.*'val_rmse'"):
        register(scenario["encoder"], mos, scenario["cfg"], root=scenario["root"])
    assert len(client.search_model_versions("name='jsqa-mos'")) == len(before)


def test_unknown_metric_name_is_a_config_error():
    with pytest.raises(ConfigError, match="register.metric"):
        higher_is_better("val_banana")


@pytest.mark.parametrize(
    ("metric", "candidate", "champion", "min_improvement", "promoted"),
    [
        ("val_rmse", 0.40, 0.50, 0.0, True),
        ("val_rmse", 0.55, 0.50, 0.0, False),
        ("val_rmse", 0.45, 0.50, 0.1, False),
        ("val_pcc", 0.90, 0.80, 0.0, True),
        ("val_pcc", 0.70, 0.80, 0.0, False),
        ("val_srcc", 0.85, 0.80, 0.05, True),
        ("val_srcc", 0.84, 0.80, 0.05, False),
        ("val_pcc", 0.10, None, 0.5, True),
        # a tie is no improvement, even when none is required
        ("val_rmse", 0.50, 0.50, 0.0, False),
        ("val_pcc", 0.8, 0.7 + 0.1, 0.0, False),
    ],
)
def test_decision_respects_metric_direction(metric, candidate, champion, min_improvement, promoted):
    got, reason = decide(candidate, champion, metric, min_improvement)
    assert got is promoted
    assert "\n" not in reason and reason


def test_a_collapsed_candidate_is_never_promoted_however_low_its_rmse(scenario, tmp_path):
    # Last in this module: it adds a version to the shared store.
    client, cfg = scenario["client"], scenario["cfg"]
    before = _alias_version(client, cfg.mos_name)
    mos = _mos_ckpt(
        tmp_path / "collapsed.pt",
        {"val_rmse": 0.01, "val_pcc": 0.0, "collapsed": True, "val_spread_ratio": 0.002},
        seed=9,
    )
    result = register(scenario["encoder"], mos, cfg, root=scenario["root"])
    assert result["promoted"] is False and "failed to learn" in result["reason"]
    assert _alias_version(client, cfg.mos_name) == before


def test_the_input_example_is_speech_that_scoring_accepts():
    [row] = input_example(16000).to_dict(orient="records")
    x, sr = sf.read(io.BytesIO(base64.b64decode(row["audio_base64"])), dtype="float32")
    assert sr == 16000 and 1.9 <= len(x) / sr <= 2.1
    [check] = check_speech([x], sr)
    assert check.has_speech, check.message()
    assert check.level_dbov == pytest.approx(-26.0, abs=0.5)


def test_the_logged_signature_types_inputs_and_names_every_output(scenario):
    tracking.configure(scenario["root"])
    info = mlflow.models.get_model_info("models:/jsqa-mos@champion")
    types = {c.name: c.to_dict()["type"] for c in info.signature.inputs.inputs}
    assert types["path"] == types["audio_base64"] == "string" and types["sample_rate"] == "double"
    outputs = {c.name: c.to_dict()["type"] for c in info.signature.outputs.inputs}
    assert outputs == {"mos": "double", "error": "string", "warning": "string", "note": "string"}
    enc = mlflow.models.get_model_info("models:/jsqa-encoder@champion").signature
    assert enc.outputs.input_names()[-2:] == ["error", "warning"]
    assert {"ref_path", "ref_audio_base64", "ref_audio", "ref_sample_rate"} <= set(enc.inputs.input_names())


def test_a_model_trained_on_the_demo_profile_serves_the_note(scenario):
    tracking.configure(scenario["root"])
    uri = "models:/jsqa-mos@champion"
    example = mlflow.models.Model.load(uri).load_input_example(uri)
    scored = mlflow.pyfunc.load_model(uri).predict(example)
    assert list(scored["note"]) == [DEMO_NOTE]


def test_both_cards_say_demo_first_and_the_encoder_card_describes_the_encoder(scenario):
    client, r = scenario["client"], scenario["results"]["first"]
    mos_card = client.get_model_version("jsqa-mos", r["mos_version"]).description
    assert mos_card.splitlines()[0].startswith("> **Demo model**: " + DEMO_NOTE)
    assert "`mos`: mean opinion score on the ACR scale 1..5" in mos_card
    assert "`warning`:" in mos_card and "`note`:" in mos_card
    card = client.get_model_version("jsqa-encoder", r["encoder_version"]).description
    assert card.splitlines()[0].startswith("> **Demo model**: pretrained on synthetic demo speech")
    assert "# jsqa speech encoder" in card and "- profile: demo" in card
    assert "- val_loss: 0.2500" in card and "parameters: 1234" in card
    assert "same/different accuracy (held-out half, p >= 0.5 says different): 0.8125" in card
    assert "p_different = 0.5 at distance 0.1000" in card
    assert "jsqa compare ref.wav deg.wav --encoder models:/jsqa-encoder@champion" in card
    assert "- training data licence: generated by this project" in card


def test_encoder_versions_carry_their_own_tags_not_the_mos_metrics(scenario):
    client, r = scenario["client"], scenario["results"]["worse"]
    tags = client.get_model_version("jsqa-encoder", r["encoder_version"]).tags
    assert not {"val_rmse", "val_pcc", "init", "trigger"} & set(tags)
    assert tags["pretrain_val_loss"] == "0.25" and tags["jnd_accuracy"] == "0.8125"
    assert tags["jnd_calibration"] == "available"
    assert tags["git_commit"] == tracking.git_commit(scenario["root"]) and tags["run_id"] == r["run_id"]
