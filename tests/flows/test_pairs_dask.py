"""The Dask pairs flow on Prefect's test server and a real local Dask cluster (flows.pairs_dask)."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from distributed import LocalCluster
from pair_inputs import CFG as PAIRS_CFG
from pair_inputs import SR, speech_like

from flows.pairs_dask import main, run_pairs_dask
from jsqa.audio import write_audio
from jsqa.data.manifests import relpath, write_manifest
from jsqa.pairs.generate import generate_pairs, partial_dir

pytestmark = pytest.mark.integration

# The pairs tests' config (additive noise only), smaller: 3 pairs of 0.25 s, 4 to a shard.
CFG = dataclasses.replace(PAIRS_CFG, pairs_per_utterance=3, segment_seconds=0.25, shard_size=4)
SEED = 7


@pytest.fixture(autouse=True)
def _prefect(prefect_server):
    """Flows here run against the session's Prefect test server (tests/conftest.py)."""


@pytest.fixture(scope="module")
def cluster_address() -> str:
    """An already running cluster (two single-threaded workers) reached over TCP, as with --address."""
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, protocol="tcp", dashboard_address=None
    ) as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five utterances (one silent, so a shard has skipped pairs) and two noises, with manifests."""
    root = tmp_path_factory.mktemp("dask-corpus")
    rng = np.random.default_rng(0)
    clean, noise = [], []
    for i in range(5):
        x = np.zeros(int(0.6 * SR), np.float32) if i == 3 else speech_like(0.5 + 0.1 * i, rng)
        path = root / "clean" / f"u{i}.wav"
        write_audio(path, x, SR)
        clean.append(
            {
                "id": f"u{i}",
                "path": relpath(path, root),
                "duration": x.size / SR,
                "sample_rate": SR,
                "channels": 1,
                "speaker": f"s{i % 2}",
            }
        )
    for j in range(2):
        n = (0.1 * rng.standard_normal(SR)).astype(np.float32)
        path = root / "noise" / f"n{j}.flac"
        write_audio(path, n, SR)
        noise.append(
            {
                "id": f"n{j}",
                "path": relpath(path, root),
                "duration": 1.0,
                "sample_rate": SR,
                "channels": 1,
                "environment": "lab",
            }
        )
    write_manifest(root / "manifests" / "clean.parquet", pd.DataFrame(clean), "clean")
    write_manifest(root / "manifests" / "noise.parquet", pd.DataFrame(noise), "noise")
    return root


def _generate_serial(corpus: Path, out: Path) -> None:
    m = corpus / "manifests"
    generate_pairs(m / "clean.parquet", m / "noise.parquet", CFG, SEED, out, SR, root=corpus)


def _run_dask(corpus: Path, out: Path, address: str | None = None) -> dict:
    """A local cluster of two workers started for the run, or the one at ``address``."""
    m = corpus / "manifests"
    return run_pairs_dask(
        m / "clean.parquet",
        m / "noise.parquet",
        CFG,
        SEED,
        out,
        SR,
        root=corpus,
        workers=2,
        address=address,
        processes=False,
    )


def _shard_files(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("shard-*"))


@pytest.fixture(scope="module")
def serial_out(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("serial") / "pairs"
    _generate_serial(corpus, out)
    return out


@pytest.fixture(scope="module")
def dask_out(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("dask") / "pairs"
    return out, _run_dask(corpus, out)


def test_dask_flow_output_is_bit_identical_to_serial(serial_out: Path, dask_out: tuple[Path, dict]) -> None:
    out, result = dask_out
    names = _shard_files(serial_out)
    assert len(names) == 4 * 3  # 15 pairs in shards of 4: four shards of .npy/.json/.arrow
    assert _shard_files(out) == names
    for name in names + ["pairs.parquet", "plan.parquet", "skipped.csv", "index.json"]:
        assert (out / name).read_bytes() == (serial_out / name).read_bytes(), name
    assert not partial_dir(out).exists()  # the workers' shards all moved into out
    recipes = pd.read_parquet(out / "pairs.parquet")
    assert result == {"n_pairs": len(recipes), "n_shards": 4, "out_dir": str(out.absolute())}
    # The silent utterance's pairs are skipped, not rendered as silence.
    assert "u3" not in set(recipes["utterance_id"])
    assert "u3" in (out / "skipped.csv").read_text()


def test_second_run_keeps_every_shard(corpus: Path, dask_out: tuple[Path, dict], cluster_address: str) -> None:
    out, first = dask_out
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.glob("shard-*")}
    time.sleep(0.01)  # so a rewrite would show in mtime even on coarse clocks
    second = _run_dask(corpus, out, address=cluster_address)
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.glob("shard-*")}
    assert second == first
    assert after == before


def test_cli_on_existing_cluster_and_errors_in_one_line(
    corpus: Path,
    serial_out: Path,
    cluster_address: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    params = tmp_path / "params.yaml"
    pairs = json.loads(json.dumps(dataclasses.asdict(CFG)))  # tuples to lists, for YAML
    params.write_text(yaml.safe_dump({"seed": SEED, "data": {"sample_rate": SR}, "pairs": pairs}))
    out = tmp_path / "pairs"
    monkeypatch.chdir(corpus)  # manifest paths are relative to the project root, the default --root
    code = main(["--params", str(params), "--manifests", "manifests", "--out", str(out), "--address", cluster_address])
    assert code == 0
    for name in _shard_files(serial_out) + ["pairs.parquet"]:
        assert (out / name).read_bytes() == (serial_out / name).read_bytes(), name
    assert "JND pairs" in capsys.readouterr().out

    params.write_text("pairs:\n  jnd_dbb: 3.0\n")
    assert main(["--params", str(params), "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "pairs.jnd_db" in err and str(params) in err
    assert not (tmp_path / "x").exists()
