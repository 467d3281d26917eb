"""File helpers: atomic writes (a temporary sibling, then a rename, so a crash leaves no half file),
JSON/parquet/CSV reading and writing, and file hashes."""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jsqa.errors import JsqaError

if TYPE_CHECKING:  # imported where used: pair-rendering workers import this module without pandas
    import pandas as pd


# Bytes per read when hashing: bounded memory for any file size.
HASH_CHUNK = 1 << 20

# Temporary names: unique within a process by the counter, across processes by the pid.
_tmp_ids = itertools.count()


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    The temporary name keeps the final suffix (writers such as soundfile pick the format
    from it). On an exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    if not path.parent.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
    end = suffix if suffix is not None else path.suffix
    while True:
        tmp_path = path.with_name(f".{path.name}.{os.getpid()}-{next(_tmp_ids)}{end}")
        try:
            # Created as open() would (0666 less the umask), exclusively: never someone else's.
            os.close(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:  # left by a killed run whose pid came round again
            continue
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; on success it replaces ``path`` whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_stale_temp_dirs(path: str | Path) -> list[Path]:
    """Remove the temporary folders :func:`atomic_dir` left beside ``path`` when its process was killed.

    Only for a caller that is the sole writer of ``path`` (a DVC stage, under DVC's lock): another
    writer's folder in progress would go too. Returns what was removed.
    """
    path = Path(path)
    stale = [p for p in path.parent.glob(f".{path.name}.*") if p.is_dir()] if path.parent.is_dir() else []
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return stale


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically (sorted keys, so DVC hashes are stable)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write bytes atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def save_torch(path: str | Path, obj: Any) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically, the same object always giving the same bytes.

    Saved to memory first: torch's zip archive records a name derived from the file it writes
    to, and the temporary name holds the pid, so saving straight to it would make every file
    differ (DVC would rerun downstream stages and the registry would see a new model).
    """
    import torch  # here, not at the top: pair-rendering workers import this module without torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getvalue())


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes; JsqaError naming the file when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(HASH_CHUNK), b""):
                digest.update(block)
    except OSError as exc:
        raise JsqaError(f"{path}: cannot hash ({exc.strerror or exc.__class__.__name__})") from None
    return digest.hexdigest()


def read_parquet(path: str | Path) -> pd.DataFrame:
    """Read a parquet file into a DataFrame (what ``pd.read_parquet`` gives for one file).

    Read through ``ParquetFile``: ``pd.read_parquet`` first imports pyarrow's dataset
    machinery (about 30 ms of CPU per process) to read what is always a single file here.
    """
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).read().to_pandas()


def write_parquet(path: str | Path, df: pd.DataFrame) -> None:
    """Write a DataFrame as parquet atomically."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def write_csv(path: str | Path, df: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
