"""Training loops: batches of hard negatives, pretraining that learns, fine-tuning that keeps its best epoch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jsqa.config import FinetuneConfig, ModelConfig, PairsConfig, PretrainConfig
from jsqa.data.clips import load_clips
from jsqa.data.manifests import read_manifest
from jsqa.evaluation.metrics import mos_metrics
from jsqa.models.mos import encoder_from_checkpoint, load_checkpoint, mos_model_from_checkpoint
from jsqa.pairs.generate import generate_pairs
from jsqa.pairs.store import load_pairs
from jsqa.scoring.windows import score_waveforms
from jsqa.train.finetune import finetune
from jsqa.train.pair_batches import PairBatchLoader
from jsqa.train.pretrain import grouped_batches, pretrain

pytestmark = pytest.mark.integration

MODEL = ModelConfig(size="small", projection_head=True)


@pytest.mark.parametrize(("batch_size", "group_size"), [(8, 2), (10, 4), (7, 3)])
def test_grouped_batches_cover_each_pair_once_in_utterance_groups(batch_size, group_size):
    utt = np.repeat(np.arange(10), 6)  # 10 utterances x 6 pairs
    batches = grouped_batches(utt, batch_size, group_size, rng=np.random.default_rng(0))
    seen = np.concatenate(batches)
    assert len(seen) == len(set(seen))  # no pair twice
    assert len(seen) >= 60 - 1  # at most a lone last pair (no negatives) is left out
    for b in batches:
        assert 2 <= len(b) <= batch_size
        # every utterance in a batch brings a whole group (>= 2 pairs here): its hard negatives
        _, counts = np.unique(utt[b], return_counts=True)
        assert (counts >= 2).all()
    assert grouped_batches(utt, batch_size, group_size, np.random.default_rng(1))[0].tolist() != batches[0].tolist()


@pytest.fixture(scope="module")
def pairs_dir(small_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("pairs")
    cfg = PairsConfig(pairs_per_utterance=4, segment_seconds=0.5, shard_size=32, workers=1).for_profile("paper")
    generate_pairs(small_corpus["clean"], small_corpus["noise"], cfg, 11, out, root=small_corpus["root"])
    return out


def test_pretraining_separates_positives_from_negatives_and_saves_a_usable_encoder(pairs_dir, tmp_path):
    history: list[dict] = []
    cfg = PretrainConfig(epochs=4, batch_size=16, group_size=4, learning_rate=2e-3, threads=2)
    summary = pretrain(
        pairs_dir, MODEL, cfg, seed=0, out_path=tmp_path / "enc.pt", on_epoch=lambda e, m: history.append(m)
    )
    assert len(history) == 4
    assert history[-1]["loss"] < history[0]["loss"]
    # positives end up much closer than in-batch negatives
    assert summary["pos_sim"] - summary["neg_sim"] > 0.3
    enc = encoder_from_checkpoint(load_checkpoint(tmp_path / "enc.pt"))
    assert enc.embedding_dim == 64 and summary["n_parameters"] == 93_120


def test_finetune_keeps_the_best_epoch_and_its_checkpoint_reproduces_it(small_corpus, tmp_path):
    manifest = read_manifest(small_corpus["mos"], "mos")
    history: list[dict] = []
    cfg = FinetuneConfig(epochs=4, batch_size=8, crop_seconds=1.0, patience=10, threads=2)
    best = finetune(
        manifest,
        MODEL,
        cfg,
        seed=0,
        out_path=tmp_path / "mos.pt",
        root=small_corpus["root"],
        on_epoch=lambda e, m: history.append(m),
    )
    rmses = [h["val_rmse"] for h in history]
    assert best["val_rmse"] == pytest.approx(min(rmses))
    assert best["best_epoch"] == 1 + int(np.argmin(rmses))
    payload = load_checkpoint(tmp_path / "mos.pt")
    assert payload["init"] == "scratch" and payload["metrics"]["val_rmse"] == pytest.approx(best["val_rmse"])
    model = mos_model_from_checkpoint(payload)
    val = load_clips(manifest[manifest["split"] == "val"], 16000, small_corpus["root"])
    again = mos_metrics(val.mos, score_waveforms(model, val.audio))
    assert again["rmse"] == pytest.approx(best["val_rmse"], abs=1e-4)


def test_saving_the_same_model_to_two_paths_gives_the_same_bytes(tmp_path):
    """The temporary file name (with the pid) must not end up inside the saved archive."""
    from jsqa.models.mos import PretrainModel, encoder_spec, save_checkpoint

    torch.manual_seed(0)
    spec = encoder_spec("small")
    model = PretrainModel(spec)
    save_checkpoint(tmp_path / "a.pt", "encoder", model, spec)
    save_checkpoint(tmp_path / "other" / "b.pt", "encoder", model, spec)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "other" / "b.pt").read_bytes()
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_two_identical_finetuning_runs_give_identical_checkpoint_bytes(small_corpus, tmp_path):
    manifest = read_manifest(small_corpus["mos"], "mos")
    cfg = FinetuneConfig(epochs=1, batch_size=8, crop_seconds=1.0, threads=2)
    for name in ("a.pt", "b.pt"):
        finetune(manifest, MODEL, cfg, seed=0, out_path=tmp_path / name, root=small_corpus["root"])
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()


def test_finetune_from_a_pretrained_encoder_starts_from_its_weights(pairs_dir, small_corpus, tmp_path):
    pretrain(pairs_dir, MODEL, PretrainConfig(epochs=1, batch_size=16, threads=2), seed=0, out_path=tmp_path / "enc.pt")
    manifest = read_manifest(small_corpus["mos"], "mos")
    # zero learning rates: the fine-tuned encoder must be exactly the pretrained one
    cfg = FinetuneConfig(
        epochs=1,
        batch_size=8,
        crop_seconds=1.0,
        learning_rate=0.0,
        encoder_learning_rate=0.0,
        weight_decay=0.0,
        threads=2,
    )
    finetune(
        manifest,
        MODEL,
        cfg,
        seed=0,
        out_path=tmp_path / "mos.pt",
        encoder_ckpt=tmp_path / "enc.pt",
        root=small_corpus["root"],
    )
    pre = encoder_from_checkpoint(load_checkpoint(tmp_path / "enc.pt"))
    tuned = mos_model_from_checkpoint(load_checkpoint(tmp_path / "mos.pt")).encoder
    for (k, a), (_, b) in zip(pre.state_dict().items(), tuned.state_dict().items(), strict=True):
        if "running" in k or "num_batches" in k:
            continue  # BatchNorm statistics move in train mode even at lr 0
        torch.testing.assert_close(a, b, msg=k)
    assert load_checkpoint(tmp_path / "mos.pt")["init"] == "pretrained"
    # projection_head on: the MOS head reads the pretrained projection (the paper's ablation switch)
    pre_proj = {
        k: v for k, v in load_checkpoint(tmp_path / "enc.pt")["state_dict"].items() if k.startswith("projection.")
    }
    tuned_proj = {
        k: v for k, v in load_checkpoint(tmp_path / "mos.pt")["state_dict"].items() if k.startswith("projection.")
    }
    assert pre_proj and set(pre_proj) == set(tuned_proj)
    for k, v in pre_proj.items():
        if "running" not in k and "num_batches" not in k:
            torch.testing.assert_close(v, tuned_proj[k], msg=k)


@pytest.mark.parametrize("prefetch", [0, 2])
def test_pair_batch_loader_yields_the_pair_sets_audio_and_masks_in_plan_order(small_pairs, prefetch):
    pairs = load_pairs(small_pairs)
    plan = grouped_batches(pairs.recipes["utterance_id"].to_numpy(), 8, 4, np.random.default_rng(0))
    loader = PairBatchLoader(pairs, plan, torch.device("cpu"), with_mask=True, prefetch=prefetch)
    batches = list(loader)
    assert [b.idx.tolist() for b in batches] == [p.tolist() for p in plan]
    for b in batches:
        ref = np.stack([pairs[int(i)] for i in b.idx])
        assert b.a.dtype == torch.float32
        np.testing.assert_array_equal(b.a.numpy(), ref[:, 0])
        np.testing.assert_array_equal(b.b.numpy(), ref[:, 1])
        np.testing.assert_array_equal(b.mask.numpy(), pairs.positives_mask(b.idx))
    # leaving the loop early must not leave the read-ahead thread behind
    with PairBatchLoader(pairs, plan, torch.device("cpu"), with_mask=False, prefetch=prefetch) as early:
        first = next(iter(early))
    assert first.mask is None and early._thread is None
