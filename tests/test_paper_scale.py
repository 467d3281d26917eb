"""The paper-scale rehearsal at a tiny size: real archives in the real layouts over real HTTP,
every stage of a fresh project with ``data.profile: paper`` through ``dvc repro``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[1]
HOURS = 0.01


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory) -> tuple[subprocess.CompletedProcess, list[dict], Path]:
    work = tmp_path_factory.mktemp("rehearsal")
    out = work / "sizes.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "paper_scale.py"), "--hours", str(HOURS), "--keep", str(work)]
    cmd += [
        "--mos-clips",
        "48",
        "--pretrain-steps",
        "3",
        "--finetune-epochs",
        "2",
        "--workers",
        "2",
        "--json",
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1700)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc, json.loads(out.read_text()), work / f"{HOURS:g}h" / "project"


def test_every_stage_runs_on_the_paper_profile_and_the_last_line_extrapolates(rehearsal):
    proc, sizes, project = rehearsal
    stages = list(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
    assert list(sizes[0]["stages"]) == stages
    for stage, m in sizes[0]["stages"].items():
        assert m["wall_s"] > 0 and m["cpu_s"] > 0 and m["rss_gib"] > 0.01, stage
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("extrapolated to 460 h: ") and " GB;" in last and "GPU" in last
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert params["data"]["profile"] == "paper" and params["data"]["corpora"]["mirrors"]["librispeech"].startswith(
        "http://127.0.0.1:"
    )


def test_the_manifests_hold_the_served_corpora_in_their_real_layouts(rehearsal):
    _, sizes, project = rehearsal
    clean = pd.read_parquet(project / "data" / "manifests" / "clean.parquet")
    mos = pd.read_parquet(project / "data" / "manifests" / "mos.parquet")
    noise = pd.read_parquet(project / "data" / "manifests" / "noise.parquet")
    assert len(clean) == sizes[0]["utterances"]
    assert set(clean["subset"]) == {"train-clean-100", "train-clean-360"}
    assert all(p.endswith(".flac") for p in clean["path"])
    assert set(noise["environment"]) == {"TBUS", "SCAFE", "PCAFETER", "SPSQUARE", "STRAFFIC"}
    assert len(mos) == 48 and set(mos["split"]) == {"train", "val", "test"}
    assert set(mos["db"]) == {"NISQA_TRAIN_SIM", "NISQA_VAL_SIM", "NISQA_TEST_FOR", "NISQA_TEST_P501"}
    assert (project / "data" / "downloads" / "librispeech" / "LibriSpeech" / "train-clean-360").is_dir()


def test_the_champion_is_registered_and_evaluated_per_test_set(rehearsal):
    _, _, project = rehearsal
    metrics = json.loads((project / "metrics" / "evaluate.json").read_text())
    text = json.dumps(metrics)
    assert "NISQA_TEST_FOR" in text and "NISQA_TEST_P501" in text
    assert (project / "mlflow.db").stat().st_size > 0


def test_large_outputs_are_not_stored_twice(rehearsal):
    # DVC links its cache to the outputs (reflink or hardlink): the pairs stage adds its shards
    # once, not once in data/pairs and again in .dvc/cache.
    _, sizes, _ = rehearsal
    added = sizes[0]["stages"]["pairs"]["disk_added"]
    assert added["pairs"] > 0
    assert added["dvc_cache"] <= 0.05 * added["pairs"], added
