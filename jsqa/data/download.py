"""Resumable, checksummed HTTP downloads with mirror fallback.

Bytes stream into ``<filename>.part`` beside the final file and are hashed while they are
written; the part is renamed to its final name only once its size and digests match, so a file
with the final name is always complete. An interrupted transfer (a dropped connection, a killed
process) continues from the part with an HTTP ``Range`` request. :func:`with_overrides` is the one
place where a configuration's mirrors and checksums change what a Remote fetches and expects.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

from tqdm import tqdm

from jsqa.config import parse_digest
from jsqa.data.extract import extract
from jsqa.errors import ConfigError, DownloadError
from jsqa.io import atomic_path

log = logging.getLogger(__name__)

_USER_AGENT = "jsqa-download/0.1 (+urllib)"
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
# The params.yaml key of the user's own archive digests (jsqa.config.CorporaConfig), named in messages.
CHECKSUMS_PARAM = "data.corpora.checksums"


@dataclass(frozen=True)
class Remote:
    """One file to fetch: its name on disk, mirror URLs (tried in order) and what it must match."""

    filename: str
    urls: tuple[str, ...]
    md5: str | None = None
    sha256: str | None = None
    size: int | None = None
    note: str = ""  # where the expected values come from, added to a mismatch error


def with_overrides(
    remote: Remote, base_urls: str | Sequence[str] | None = None, checksums: Mapping[str, str] | None = None
) -> Remote:
    """``remote`` as a configuration asks for it: its mirrors and its own checksum.

    ``base_urls`` (one, or several tried in order) replace the URLs with ``<base>/<filename>``;
    the pinned md5 / sha256 / size stay, as a mirror normally serves the same archive. An entry
    for the file name in ``checksums`` (``md5:<hex>``, ``sha256:<hex>`` or bare hex, see
    :func:`jsqa.config.parse_digest`) replaces the pinned digests and the size: a re-packed
    archive has other bytes and another size.
    """
    if isinstance(base_urls, str):
        base_urls = [base_urls]
    if base_urls:
        remote = replace(remote, urls=tuple(f"{b.rstrip('/')}/{remote.filename}" for b in base_urls))
        if remote.md5 or remote.sha256 or remote.size is not None:
            note = f"pinned for the official archive; give a mirror's own archive its digest in {CHECKSUMS_PARAM}"
            remote = replace(remote, note=note)
    value = (checksums or {}).get(remote.filename)
    if value is None:
        return remote
    try:
        algorithm, digest = parse_digest(value)
    except ValueError as exc:
        raise ConfigError(f"{CHECKSUMS_PARAM}.{remote.filename}: {exc}, got {value!r}") from exc
    return replace(
        remote,
        md5=digest if algorithm == "md5" else None,
        sha256=digest if algorithm == "sha256" else None,
        size=None,
        note=f"expected value from {CHECKSUMS_PARAM}",
    )


def check_override_names(checksums: Mapping[str, str], filenames: Iterable[str]) -> None:
    """Raise ConfigError when ``checksums`` names a file outside ``filenames``, the archives a
    configuration downloads: a mistyped name would otherwise leave the pinned checksum in force."""
    names = list(dict.fromkeys(filenames))
    unknown = sorted(set(checksums) - set(names))
    if unknown:
        raise ConfigError(
            f"{CHECKSUMS_PARAM}: {', '.join(unknown)} is not downloaded by this configuration; "
            f"it downloads: {', '.join(names) or 'nothing'}"
        )


class _MirrorFailed(Exception):
    """This URL cannot deliver the file; the caller moves on to the next mirror."""


class _Dropped(Exception):
    """The connection ended before the response body was complete; worth a resumed retry."""


class _Hashes:
    """The digests a Remote asks for, fed incrementally."""

    def __init__(self, remote: Remote) -> None:
        self._remote = remote
        self.reset()

    def reset(self) -> None:
        self.md5 = hashlib.md5(usedforsecurity=False) if self._remote.md5 else None
        self.sha256 = hashlib.sha256() if self._remote.sha256 else None

    def update(self, chunk: bytes) -> None:
        if self.md5 is not None:
            self.md5.update(chunk)
        if self.sha256 is not None:
            self.sha256.update(chunk)

    def feed_file(self, path: Path, chunk_size: int) -> None:
        with open(path, "rb") as f:
            while chunk := f.read(chunk_size):
                self.update(chunk)


def download(
    remote: Remote,
    dest_dir: Path,
    *,
    progress: bool = True,
    chunk_size: int = 1 << 20,
    timeout: float = 60.0,
    retries: int = 3,
) -> Path:
    """Fetch ``remote`` into ``dest_dir`` and return the verified file's path.

    A file already present that verifies is returned without network access. ``retries`` bounds
    the resumed attempts per mirror after a dropped connection. Raises DownloadError when every
    mirror fails or the bytes do not match the expected size or digests.
    """
    if not remote.urls:
        raise DownloadError(f"{remote.filename}: no URL to download from")
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / remote.filename
    part = dest_dir / f"{remote.filename}.part"

    if final.is_file():
        problem = _check_file(final, remote, chunk_size)
        if problem is None:
            log.info("%s: already complete", final)
            return final
        log.warning("%s exists but %s; downloading it again", final, problem)

    hashes = _Hashes(remote)
    if part.is_file() and remote.size is not None and part.stat().st_size > remote.size:
        log.warning("%s is larger than the expected %d bytes; starting over", part, remote.size)
        part.unlink()
    if part.is_file():
        hashes.feed_file(part, chunk_size)

    failures: list[str] = []
    for url in remote.urls:
        if remote.size is not None and part.is_file() and part.stat().st_size == remote.size:
            break  # a complete part from an earlier run needs no request, only verification
        try:
            _fetch_with_retries(
                url, part, remote, hashes, progress=progress, chunk_size=chunk_size, timeout=timeout, retries=retries
            )
            break
        except _MirrorFailed as exc:
            log.warning("%s: %s failed: %s", remote.filename, url, exc)
            failures.append(f"{url} ({exc})")
    else:
        raise DownloadError(f"{remote.filename}: every mirror failed: " + "; ".join(failures))

    _verify_part(part, remote, hashes)
    os.replace(part, final)
    log.info("%s: downloaded and verified", final)
    return final


def _fetch_with_retries(
    url: str,
    part: Path,
    remote: Remote,
    hashes: _Hashes,
    *,
    progress: bool,
    chunk_size: int,
    timeout: float,
    retries: int,
) -> None:
    """Transfer from one URL into ``part``, resuming after dropped connections up to ``retries`` times."""
    for attempt in range(retries + 1):
        try:
            _fetch(url, part, remote, hashes, progress=progress, chunk_size=chunk_size, timeout=timeout)
            return
        except _Dropped as exc:
            have = part.stat().st_size if part.exists() else 0
            if attempt == retries:
                raise _MirrorFailed(f"connection dropped {retries + 1} times, last: {exc}") from exc
            log.warning("%s: connection dropped at %d bytes (%s); resuming", remote.filename, have, exc)


def _fetch(
    url: str, part: Path, remote: Remote, hashes: _Hashes, *, progress: bool, chunk_size: int, timeout: float
) -> None:
    """One HTTP request; appends to ``part`` (or restarts it) and feeds ``hashes``."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset:
            # The server has nothing past our offset: the part is presumably whole; verify decides.
            log.info("%s: server reports the part is complete (416)", remote.filename)
            return
        raise _MirrorFailed(f"HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise _MirrorFailed(f"cannot connect: {reason}") from exc

    with response:
        status = response.status
        if status == 206:
            start = _range_start(response.headers.get("Content-Range"))
            if start != offset:
                raise _MirrorFailed(f"bad Content-Range {response.headers.get('Content-Range')!r}")
            mode = "ab"
        elif status == 200:
            if offset:
                log.warning("%s: server ignored the Range request; restarting from zero", remote.filename)
            offset = 0
            hashes.reset()
            mode = "wb"
        else:
            raise _MirrorFailed(f"unexpected HTTP {status}")

        length = response.headers.get("Content-Length")
        expected = int(length) if length is not None and length.isdigit() else None
        total = remote.size if remote.size is not None else (offset + expected if expected is not None else None)
        show = progress and sys.stderr.isatty()
        with (
            open(part, mode) as out,
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=remote.filename,
                disable=not show,
                leave=False,
            ) as bar,
        ):
            received = _copy(response, out, hashes, bar, chunk_size)
    if expected is not None and received < expected:
        raise _Dropped(f"got {received} of {expected} bytes")


def _copy(response: http.client.HTTPResponse, out: IO[bytes], hashes: _Hashes, bar: tqdm, chunk_size: int) -> int:
    """Stream the body to ``out``; return the byte count. Connection errors become _Dropped."""
    received = 0
    try:
        while chunk := response.read(chunk_size):
            out.write(chunk)
            hashes.update(chunk)
            received += len(chunk)
            bar.update(len(chunk))
    except (OSError, http.client.HTTPException) as exc:
        # Flush what arrived so the part on disk agrees with the digests fed so far.
        out.flush()
        raise _Dropped(str(exc) or type(exc).__name__) from exc
    return received


def _range_start(content_range: str | None) -> int | None:
    match = _CONTENT_RANGE.match(content_range or "")
    return int(match.group(1)) if match else None


def _check_file(path: Path, remote: Remote, chunk_size: int) -> str | None:
    """Why ``path`` does not match ``remote`` (None when it does): size first, it costs nothing."""
    size = path.stat().st_size
    if remote.size is not None and size != remote.size:
        return f"has {size} bytes, expected {remote.size}"
    if remote.md5 or remote.sha256:
        hashes = _Hashes(remote)
        hashes.feed_file(path, chunk_size)
        return _digest_problem(remote, hashes)
    return None


def _digest_problem(remote: Remote, hashes: _Hashes) -> str | None:
    # _Hashes hashes exactly the digests the remote names, so each expected value is set here.
    if hashes.md5 is not None and remote.md5 and hashes.md5.hexdigest() != remote.md5.lower():
        return f"md5 mismatch: expected {remote.md5.lower()}, got {hashes.md5.hexdigest()}"
    if hashes.sha256 is not None and remote.sha256 and hashes.sha256.hexdigest() != remote.sha256.lower():
        return f"sha256 mismatch: expected {remote.sha256.lower()}, got {hashes.sha256.hexdigest()}"
    return None


def _verify_part(part: Path, remote: Remote, hashes: _Hashes) -> None:
    """Raise DownloadError (removing the part) unless its size and digests match."""
    if not part.is_file():
        raise DownloadError(f"{remote.filename}: the server sent no data")
    size = part.stat().st_size
    problem = None
    if remote.size is not None and size != remote.size:
        problem = f"size mismatch: expected {remote.size} bytes, got {size}"
    else:
        problem = _digest_problem(remote, hashes)
    if problem is not None:
        part.unlink(missing_ok=True)
        note = f" ({remote.note})" if remote.note else ""
        raise DownloadError(f"{remote.filename}: {problem}{note}")


def fetch_and_extract(remote: Remote, target_dir: Path, *, progress: bool = True, keep_archive: bool = True) -> None:
    """Download ``remote`` into ``target_dir/archives`` and extract it into ``target_dir``, once.

    A marker written after a successful extraction makes a repeat call return without touching
    the network or re-checking a multi-GB archive. ``keep_archive=False`` then deletes the
    archive, so a corpus takes its extracted size on disk, not twice that.
    """
    target_dir = Path(target_dir)
    marker = target_dir / f".{remote.filename}.extracted"
    if marker.is_file():
        log.info("%s already extracted in %s", remote.filename, target_dir)
        return
    archive = download(remote, target_dir / "archives", progress=progress)
    extract(archive, target_dir)
    with atomic_path(marker) as tmp:
        tmp.write_text(f"{remote.md5 or remote.sha256 or ''}\n")
    if not keep_archive:
        archive.unlink()
        log.info("%s extracted; archive removed (data.corpora.keep_archives: false)", remote.filename)
