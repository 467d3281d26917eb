"""The acquire stage for both profiles: the demo offline, the paper corpora from a loopback mirror."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from httpserver import serve
from test_librispeech import make_librispeech
from test_nisqa import make_nisqa

from jsqa.config import CorporaConfig, DataConfig
from jsqa.data import librispeech
from jsqa.data.acquire import acquire
from jsqa.data.download import Remote
from jsqa.data.manifests import read_manifest
from jsqa.errors import ConfigError, JsqaError


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A loopback mirror serving LibriSpeech dev-clean and the NISQA zip in their true layouts."""
    www = tmp_path / "www"
    www.mkdir()
    src = make_librispeech(tmp_path / "src")
    # one corrupt FLAC inside the archive: it must be quarantined, not stop the build
    (src / "dev-clean" / "84" / "121123" / "84-121123-0009.flac").write_bytes(b"fLaC\x00broken")
    with tarfile.open(www / "dev-clean.tar.gz", "w:gz") as tar:
        tar.add(src, arcname="LibriSpeech")
    data = (www / "dev-clean.tar.gz").read_bytes()
    # The real archive's MD5 is pinned; the miniature one stands in for it.
    monkeypatch.setitem(
        librispeech.SUBSETS,
        "dev-clean",
        Remote("dev-clean.tar.gz", (), md5=hashlib.md5(data).hexdigest(), size=len(data)),
    )
    corpus = make_nisqa(tmp_path / "nisqa_src")
    with zipfile.ZipFile(www / "NISQA_Corpus.zip", "w") as zf:
        for f in sorted(corpus.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(corpus.parent).as_posix())
    noise_dir = tmp_path / "my_noise" / "kitchen"
    noise_dir.mkdir(parents=True)
    sf.write(noise_dir / "fan.wav", (0.01 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32), 16000)
    with serve(www) as url:
        yield url, tmp_path / "my_noise"


def _paper(url: str, noise_folder: Path, **over) -> DataConfig:
    corpora = CorporaConfig(
        download_dir="downloads",
        librispeech_subsets=("dev-clean",),
        noise_sources=("folders",),
        noise_folders=(str(noise_folder),),
        nisqa_subsets=("NISQA_TRAIN_SIM", "NISQA_VAL_LIVE", "NISQA_TEST_P501"),
        accept_nisqa_licence=True,
        mirrors={"librispeech": str(url), "nisqa": str(url)},
        **over,
    )
    return DataConfig(profile="paper", corpora=corpora)


def test_paper_profile_downloads_prepares_and_is_idempotent(mirror, tmp_path):
    url, noise_folder = mirror
    cfg = _paper(url, noise_folder)
    paths = acquire(cfg, 0, tmp_path / "raw", tmp_path / "manifests", root=tmp_path)
    clean = read_manifest(paths["clean"], "clean")
    assert sorted(clean["speaker"].unique()) == ["174", "84"] and len(clean) == 3
    quarantine = pd.read_csv(paths["quarantine"])
    assert len(quarantine) == 1 and quarantine["path"].iloc[0].endswith("84-121123-0009.flac")
    noise = read_manifest(paths["noise"], "noise")
    assert list(noise["environment"]) == ["kitchen"]
    mos = read_manifest(paths["mos"], "mos")
    assert set(mos["split"]) == {"train", "val", "test"} and len(mos) == 4
    # manifests point into the download folder, relative to the project root
    assert all(p.startswith("downloads/") for p in pd.concat([clean["path"], mos["path"]]))
    assert json.loads((tmp_path / "raw" / "SOURCES.json").read_text())["profile"] == "paper"
    n_requests = len(url.requests)
    acquire(cfg, 0, tmp_path / "raw", tmp_path / "manifests", root=tmp_path)
    assert len(url.requests) == n_requests  # a rerun downloads nothing


def _with(cfg: DataConfig, **over) -> DataConfig:
    return dataclasses.replace(cfg, corpora=dataclasses.replace(cfg.corpora, **over))


def test_paper_profile_refuses_nisqa_licence_before_any_download(mirror, tmp_path):
    # The refusal must come before tens of GB of LibriSpeech and noise, not after them.
    url, noise_folder = mirror
    cfg = _with(_paper(url, noise_folder), accept_nisqa_licence=False)
    with pytest.raises(JsqaError, match=r"NISQA licence not accepted.*accept_nisqa_licence: true"):
        acquire(cfg, 0, tmp_path / "raw", tmp_path / "m", root=tmp_path)
    assert url.requests == []  # nothing was asked of the mirror
    assert not (tmp_path / "downloads").exists()
    assert not (tmp_path / "m").exists()  # and no manifest was written


def test_user_mos_csv_needs_no_nisqa_licence(mirror, tmp_path):
    # With the user's own MOS data NISQA is never fetched, so its licence is not asked for.
    url, noise_folder = mirror
    corpus = make_nisqa(tmp_path / "user_mos")
    csv = corpus / "NISQA_corpus_file.csv"
    cfg = _with(_paper(url, noise_folder), accept_nisqa_licence=False, user_mos_csv=str(csv))
    paths = acquire(cfg, 0, tmp_path / "raw", tmp_path / "m", root=tmp_path)
    assert len(read_manifest(paths["mos"], "mos")) > 0
    assert not any(r.path.endswith("NISQA_Corpus.zip") for r in url.requests)


def test_paper_profile_refuses_unknown_noise(mirror, tmp_path):
    url, noise_folder = mirror
    cfg = _paper(url, noise_folder)
    with pytest.raises(ConfigError, match="noise_sources"):
        acquire(_with(cfg, noise_sources=("rain",)), 0, tmp_path / "raw", tmp_path / "m", root=tmp_path)


def test_chime3_without_a_local_copy_says_how_to_get_it(mirror, tmp_path):
    url, noise_folder = mirror
    cfg = _with(_paper(url, noise_folder), noise_sources=("chime3",))
    with pytest.raises(JsqaError, match="LDC2017S24"):
        acquire(cfg, 0, tmp_path / "raw", tmp_path / "m", root=tmp_path)
