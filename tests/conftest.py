"""Fixtures shared by several test files."""

from __future__ import annotations

import os

# torch's OpenMP threads sleep between parallel regions (jsqa/cli/__init__.py says why), as under
# `make test` and the `jsqa` CLI. libgomp reads this once, when torch loads: so before any import.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import shutil
from collections.abc import Callable
from pathlib import Path

import mlflow
import pytest
from prefect.testing.utilities import prefect_test_harness

from jsqa.io import atomic_path

# Offline and quiet: no telemetry from any tool the tests drive.
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")


@pytest.fixture(scope="session")
def empty_mlflow_store(tmp_path_factory) -> Callable[[Path], None]:
    """Copy an initialised, empty SQLite tracking store to a path (creating the tables takes ~15 s)."""
    template = tmp_path_factory.getbasetemp() / "jsqa-empty-mlflow.db"
    with atomic_path(template) as tmp:
        mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp}").search_experiments()

    def copy_to(db: Path) -> None:
        shutil.copyfile(template, db)

    return copy_to


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> dict[str, Path]:
    """A small demo corpus with its manifests; paths in them are relative to ``root``."""
    from jsqa.config import DemoConfig
    from jsqa.data.demo.corpus import generate_demo, prepare_demo

    root = tmp_path_factory.mktemp("corpus")
    cfg = DemoConfig(
        n_talkers=4,
        utterances_per_talker=3,
        utterance_seconds=(1.0, 1.5),
        noise_seconds=3.0,
        noise_per_family=1,
        mos_clips=48,
        mos_sample_rate=16000,
    )
    corpus = generate_demo(root / "raw", cfg, seed=3, mos_seconds=(1.0, 1.5))
    manifests = prepare_demo(corpus, root / "manifests", root=root)
    return {"root": root, **manifests}


@pytest.fixture(scope="session")
def prefect_server():
    """One Prefect test server for the whole session: its start (~25 s here) dominates flow tests."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # offline: no telemetry
        # A deployment run refused a concurrency slot retries after this long (server default 30 s).
        mp.setenv("PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS", "3")
        with prefect_test_harness(server_startup_timeout=120):
            yield


@pytest.fixture(scope="session")
def small_pairs(small_corpus, tmp_path_factory) -> Path:
    """48 JND pairs of 0.5 s rendered from ``small_corpus`` (6 batches of 8 for pretraining)."""
    from jsqa.config import PairsConfig
    from jsqa.pairs.generate import generate_pairs

    out = tmp_path_factory.mktemp("small-pairs")
    # Additive noise only (the paper profile's pairs), as these fixtures always were.
    cfg = PairsConfig(pairs_per_utterance=4, segment_seconds=0.5, shard_size=32, workers=1).for_profile("paper")
    generate_pairs(small_corpus["clean"], small_corpus["noise"], cfg, 11, out, root=small_corpus["root"])
    return out
