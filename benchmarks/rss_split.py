"""Peak memory of a command's largest process, split into anonymous and file-backed pages.

A process's resident set counts the pages of memory-mapped files it has read (pretraining maps
the pair shards) beside its own allocations. The kernel drops the file-backed ones under memory
pressure and reads them again when needed, so they cost page cache, not RAM a job must be given.
This polls ``/proc`` (Linux) every 0.05 s for the command's process tree and prints the peak
``RssAnon`` and ``RssFile`` of any one process:

    .venv/bin/python benchmarks/rss_split.py -- bin/jsqa pretrain --out /tmp/e.pt --metrics /tmp/m.json
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def _children(root: int) -> set[int]:
    """``root`` and every process below it."""
    parent: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(stat.parent.name)] = int(fields[1])
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, ppid in parent.items() if ppid in tree} - tree
        tree |= more
        grew = bool(more)
    return tree


def _rss_kib(pid: int) -> tuple[int, int]:
    """(RssAnon, RssFile) of ``pid`` in KiB; zeros once it is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0, 0
    values = {
        k: int(v.split()[0]) for k, _, v in (line.partition(":") for line in lines) if k in ("RssAnon", "RssFile")
    }
    return values.get("RssAnon", 0), values.get("RssFile", 0)


def measure(cmd: list[str]) -> tuple[int, float, float]:
    """Run ``cmd``; return (exit code, peak RssAnon GiB, peak RssFile GiB) over its processes."""
    proc = subprocess.Popen(cmd)
    anon = file = 0
    while proc.poll() is None:
        for pid in _children(proc.pid):
            a, f = _rss_kib(pid)
            anon, file = max(anon, a), max(file, f)
        time.sleep(0.05)
    return proc.returncode, anon / 2**20, file / 2**20


def main(argv: list[str]) -> int:
    cmd = argv[argv.index("--") + 1 :] if "--" in argv else argv
    if not cmd:
        print(__doc__)
        return 2
    rc, anon, file = measure(cmd)
    print(f"peak RssAnon {anon:.2f} GiB, peak RssFile {file:.2f} GiB (largest process each; exit {rc})")
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
