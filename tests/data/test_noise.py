"""Noise recipes: CHiME-3 (folder, LDC archive, absent), DEMAND, MUSAN, any folder, combining."""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from httpserver import serve

from jsqa.data.manifests import NOISE_COLUMNS, read_manifest, write_manifest
from jsqa.data.noise import (
    DEMAND_ENVIRONMENTS,
    combine_noise,
    download_demand,
    prepare_chime3,
    prepare_demand,
    prepare_musan,
    prepare_noise_folder,
)
from jsqa.errors import ConfigError, JsqaError, ManifestError


def tone(path: Path, seconds: float = 0.1, sr: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = 0.05 * np.random.default_rng(len(str(path))).standard_normal(int(seconds * sr)).astype(np.float32)
    sf.write(path, x, sr, subtype="PCM_16")
    return path


def make_chime3(base: Path) -> Path:
    """base/CHiME3/data/audio/16kHz/backgrounds with two sessions x 3 channels, plus a stray file."""
    bgd = base / "CHiME3" / "data" / "audio" / "16kHz" / "backgrounds"
    for session in ("BGD_150203_010_BUS", "BGD_150204_020_CAF"):
        for ch in (1, 2, 3):
            tone(bgd / f"{session}.CH{ch}.wav")
    tone(bgd / "BGD_150211_030_STR.CH0.wav")  # not a tablet channel (CH1..CH6): ignored
    return base / "CHiME3"


def test_chime3_folder_default_keeps_channel_one(tmp_path: Path) -> None:
    manifest, quarantine = prepare_chime3(make_chime3(tmp_path), root=tmp_path)
    assert quarantine == []
    assert list(manifest.columns) == NOISE_COLUMNS + ["source"]
    assert sorted(manifest["id"]) == ["BGD_150203_010_BUS.CH1", "BGD_150204_020_CAF.CH1"]
    assert dict(zip(manifest["id"], manifest["environment"])) == {
        "BGD_150203_010_BUS.CH1": "BUS",
        "BGD_150204_020_CAF.CH1": "CAF",
    }
    assert (manifest["source"] == "chime3").all()
    assert manifest["duration"].tolist() == pytest.approx([0.1, 0.1])


def test_chime3_channel_and_environment_options(tmp_path: Path) -> None:
    corpus = make_chime3(tmp_path)
    every, _ = prepare_chime3(corpus, channels=None)
    assert len(every) == 6
    some, _ = prepare_chime3(corpus, channels=[2, "CH3"], environments=["CAF"])
    assert sorted(some["id"]) == ["BGD_150204_020_CAF.CH2", "BGD_150204_020_CAF.CH3"]
    with pytest.raises(ConfigError, match="known: BUS, CAF, PED, STR"):
        prepare_chime3(corpus, environments=["CAFE"])


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_chime3_from_the_ldc_archive(tmp_path: Path, kind: str) -> None:
    corpus = make_chime3(tmp_path / "src")
    archive = tmp_path / f"LDC2017S24.{kind}"
    # The LDC release wraps the corpus in a top folder of its own.
    if kind == "zip":
        with zipfile.ZipFile(archive, "w") as zf:
            for f in corpus.rglob("*.wav"):
                zf.write(f, f"LDC2017S24/{f.relative_to(corpus.parent).as_posix()}")
    else:
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(corpus, arcname="LDC2017S24/CHiME3")
    manifest, _ = prepare_chime3(archive, root=tmp_path)
    assert sorted(manifest["environment"]) == ["BUS", "CAF"]
    assert all(p.startswith("LDC2017S24/LDC2017S24/CHiME3/data/audio/16kHz/backgrounds/") for p in manifest["path"])
    again, _ = prepare_chime3(archive, root=tmp_path)  # already extracted: same manifest
    pd.testing.assert_frame_equal(manifest, again)


def test_chime3_absent_or_empty_says_how_to_obtain_it(tmp_path: Path) -> None:
    for source in (tmp_path / "nowhere", tmp_path):
        with pytest.raises(JsqaError, match="LDC2017S24") as err:
            prepare_chime3(source)
        assert "data.corpora.noise_sources: [demand] or [musan]" in str(err.value)
        assert "set data.corpora.chime3_path" in str(err.value)


def make_demand(base: Path, envs: tuple[str, ...] = ("TBUS", "SCAFE"), channels: int = 3) -> Path:
    for env in envs:
        for ch in range(1, channels + 1):
            tone(base / env / f"ch{ch:02d}.wav")
    return base


def test_demand_manifest(tmp_path: Path) -> None:
    assert len(DEMAND_ENVIRONMENTS) == 18 and {"TBUS", "SCAFE", "PCAFETER", "SPSQUARE", "STRAFFIC"} <= set(
        DEMAND_ENVIRONMENTS
    )
    demand = make_demand(tmp_path / "demand")
    manifest, quarantine = prepare_demand(demand, ["TBUS", "SCAFE"], root=tmp_path)
    assert quarantine == []
    assert sorted(manifest["id"]) == ["SCAFE_ch01", "TBUS_ch01"]
    assert set(manifest["environment"]) == {"TBUS", "SCAFE"} and set(manifest["source"]) == {"demand"}
    every, _ = prepare_demand(demand, ["TBUS"], channels=None)
    assert len(every) == 3
    with pytest.raises(ManifestError, match="NPARK.*download_demand"):
        prepare_demand(demand, ["TBUS", "NPARK"])
    with pytest.raises(ConfigError, match="BUS.*known: DKITCHEN"):
        prepare_demand(demand, ["BUS"])


def test_download_demand_from_mirror_then_rerun_is_a_noop(tmp_path: Path) -> None:
    src = make_demand(tmp_path / "src", envs=("TBUS",), channels=2)
    served = tmp_path / "www"
    served.mkdir()
    with zipfile.ZipFile(served / "TBUS_16k.zip", "w") as zf:
        for f in sorted((src / "TBUS").iterdir()):
            zf.write(f, f"TBUS/{f.name}")
    target = tmp_path / "demand"
    with serve(served) as url:
        assert download_demand(target, ["TBUS"], base_url=url, progress=False) == target
        assert [r.path for r in url.requests] == ["/TBUS_16k.zip"]
        assert download_demand(target, ["TBUS"], base_url=url, progress=False) == target
        assert len(url.requests) == 1  # the second call asked for nothing
    manifest, _ = prepare_demand(target, ["TBUS"], channels=None)
    assert sorted(manifest["id"]) == ["TBUS_ch01", "TBUS_ch02"]


def test_musan_manifest(tmp_path: Path) -> None:
    musan = tmp_path / "musan"
    tone(musan / "noise/free-sound/noise-free-sound-0000.wav")
    tone(musan / "noise/free-sound/noise-free-sound-0001.wav")
    tone(musan / "noise/sound-bible/noise-sound-bible-0000.wav")
    tone(musan / "speech/librivox/speech-librivox-0000.wav")  # speech is not noise: left out
    manifest, _ = prepare_musan(tmp_path, root=tmp_path)  # the download target works too
    env = dict(zip(manifest["id"], manifest["environment"]))
    assert env == {
        "noise-free-sound-0000": "musan-free-sound",
        "noise-free-sound-0001": "musan-free-sound",
        "noise-sound-bible-0000": "musan-sound-bible",
    }
    only, _ = prepare_musan(musan, parts=["sound-bible"])
    assert list(only["id"]) == ["noise-sound-bible-0000"]
    with pytest.raises(ManifestError, match="download_musan"):
        prepare_musan(tmp_path / "elsewhere")


def test_noise_folder_environment_from_parent_or_given(tmp_path: Path) -> None:
    folder = tmp_path / "mynoise"
    tone(folder / "kitchen/a.wav")
    tone(folder / "kitchen/b.flac")
    tone(folder / "office/a.wav")
    (folder / "office/notes.txt").write_text("not audio")
    (folder / "office/broken.wav").write_bytes(b"RIFF....WAVE")
    manifest, quarantine = prepare_noise_folder(folder, root=tmp_path)
    assert dict(zip(manifest["id"], manifest["environment"])) == {
        "kitchen__a": "kitchen",
        "kitchen__b": "kitchen",
        "office__a": "office",
    }
    assert [q["path"] for q in quarantine] == ["mynoise/office/broken.wav"]
    fixed, _ = prepare_noise_folder(folder, environment="home")
    assert set(fixed["environment"]) == {"home"}
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match="no audio files"):
        prepare_noise_folder(tmp_path / "empty")


def test_combine_noise_keeps_ids_unique_across_sources(tmp_path: Path) -> None:
    demand, _ = prepare_demand(make_demand(tmp_path / "demand", envs=("TBUS",), channels=1), ["TBUS"])
    tone(tmp_path / "mine/TBUS_ch01.wav")  # same id as the DEMAND file, different source
    mine, _ = prepare_noise_folder(tmp_path / "mine")
    mine["id"] = "TBUS_ch01"
    combined = combine_noise([demand, mine])
    assert sorted(combined["id"]) == ["demand__TBUS_ch01", "folder__TBUS_ch01"]
    write_manifest(tmp_path / "noise.parquet", combined, "noise")
    assert len(read_manifest(tmp_path / "noise.parquet", "noise")) == 2
    with pytest.raises(ManifestError, match="collide"):
        combine_noise([mine, mine])
    with pytest.raises(ManifestError, match="source"):
        combine_noise([demand.drop(columns="source")])
