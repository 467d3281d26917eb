"""Scoring files with a registered model (`jsqa predict`) and through the MLflow pyfunc wrapper."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
import yaml
from mlflow.exceptions import MlflowException

from jsqa.audio import load_audio
from jsqa.cli import main
from jsqa.config import RegisterConfig
from jsqa.errors import JsqaError
from jsqa.models.mos import (
    MOSModel,
    PretrainModel,
    encoder_from_checkpoint,
    encoder_spec,
    load_checkpoint,
    save_checkpoint,
)
from jsqa.registry.register import register
from jsqa.scoring.inputs import audio_files
from jsqa.scoring.limits import DEMO_NOTE
from jsqa.scoring.model_uri import download_model
from jsqa.scoring.predict import format_rows, load_model, load_scorer, score_files
from jsqa.scoring.serving import embed_waveform

pytestmark = pytest.mark.integration

CHAMPION = "models:/jsqa-mos@champion"
REPO = Path(__file__).resolve().parents[2]


def _speech_like(sr: int, seconds: float, channels: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))
    x = tone + 0.05 * rng.standard_normal(t.size)
    x = x.astype(np.float32)
    return np.stack([x, 0.5 * x], axis=1) if channels == 2 else x


@pytest.fixture(scope="module")
def env(tmp_path_factory, empty_mlflow_store):
    """One registered champion in a fresh store, plus good and bad audio files."""
    root = tmp_path_factory.mktemp("predict")
    empty_mlflow_store(root / "mlflow.db")
    audio = root / "audio"
    (audio / "sub").mkdir(parents=True)
    good = {
        "mono16k": audio / "a_mono16k.wav",
        "stereo8k": audio / "b_stereo8k.wav",
        "flac48k": audio / "sub" / "c_48k.flac",
        "long40s": audio / "sub" / "d_long40s.wav",
    }
    sf.write(good["mono16k"], _speech_like(16000, 1.5), 16000)
    sf.write(good["stereo8k"], _speech_like(8000, 1.2, channels=2, seed=1), 8000)
    sf.write(good["flac48k"], _speech_like(48000, 1.0, seed=2), 48000)
    sf.write(good["long40s"], _speech_like(16000, 40.0, seed=3), 16000)
    bad = root / "bad"
    bad.mkdir()
    sf.write(bad / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    (bad / "not_audio.wav").write_text("this is not a RIFF file\n")
    (audio / "notes.txt").write_text("not audio, and not picked up from folders\n")

    spec = encoder_spec("small")
    torch.manual_seed(7)
    m = MOSModel(spec)
    mos_ckpt = root / "mos.pt"
    save_checkpoint(mos_ckpt, "mos", m, spec, head=m.head_config, metrics={"val_rmse": 0.5}, init="pretrained")
    enc_ckpt = root / "encoder.pt"
    save_checkpoint(enc_ckpt, "encoder", PretrainModel(spec), spec)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
        result = register(enc_ckpt, mos_ckpt, RegisterConfig(), root=root)
        model, desc = load_model(CHAMPION, root=root)
        yield {
            "root": root,
            "audio": audio,
            "good": good,
            "bad": bad,
            "mos_ckpt": mos_ckpt,
            "enc_ckpt": enc_ckpt,
            "result": result,
            "model": model,
            "desc": desc,
        }


@pytest.fixture(scope="module")
def scored(env):
    files = [env["good"][k] for k in ("mono16k", "stereo8k", "flac48k", "long40s")]
    return files, score_files(env["model"], files)


def test_champion_scores_any_rate_channels_and_length(env, scored):
    assert env["result"]["promoted"] is True
    assert "version 1" in env["desc"]
    files, rows = scored
    assert [r["path"] for r in rows] == [str(f) for f in files]
    for r in rows:
        assert r["error"] is None
        assert np.isfinite(r["mos"]) and 1.0 <= r["mos"] <= 5.0


def test_checkpoint_path_and_registry_give_identical_scores(env, scored):
    files, from_registry = scored
    model, desc = load_model(str(env["mos_ckpt"]))
    assert str(env["mos_ckpt"]) in desc
    assert [r["mos"] for r in score_files(model, files)] == [r["mos"] for r in from_registry]


def test_pyfunc_on_paths_and_base64_matches_score_files(env, scored):
    files, rows = scored
    expected = [r["mos"] for r in rows]
    pyfunc = mlflow.pyfunc.load_model(CHAMPION)
    by_path = pyfunc.predict(pd.DataFrame({"path": [str(f) for f in files]}))
    assert list(by_path.columns) == ["mos", "error", "warning"]
    assert by_path["error"].isna().all()
    np.testing.assert_allclose(by_path["mos"].to_numpy(), expected, rtol=1e-6)
    b64 = [base64.b64encode(Path(f).read_bytes()).decode("ascii") for f in files]
    by_bytes = pyfunc.predict(pd.DataFrame({"audio_base64": b64}))
    np.testing.assert_allclose(by_bytes["mos"].to_numpy(), expected, rtol=1e-6)


def test_pyfunc_reports_the_bad_row_and_still_scores_the_others(env, scored):
    pyfunc = mlflow.pyfunc.load_model(CHAMPION)
    junk = base64.b64encode(b"not audio at all").decode("ascii")
    df = pd.DataFrame(
        {"path": [str(env["good"]["mono16k"]), str(env["bad"] / "empty.wav"), None], "audio_base64": [None, None, junk]}
    )
    out = pyfunc.predict(df)
    assert out["mos"][0] == pytest.approx(scored[1][0]["mos"], rel=1e-6) and out["error"][0] is None
    assert out["mos"][1] is None and re.match(r"row 1: .*empty\.wav.*empty", out["error"][1])
    assert out["mos"][2] is None and out["error"][2].startswith("row 2: audio_base64: not readable")
    with pytest.raises(MlflowException, match="needs a 'path', 'audio_base64' or 'audio'"):
        pyfunc.predict(pd.DataFrame({"wav": ["a.wav"]}))


def test_encoder_pyfunc_returns_the_embedding(env):
    pyfunc = mlflow.pyfunc.load_model("models:/jsqa-encoder@champion")
    f = env["good"]["stereo8k"]
    out = pyfunc.predict(pd.DataFrame({"path": [str(f)]}))
    encoder = encoder_from_checkpoint(load_checkpoint(env["enc_ckpt"]))
    assert list(out.columns) == [f"e{i}" for i in range(encoder.embedding_dim)] + ["error", "warning"]
    assert out["error"][0] is None
    np.testing.assert_allclose(
        out.drop(columns=["error", "warning"]).iloc[0].to_numpy(dtype=float),
        embed_waveform(encoder, load_audio(f)[0]),
        rtol=1e-5,
        atol=1e-6,
    )


def test_bad_files_get_error_rows_and_good_files_are_still_scored(env, scored):
    good = env["good"]["mono16k"]
    files = [env["bad"] / "empty.wav", good, env["bad"] / "not_audio.wav", env["audio"] / "notes.txt"]
    rows = score_files(env["model"], files)
    assert [r["path"] for r in rows] == [str(f) for f in files]
    assert rows[1]["error"] is None and rows[1]["mos"] == scored[1][0]["mos"]
    for r in (rows[0], rows[2], rows[3]):
        assert r["mos"] is None
        assert Path(r["path"]).name in r["error"] and "\n" not in r["error"]
    assert "empty" in rows[0]["error"]


def test_audio_files_expands_folders_recursively_and_sorted(env):
    files = audio_files([env["audio"]])
    g = env["good"]
    assert files == sorted([g["mono16k"], g["stereo8k"], g["flac48k"], g["long40s"]])
    given = env["audio"] / "notes.txt"
    assert audio_files([given, env["audio"] / "sub"]) == [given, g["flac48k"], g["long40s"]]
    with pytest.raises(JsqaError, match="missing.wav"):
        audio_files([env["audio"] / "missing.wav"])


def test_format_rows_round_trips_csv_and_json_and_aligns_table():
    rows = [
        {"path": "a.wav", "mos": 3.14159265, "error": None, "warning": None},
        {"path": "dir/b, with comma.wav", "mos": None, "error": "b.wav: audio is empty (0 samples)", "warning": None},
    ]
    assert json.loads(format_rows(rows, "json")) == rows
    back = list(csv.DictReader(io.StringIO(format_rows(rows, "csv"))))
    assert [r["path"] for r in back] == [r["path"] for r in rows]
    assert float(back[0]["mos"]) == rows[0]["mos"] and back[1]["mos"] == ""
    assert back[1]["error"] == rows[1]["error"] and back[0]["error"] == ""
    table = format_rows(rows, "table").splitlines()
    assert table[0].split() == ["path", "mos", "error"]
    assert "3.142" in table[1] and table[1].index("3.142") + 5 == table[2].index("-") + 1
    assert "error" not in format_rows(rows[:1], "table") and "warning" not in format_rows(rows, "table")
    with pytest.raises(JsqaError, match="unknown output format 'xml'"):
        format_rows(rows, "xml")


def test_unknown_model_or_alias_is_a_clear_error(env):
    with pytest.raises(JsqaError, match=r"no model 'jsqa-mos' with alias 'nope' in sqlite:.*register stage"):
        load_model("models:/jsqa-mos@nope", root=env["root"])
    with pytest.raises(JsqaError, match=r"no model 'other' with version 3"):
        load_model("models:/other/3", root=env["root"])


def test_missing_store_is_reported_not_created(env, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'absent.db'}")
    with pytest.raises(JsqaError, match="no MLflow store"):
        load_model(CHAMPION, root=tmp_path)
    assert not (tmp_path / "absent.db").exists()


def test_downloaded_model_folder_loads_without_unpickling(env, scored, tmp_path):
    local = Path(mlflow.artifacts.download_artifacts(CHAMPION, dst_path=str(tmp_path)))
    # Logged from code: the model holds no pickle at all, only our entry file and the checkpoint.
    assert not [p for p in local.rglob("*") if p.suffix in (".pkl", ".pickle", ".cloudpickle")]
    assert (local / "mos.py").is_file()
    model, _desc = load_model(str(local))
    files, rows = scored
    assert score_files(model, files[:1])[0]["mos"] == rows[0]["mos"]
    with pytest.raises(JsqaError, match="no such checkpoint"):
        load_model(str(tmp_path / "nothing_here.pt"))


def test_cli_max_seconds_refuses_long_files_and_still_scores_the_rest(env, scored, capsys):
    long40s, short = env["good"]["long40s"], env["good"]["mono16k"]
    args = ["predict", "--model", str(env["mos_ckpt"]), "--format", "json", str(short), str(long40s)]
    assert main([*args, "--max-seconds", "30"]) == 1
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["error"] is None and rows[0]["mos"] == scored[1][0]["mos"]
    assert rows[1]["mos"] is None and "40.0 s long, over the 30 s limit" in rows[1]["error"]
    assert main(args) == 0  # the default limit (600 s) lets 40 s through
    assert json.loads(capsys.readouterr().out)[1]["mos"] == scored[1][3]["mos"]


def test_cli_reports_empty_truncated_and_over_long_files_and_csv_has_no_blank_line(env, tmp_path, capsys):
    empty = tmp_path / "zero.wav"
    empty.touch()
    whole, cut = tmp_path / "whole.wav", tmp_path / "cut.wav"
    sf.write(whole, _speech_like(16000, 2.0), 16000, subtype="PCM_16")
    cut.write_bytes(whole.read_bytes()[: 44 + 2 * 20000])  # header promises 32000 frames
    hour = tmp_path / "long.wav"
    sf.write(hour, np.zeros(8000 * 601, dtype=np.int16), 8000)
    args = ["predict", "--model", str(env["mos_ckpt"]), "--format", "csv"]

    assert main([*args, str(empty), str(cut), str(hour)]) == 1
    out = capsys.readouterr().out
    assert not out.endswith("\n\n")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows[0]["error"] == f"{empty}: empty file (0 bytes)" and rows[0]["mos"] == ""
    assert rows[1]["error"] == "" and 1.0 <= float(rows[1]["mos"]) <= 5.0
    assert rows[1]["warning"] == f"{cut}: truncated: read 20000 of 32000 frames"
    assert rows[2]["error"] == f"{hour}: 601.0 s long, over the 600 s limit (raise it with --max-seconds)"

    assert main([*args, str(cut)]) == 1  # truncation alone fails the run ...
    capsys.readouterr()
    assert main([*args, "--allow-truncated", str(cut)]) == 0  # ... unless allowed
    assert "truncated: read 20000 of 32000" in capsys.readouterr().out


def _cut_wav(folder: Path) -> Path:
    """A 16-bit WAV whose header promises 32000 frames and whose data holds 20000."""
    whole, cut = folder / "whole.wav", folder / "cut.wav"
    sf.write(whole, _speech_like(16000, 2.0), 16000, subtype="PCM_16")
    cut.write_bytes(whole.read_bytes()[: 44 + 2 * 20000])
    return cut


def test_served_truncated_rows_are_scored_with_the_warning_jsqa_predict_gives(env, tmp_path):
    cut = _cut_wav(tmp_path)
    [row] = score_files(env["model"], [cut])
    assert row["warning"] == f"{cut}: truncated: read 20000 of 32000 frames"
    pyfunc = mlflow.pyfunc.load_model(CHAMPION)
    b64 = base64.b64encode(cut.read_bytes()).decode("ascii")
    out = pyfunc.predict(pd.DataFrame({"audio_base64": [b64, None], "path": [None, str(cut)]}))
    np.testing.assert_allclose(out["mos"].to_numpy(dtype=float), [row["mos"]] * 2, rtol=1e-6)
    assert out["error"].isna().all()
    assert list(out["warning"]) == [
        "row 0: audio_base64: truncated: read 20000 of 32000 frames",
        f"row 1: {cut}: truncated: read 20000 of 32000 frames",
    ]
    whole = pyfunc.predict(pd.DataFrame({"path": [str(env["good"]["mono16k"])]}))
    assert whole["warning"].isna().all() and "note" not in whole.columns  # no profile recorded: no note


def _demo_params(folder: Path) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["profile"] = "demo"
    params["finetune"].update(epochs=1, batch_size=8, crop_seconds=1.0, seeds=1, equal_compute_epochs=0)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_a_model_finetuned_on_the_demo_profile_says_so_in_jsqa_predict(
    env, small_corpus, tmp_path, empty_mlflow_store, monkeypatch, capsys
):
    empty_mlflow_store(tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    ckpt = tmp_path / "demo.pt"
    common = ["--params", str(_demo_params(tmp_path)), "--root", str(small_corpus["root"])]
    args = ["finetune", *common, "--manifest", str(small_corpus["mos"]), "--out", str(ckpt)]
    assert main([*args, "--metrics", str(tmp_path / "ft.json")]) == 0
    assert load_checkpoint(ckpt)["data_profile"] == "demo"
    assert load_scorer(str(ckpt)).note == DEMO_NOTE
    capsys.readouterr()
    wav = env["good"]["mono16k"]
    assert main(["predict", "--model", str(ckpt), "--format", "json", str(wav)]) == 0  # a note is no failure
    out = capsys.readouterr()
    [row] = json.loads(out.out)
    assert row["note"] == DEMO_NOTE and row["error"] is None and 1.0 <= row["mos"] <= 5.0
    assert f"note: {DEMO_NOTE}" in out.err
    assert main(["predict", "--model", str(ckpt), "--format", "csv", str(wav)]) == 0
    [line] = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert line["note"] == DEMO_NOTE
    # A checkpoint that records no profile (older ones) gets no note anywhere.
    assert main(["predict", "--model", str(env["mos_ckpt"]), "--format", "json", str(wav)]) == 0
    out = capsys.readouterr()
    assert "note" not in json.loads(out.out)[0] and "note:" not in out.err


def test_cli_from_a_project_subfolder_finds_the_store_and_draws_no_download_bar(env, scored, monkeypatch, capfd):
    # No MLFLOW_TRACKING_URI and no --root: the store is found by walking up from the cwd.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
    monkeypatch.chdir(env["audio"] / "sub")
    assert main(["predict", "--format", "json", str(env["good"]["mono16k"])]) == 0
    out, err = capfd.readouterr()
    assert json.loads(out)[0]["mos"] == scored[1][0]["mos"]
    assert "Downloading artifacts" not in err


def test_registry_download_fetches_only_the_model_file_and_its_checkpoint(env, tmp_path):
    local, _desc = download_model(CHAMPION, env["root"], tmp_path)
    assert sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()) == [
        "MLmodel",
        "artifacts/mos.pt",
    ]
