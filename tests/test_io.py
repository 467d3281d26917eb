"""Atomic writes (jsqa.io): what every stage relies on to never leave half a file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from jsqa.io import atomic_path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_atomic_path_replaces_the_file_with_plain_open_permissions(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "x.json"  # the folder is created on demand
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".json" and tmp != target
        tmp.write_text("new")
        assert not target.exists()  # nothing visible before the rename
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~_umask()
    assert [p.name for p in target.parent.iterdir()] == ["x.json"]


def test_atomic_path_keeps_the_old_file_and_no_temp_on_error(tmp_path: Path) -> None:
    target = tmp_path / "x.npy"
    target.write_text("old")

    def killed_mid_write() -> None:
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        killed_mid_write()
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.npy"]


def test_atomic_path_temporary_names_never_collide(tmp_path: Path) -> None:
    target = tmp_path / "x.bin"
    with atomic_path(target) as a, atomic_path(target) as b:
        assert a != b and a.exists() and b.exists()
        a.write_text("a")
        b.write_text("b")
    assert target.read_text() == "a"  # the outer write finished last


def test_atomic_path_steps_over_a_temp_left_by_a_killed_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import itertools

    import jsqa.io

    monkeypatch.setattr(jsqa.io, "_tmp_ids", itertools.count(0))
    stale = tmp_path / f".x.bin.{os.getpid()}-0.bin"  # same pid came round again
    stale.write_text("someone else's")
    with atomic_path(tmp_path / "x.bin") as tmp:
        assert tmp != stale
        tmp.write_text("mine")
    assert stale.read_text() == "someone else's"
    assert (tmp_path / "x.bin").read_text() == "mine"
