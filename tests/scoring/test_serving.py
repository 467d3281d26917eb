"""`mlflow models serve` on the registered champion answers real HTTP on loopback, and agrees
with `jsqa predict` on the same audio (paths, base64 bytes, float arrays of any length).

The champion is the model of tests/scoring/test_export_parity.py, so one served model also
checks that all five ways to score (`jsqa predict`, the pyfunc model, HTTP, TorchScript, ONNX)
give one answer."""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from processes import stop_group
from test_export_parity import (
    export_both,
    export_runners,
    parity_checkpoint,
    parity_inputs,
    windowed_score,
    write_inputs,
)

from jsqa.cli import main
from jsqa.config import RegisterConfig
from jsqa.models.mos import PretrainModel, encoder_spec, save_checkpoint
from jsqa.registry.register import register
from jsqa.scoring.model_uri import checkpoint_in, download_model

pytestmark = pytest.mark.integration

CHAMPION = "models:/jsqa-mos@champion"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_ping(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    pytest.fail(f"no answer from {url} within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def _post(url: str, payload: bytes, content_type: str = "application/json") -> tuple[int, dict]:
    req = urllib.request.Request(url, data=payload, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def _signal(sr: int, seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    return (0.3 * np.sin(2 * np.pi * 180 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def server(tmp_path_factory, empty_mlflow_store):
    """A champion (the export parity model) in a fresh SQLite store, served by the real
    `mlflow models serve` process."""
    root = tmp_path_factory.mktemp("serving")
    empty_mlflow_store(root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    spec = encoder_spec("small")
    parity_checkpoint(root / "mos.pt")
    save_checkpoint(root / "enc.pt", "encoder", PretrainModel(spec), spec)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
        register(root / "enc.pt", root / "mos.pt", RegisterConfig(), root=root)

    port = _free_port()
    log = root / "serve.log"
    # The server execs `uvicorn` by name: it must find the one beside this interpreter.
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": bindir + os.pathsep + os.environ.get("PATH", "")}
    env.pop("MLFLOW_REGISTRY_URI", None)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "models",
                "serve",
                "-m",
                CHAMPION,
                "--env-manager",
                "local",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            env=env,
            cwd=root,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_for_ping(f"http://127.0.0.1:{port}/ping", proc, log)
        yield {"root": root, "uri": uri, "url": f"http://127.0.0.1:{port}/invocations"}
    finally:
        stop_group(proc)  # the server forks workers into its own session


@pytest.fixture(scope="module")
def clips(server):
    """A WAV at 16 kHz, a FLAC at 44.1 kHz, and float samples of a third length (as a FLOAT WAV)."""
    audio = server["root"] / "audio"
    audio.mkdir()
    wav, flac, floats = audio / "a.wav", audio / "b.flac", audio / "c_floats.wav"
    sf.write(wav, _signal(16000, 1.3, 0), 16000)
    sf.write(flac, _signal(44100, 2.1, 1), 44100)
    samples = _signal(22050, 0.7, 2)
    sf.write(floats, samples, 22050, subtype="FLOAT")  # float32 round-trips exactly
    return {"wav": wav, "flac": flac, "floats": floats, "samples": samples}


def _cli_rows(server, files, capsys, monkeypatch, status: int = 0) -> list[dict]:
    """`jsqa predict --format json` rows of ``files`` with the champion, exiting with ``status``."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server["uri"])
    capsys.readouterr()
    assert main(["predict", "--format", "json", "--root", str(server["root"]), *map(str, files)]) == status
    return json.loads(capsys.readouterr().out)


def _cli_scores(server, files, capsys, monkeypatch) -> dict[str, float]:
    return {r["path"]: r["mos"] for r in _cli_rows(server, files, capsys, monkeypatch)}


def _pyfunc(server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server["uri"])
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    return mlflow.pyfunc.load_model(CHAMPION)


def _exported_champion(server, folder: Path) -> Path:
    """The champion's own checkpoint (downloaded from the registry) exported into ``folder``."""
    local, _ = download_model(CHAMPION, server["root"], folder / "download")
    export_both(checkpoint_in(local) if local.is_dir() else local, folder)
    return folder


def _parity_table(scores: dict[str, dict[str, float | None]], names: list[str]) -> dict[str, float]:
    """Max |MOS - predict's MOS| of each path over the rows both scored; a row scored by one and
    not the other fails the test."""
    want = scores["predict"]
    out = {}
    for path, got in scores.items():
        for n in names:
            assert (got[n] is None) == (want[n] is None), (path, n, got[n], want[n])
        out[path] = max(abs(got[n] - want[n]) for n in names if want[n] is not None)
    return out


def _no_nan(v: object) -> float | None:
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else float(v)


def test_five_paths_give_one_answer_on_the_same_inputs(server, tmp_path, capsys, monkeypatch):
    files = write_inputs(tmp_path / "inputs")
    names = list(files)
    rows = _cli_rows(server, files.values(), capsys, monkeypatch, status=1)  # silence etc.: error rows
    scores = {"predict": {n: r["mos"] for n, r in zip(names, rows)}}
    frame = _pyfunc(server, monkeypatch).predict(pd.DataFrame({"path": [str(files[n]) for n in names]}))
    scores["pyfunc"] = {n: _no_nan(v) for n, v in zip(names, frame["mos"])}
    records = [{"path": str(files[n])} for n in names]
    status, body = _post(server["url"], json.dumps({"dataframe_records": records}).encode())
    assert status == 200, body
    scores["http"] = {n: p["mos"] for n, p in zip(names, body["predictions"])}
    inputs = parity_inputs()
    for path, run in export_runners(_exported_champion(server, tmp_path / "export")).items():
        scores[path] = {n: _no_nan(windowed_score(run, inputs[n])[0]) for n in names}
    for errors in (rows, frame.to_dict("records"), body["predictions"]):
        assert [_no_nan(r["mos"]) is None for r in errors] == [bool(r["error"]) for r in errors]
    table = _parity_table(scores, names)
    print("max |MOS - jsqa predict| per path:", json.dumps(table))
    assert all(d < 0.01 for d in table.values()), table
    assert table["pyfunc"] < 1e-6 and table["http"] < 1e-6  # one code path, one process apart
    predicted = [scores["predict"][f"gain{db:+d}dB"] for db in (-30, -20, 0, 6)]
    assert max(predicted) - min(predicted) < 1e-3  # level alone does not move the score
    assert {n for n, v in scores["predict"].items() if v is None} == {"silence", "tone_1k", "faint_noise"}
    assert len({round(v, 3) for v in scores["predict"].values() if v is not None}) > 3  # scores vary


def test_an_unusual_rate_and_averaged_channels_are_noted_without_failing_predict(server, tmp_path, capsys, monkeypatch):
    speech = parity_inputs()["talker1_3s"]
    stereo, odd, common = tmp_path / "stereo.wav", tmp_path / "odd.flac", tmp_path / "common.wav"
    sf.write(stereo, np.stack([speech, 0.5 * speech], axis=1), 16000)
    sf.write(odd, speech, 11025)  # the same samples, played slower
    sf.write(common, speech, 44100)  # a usual rate: resampled without a word
    rows = _cli_rows(server, [stereo, odd, common], capsys, monkeypatch, status=0)  # notes do not fail the run
    assert [r["error"] for r in rows] == [None, None, None] and rows[2]["warning"] is None
    assert rows[0]["warning"] == f"{stereo}: 2 channels averaged to mono"
    assert rows[1]["warning"] == f"{odd}: resampled from 11025 Hz to 16000 Hz"
    frame = _pyfunc(server, monkeypatch).predict(
        pd.DataFrame(
            {
                "path": [str(stereo), str(odd), None],
                "audio": [None, None, np.stack([speech, speech], axis=1).tolist()],
                "sample_rate": [None, None, 11025.0],
            }
        )
    )
    assert list(frame["error"].isna()) == [True, True, True]
    assert list(frame["warning"]) == [
        f"row 0: {stereo}: 2 channels averaged to mono",
        f"row 1: {odd}: resampled from 11025 Hz to 16000 Hz",
        "row 2: audio: resampled from 11025 Hz to 16000 Hz; 2 channels averaged to mono",
    ]
    np.testing.assert_allclose(frame["mos"].to_numpy(dtype=float)[:2], [r["mos"] for r in rows[:2]], atol=1e-6)


def test_http_scores_path_base64_and_float_array_like_jsqa_predict(server, clips, capsys, monkeypatch):
    records = [
        {"path": str(clips["wav"])},
        {"audio_base64": base64.b64encode(clips["flac"].read_bytes()).decode("ascii")},
        {"audio": clips["samples"].tolist(), "sample_rate": 22050},
    ]
    status, body = _post(server["url"], json.dumps({"dataframe_records": records}).encode())
    assert status == 200, body
    preds = body["predictions"]
    assert [p["error"] for p in preds] == [None, None, None]
    got = [p["mos"] for p in preds]
    assert all(np.isfinite(got)) and all(1.0 <= v <= 5.0 for v in got)
    cli = _cli_scores(server, [clips["wav"], clips["flac"], clips["floats"]], capsys, monkeypatch)
    want = [cli[str(clips[k])] for k in ("wav", "flac", "floats")]
    np.testing.assert_allclose(got, want, atol=1e-4)

    # The same rows in the other two JSON layouts give the same scores.
    split = {"dataframe_split": {"columns": ["path"], "data": [[str(clips["wav"])]]}}
    status, body = _post(server["url"], json.dumps(split).encode())
    assert status == 200 and body["predictions"][0]["mos"] == pytest.approx(got[0], abs=1e-9)
    status, body = _post(server["url"], json.dumps({"inputs": records[2:]}).encode())
    assert status == 200 and body["predictions"][0]["mos"] == pytest.approx(got[2], abs=1e-9)


def test_bad_rows_get_errors_and_good_rows_are_still_scored(server, clips):
    records = [
        {"audio_base64": base64.b64encode(b"RIFF\x24\x00\x00\x00WAVEfmt ").decode("ascii")},  # truncated
        {"path": str(clips["wav"])},
        {"audio": [0.1, float("nan"), 0.2] * 1000, "sample_rate": 16000},
        {"audio": [1, 0, -1] * 1000, "sample_rate": 16000},
        {"audio": [0.0] * 2000, "sample_rate": 3},
        {"path": str(clips["wav"]), "audio_base64": "AAAA"},
    ]
    status, body = _post(server["url"], json.dumps({"dataframe_records": records}).encode())
    assert status == 200, body
    preds = body["predictions"]
    assert preds[1]["error"] is None and np.isfinite(preds[1]["mos"])
    reasons = {
        0: "row 0: audio_base64: not readable as audio",
        2: "NaN or infinite",
        3: "must be floats",
        4: "sample rate 3 Hz is outside",
        5: "set exactly one of",
    }
    for i, why in reasons.items():
        assert preds[i]["mos"] is None and why in preds[i]["error"], preds[i]
        assert "\n" not in preds[i]["error"]


def test_garbage_requests_get_a_clear_400(server):
    status, body = _post(server["url"], json.dumps({"dataframe_records": [{"wav": "a.wav"}]}).encode())
    assert status == 400 and "needs a 'path', 'audio_base64' or 'audio'" in body["message"]
    status, body = _post(server["url"], b"\x00\x01 not json")
    assert status == 400 and body.get("error_code") == "BAD_REQUEST"


def test_a_zero_byte_file_is_called_empty(server, tmp_path):
    empty = tmp_path / "zero.wav"
    empty.touch()
    status, body = _post(server["url"], json.dumps({"dataframe_records": [{"path": str(empty)}]}).encode())
    assert status == 200 and body["predictions"][0] == {
        "mos": None,
        "error": f"row 0: {empty}: empty file (0 bytes)",
        "warning": None,
    }


def test_a_truncated_file_is_scored_with_a_warning_over_http(server, tmp_path):
    whole, cut = tmp_path / "whole.wav", tmp_path / "cut.wav"
    sf.write(whole, _signal(16000, 2.0, 3), 16000, subtype="PCM_16")
    cut.write_bytes(whole.read_bytes()[: 44 + 2 * 20000])  # the header promises 32000 frames
    records = [{"path": str(cut)}, {"audio_base64": base64.b64encode(cut.read_bytes()).decode("ascii")}]
    status, body = _post(server["url"], json.dumps({"dataframe_records": records}).encode())
    assert status == 200, body
    first, second = body["predictions"]
    assert first["error"] is None and 1.0 <= first["mos"] <= 5.0 and second["mos"] == pytest.approx(first["mos"])
    assert first["warning"] == f"row 0: {cut}: truncated: read 20000 of 32000 frames"
    assert second["warning"] == "row 1: audio_base64: truncated: read 20000 of 32000 frames"


def test_jsqa_serve_runs_without_the_venv_on_path_and_refuses_rows_over_the_size_limit(server, clips):
    port = _free_port()
    log = server["root"] / "jsqa-serve.log"
    # No venv on PATH: `mlflow models serve` alone would fail with "exec: uvicorn: not found".
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": server["uri"],
        "PATH": "/usr/bin:/bin",
        "JSQA_SERVE_MAX_BYTES": "100000",
        "JSQA_SERVE_MAX_SECONDS": "1.5",
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jsqa.cli", "serve", "--port", str(port), "--root", str(server["root"])],
            env=env,
            cwd=server["root"],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_for_ping(f"http://127.0.0.1:{port}/ping", proc, log)
        big = base64.b64encode(clips["flac"].read_bytes()).decode("ascii")  # over 100 kB
        records = [
            {"audio_base64": big},
            {"audio": [0.0] * 30000, "sample_rate": 16000},
            {"path": str(clips["wav"])},
            {"path": str(clips["flac"])},
        ]
        status, body = _post(
            f"http://127.0.0.1:{port}/invocations", json.dumps({"dataframe_records": records}).encode()
        )
        assert status == 200, body
        preds = body["predictions"]
        assert preds[0]["mos"] is None and re.match(
            r"row 0: audio_base64 is 0\.\d MiB, over this server's 0\.0953674 MiB limit per row \(JSQA_SERVE_MAX_BYTES\)",
            preds[0]["error"],
        ), preds[0]
        assert preds[1]["mos"] is None and "row 1: audio is 0.1 MiB, over this server's" in preds[1]["error"]
        assert preds[2]["error"] is None and 1.0 <= preds[2]["mos"] <= 5.0  # 1.3 s, under both limits
        assert preds[3]["error"] == (
            f"row 3: {clips['flac']}: 2.1 s long, over the 1.5 s limit (the server's JSQA_SERVE_MAX_SECONDS)"
        )
    finally:
        stop_group(proc)  # the server forks workers into its own session
