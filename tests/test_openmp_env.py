"""torch's OpenMP threads sleep between parallel regions in what users run, unless they chose otherwise.

The check reads libgomp's own report of its settings (``OMP_DISPLAY_ENV=VERBOSE``, printed when
torch loads it): GOMP_SPINCOUNT 0 is the passive wait, 300000 the spinning default.
"""

from __future__ import annotations

import os
import subprocess
import sys
import wave
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
ENTRIES = {
    "console script": [str(Path(sys.executable).parent / "jsqa")],
    "bin/jsqa (dvc.yaml's stage commands)": [str(REPO / "bin" / "jsqa")],
}


def _openmp_settings(entry: list[str], policy: str | None, cwd: Path) -> dict[str, str]:
    """libgomp's settings in a `jsqa predict` process: its inputs exist, so it imports torch to load
    the checkpoint, which is not one, and fails there."""
    with wave.open(str(cwd / "clip.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x00\x01" * 16000)
    (cwd / "not-a-checkpoint.pt").write_bytes(b"not a checkpoint")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env.update(OMP_DISPLAY_ENV="VERBOSE", JSQA_PYTHON=sys.executable)
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    cmd = [*entry, "predict", "clip.wav", "--model", "not-a-checkpoint.pt"]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "not-a-checkpoint.pt" in proc.stderr, proc.stderr[-2000:]
    settings = dict(
        line.strip().replace("'", "").split(" = ", 1)
        for line in proc.stderr.splitlines()
        if line.strip().startswith(("OMP_", "GOMP_")) and " = " in line
    )
    assert settings, f"torch's OpenMP runtime was not loaded:\n{proc.stderr[-2000:]}"
    return settings


@pytest.mark.parametrize("entry", ENTRIES.values(), ids=ENTRIES.keys())
def test_jsqa_threads_wait_passively_when_the_caller_sets_nothing(entry, tmp_path):
    settings = _openmp_settings(entry, None, tmp_path)
    assert settings["OMP_WAIT_POLICY"] == "PASSIVE"
    assert settings["GOMP_SPINCOUNT"] == "0"


@pytest.mark.parametrize("entry", ENTRIES.values(), ids=ENTRIES.keys())
def test_a_wait_policy_the_caller_set_is_kept(entry, tmp_path):
    settings = _openmp_settings(entry, "ACTIVE", tmp_path)
    assert settings["OMP_WAIT_POLICY"] == "ACTIVE"
    assert settings["GOMP_SPINCOUNT"] != "0"
