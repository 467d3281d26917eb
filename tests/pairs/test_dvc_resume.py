"""A `dvc repro` killed while the pairs stage renders resumes from its finished shards.

DVC deletes a stage's outputs before running it again, so the shards are rendered in
data/pairs.partial (not an output) and moved into data/pairs at the end. A real `dvc repro pairs`
in a throw-away copy of the project (a tiny demo corpus), SIGKILLed with its stage once a shard
is finished, then run again; compared with the stage's own call (`jsqa pairs` runs
`generate_pairs` so) run once, uninterrupted.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dvc_projects import TINY_DEMO, copy_repo

from jsqa.config import load_params
from jsqa.pairs.generate import generate_pairs

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# 16 short utterances, 128 pairs of 0.25 s each in shards of 16: 128 shards (34 MB), rendered in
# about 2 s on one core, a window the kill below lands in.
TINY = {
    "data": {"demo": TINY_DEMO},
    "pairs": {"pairs_per_utterance": 128, "segment_seconds": 0.25, "shard_size": 16, "workers": 1},
}
N_SHARDS = 16 * 128 // 16
KEPT = re.compile(r"(\d+) shards kept \((\d+) resumed from \S*pairs\.partial\), (\d+) to render")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    # bin/jsqa runs this interpreter; DVC runs stage commands with this PATH.
    return {**env, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", "JSQA_PYTHON": sys.executable}


def _dvc(root: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=root, env=_env(), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"dvc {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's code, stages and DVC config with the tiny parameters, committed, and its
    corpus acquired and validated (the stages before pairs)."""
    root = copy_repo(tmp_path_factory.mktemp("dvc_resume") / "project", TINY)
    _dvc(root, "repro", "validate")
    return root


def _kill_once_a_shard_is_finished(root: Path) -> None:
    """Start `dvc repro pairs` in its own process group and SIGKILL the group (DVC, the stage)
    as soon as a shard's recipes, its completion mark, are in the work folder."""
    partial = root / "data" / "pairs.partial"
    with open(root / "killed.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dvc", "repro", "pairs"],
            cwd=root, env=_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 300
        try:
            while proc.poll() is None and not any(partial.glob("shard-*.arrow")):
                assert time.monotonic() < deadline, "no shard finished in 300 s"
                time.sleep(0.002)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, (root / "killed.log").read_text()[-3000:]


def _uninterrupted(root: Path, out: Path) -> dict[str, str]:
    """The pair set `jsqa pairs` makes of ``root``'s manifests and parameters, rendered in one go."""
    p = load_params(root / "params.yaml")
    manifests = root / "data" / "manifests"
    cfg = p.pairs.for_profile(p.data.profile)
    generate_pairs(manifests / "clean.parquet", manifests / "noise.parquet", cfg, p.seed, out, p.data.sample_rate, root)
    return _hashes(out)


def test_killed_pairs_stage_resumes_under_dvc_repro(project: Path, tmp_path: Path) -> None:
    partial, out = project / "data" / "pairs.partial", project / "data" / "pairs"
    _kill_once_a_shard_is_finished(project)
    finished = sorted(p.stem for p in partial.glob("shard-*.arrow"))
    assert 1 <= len(finished) < N_SHARDS, "killed before the first or after the last shard"
    assert not (out / "index.json").exists()
    before = {s: (partial / f"{s}.npy").stat().st_mtime_ns for s in finished}

    log = _dvc(project, "repro", "pairs")
    kept = KEPT.search(log)
    assert kept is not None, log[-3000:]
    assert [int(g) for g in kept.groups()] == [len(finished), len(finished), N_SHARDS - len(finished)]
    # The resumed shards were moved, not rendered again; the work folder is gone.
    assert {s: (out / f"{s}.npy").stat().st_mtime_ns for s in finished} == before
    assert not partial.exists()
    resumed = _hashes(out)
    assert len([n for n in resumed if n.endswith(".npy")]) == N_SHARDS
    assert "up to date" in _dvc(project, "status", "pairs")

    # The same bytes, file for file, as a run that was never interrupted.
    assert _uninterrupted(project, tmp_path / "pairs") == resumed
