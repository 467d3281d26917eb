"""Manifest validation: a good corpus passes with Data Docs; each kind of bad row is named."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jsqa.audio import write_audio
from jsqa.config import ValidateConfig
from jsqa.data.manifests import ACQUIRED_SCHEMAS, SCHEMAS
from jsqa.data.validate import (
    add_audio_stats,
    add_computed_columns,
    data_docs_index,
    suite_for,
    validate_manifests,
)
from jsqa.errors import ManifestError, ValidationFailed
from jsqa.io import file_sha256, write_parquet

pytestmark = pytest.mark.integration

CFG = ValidateConfig(min_duration_s=0.5, max_duration_s=30.0, mos_range=(1.0, 5.0))
SR = 16000


def _wav(
    root: Path, rel: str, sr: int = SR, seconds: float = 0.6, amplitude: float = 0.1, subtype: str = "PCM_16"
) -> str:
    x = amplitude * np.sin(2 * np.pi * 440 * np.arange(int(sr * seconds)) / sr).astype(np.float32)
    write_audio(root / rel, x, sr, subtype=subtype)
    return rel


def _audio(root: Path, rel: str, sr: int = SR) -> dict:
    path = _wav(root, rel, sr)
    return {"path": path, "duration": 0.6, "sample_rate": sr, "channels": 1, "sha256": file_sha256(root / path)}


def _good_tables(root: Path) -> dict[str, pd.DataFrame]:
    clean = pd.DataFrame({"id": f"c{i}", **_audio(root, f"clean/c{i}.wav"), "speaker": f"s{i % 2}"} for i in range(4))
    noise = pd.DataFrame({"id": f"n{i}", **_audio(root, f"noise/n{i}.wav"), "environment": "white"} for i in range(2))
    # MOS clips at 48 kHz like NISQA: only clean and noise must reach the pipeline rate.
    splits = ["train", "train", "val", "test"]
    mos = pd.DataFrame(
        {
            "id": f"m{i}",
            **_audio(root, f"mos/m{i}.wav", 48000),
            "mos": 1.0 + i,
            "db": "DEMO",
            "split": s,
        }
        for i, s in enumerate(splits)
    )
    return {"clean": clean, "noise": noise, "mos": mos}


def _write(root: Path, tables: dict[str, pd.DataFrame]) -> dict[str, Path]:
    paths = {}
    for kind, df in tables.items():
        paths[kind] = root / "manifests" / f"{kind}.parquet"
        write_parquet(paths[kind], df)
    return paths


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    root = tmp_path_factory.mktemp("good")
    paths = _write(root, _good_tables(root))
    out = root / "validation"
    report = validate_manifests(paths, CFG, SR, out, root=root)
    return root, paths, out, report


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    """One run holding every failure, each in a row or column of its own."""
    root = tmp_path_factory.mktemp("bad")
    t = _good_tables(root)
    clean, noise, mos = t["clean"], t["noise"], t["mos"]
    clean.loc[1, "id"] = "c0"  # duplicate id
    clean.loc[2, "speaker"] = None  # null in a required column
    clean.loc[3, "path"] = "clean/gone.wav"  # file that does not exist
    # speaker s1 (rows 1, 3) in two LibriSpeech subsets: splits must be disjoint by speaker
    clean["subset"] = ["train-clean-100", "train-clean-100", "train-clean-100", "dev-clean"]
    noise = noise.drop(columns=["environment"])  # missing column
    mos.loc[0, "mos"] = 6.2
    mos.loc[1, "mos"] = 0.0
    mos.loc[2, "mos"] = np.nan  # between ignores nulls: not-null must catch it
    mos.loc[3, "path"] = mos.loc[0, "path"]  # the test clip is a train file
    paths = _write(root, {"clean": clean, "noise": noise, "mos": mos})
    out = root / "validation"
    with pytest.raises(ValidationFailed) as info:
        validate_manifests(paths, CFG, SR, out, root=root)
    return paths, out, str(info.value)


def _n_rows(report: dict) -> dict[str, int]:
    return {k: m["n_rows"] for k, m in report["manifests"].items()}


def _lines(message: str, manifest: Path) -> list[str]:
    return [ln for ln in message.splitlines() if ln.startswith(f"{manifest}: ")]


def test_good_manifests_pass_and_write_report_and_data_docs(good):
    _, _paths, out, report = good
    assert report["success"] is True
    assert _n_rows(report) == {"clean": 4, "noise": 2, "mos": 4}
    # Every file was decoded; the sines are at 0.1 of full scale: RMS -23 dBov.
    audio = {k: m["audio"] for k, m in report["manifests"].items()}
    assert {k: a["files_decoded"] for k, a in audio.items()} == {"clean": 4, "noise": 2, "mos": 4}
    assert audio["clean"]["frames_decoded"] == 4 * 9600
    assert audio["mos"]["frames_decoded"] == 4 * 28800
    assert audio["clean"]["rms_dbov"] == {"min": -23.01, "median": -23.01, "max": -23.01}
    assert -24.0 < audio["mos"]["active_level_dbov"]["median"] < -22.0
    assert "active_level_dbov" not in audio["noise"]  # noise is not speech
    assert all(m["failed"] == [] for m in report["manifests"].values())
    assert json.loads((out / "report.json").read_text()) == report
    index = data_docs_index(out / "gx")  # the default docs folder
    assert index.is_file()
    # The docs hold one validation page per manifest.
    pages = list((index.parent / "validations").rglob("*.html"))
    assert len(pages) == 3


def test_rerun_from_project_root_with_defaults_replaces_previous_results(good, monkeypatch):
    # As under `dvc repro`: cwd is the project root, paths are relative, root is left default.
    root, paths, _out, _first = good
    monkeypatch.chdir(root)
    rel = {k: p.relative_to(root) for k, p in paths.items()}
    second = validate_manifests(rel, CFG, SR, Path("validation"))
    assert second["success"] is True
    assert _n_rows(second) == {"clean": 4, "noise": 2, "mos": 4}
    index = data_docs_index(Path("validation/gx"))
    assert index.as_posix() == "validation/gx/uncommitted/data_docs/local_site/index.html"
    pages = list((index.parent / "validations").rglob("*.html"))
    assert len(pages) == 3  # the old run's pages are replaced, not accumulated


def test_verdict_is_byte_identical_across_runs_and_apart_from_the_docs(good, monkeypatch):
    # Later DVC stages depend on the verdict: a re-validation of the same manifests must not
    # change it, although the Data Docs pages (timestamped) do change.
    root, paths, _, _ = good
    monkeypatch.chdir(root)
    rel = {k: p.relative_to(root) for k, p in paths.items()}
    texts, pages = [], []
    # The decoding threads are an execution setting: they do not change the verdict.
    for cfg in (CFG, dataclasses.replace(CFG, workers=1)):
        validate_manifests(rel, cfg, SR, Path("verdict"), docs_dir=Path("docs"))
        texts.append(Path("verdict/report.json").read_bytes())
        pages.append(sorted(p.relative_to("docs").as_posix() for p in Path("docs").rglob("*.html")))
    assert texts[0] == texts[1]
    assert sorted(p.name for p in Path("verdict").iterdir()) == ["report.json"]  # no docs beside it
    assert data_docs_index(Path("docs")).is_file()
    assert pages[0] != pages[1]  # the docs are timestamped: why they are not the verdict
    verdict = json.loads(texts[0])
    assert set(verdict) == {"success", "manifests"}
    assert str(root) not in texts[0].decode()  # no absolute paths


def test_missing_manifest_is_a_readable_failure(tmp_path):
    missing = tmp_path / "manifests" / "clean.parquet"
    with pytest.raises(ValidationFailed, match="clean.parquet: manifest not found"):
        validate_manifests({"clean": missing}, CFG, SR, tmp_path / "validation", root=tmp_path)
    report = json.loads((tmp_path / "validation" / "report.json").read_text())
    assert report["manifests"]["clean"]["success"] is False
    assert "manifest not found" in report["manifests"]["clean"]["error"]


def test_report_written_on_failure(bad):
    _paths, out, msg = bad
    # Exactly the eight planted faults: no spurious failures from rows that are fine.
    assert msg.splitlines()[0].startswith("8 check(s) failed")
    assert str(out / "report.json") in msg.splitlines()[0]
    report = json.loads((out / "report.json").read_text())
    assert report["success"] is False
    assert all(report["manifests"][k]["success"] is False for k in ("clean", "noise", "mos"))
    assert data_docs_index(out / "gx").is_file()  # the docs are built for a failed run too


def test_duplicate_id_named(bad):
    paths, _, msg = bad
    unique = "expect_column_values_to_be_unique(id)"
    (line,) = [ln for ln in _lines(msg, paths["clean"]) if unique in ln]
    assert "2 unexpected (e.g. c0)" in line  # the duplicated value itself


def test_null_in_required_column_named(bad):
    paths, _, msg = bad
    lines = _lines(msg, paths["clean"])
    expected = "expect_column_values_to_not_be_null(speaker): 1 unexpected (e.g. id=c2)"
    assert f"{paths['clean']}: {expected}" in lines  # the row is named, not its None


def test_missing_file_named_by_path(bad):
    paths, out, msg = bad
    (line,) = [ln for ln in _lines(msg, paths["clean"]) if "file_exists" in ln]
    assert "1 unexpected (e.g. path=clean/gone.wav)" in line
    failed = json.loads((out / "report.json").read_text())["manifests"]["clean"]["failed"]
    (rec,) = [f for f in failed if f["column"] == "file_exists"]
    assert rec["unexpected_values"] == ["clean/gone.wav"]


def test_missing_column_is_one_readable_line(bad):
    paths, _, msg = bad
    lines = _lines(msg, paths["noise"])
    assert lines == [f"{paths['noise']}: expect_column_to_exist(environment): column missing"]
    assert "Traceback" not in msg and "KeyError" not in msg


def test_mos_out_of_range_and_null_named(bad):
    paths, out, msg = bad
    lines = _lines(msg, paths["mos"])
    expected = "expect_column_values_to_be_between(mos, 1.0..5.0): 2 unexpected (e.g. 6.2, 0.0)"
    assert f"{paths['mos']}: {expected}" in lines
    null = "expect_column_values_to_not_be_null(mos): 1 unexpected (e.g. id=m2)"
    assert f"{paths['mos']}: {null}" in lines
    failed = json.loads((out / "report.json").read_text())["manifests"]["mos"]["failed"]
    (rec,) = [f for f in failed if f["expectation"] == "expect_column_values_to_be_between"]
    assert rec["column"] == "mos" and rec["unexpected_count"] == 2
    assert sorted(rec["unexpected_values"]) == [0.0, 6.2]


def test_test_clip_leaking_into_train_named(bad):
    paths, _, msg = bad
    (line,) = [ln for ln in _lines(msg, paths["mos"]) if "leaks_into_train" in ln]
    assert "1 unexpected (e.g. id=m3)" in line


def _ranges(kind: str, cfg: ValidateConfig, sample_rate: int) -> dict[str, tuple]:
    return {
        e.column: (e.min_value, e.max_value)
        for e in suite_for(kind, cfg, sample_rate)
        if type(e).__name__ == "ExpectColumnValuesToBeBetween"
    }


def test_suite_rules_follow_config():
    cfg = ValidateConfig(min_duration_s=1.0, max_duration_s=10.0, mos_range=(0.0, 100.0))
    mos = _ranges("mos", cfg, 16000)
    assert mos["mos"] == (0.0, 100.0)
    assert mos["duration"] == (1.0, 10.0)
    assert mos["sample_rate"][0] == 1  # degraded clips may be narrowband
    noise = _ranges("noise", cfg, 16000)
    assert noise["duration"] == (1.0, None)  # long noise recordings are cut, not rejected
    assert noise["sample_rate"][0] == 16000
    exist = {e.column for e in suite_for("clean", cfg, 16000) if type(e).__name__ == "ExpectColumnToExist"}
    assert exist == set(ACQUIRED_SCHEMAS["clean"])
    assert ACQUIRED_SCHEMAS["clean"] == [*SCHEMAS["clean"], "sha256"]  # the schema plus the content hash


def test_unknown_kind_rejected():
    with pytest.raises(ManifestError, match="unknown manifest kind 'speech'"):
        suite_for("speech", CFG, SR)


def test_speaker_in_two_subsets_named(bad):
    paths, _, msg = bad
    lines = _lines(msg, paths["clean"])
    assert any("speaker_spans_subsets" in line and "s1" in line for line in lines), lines


def test_leak_detected_by_id_and_by_path_spelled_differently(tmp_path):
    _wav(tmp_path, "a.wav")
    _wav(tmp_path, "b.wav")
    df = pd.DataFrame(
        {
            "id": ["a", "b", "a", "x"],
            "path": ["a.wav", "b.wav", "c.wav", "./b.wav"],
            "split": ["train", "train", "test", "test"],
        }
    )
    out = add_computed_columns("mos", df, root=tmp_path)
    assert out["leaks_into_train"].tolist() == [False, False, True, True]
    assert out["file_exists"].tolist() == [True, True, False, True]


# --- the audio itself -------------------------------------------------------------------------


def _truncate(root: Path, rel: str, n_bytes: int) -> None:
    path = root / rel
    path.write_bytes(path.read_bytes()[:n_bytes])


@pytest.fixture(scope="module")
def broken_audio(tmp_path_factory):
    """Well-formed manifests over broken files, each broken one way (and a quiet one)."""
    root = tmp_path_factory.mktemp("broken_audio")
    t = _good_tables(root)
    _truncate(root, "clean/c0.wav", 20)
    half = (root / "clean/c1.wav").stat().st_size // 2
    _truncate(root, "clean/c1.wav", half)  # the header still claims the full 9600 frames
    write_audio(root / "clean/c2.wav", np.zeros(9600, dtype=np.float32), SR)
    x = 0.1 * np.ones(9600, dtype=np.float32)
    x[100] = np.nan
    write_audio(root / "clean/c3.wav", x, SR, subtype="FLOAT")
    # Silence fails noise too; a very quiet file (RMS -83 dBov) fails only as speech.
    write_audio(root / "noise/n0.wav", np.zeros(9600, dtype=np.float32), SR)
    _wav(root, "noise/n1.wav", amplitude=1e-4)
    _wav(root, "mos/m0.wav", sr=48000, amplitude=1e-4)
    for df in t.values():  # as acquire would have recorded the broken files
        df["sha256"] = [file_sha256(root / p) for p in df["path"]]
    paths = _write(root, t)
    out = root / "validation"
    with pytest.raises(ValidationFailed) as info:
        validate_manifests(paths, CFG, SR, out, root=root)
    return paths, out, str(info.value)


def _failed(out: Path, kind: str, expectation: str, column: str) -> dict:
    failed = json.loads((out / "report.json").read_text())["manifests"][kind]["failed"]
    (rec,) = [f for f in failed if f["expectation"] == expectation and f["column"] == column]
    return rec


def test_each_broken_file_fails_once_with_its_reason(broken_audio):
    paths, _, msg = broken_audio
    assert msg.splitlines()[0].startswith("6 check(s) failed")  # 4 clean, 1 noise, 1 mos
    assert len(_lines(msg, paths["clean"])) == 4


def test_wav_truncated_to_20_bytes_does_not_decode(broken_audio):
    paths, out, msg = broken_audio
    (line,) = [ln for ln in _lines(msg, paths["clean"]) if "(decodes," in ln]
    assert "1 unexpected (e.g. path=clean/c0.wav (does not decode: " in line
    assert "Malformed 'fmt ' chunk" in line
    rec = _failed(out, "clean", "expect_column_values_to_be_in_set", "decodes")
    assert rec["unexpected_values"][0].startswith("clean/c0.wav (does not decode:")


def test_wav_cut_in_half_is_truncated(broken_audio):
    # libsndfile reads what is there without complaint; only the header tells it was cut.
    paths, _, msg = broken_audio
    (line,) = [ln for ln in _lines(msg, paths["clean"]) if "header_frames" in ln]
    assert "expect_column_pair_values_to_be_equal(header_frames, decoded_frames): 1 unexpected" in line
    assert "path=clean/c1.wav (header promises 9600 frames, 4" in line
    assert "decoded: truncated)" in line


def test_all_zero_wav_is_silent(broken_audio):
    paths, _, msg = broken_audio
    expected = (
        "expect_column_values_to_be_between(rms_dbov, >= -90.0): 1 unexpected "
        "(e.g. path=clean/c2.wav (RMS -inf dBov: silent))"
    )
    assert f"{paths['clean']}: {expected}" in _lines(msg, paths["clean"])
    noise = "expect_column_values_to_be_between(rms_dbov, >= -90.0): 1 unexpected (e.g. path=noise/n0.wav"
    assert any(noise in ln for ln in _lines(msg, paths["noise"]))


def test_nan_float_wav_is_not_finite(broken_audio):
    paths, _, msg = broken_audio
    expected = (
        "expect_column_values_to_be_in_set(finite, {True}): 1 unexpected "
        "(e.g. path=clean/c3.wav (NaN or infinite samples))"
    )
    assert f"{paths['clean']}: {expected}" in _lines(msg, paths["clean"])


def test_speech_level_out_of_range_only_for_speech(broken_audio):
    paths, _, msg = broken_audio
    (line,) = _lines(msg, paths["mos"])
    assert "expect_column_values_to_be_between(active_level_dbov, -60.0..0.0): 1 unexpected" in line
    assert "path=mos/m0.wav (active speech level -8" in line
    # The same quiet signal as noise: not speech, so no level rule; only n0 (silent) fails.
    assert all("n1.wav" not in ln for ln in _lines(msg, paths["noise"]))


def test_report_summarises_the_broken_audio(broken_audio):
    _, out, _ = broken_audio
    clean = json.loads((out / "report.json").read_text())["manifests"]["clean"]["audio"]
    assert clean["files_checked"] == 4
    assert clean["files_decoded"] == 3
    assert clean["rms_dbov"]["max"] == -23.01  # c1's surviving half; -inf and NaN left out


def test_missing_file_has_no_audio_statistics(tmp_path):
    # A missing file is file_exists's to report: decoding it would name it twice.
    _wav(tmp_path, "a.wav")
    df = pd.DataFrame({"path": ["a.wav", "gone.wav"]})
    stats = add_audio_stats("noise", df, root=tmp_path, workers=1, progress=False)
    assert stats["decodes"].tolist() == [True, None]
    assert stats["header_frames"].isna().tolist() == [False, True]
    assert stats["header_frames"][0] == 9600
    assert "active_level_dbov" not in stats.columns
