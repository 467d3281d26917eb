"""The CLI's promise on bad input: one line naming the file or key, exit code 2, nothing half-written."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from jsqa.cli import main

REPO = Path(__file__).resolve().parents[1]


def _one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("jsqa ")]
    assert len(err) == 1, err
    return err[0]


def test_params_typo_names_the_key(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text((REPO / "params.yaml").read_text().replace("temperature:", "temprature:"))
    assert (
        main(
            ["pretrain", "--params", str(params), "--pairs", str(tmp_path / "none"), "--out", str(tmp_path / "enc.pt")]
        )
        == 2
    )
    line = _one_error_line(capsys)
    assert "pretrain.temprature" in line and "pretrain.temperature" in line
    assert not (tmp_path / "enc.pt").exists()


def test_manifest_missing_a_column_names_file_and_column(small_corpus, tmp_path, capsys):
    df = pd.read_parquet(small_corpus["mos"]).drop(columns=["mos"])
    bad = tmp_path / "mos.parquet"
    df.to_parquet(bad)
    out = tmp_path / "model.pt"
    code = main(
        [
            "finetune",
            "--params",
            str(REPO / "params.yaml"),
            "--manifest",
            str(bad),
            "--out",
            str(out),
            "--metrics",
            str(tmp_path / "m.json"),
            "--root",
            str(small_corpus["root"]),
        ]
    )
    assert code == 2
    line = _one_error_line(capsys)
    assert str(bad) in line and "mos" in line.split(":")[-1]
    assert not out.exists() and not (tmp_path / "m.json").exists()


@pytest.mark.integration
def test_corrupt_audio_in_training_data_names_the_file_and_writes_nothing(small_corpus, tmp_path, capsys):
    root = tmp_path / "copy"
    shutil.copytree(small_corpus["root"], root)
    manifest = pd.read_parquet(root / "manifests" / "mos.parquet")
    victim = root / manifest[manifest["split"] == "train"]["path"].iloc[0]
    victim.write_bytes(b"RIFF....WAVEbroken")
    out = tmp_path / "model.pt"
    code = main(
        [
            "finetune",
            "--params",
            str(REPO / "params.yaml"),
            "--manifest",
            str(root / "manifests" / "mos.parquet"),
            "--out",
            str(out),
            "--metrics",
            str(tmp_path / "m.json"),
            "--root",
            str(root),
        ]
    )
    assert code == 2
    assert victim.name in _one_error_line(capsys)
    assert not out.exists()
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files left


def test_predict_reports_bad_files_and_still_scores_good_ones(small_corpus, tmp_path, capsys):
    from jsqa.models.mos import MOSModel, encoder_spec, save_checkpoint

    spec = encoder_spec("small")
    m = MOSModel(spec)
    save_checkpoint(tmp_path / "m.pt", "mos", m, spec, head=m.head_config)
    good = next((small_corpus["root"] / "raw").rglob("*.wav"))
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    code = main(["predict", str(good), str(empty), "--model", str(tmp_path / "m.pt"), "--format", "csv"])
    assert code == 1
    out = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(out["path"]) == [str(good), str(empty)]
    assert 1.0 <= out["mos"].iloc[0] <= 5.0 and pd.isna(out["mos"].iloc[1])
    assert "empty.wav" in out["error"].iloc[1]


def test_predict_refuses_a_missing_file_before_importing_torch(tmp_path):
    """A mistyped path is answered at once, not after seconds of loading torch."""
    import subprocess
    import sys

    script = (
        "import sys; from jsqa.cli import main; "
        f"rc = main(['predict', '--model', {str(tmp_path / 'm.pt')!r}, {str(tmp_path / 'nope.wav')!r}]); "
        "print(rc, 'torch' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    assert done.stdout.split() == ["2", "False"], done.stderr
    assert "nope.wav: no such file or folder" in done.stderr
    # The checkpoint too, once the inputs exist.
    (tmp_path / "a.wav").write_bytes(b"")
    done = subprocess.run(
        [sys.executable, "-c", script.replace("nope.wav", "a.wav")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.stdout.split() == ["2", "False"], done.stderr
    assert "m.pt: no such checkpoint" in done.stderr


@pytest.mark.parametrize("value", ["0", "-3", "nan", "ten"])
def test_predict_max_seconds_must_be_a_positive_number(value, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["predict", "--max-seconds", value, str(tmp_path / "a.wav")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("jsqa predict: error: argument --max-seconds: ")
    assert value in err[-1]
