"""LibriSpeech recipe: manifest from the true layout, quarantine, download from a loopback mirror."""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from httpserver import serve

from jsqa.data.librispeech import SUBSETS, download_librispeech, prepare_librispeech
from jsqa.data.manifests import CLEAN_COLUMNS, read_manifest, write_manifest
from jsqa.errors import ConfigError, DownloadError, ManifestError

TEXTS = {
    "84-121123-0000": "GO DO YOU HEAR",
    "84-121123-0001": "BUT IN LESS THAN FIVE MINUTES THE STAIRCASE GROANED",
    "174-50561-0000": "FORGOTTEN TOO THE NAME OF GILLIAN THE LOVELY CAPTIVE",
}


def make_librispeech(base: Path, subset: str = "dev-clean", texts: dict[str, str] = TEXTS) -> Path:
    """A miniature LibriSpeech tree under ``base``: base/LibriSpeech/<subset>/<spk>/<ch>/..."""
    rng = np.random.default_rng(0)
    corpus = base / "LibriSpeech"
    chapters: dict[Path, list[str]] = {}
    for utt, text in texts.items():
        spk, ch, _ = utt.split("-")
        folder = corpus / subset / spk / ch
        folder.mkdir(parents=True, exist_ok=True)
        sf.write(
            folder / f"{utt}.flac", (0.1 * rng.standard_normal(1600 + 160 * len(chapters))).astype(np.float32), 16000
        )
        chapters.setdefault(folder, []).append(f"{utt} {text}")
    for folder, lines in chapters.items():
        (folder / f"{folder.parent.name}-{folder.name}.trans.txt").write_text("\n".join(lines) + "\n")
    return corpus


def test_subsets_table_has_checksums_and_all_mirrors() -> None:
    assert set(SUBSETS) == {"dev-clean", "test-clean", "train-clean-100", "train-clean-360", "train-other-500"}
    r = SUBSETS["train-clean-100"]
    assert r.md5 == "2a93770f6d5c6c964bc36631d331a522" and r.size == 6_387_309_499 and r.sha256
    assert r.urls[0] == "https://www.openslr.org/resources/12/train-clean-100.tar.gz"
    assert {u.split("/")[2] for u in r.urls} == {
        "www.openslr.org",
        "us.openslr.org",
        "openslr.elda.org",
        "openslr.trmal.net",
    }


def test_prepare_reads_ids_speakers_chapters_and_text(tmp_path: Path) -> None:
    corpus = make_librispeech(tmp_path)
    manifest, quarantine = prepare_librispeech(corpus, ["dev-clean"], root=tmp_path, workers=2)
    assert quarantine == []
    assert list(manifest.columns[: len(CLEAN_COLUMNS)]) == CLEAN_COLUMNS
    rows = manifest.set_index("id")
    assert set(rows.index) == set(TEXTS)
    assert rows.loc["174-50561-0000", "speaker"] == "174"
    assert rows.loc["174-50561-0000", "chapter"] == "50561"
    assert rows.loc["84-121123-0001", "text"] == TEXTS["84-121123-0001"]
    assert (rows["subset"] == "dev-clean").all()
    assert rows.loc["84-121123-0000", "path"] == "LibriSpeech/dev-clean/84/121123/84-121123-0000.flac"
    assert rows.loc["84-121123-0000", "duration"] == pytest.approx(0.1)
    assert (rows["sample_rate"] == 16000).all()
    # The manifest satisfies the clean contract the rest of the pipeline reads.
    write_manifest(tmp_path / "clean.parquet", manifest, "clean")
    assert len(read_manifest(tmp_path / "clean.parquet", "clean")) == 3


def test_corrupt_flac_is_quarantined_and_the_build_goes_on(tmp_path: Path) -> None:
    corpus = make_librispeech(tmp_path)
    bad = corpus / "dev-clean/84/121123/84-121123-0001.flac"
    bad.write_bytes(b"fLaC" + b"\x00" * 40)
    manifest, quarantine = prepare_librispeech(tmp_path, ["dev-clean"], root=tmp_path)
    assert sorted(manifest["id"]) == ["174-50561-0000", "84-121123-0000"]
    assert len(quarantine) == 1
    assert quarantine[0]["path"].endswith("84-121123-0001.flac")
    assert "not readable as audio" in quarantine[0]["reason"]


def test_unknown_subset_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="dev-cleen.*known: dev-clean, test-clean"):
        prepare_librispeech(make_librispeech(tmp_path), ["dev-cleen"])
    with pytest.raises(ConfigError, match="known:"):
        download_librispeech(tmp_path, ["train-clean-99"])


def test_missing_subset_folder_says_to_download(tmp_path: Path) -> None:
    corpus = make_librispeech(tmp_path)
    with pytest.raises(ManifestError, match="test-clean.*run download_librispeech"):
        prepare_librispeech(corpus, ["dev-clean", "test-clean"])


def test_download_from_mirror_then_rerun_is_a_noop(tmp_path: Path) -> None:
    # Build dev-clean.tar.gz in the true layout (LibriSpeech/dev-clean/...) and give its own md5.
    src = make_librispeech(tmp_path / "src")
    served = tmp_path / "www"
    served.mkdir()
    archive = served / "dev-clean.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="LibriSpeech")
    checksums = {"dev-clean.tar.gz": f"md5:{hashlib.md5(archive.read_bytes()).hexdigest()}"}
    target = tmp_path / "data"
    with serve(served) as dead:
        pass  # ``dead`` is now closed: it refuses connections, as a mirror that is down would
    with serve(served) as url:
        out = download_librispeech(target, ["dev-clean"], base_urls=[dead, url], checksums=checksums, progress=False)
        assert [r.status for r in url.requests] == [200]
    assert out == target / "LibriSpeech"
    assert (target / "archives" / "dev-clean.tar.gz").is_file()
    manifest, _ = prepare_librispeech(out, ["dev-clean"], root=tmp_path)
    assert sorted(manifest["id"]) == sorted(TEXTS)
    stamp = (out / "dev-clean/84/121123/84-121123-0000.flac").stat().st_mtime_ns
    # Second run with every mirror down: nothing is fetched or rewritten.
    assert download_librispeech(target, ["dev-clean"], base_urls=[dead], checksums=checksums, progress=False) == out
    assert (out / "dev-clean/84/121123/84-121123-0000.flac").stat().st_mtime_ns == stamp


def test_download_rejects_a_tampered_archive(tmp_path: Path) -> None:
    served = tmp_path / "www"
    served.mkdir()
    (served / "dev-clean.tar.gz").write_bytes(b"not the real archive")
    with serve(served) as url:
        # The pinned OpenSLR values hold on a mirror; the error says how to give the mirror's own.
        with pytest.raises(
            DownloadError, match=r"size mismatch: expected 337926286 bytes, got 20 .*data\.corpora\.checksums"
        ):
            download_librispeech(tmp_path / "data", ["dev-clean"], base_urls=[url], progress=False)
        with pytest.raises(DownloadError, match=r"md5 mismatch: expected 0{32}, got "):
            download_librispeech(
                tmp_path / "data",
                ["dev-clean"],
                base_urls=url,
                checksums={"dev-clean.tar.gz": "0" * 32},
                progress=False,
            )
    assert not (tmp_path / "data" / "LibriSpeech").exists()
