"""Content hashes in the manifests: new audio of the same length re-runs the stages after acquire.

acquire records the sha256 of every audio file (``sha256``; ``ref_sha256`` for a MOS clip's
reference), validate fails naming a file whose bytes no longer match, and a DVC pipeline
re-runs ``pairs`` when acquire writes different audio even though every length stays the same.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from jsqa.config import DataConfig, DemoConfig, ValidateConfig
from jsqa.data.acquire import acquire
from jsqa.data.manifests import add_content_hashes, read_manifest
from jsqa.data.validate import add_hash_checks, validate_manifests
from jsqa.errors import JsqaError, ValidationFailed
from jsqa.io import file_sha256, write_parquet

REPO = Path(__file__).resolve().parents[2]
SR = 16000
# The smallest demo corpus that validates: every split holds a clip, every clip is long enough.
TINY_DEMO = {
    "n_talkers": 2,
    "utterances_per_talker": 2,
    "utterance_seconds": [0.8, 1.0],
    "noise_seconds": 1.0,
    "noise_families": ["white"],
    "noise_per_family": 1,
    "mos_clips": 8,
    "mos_sample_rate": SR,
    "mos_splits": {"train": 0.5, "val": 0.25, "test": 0.25},
}
KINDS = ("clean", "noise", "mos")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _flip(path: Path) -> None:
    """Negate a 16-bit file's samples in place: other bytes, the same length, RMS and level."""
    x, sr = sf.read(path, dtype="int16")
    before = path.stat().st_size
    sf.write(path, -np.maximum(x, -32767), sr, subtype="PCM_16")
    assert path.stat().st_size == before


# --- the hash and its check, without Great Expectations ----------------------------------------


def test_file_sha256_is_the_sha256_of_the_bytes_and_names_an_unreadable_file(tmp_path):
    data = os.urandom(3 * (1 << 20) + 5)  # several read chunks and a partial one
    (tmp_path / "a.bin").write_bytes(data)
    assert file_sha256(tmp_path / "a.bin") == hashlib.sha256(data).hexdigest()
    with pytest.raises(JsqaError, match="gone.wav: cannot hash"):
        file_sha256(tmp_path / "gone.wav")


def test_hash_checks_flag_changed_files_and_leave_missing_ones_to_their_own_rules(tmp_path):
    for name in ("a", "b", "r"):
        (tmp_path / f"{name}.wav").write_bytes(name.encode() * 100)
    df = pd.DataFrame(
        {
            "path": ["a.wav", "b.wav", "gone.wav", "a.wav", "a.wav"],
            "ref_path": ["r.wav", "r.wav", None, "gone.wav", "r.wav"],
        }
    )
    df = add_content_hashes(df, root=tmp_path)
    assert df["sha256"].tolist()[:2] == [_sha256(tmp_path / "a.wav"), _sha256(tmp_path / "b.wav")]
    assert pd.isna(df["sha256"][2]) and pd.isna(df["ref_sha256"][2])  # nothing there to hash
    df.loc[3, "sha256"] = "not a hash"  # the regex rule reports it, not the check
    df.loc[3, "ref_sha256"] = df.loc[0, "ref_sha256"]  # a reference that went missing since
    df.loc[4, "ref_sha256"] = None  # a reference without a hash recorded
    (tmp_path / "b.wav").write_bytes(b"B" * 100)  # same length, other bytes
    checked = add_hash_checks("mos", df, root=tmp_path, workers=2)
    assert checked["sha256_matches"].tolist() == [True, False, None, None, True]
    assert checked["ref_sha256_matches"].tolist() == [True, True, None, False, False]
    assert "ref_sha256_matches" not in add_hash_checks("clean", df.drop(columns="ref_path"), root=tmp_path)


# --- acquire and validate ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def acquired(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("acquired")
    cfg = DataConfig(
        profile="demo", demo=DemoConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in TINY_DEMO.items()})
    )
    paths = acquire(cfg, 5, root / "raw", root / "manifests", root=root)
    return root, {k: paths[k] for k in KINDS}


@pytest.mark.integration
def test_acquire_records_the_sha256_of_every_file_and_reference(acquired):
    root, paths = acquired
    for kind in KINDS:
        df = read_manifest(paths[kind], kind)
        assert df["sha256"].tolist() == [_sha256(root / p) for p in df["path"]], kind
    mos = read_manifest(paths["mos"], "mos")
    assert mos["ref_path"].notna().all()
    assert mos["ref_sha256"].tolist() == [_sha256(root / p) for p in mos["ref_path"]]
    report = validate_manifests(paths, ValidateConfig(), SR, root / "validation", root=root)
    assert report["success"] is True


@pytest.mark.integration
def test_validate_names_each_file_changed_since_acquire_and_a_missing_hash(acquired, tmp_path, monkeypatch):
    src, paths = acquired
    root = tmp_path / "project"
    shutil.copytree(src, root)
    clean = read_manifest(paths["clean"], "clean")
    changed, unhashed = clean["path"][0], clean["path"][1]
    _flip(root / changed)
    clean.loc[1, "sha256"] = None
    write_parquet(root / "manifests" / "clean.parquet", clean)
    noise = read_manifest(paths["noise"], "noise").drop(columns="sha256")
    write_parquet(root / "manifests" / "noise.parquet", noise)
    ref = read_manifest(paths["mos"], "mos")["ref_path"][2]
    _flip(root / ref)
    rel = {k: Path("manifests") / f"{k}.parquet" for k in KINDS}
    monkeypatch.chdir(root)  # as under `dvc repro`: paths relative to the project root
    with pytest.raises(ValidationFailed) as info:
        validate_manifests(rel, ValidateConfig(), SR, Path("validation"))
    lines = str(info.value).splitlines()
    assert lines[0].startswith("4 check(s) failed")
    assert sorted(lines[1:]) == sorted(
        [
            "manifests/clean.parquet: expect_column_values_to_be_in_set(sha256_matches, {True}): 1 unexpected "
            f"(e.g. path={changed} (changed since acquire: its bytes no longer hash to the manifest's sha256))",
            f"manifests/clean.parquet: expect_column_values_to_not_be_null(sha256): 1 unexpected (e.g. path={unhashed})",
            "manifests/noise.parquet: expect_column_to_exist(sha256): column missing",
            "manifests/mos.parquet: expect_column_values_to_be_in_set(ref_sha256_matches, {True}): 1 unexpected "
            f"(e.g. ref_path={ref} (gone or changed since acquire: its bytes no longer hash to the manifest's "
            "ref_sha256))",
        ]
    )


# --- what a user sees: `dvc repro` --------------------------------------------------------------

# Appended to the project's jsqa/data/acquire.py: a change to the generator that writes one clean
# utterance with its samples negated. The audio differs; its length, level and so the rest of
# the manifest and the validation verdict do not.
_GENERATOR_CHANGE = """

def _negate_one_utterance(*args, **kwargs):
    import numpy as np
    import soundfile as sf

    corpus = _generate_demo(*args, **kwargs)
    first = sorted(corpus.clean_dir.glob("*/*.wav"))[0]
    x, sr = sf.read(first, dtype="int16")
    sf.write(first, -np.maximum(x, -32767), sr, subtype="PCM_16")
    return corpus


_generate_demo, generate_demo = generate_demo, _negate_one_utterance
"""
_TINY_PAIRS = {"pairs_per_utterance": 1, "segment_seconds": 0.5, "shard_size": 8, "workers": 1}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return {**env, "JSQA_PYTHON": sys.executable, "DVC_NO_ANALYTICS": "1", "GX_ANALYTICS_ENABLED": "false"}


def _run(project: Path, *cmd: str) -> str:
    done = subprocess.run(cmd, cwd=project, env=_env(), capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"{' '.join(cmd)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _dvc(project: Path, *args: str) -> str:
    return _run(project, sys.executable, "-m", "dvc", *args)


def _ran(output: str) -> set[str]:
    return {s for s in ("acquire", "validate", "pairs") if f"Running stage '{s}'" in output}


def _locked_outs(project: Path, stage: str) -> list[str]:
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return [o["md5"] for o in lock["stages"][stage]["outs"]]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A git + DVC project with the real acquire, validate and pairs stages on a tiny demo profile."""
    root = tmp_path_factory.mktemp("repro") / "project"
    shutil.copytree(REPO / "jsqa", root / "jsqa", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "bin", root / "bin")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["demo"].update(TINY_DEMO)
    params["pairs"].update(_TINY_PAIRS)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    (root / "dvc.yaml").write_text(
        yaml.safe_dump({"stages": {s: stages[s] for s in ("acquire", "validate", "pairs")}}, sort_keys=False)
    )
    _run(root, "git", "init", "-q")
    _dvc(root, "init", "-q")
    assert _ran(_dvc(root, "repro", "pairs")) == {"acquire", "validate", "pairs"}
    return root


@pytest.mark.integration
def test_dvc_repro_reruns_pairs_when_acquire_writes_other_audio_of_the_same_length(project):
    pairs = _locked_outs(project, "pairs")
    clean = read_manifest(project / "data/manifests/clean.parquet", "clean")
    verdict = (project / "data/validation/report.json").read_bytes()

    # Regenerating the same audio changes no manifest: nothing after acquire re-runs.
    assert _ran(_dvc(project, "repro", "--force", "--single-item", "acquire")) == {"acquire"}
    assert _ran(_dvc(project, "repro", "pairs")) == set()

    with (project / "jsqa/data/acquire.py").open("a") as fh:
        fh.write(_GENERATOR_CHANGE)
    assert _ran(_dvc(project, "repro", "pairs")) == {"acquire", "validate", "pairs"}
    # Only the hash told the new audio apart: every other column and the verdict are unchanged.
    now = read_manifest(project / "data/manifests/clean.parquet", "clean")
    assert now.drop(columns="sha256").equals(clean.drop(columns="sha256"))
    assert (now["sha256"] != clean["sha256"]).sum() == 1
    assert (project / "data/validation/report.json").read_bytes() == verdict
    assert json.loads(verdict)["success"] is True
    assert _locked_outs(project, "pairs") != pairs  # the pairs are rendered from the new audio
