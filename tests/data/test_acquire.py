"""The acquire stage for both profiles: the demo offline, the paper corpora from a loopback mirror.

The mirror serves re-packed archives (not the published bytes), so the configuration gives their
digests in ``data.corpora.checksums``, as a user with an internal mirror does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from httpserver import ServedURL, serve
from test_librispeech import make_librispeech
from test_nisqa import make_nisqa
from test_noise import make_demand

from jsqa.config import CorporaConfig, DataConfig
from jsqa.data.acquire import acquire
from jsqa.data.manifests import read_manifest
from jsqa.errors import ConfigError, DownloadError, JsqaError

# Forty utterances of three speakers: the corrupt one must cost only itself.
CHAPTERS = (("84", "121123"), ("174", "50561"), ("251", "136532"))
TEXTS = {f"{spk}-{ch}-{i:04d}": f"UTTERANCE {i}" for spk, ch in CHAPTERS for i in range(14 if spk == "84" else 13)}
CORRUPT = "84-121123-0007"


@dataclasses.dataclass(frozen=True)
class Mirror:
    """The running loopback mirror, the user's own noise folder and the served archives' digests."""

    url: ServedURL
    noise_folder: Path
    md5: dict[str, str]
    sha256: dict[str, str]


def _zip(folder: Path, archive: Path) -> None:
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(folder.parent).as_posix())


@pytest.fixture
def mirror(tmp_path):
    """A loopback mirror serving LibriSpeech dev-clean, two DEMAND zips and the NISQA zip in their true layouts."""
    www = tmp_path / "www"
    www.mkdir()
    src = make_librispeech(tmp_path / "src", texts=TEXTS)
    # one corrupt FLAC (with its transcript line) inside the archive: quarantined, the build goes on
    spk, ch, _ = CORRUPT.split("-")
    (src / "dev-clean" / spk / ch / f"{CORRUPT}.flac").write_bytes(b"fLaC\x00broken")
    with tarfile.open(www / "dev-clean.tar.gz", "w:gz") as tar:
        tar.add(src, arcname="LibriSpeech")
    _zip(make_nisqa(tmp_path / "nisqa_src"), www / "NISQA_Corpus.zip")
    demand = make_demand(tmp_path / "demand_src", envs=("TBUS", "SCAFE"), channels=1)
    for env in ("TBUS", "SCAFE"):
        _zip(demand / env, www / f"{env}_16k.zip")
    noise_dir = tmp_path / "my_noise" / "kitchen"
    noise_dir.mkdir(parents=True)
    sf.write(noise_dir / "fan.wav", (0.01 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32), 16000)
    served = sorted(www.iterdir())
    md5 = {f.name: hashlib.md5(f.read_bytes()).hexdigest() for f in served}
    sha256 = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in served}
    with serve(www) as url:
        yield Mirror(url, tmp_path / "my_noise", md5, sha256)


def _paper(m: Mirror, **over) -> DataConfig:
    corpora = CorporaConfig(
        download_dir="downloads",
        librispeech_subsets=("dev-clean",),
        noise_sources=("folders",),
        noise_folders=(str(m.noise_folder),),
        nisqa_subsets=("NISQA_TRAIN_SIM", "NISQA_VAL_LIVE", "NISQA_TEST_P501"),
        accept_nisqa_licence=True,
        mirrors={"librispeech": str(m.url), "demand": str(m.url), "nisqa": str(m.url)},
        # Two of the forms a user may write: md5:<hex> and a bare hex digest (64 digits: sha256).
        checksums={
            "dev-clean.tar.gz": f"md5:{m.md5['dev-clean.tar.gz']}",
            "NISQA_Corpus.zip": m.sha256["NISQA_Corpus.zip"],
        },
        **over,
    )
    return DataConfig(profile="paper", corpora=corpora)


def test_paper_profile_from_a_mirror_with_its_checksums_prepares_and_is_idempotent(mirror, tmp_path, caplog):
    cfg = _paper(mirror)
    with caplog.at_level(logging.INFO):
        paths = acquire(cfg, 0, tmp_path / "raw", tmp_path / "manifests", root=tmp_path)
    clean = read_manifest(paths["clean"], "clean")
    assert sorted(clean["id"]) == sorted(set(TEXTS) - {CORRUPT})  # every other utterance is kept
    assert sorted(clean["speaker"].unique()) == ["174", "251", "84"]
    quarantine = pd.read_csv(paths["quarantine"])
    assert len(quarantine) == 1 and quarantine["path"].iloc[0].endswith(f"{CORRUPT}.flac")
    assert "not readable as audio" in quarantine["reason"].iloc[0]
    assert len([r for r in caplog.records if CORRUPT in r.getMessage()]) == 1  # one line names it
    noise = read_manifest(paths["noise"], "noise")
    assert list(noise["environment"]) == ["kitchen"]
    mos = read_manifest(paths["mos"], "mos")
    assert set(mos["split"]) == {"train", "val", "test"} and len(mos) == 4
    # manifests point into the download folder, relative to the project root
    assert all(p.startswith("downloads/") for p in pd.concat([clean["path"], mos["path"]]))
    assert json.loads((tmp_path / "raw" / "SOURCES.json").read_text())["profile"] == "paper"
    assert sorted(r.path for r in mirror.url.requests) == ["/NISQA_Corpus.zip", "/dev-clean.tar.gz"]
    # keep_archives is false by default: each archive went once extracted, the corpus is on disk once.
    assert not [p for p in (tmp_path / "downloads").rglob("archives/*") if p.is_file()]
    n_requests = len(mirror.url.requests)
    acquire(cfg, 0, tmp_path / "raw", tmp_path / "manifests", root=tmp_path)
    assert len(mirror.url.requests) == n_requests  # a rerun downloads nothing


def test_keep_archives_keeps_each_downloaded_archive_beside_its_extraction(mirror, tmp_path):
    acquire(_paper(mirror, keep_archives=True), 0, tmp_path / "raw", tmp_path / "manifests", root=tmp_path)
    kept = sorted(p.name for p in (tmp_path / "downloads").rglob("archives/*") if p.is_file())
    assert kept == ["NISQA_Corpus.zip", "dev-clean.tar.gz"]


def test_a_mirror_without_its_checksum_fails_naming_the_setting(mirror, tmp_path):
    # The pinned OpenSLR size and MD5 do not fit the mirror's re-packed archive.
    cfg = _with(_paper(mirror), checksums={})
    with pytest.raises(DownloadError) as err:
        acquire(cfg, 0, tmp_path / "raw", tmp_path / "m", root=tmp_path)
    size = (tmp_path / "www" / "dev-clean.tar.gz").stat().st_size
    assert str(err.value) == (
        f"dev-clean.tar.gz: size mismatch: expected 337926286 bytes, got {size} (pinned for the official "
        "archive; give a mirror's own archive its digest in data.corpora.checksums)"
    )


def test_a_wrong_checksum_fails_on_that_archive_and_keeps_the_others(mirror, tmp_path):
    wrong = "0" * 32
    digests = {
        "dev-clean.tar.gz": mirror.md5["dev-clean.tar.gz"],
        "TBUS_16k.zip": f"sha256:{mirror.sha256['TBUS_16k.zip']}",
        "SCAFE_16k.zip": f"md5:{wrong}",
        "NISQA_Corpus.zip": mirror.md5["NISQA_Corpus.zip"],
    }
    cfg = _with(_paper(mirror), noise_sources=("demand",), demand_environments=("TBUS", "SCAFE"), checksums=digests)
    with pytest.raises(DownloadError) as err:
        acquire(cfg, 0, tmp_path / "raw", tmp_path / "m", root=tmp_path)
    assert str(err.value) == (
        f"SCAFE_16k.zip: md5 mismatch: expected {wrong}, got {mirror.md5['SCAFE_16k.zip']} "
        "(expected value from data.corpora.checksums)"
    )
    downloads = tmp_path / "downloads"
    # Kept: what was extracted before the failure (its archive removed once extracted).
    assert (downloads / "librispeech" / ".dev-clean.tar.gz.extracted").is_file()
    assert (downloads / "demand" / ".TBUS_16k.zip.extracted").is_file()
    assert (downloads / "demand" / "TBUS" / "ch01.wav").is_file()
    assert not [p for p in (downloads / "demand" / "archives").iterdir() if p.is_file()]  # no partial SCAFE left
    assert not (tmp_path / "m").exists()  # no manifest from a partial acquire

    n_requests = len(mirror.url.requests)
    fixed = _with(cfg, checksums={**digests, "SCAFE_16k.zip": mirror.md5["SCAFE_16k.zip"]})
    paths = acquire(fixed, 0, tmp_path / "raw", tmp_path / "m", root=tmp_path)
    # Only what the failed run had not yet fetched: the failed archive and the one after it.
    assert [r.path for r in mirror.url.requests[n_requests:]] == ["/SCAFE_16k.zip", "/NISQA_Corpus.zip"]
    noise = read_manifest(paths["noise"], "noise")
    assert sorted(noise["environment"]) == ["SCAFE", "TBUS"]


def test_a_checksum_for_an_archive_not_downloaded_is_refused_before_any_download(mirror, tmp_path):
    # A typo (or a corpus not configured) would otherwise leave the pinned checksum in force.
    cfg = _paper(mirror)
    typo = _with(cfg, checksums={**cfg.corpora.checksums, "TBUS_16K.zip": mirror.md5["TBUS_16k.zip"]})
    with pytest.raises(ConfigError) as err:
        acquire(typo, 0, tmp_path / "raw", tmp_path / "m", root=tmp_path)
    assert str(err.value) == (
        "data.corpora.checksums: TBUS_16K.zip is not downloaded by this configuration; "
        "it downloads: dev-clean.tar.gz, NISQA_Corpus.zip"
    )
    assert mirror.url.requests == []
    assert not (tmp_path / "downloads").exists()


def _with(cfg: DataConfig, **over) -> DataConfig:
    return dataclasses.replace(cfg, corpora=dataclasses.replace(cfg.corpora, **over))


def test_paper_profile_refuses_nisqa_licence_before_any_download(mirror, tmp_path):
    # The refusal must come before tens of GB of LibriSpeech and noise, not after them.
    url = mirror.url
    cfg = _with(_paper(mirror), accept_nisqa_licence=False)
    with pytest.raises(JsqaError, match=r"NISQA licence not accepted.*accept_nisqa_licence: true"):
        acquire(cfg, 0, tmp_path / "raw", tmp_path / "m", root=tmp_path)
    assert url.requests == []  # nothing was asked of the mirror
    assert not (tmp_path / "downloads").exists()
    assert not (tmp_path / "m").exists()  # and no manifest was written


def test_user_mos_csv_needs_no_nisqa_licence(mirror, tmp_path):
    # With the user's own MOS data NISQA is never fetched, so its licence is not asked for.
    corpus = make_nisqa(tmp_path / "user_mos")
    csv = corpus / "NISQA_corpus_file.csv"
    checksums = {"dev-clean.tar.gz": mirror.md5["dev-clean.tar.gz"]}
    cfg = _with(_paper(mirror), accept_nisqa_licence=False, user_mos_csv=str(csv), checksums=checksums)
    paths = acquire(cfg, 0, tmp_path / "raw", tmp_path / "m", root=tmp_path)
    assert len(read_manifest(paths["mos"], "mos")) > 0
    assert not any(r.path.endswith("NISQA_Corpus.zip") for r in mirror.url.requests)


def test_paper_profile_refuses_unknown_noise(mirror, tmp_path):
    cfg = _paper(mirror)
    with pytest.raises(ConfigError, match="noise_sources"):
        acquire(_with(cfg, noise_sources=("rain",)), 0, tmp_path / "raw", tmp_path / "m", root=tmp_path)


def test_chime3_without_a_local_copy_says_how_to_get_it(mirror, tmp_path):
    cfg = _with(_paper(mirror), noise_sources=("chime3",))
    with pytest.raises(JsqaError, match="LDC2017S24"):
        acquire(cfg, 0, tmp_path / "raw", tmp_path / "m", root=tmp_path)
