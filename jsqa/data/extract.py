"""Safe, idempotent extraction of tar and zip archives.

Every member is checked before anything is written: absolute paths, ``..`` components, links
that resolve outside the target and device files are refused with the member named. The archive
is unpacked into a temporary folder beside the target and its top-level entries are then moved
in, so a truncated archive leaves nothing half-extracted where users look. A marker file records
which archive (size, mtime) was extracted so that a rerun is a no-op.
"""

from __future__ import annotations

import gzip
import logging
import lzma
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from jsqa.errors import ArchiveError
from jsqa.io import read_json, write_json

log = logging.getLogger(__name__)

_TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
_CORRUPT = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError)


def marker_path(archive: Path, target: Path) -> Path:
    """Where :func:`extract` records that ``archive`` was unpacked into ``target``."""
    return Path(target) / f".extracted-{Path(archive).name}.json"


def extract(archive: Path, target: Path) -> Path:
    """Unpack a .tar.gz/.tgz/.tar or .zip ``archive`` into ``target`` safely; return ``target``.

    Raises ArchiveError for an unsupported, truncated, corrupt or unsafe archive; ``target`` then
    holds nothing from it.
    """
    archive, target = Path(archive), Path(target)
    if not archive.is_file():
        raise ArchiveError(f"{archive}: no such archive")
    st = archive.stat()
    stamp = {"archive": archive.name, "size": st.st_size, "mtime": st.st_mtime}
    marker = marker_path(archive, target)
    if _marker_matches(marker, stamp):
        log.info("%s: already extracted into %s", archive.name, target)
        return target

    name = archive.name.lower()
    if name.endswith(".zip"):
        unpack = _unpack_zip
    elif name.endswith(_TAR_SUFFIXES):
        unpack = _unpack_tar
    else:
        raise ArchiveError(f"{archive}: unsupported archive type (expected .tar.gz, .tgz, .tar or .zip)")

    log.info("extracting %s into %s", archive, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.extracting-", dir=target.parent))
    try:
        try:
            members = unpack(archive, staging)
        except _CORRUPT as exc:
            raise ArchiveError(f"{archive}: truncated or corrupt ({exc})") from exc
        target.mkdir(parents=True, exist_ok=True)
        for entry in sorted(staging.iterdir()):
            _merge(entry, target / entry.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    # The marker goes last: a crash before it makes the next run extract again.
    write_json(marker, {**stamp, "members": members})
    log.info("%s: extracted %d members into %s", archive.name, members, target)
    return target


def _marker_matches(marker: Path, stamp: dict) -> bool:
    if not marker.is_file():
        return False
    try:
        recorded = read_json(marker)
    except (OSError, ValueError):
        return False
    return isinstance(recorded, dict) and all(recorded.get(k) == v for k, v in stamp.items())


def _merge(src: Path, dest: Path) -> None:
    """Move ``src`` to ``dest``; folders that already exist are merged (several archives share a root)."""
    if src.is_dir() and not src.is_symlink() and dest.is_dir() and not dest.is_symlink():
        for child in sorted(src.iterdir()):
            _merge(child, dest / child.name)
        return
    if dest.is_dir() and not dest.is_symlink():
        shutil.rmtree(dest)
    os.replace(src, dest)


def _unsafe_name(name: str) -> str | None:
    """Why a member name must not be extracted (None if it is fine)."""
    # Zips made on Windows may use backslashes; tar on Windows may leave a drive letter.
    normalised = name.replace("\\", "/")
    if normalised.startswith("/") or (len(normalised) > 1 and normalised[1] == ":"):
        return "absolute path"
    if ".." in normalised.split("/"):
        return "'..' component"
    return None


def _escapes(link_target: str, relative_to: str) -> bool:
    """True if ``link_target``, read from the archive folder ``relative_to``, leaves the archive root."""
    normalised = link_target.replace("\\", "/")
    if normalised.startswith("/") or (len(normalised) > 1 and normalised[1] == ":"):
        return True
    joined = posixpath.normpath(posixpath.join(relative_to, normalised))
    return joined == ".." or joined.startswith("../")


def _refuse(archive: Path, member: str, why: str) -> ArchiveError:
    return ArchiveError(f"{archive}: refusing member {member!r}: {why}")


def _tar_problem(m: tarfile.TarInfo) -> str | None:
    why = _unsafe_name(m.name)
    if why is None and (m.ischr() or m.isblk() or m.isfifo()):
        why = "device or FIFO file"
    elif why is None and m.issym() and _escapes(m.linkname, posixpath.dirname(m.name)):
        why = f"symlink to {m.linkname!r} points outside the target"
    elif why is None and m.islnk() and (_unsafe_name(m.linkname) or _escapes(m.linkname, "")):
        why = f"hard link to {m.linkname!r} points outside the target"
    return why


def _unpack_tar(archive: Path, dest: Path) -> int:
    count = 0

    def checked(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
        # Members are checked as the stream reaches them (one decompression pass, not two); a
        # refusal part-way is still invisible because ``dest`` is a staging folder.
        nonlocal count
        for m in tar:
            why = _tar_problem(m)
            if why is not None:
                raise _refuse(archive, m.name, why)
            count += 1
            yield m

    with tarfile.open(archive, "r|*") as tar:
        try:
            # Defence in depth: the data filter also strips unsafe modes and ownership.
            tar.extractall(dest, members=checked(tar), filter="data")
        except tarfile.FilterError as exc:
            raise _refuse(archive, getattr(exc.tarinfo, "name", "?"), str(exc)) from exc
    return count


def _unpack_zip(archive: Path, dest: Path) -> int:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:
            why = _unsafe_name(info.filename)
            mode = info.external_attr >> 16
            if why is None and (stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode)):
                why = "device or FIFO file"
            elif why is None and stat.S_ISLNK(mode):
                link = zf.read(info).decode("utf-8", "replace")
                if _escapes(link, posixpath.dirname(info.filename)):
                    why = f"symlink to {link!r} points outside the target"
            if why is not None:
                raise _refuse(archive, info.filename, why)
        # zipfile writes symlink entries as small regular files holding the link text, which is
        # safe; each member's CRC is checked as it is written, so corruption raises here.
        for info in infos:
            zf.extract(info, dest)
    return len(infos)
