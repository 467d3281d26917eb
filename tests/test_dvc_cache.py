"""DVC links stage outputs to its cache (the repository's .dvc/config): an output takes disk once.

A real `dvc repro` in a throw-away project whose .dvc/config is this repository's, with one stage
that writes a folder of files (as the pipeline's stages write data/raw or data/pairs).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
FILES, SIZE = 4, 256 * 1024

# Content depends on params.yaml's "version" only, so a forced rerun writes the same bytes again.
_STAGE = f"""import pathlib, yaml
version = yaml.safe_load(open("params.yaml"))["version"]
out = pathlib.Path("out")
out.mkdir()
for i in range({FILES}):
    (out / f"part-{{i}}.bin").write_bytes(bytes([(version * 7 + i) % 256]) * {SIZE})
"""


def _dvc(root: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"dvc {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def _cache_file(root: Path, data: bytes) -> Path:
    md5 = hashlib.md5(data).hexdigest()
    return root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


def _disk_bytes(*folders: Path) -> int:
    """Bytes allocated to the files under ``folders``, a file with several links counted once (as du)."""
    seen: dict[tuple[int, int], int] = {}
    for folder in folders:
        for p in folder.rglob("*"):
            st = p.lstat()
            if p.is_file() and not p.is_symlink():
                seen[(st.st_dev, st.st_ino)] = st.st_blocks * 512
    return sum(seen.values())


def _assert_linked_once(root: Path) -> list[Path]:
    """Every output file is the cache's file (one inode, two links, read-only): the output
    folder takes no disk beyond the cache's. Returns the cache files."""
    cached = []
    for p in sorted((root / "out").iterdir()):
        st, cache = p.stat(), _cache_file(root, p.read_bytes())
        assert st.st_nlink == 2 and st.st_ino == cache.stat().st_ino, p.name
        assert st.st_mode & 0o777 == 0o444, p.name  # DVC protects linked outputs; `dvc unprotect` to edit
        cached.append(cache)
    assert len(cached) == FILES
    assert _disk_bytes(root / "out") >= FILES * SIZE
    assert _disk_bytes(root / "out", root / ".dvc" / "cache") == _disk_bytes(root / ".dvc" / "cache")
    return cached


def test_outputs_are_hard_links_to_the_cache_even_after_a_rerun_with_the_same_bytes(tmp_path: Path) -> None:
    root = tmp_path / "project"
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    _dvc(root, "init", "-q")
    shutil.copyfile(REPO / ".dvc" / "config", root / ".dvc" / "config")
    (root / "make.py").write_text(_STAGE)
    (root / "params.yaml").write_text("version: 1\n")
    stage = {"cmd": f"{sys.executable} make.py", "deps": ["make.py"], "params": ["version"], "outs": ["out"]}
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"make": stage}}))

    _dvc(root, "repro")
    first = _assert_linked_once(root)
    # The same bytes again (a deterministic stage rerun after a code change): with "copy" among
    # the link types DVC would keep these as copies of the cached files, doubling the disk.
    assert "Running stage 'make'" in _dvc(root, "repro", "--force")
    assert _assert_linked_once(root) == first

    # New content: DVC deletes the linked outputs before the stage writes, so the cached files
    # of the earlier run keep their bytes (an in-place write would have changed them).
    (root / "params.yaml").write_text("version: 2\n")
    _dvc(root, "repro")
    assert set(_assert_linked_once(root)).isdisjoint(first)
    for cache in first:
        assert hashlib.md5(cache.read_bytes()).hexdigest() == cache.parent.name + cache.name
