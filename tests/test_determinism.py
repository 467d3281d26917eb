"""train.deterministic: two runs with the same params and seed give the same checkpoint bytes on a CPU."""

from __future__ import annotations

import os

import pytest
import torch

from jsqa.config import FinetuneConfig, ModelConfig, PretrainConfig, TrainConfig, load_params
from jsqa.data.manifests import read_manifest
from jsqa.models.seeds import seeds_dir
from jsqa.train.common import CUBLAS_WORKSPACE, set_determinism
from jsqa.train.finetune import finetune_seeds
from jsqa.train.pretrain import pretrain

pytestmark = pytest.mark.integration

TINY = FinetuneConfig(epochs=2, batch_size=8, crop_seconds=1.0, patience=5, threads=2, seeds=2)


@pytest.fixture
def restore_determinism():
    """set_determinism is process-wide: leave torch as the other tests expect it (the default, on)."""
    yield
    set_determinism(True)


def test_default_is_on_and_set_determinism_sets_torch_and_cublas(restore_determinism, monkeypatch):
    assert TrainConfig().deterministic is True
    assert load_params("params.yaml").train.deterministic is True
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    set_determinism(True)
    assert torch.are_deterministic_algorithms_enabled() and not torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE
    set_determinism(False)
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic
    assert not torch.backends.cudnn.benchmark  # off means torch's defaults, not benchmarking


def test_finetuning_twice_gives_identical_checkpoint_bytes_and_metrics(small_corpus, tmp_path):
    manifest = read_manifest(small_corpus["mos"], "mos")
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name / "mos.pt"
        summary = finetune_seeds(
            manifest,
            ModelConfig(projection_head=True),
            TINY,
            seed=11,
            out_path=out,
            root=small_corpus["root"],
            deterministic=True,
        )
        files = {p.relative_to(out.parent): p.read_bytes() for p in (out, *sorted(seeds_dir(out).iterdir()))}
        runs.append((summary, files))
    (first, first_files), (second, second_files) = runs
    assert first == second  # exactly, every seed's metrics
    # primary, seed-12.pt, each seed's equal-compute model (budget-seed-11/12.pt), seeds.json
    assert first_files.keys() == second_files.keys() and len(first_files) == 5
    for rel, data in first_files.items():
        assert data == second_files[rel], f"{rel} differs between two identical runs"


def test_pretraining_twice_gives_identical_checkpoint_bytes_and_metrics(small_pairs, tmp_path):
    cfg = PretrainConfig(epochs=1, batch_size=8, group_size=4, threads=2, checkpoint_every=0)
    model = ModelConfig(size="small", projection_head=True)
    a = pretrain(small_pairs, model, cfg, 3, tmp_path / "a.pt", resume="fresh", deterministic=True)
    b = pretrain(small_pairs, model, cfg, 3, tmp_path / "b.pt", resume="fresh", deterministic=True)
    assert a == b
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
