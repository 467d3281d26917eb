"""Safe, idempotent extraction of the corpus archives (miniatures in their true layouts)."""

from __future__ import annotations

import io
import json
import os
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jsqa.data.extract import extract, marker_path
from jsqa.errors import ArchiveError

CHAPTER = "LibriSpeech/{subset}/84/121123"


def _flac_bytes(seconds: float = 0.2, sr: int = 16000) -> bytes:
    buf = io.BytesIO()
    x = 0.1 * np.sin(2 * np.pi * 220 * np.arange(int(seconds * sr)) / sr)
    sf.write(buf, x.astype(np.float32), sr, format="FLAC")
    return buf.getvalue()


def _wav_bytes(seconds: float = 0.2, sr: int = 16000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.zeros(int(seconds * sr), np.float32), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes = b"x", **attrs: object) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data) if not attrs else 0
    for key, value in attrs.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data) if info.size else None)


def _librispeech(path: Path, subset: str = "dev-clean") -> Path:
    chapter = CHAPTER.format(subset=subset)
    with tarfile.open(path, "w:gz") as tar:
        _add(tar, f"{chapter}/84-121123-0000.flac", _flac_bytes())
        _add(tar, f"{chapter}/84-121123.trans.txt", b"84-121123-0000 GO DO YOU HEAR\n")
    return path


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return path


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_librispeech_tar_extracts_in_its_layout(tmp_path: Path) -> None:
    archive = _librispeech(tmp_path / "dev-clean.tar.gz")
    target = tmp_path / "raw"
    assert extract(archive, target) == target
    chapter = target / CHAPTER.format(subset="dev-clean")
    audio, sr = sf.read(chapter / "84-121123-0000.flac")
    assert sr == 16000 and len(audio) == 3200
    assert (chapter / "84-121123.trans.txt").read_text().startswith("84-121123-0000 GO")
    marker = json.loads(marker_path(archive, target).read_text())
    assert marker["size"] == archive.stat().st_size and marker["members"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dev-clean.tar.gz", "raw"]  # no staging left


def test_archives_sharing_a_root_are_merged(tmp_path: Path) -> None:
    target = tmp_path / "raw"
    extract(_librispeech(tmp_path / "dev-clean.tar.gz", "dev-clean"), target)
    extract(_librispeech(tmp_path / "test-clean.tar.gz", "test-clean"), target)
    assert sorted(p.name for p in (target / "LibriSpeech").iterdir()) == ["dev-clean", "test-clean"]


def test_demand_zip_extracts(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "TBUS_16k.zip", {"TBUS/ch01.wav": _wav_bytes(), "TBUS/ch02.wav": _wav_bytes()})
    target = extract(archive, tmp_path / "noise")
    assert _listing(target) == [".extracted-TBUS_16k.zip.json", "TBUS", "TBUS/ch01.wav", "TBUS/ch02.wav"]
    assert sf.info(target / "TBUS" / "ch01.wav").samplerate == 16000


def test_truncated_tar_gz_leaves_nothing(tmp_path: Path) -> None:
    good = _librispeech(tmp_path / "good.tar.gz")
    archive = tmp_path / "dev-clean.tar.gz"
    archive.write_bytes(good.read_bytes()[: good.stat().st_size * 2 // 3])
    target = tmp_path / "out" / "raw"
    with pytest.raises(ArchiveError, match=r"dev-clean\.tar\.gz.*truncated or corrupt"):
        extract(archive, target)
    assert not target.exists() or _listing(target) == []
    assert list((tmp_path / "out").iterdir()) in ([], [target])  # the staging folder is gone


def test_truncated_zip_is_refused(tmp_path: Path) -> None:
    good = _zip(tmp_path / "good.zip", {"TBUS/ch01.wav": _wav_bytes()})
    archive = tmp_path / "TBUS_16k.zip"
    archive.write_bytes(good.read_bytes()[:-30])
    with pytest.raises(ArchiveError, match=r"TBUS_16k\.zip.*truncated or corrupt"):
        extract(archive, tmp_path / "noise")
    assert not (tmp_path / "noise" / "TBUS").exists()


@pytest.mark.parametrize(
    ("member", "attrs", "why"),
    [
        ("../escape.txt", {}, "'..'"),
        ("LibriSpeech/../../escape.txt", {}, "'..'"),
        ("/tmp/jsqa-absolute.txt", {}, "absolute"),
        ("LibriSpeech/link", {"type": tarfile.SYMTYPE, "linkname": "../../outside"}, "symlink"),
        ("LibriSpeech/abs-link", {"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"}, "symlink"),
        ("LibriSpeech/hard", {"type": tarfile.LNKTYPE, "linkname": "../outside"}, "hard link"),
        ("LibriSpeech/dev", {"type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3}, "device"),
    ],
)
def test_unsafe_tar_member_is_refused(tmp_path: Path, member: str, attrs: dict, why: str) -> None:
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        _add(tar, "LibriSpeech/dev-clean/ok.txt", b"fine")
        _add(tar, member, b"bad", **attrs)
    target = tmp_path / "box" / "raw"
    with pytest.raises(ArchiveError, match=why) as err:
        extract(archive, target)
    assert repr(member) in str(err.value)
    assert not target.exists()
    assert list((tmp_path / "box").iterdir()) == []
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "box" / "escape.txt").exists()


def test_links_inside_the_target_are_allowed(tmp_path: Path) -> None:
    archive = tmp_path / "links.tar"
    with tarfile.open(archive, "w") as tar:
        _add(tar, "root/a.txt", b"content")
        _add(tar, "root/sub/b.txt", type=tarfile.SYMTYPE, linkname="../a.txt")
        _add(tar, "root/c.txt", type=tarfile.LNKTYPE, linkname="root/a.txt")
    target = extract(archive, tmp_path / "out")
    assert (target / "root" / "sub" / "b.txt").read_text() == "content"
    assert (target / "root" / "c.txt").read_text() == "content"


@pytest.mark.parametrize(
    ("member", "why"), [("../escape.txt", "'..'"), ("/abs/evil.txt", "absolute"), ("TBUS\\..\\..\\escape.txt", "'..'")]
)
def test_zip_traversal_is_refused(tmp_path: Path, member: str, why: str) -> None:
    archive = _zip(tmp_path / "TBUS_16k.zip", {"TBUS/ch01.wav": _wav_bytes(), member: b"bad"})
    target = tmp_path / "box" / "noise"
    with pytest.raises(ArchiveError, match=why) as err:
        extract(archive, target)
    assert repr(member) in str(err.value)
    assert list((tmp_path / "box").iterdir()) == []
    assert not (tmp_path / "escape.txt").exists()


def test_zip_symlink_outside_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "links.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("TBUS/link")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "../../outside")
    with pytest.raises(ArchiveError, match="symlink") as err:
        extract(archive, tmp_path / "noise")
    assert "'TBUS/link'" in str(err.value)


def test_extraction_is_idempotent_via_marker(tmp_path: Path) -> None:
    archive = _librispeech(tmp_path / "dev-clean.tar.gz")
    target = tmp_path / "raw"
    extract(archive, target)
    transcript = target / CHAPTER.format(subset="dev-clean") / "84-121123.trans.txt"
    transcript.write_text("edited by the user\n")
    marker = marker_path(archive, target)
    before = marker.read_text()
    extract(archive, target)  # marker matches: nothing is touched
    assert transcript.read_text() == "edited by the user\n"
    assert marker.read_text() == before
    # A different archive under the same name (new mtime) is extracted again.
    st = archive.stat()
    os.utime(archive, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    extract(archive, target)
    assert transcript.read_text().startswith("84-121123-0000 GO")


def test_unsupported_or_missing_archive(tmp_path: Path) -> None:
    rar = tmp_path / "corpus.rar"
    rar.write_bytes(b"Rar!")
    with pytest.raises(ArchiveError, match="unsupported"):
        extract(rar, tmp_path / "out")
    with pytest.raises(ArchiveError, match="no such archive"):
        extract(tmp_path / "absent.zip", tmp_path / "out")
