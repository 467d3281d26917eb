"""Resumable, checksummed downloads against a real loopback HTTP server."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from httpserver import serve

from jsqa.data.download import Remote, download, with_overrides
from jsqa.errors import ConfigError, DownloadError

NAME = "dev-clean.tar.gz"


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    """A miniature dev-clean.tar.gz in the LibriSpeech layout, served from ``tmp_path/www``."""
    www = tmp_path / "www"
    www.mkdir()
    rng = np.random.default_rng(0)
    path = www / NAME
    with tarfile.open(path, "w:gz") as tar:
        # Incompressible bytes so the archive is large enough to cut in the middle.
        for utt in range(2):
            _add(tar, f"LibriSpeech/dev-clean/84/121123/84-121123-{utt:04d}.flac", rng.bytes(60_000))
        _add(
            tar,
            "LibriSpeech/dev-clean/84/121123/84-121123.trans.txt",
            b"84-121123-0000 GO DO YOU HEAR\n84-121123-0001 BUT IN LESS THAN FIVE MINUTES\n",
        )
    return path


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _remote(
    path: Path, *urls: str, md5: str | None = "auto", sha256: str | None = "auto", size: int | str | None = "auto"
) -> Remote:
    data = path.read_bytes()
    return Remote(
        filename=path.name,
        urls=tuple(urls),
        md5=hashlib.md5(data).hexdigest() if md5 == "auto" else md5,
        sha256=hashlib.sha256(data).hexdigest() if sha256 == "auto" else sha256,
        size=len(data) if size == "auto" else size,
    )


def test_clean_download_verifies_and_lands_atomically(archive: Path, tmp_path: Path) -> None:
    dest = tmp_path / "downloads"
    with serve(archive.parent) as url:
        got = download(_remote(archive, f"{url}/{NAME}"), dest, progress=False, chunk_size=8192)
    assert got == dest / NAME
    assert got.read_bytes() == archive.read_bytes()
    assert [p.name for p in dest.iterdir()] == [NAME]  # no .part left behind


def test_dropped_connection_resumes_with_range(archive: Path, tmp_path: Path) -> None:
    half = archive.stat().st_size // 2
    with serve(archive.parent, cut_after=half) as url:
        got = download(_remote(archive, f"{url}/{NAME}"), tmp_path / "dl", progress=False, chunk_size=4096)
        seen = list(url.requests)
    assert got.read_bytes() == archive.read_bytes()
    assert [r.range for r in seen] == [None, f"bytes={half}-"]
    assert [r.status for r in seen] == [200, 206]


def test_rerun_after_failed_run_continues_from_part(archive: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dl"
    half = archive.stat().st_size // 2
    remote = None
    with serve(archive.parent, cut_after=half) as url:
        remote = _remote(archive, f"{url}/{NAME}")
        with pytest.raises(DownloadError, match="connection dropped"):
            download(remote, dest, progress=False, retries=0)
        assert (dest / f"{NAME}.part").stat().st_size == half
        assert not (dest / NAME).exists()
        got = download(remote, dest, progress=False)
        assert url.requests[-1].range == f"bytes={half}-"
    assert got.read_bytes() == archive.read_bytes()


def test_second_call_makes_no_request(archive: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dl"
    with serve(archive.parent) as url:
        remote = _remote(archive, f"{url}/{NAME}")
        download(remote, dest, progress=False)
        mtime = (dest / NAME).stat().st_mtime_ns
        assert download(remote, dest, progress=False) == dest / NAME
        assert len(url.requests) == 1
    # With the size alone known, an existing file of that size is trusted as well.
    assert (
        download(_remote(archive, "http://127.0.0.1:9/unreachable", md5=None, sha256=None), dest, progress=False)
        .stat()
        .st_mtime_ns
        == mtime
    )


def test_checksum_mismatch_removes_part_and_nothing_else(archive: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dl"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    wrong = "0" * 32
    with serve(archive.parent) as url:
        remote = _remote(archive, f"{url}/{NAME}", md5=wrong)
        with pytest.raises(DownloadError) as err:
            download(remote, dest, progress=False)
    actual = hashlib.md5(archive.read_bytes()).hexdigest()
    assert NAME in str(err.value) and wrong in str(err.value) and actual in str(err.value)
    assert sorted(p.name for p in dest.iterdir()) == ["keep.txt"]
    assert (dest / "keep.txt").read_text() == "mine"


def test_size_mismatch_is_refused(archive: Path, tmp_path: Path) -> None:
    with serve(archive.parent) as url:
        remote = _remote(archive, f"{url}/{NAME}", md5=None, sha256=None, size=archive.stat().st_size + 1)
        with pytest.raises(DownloadError, match="size mismatch"):
            download(remote, tmp_path / "dl", progress=False)
    assert list((tmp_path / "dl").iterdir()) == []


@pytest.mark.parametrize("code", [404, 500])
def test_failing_mirror_falls_through_to_next(archive: Path, tmp_path: Path, code: int) -> None:
    bad = "/bad/" + NAME
    with serve(archive.parent, status={bad: code}) as url:
        got = download(_remote(archive, url + bad, f"{url}/{NAME}"), tmp_path / "dl", progress=False)
        assert [(r.path, r.status) for r in url.requests] == [(bad, code), ("/" + NAME, 200)]
    assert got.read_bytes() == archive.read_bytes()


def test_all_mirrors_failing_lists_each_reason(archive: Path, tmp_path: Path) -> None:
    with serve(archive.parent) as dead:
        refused = f"{dead}/{NAME}"  # nothing listens here once the server has stopped
    with serve(archive.parent, status={"/x/" + NAME: 500}) as url:
        urls = (refused, f"{url}/x/{NAME}", f"{url}/missing/{NAME}")
        with pytest.raises(DownloadError) as err:
            download(_remote(archive, *urls), tmp_path / "dl", progress=False, timeout=5)
    message = str(err.value)
    assert all(u in message for u in urls)
    assert "cannot connect" in message and "HTTP 500" in message and "HTTP 404" in message


def test_server_ignoring_range_restarts_from_zero(archive: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dl"
    dest.mkdir()
    # A stale part whose bytes are wrong: only a restart from zero can give the right digest.
    (dest / f"{NAME}.part").write_bytes(b"\xff" * 1000)
    with serve(archive.parent, ignore_range=True) as url:
        got = download(_remote(archive, f"{url}/{NAME}"), dest, progress=False)
        assert [(r.range, r.status) for r in url.requests] == [("bytes=1000-", 200)]
    assert got.read_bytes() == archive.read_bytes()


def test_complete_part_answered_416_is_verified(archive: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dl"
    dest.mkdir()
    (dest / f"{NAME}.part").write_bytes(archive.read_bytes())
    with serve(archive.parent) as url:
        # Size unknown, so the part cannot be judged complete without asking the server.
        got = download(_remote(archive, f"{url}/{NAME}", size=None), dest, progress=False)
        assert [r.status for r in url.requests] == [416]
    assert got.read_bytes() == archive.read_bytes()
    assert not (dest / f"{NAME}.part").exists()


def test_corrupt_existing_file_is_fetched_again(archive: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dl"
    dest.mkdir()
    (dest / NAME).write_bytes(b"not the archive")
    with serve(archive.parent) as url:
        got = download(_remote(archive, f"{url}/{NAME}"), dest, progress=False)
        assert len(url.requests) == 1
    assert got.read_bytes() == archive.read_bytes()


def test_overrides_keep_pinned_values_on_a_mirror_and_replace_them_with_a_checksum() -> None:
    pinned = Remote("a.tar.gz", ("https://origin/a.tar.gz",), md5="a" * 32, sha256="b" * 64, size=10)
    mirrored = with_overrides(pinned, ["http://m1/", "http://m2"])
    assert mirrored.urls == ("http://m1/a.tar.gz", "http://m2/a.tar.gz")
    assert (mirrored.md5, mirrored.sha256, mirrored.size) == (pinned.md5, pinned.sha256, 10)
    assert with_overrides(pinned, None, {"other.zip": "c" * 32}) == pinned
    # A re-packed archive: its own digest replaces every pinned digest and the size.
    own = with_overrides(pinned, "http://m1", {"a.tar.gz": "SHA256:" + "C" * 64})
    assert (own.urls, own.md5, own.sha256, own.size) == (("http://m1/a.tar.gz",), None, "c" * 64, None)
    bare = with_overrides(pinned, None, {"a.tar.gz": "d" * 32})
    assert (bare.urls, bare.md5, bare.sha256, bare.size) == (pinned.urls, "d" * 32, None, None)
    with pytest.raises(ConfigError, match=r"data\.corpora\.checksums\.a\.tar\.gz: .*40"):
        with_overrides(pinned, None, {"a.tar.gz": "e" * 40})
