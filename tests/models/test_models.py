"""The encoder sizes, the checkpoint format, and the NT-Xent loss with its JND mask."""

import math

import numpy as np
import pytest
import torch

from jsqa.errors import ConfigError, JsqaError
from jsqa.models.encoder import ENCODER_SIZES, Encoder, count_parameters
from jsqa.models.mos import (
    MOSModel,
    PretrainModel,
    check_sample_rate,
    checkpoint_sample_rate,
    encoder_from_checkpoint,
    encoder_spec,
    load_checkpoint,
    mos_model_from_checkpoint,
    save_checkpoint,
)
from jsqa.mos_scale import MOS_RANGE, clamp_mos
from jsqa.train.losses import nt_xent


def test_paper_encoder_has_the_cdpam_parameter_count():
    enc = Encoder(ENCODER_SIZES["paper"])
    assert count_parameters(enc) == 26_065_920
    assert enc.embedding_dim == 1024


def test_small_encoder_takes_any_length_and_is_small():
    enc = Encoder(ENCODER_SIZES["small"]).eval()
    assert count_parameters(enc) < 500_000
    for n in (400, 16000, 24001):
        assert enc(torch.randn(2, n)).shape == (2, enc.embedding_dim)


def test_checkpoint_round_trip_preserves_predictions(tmp_path):
    spec = encoder_spec("small")
    m = MOSModel(spec, init_mos=3.3).eval()
    x = torch.randn(1, 12345)
    save_checkpoint(tmp_path / "m.pt", "mos", m, spec, head=m.head_config, metrics={"val_rmse": 1.0})
    m2 = mos_model_from_checkpoint(load_checkpoint(tmp_path / "m.pt"))
    torch.testing.assert_close(m(x), m2(x))


def test_projection_head_switch_sets_what_the_mos_head_reads_and_old_checkpoints_still_load(tmp_path):
    spec = encoder_spec("small")
    on, off = MOSModel(spec, projection=True).eval(), MOSModel(spec, projection=False).eval()
    assert on.projection is not None and off.projection is None
    assert on.head.net[0].in_features == 32 and off.head.net[0].in_features == spec.embedding_dim
    save_checkpoint(tmp_path / "on.pt", "mos", on, spec, head=on.head_config)
    x = torch.randn(2, 9000)
    torch.testing.assert_close(mos_model_from_checkpoint(load_checkpoint(tmp_path / "on.pt"))(x), on(x))
    # a checkpoint written before the switch existed has no "projection" key: encoder embedding
    legacy = {k: v for k, v in off.head_config.items() if k != "projection"}
    save_checkpoint(tmp_path / "old.pt", "mos", off, spec, head=legacy)
    assert mos_model_from_checkpoint(load_checkpoint(tmp_path / "old.pt")).projection is None


def test_encoder_weights_carry_from_pretraining_to_fine_tuning(tmp_path):
    spec = encoder_spec("small")
    pre = PretrainModel(spec, projection_head=True).eval()
    save_checkpoint(tmp_path / "enc.pt", "encoder", pre, spec)
    enc = encoder_from_checkpoint(load_checkpoint(tmp_path / "enc.pt")).eval()
    x = torch.randn(2, 8000)
    torch.testing.assert_close(enc(x), pre.encoder(x))


def test_non_checkpoint_files_are_rejected_by_name(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(JsqaError, match="bad.pt"):
        load_checkpoint(bad)
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(JsqaError, match="not a jsqa checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_nt_xent_is_low_for_aligned_views_and_log_2b_minus_1_for_random_equal_views():
    torch.manual_seed(0)
    b = 16
    z = torch.nn.functional.normalize(torch.randn(b, 32), dim=-1)
    aligned = nt_xent(z, z, temperature=0.05)
    # identical embeddings for every view: the positive is one of 2B-1 equal logits
    same = torch.ones(b, 8)
    uniform = nt_xent(same, same, temperature=0.1)
    assert uniform.item() == pytest.approx(math.log(2 * b - 1), rel=1e-5)
    assert aligned.item() < 0.5


def test_jnd_mask_removes_perceptually_identical_negatives():
    # pairs 0 and 1 are the same percept: with the mask, their similarity must not be penalised
    za = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    zb = za.clone()
    mask = torch.zeros(3, 3, dtype=torch.bool)
    mask[0, 1] = mask[1, 0] = True
    unmasked = nt_xent(za, zb, 0.1)
    masked = nt_xent(za, zb, 0.1, mask)
    assert masked < unmasked
    # a mask that marks nothing changes nothing
    torch.testing.assert_close(nt_xent(za, zb, 0.1, torch.zeros(3, 3, dtype=torch.bool)), unmasked)


def test_nt_xent_rejects_mismatched_views():
    with pytest.raises(ValueError):
        nt_xent(torch.randn(4, 8), torch.randn(5, 8))


def test_clamp_mos_limits_every_kind_of_score_to_the_mos_range():
    assert MOS_RANGE == (1.0, 5.0)
    assert clamp_mos(7.2) == 5.0 and clamp_mos(-1.0) == 1.0 and clamp_mos(3.25) == 3.25
    assert isinstance(clamp_mos(3.0), float)
    np.testing.assert_array_equal(clamp_mos(np.array([0.0, 2.5, 9.0])), [1.0, 2.5, 5.0])
    torch.testing.assert_close(clamp_mos(torch.tensor([0.5, 4.5, 5.5])), torch.tensor([1.0, 4.5, 5.0]))
    assert math.isnan(clamp_mos(float("nan")))  # a broken score stays detectable


def test_checkpoints_record_their_input_sample_rate_and_old_ones_read_as_16k(tmp_path):
    spec = encoder_spec("small")
    m = MOSModel(spec, sample_rate=8000)
    save_checkpoint(tmp_path / "m.pt", "mos", m, spec, head=m.head_config)
    payload = load_checkpoint(tmp_path / "m.pt")
    assert payload["sample_rate"] == 8000 and checkpoint_sample_rate(payload) == 8000
    assert mos_model_from_checkpoint(payload).sample_rate == 8000
    save_checkpoint(tmp_path / "enc.pt", "encoder", PretrainModel(spec, sample_rate=24000), spec)
    assert encoder_from_checkpoint(load_checkpoint(tmp_path / "enc.pt")).sample_rate == 24000
    # A file written before checkpoints recorded their rate.
    old = {k: v for k, v in payload.items() if k != "sample_rate"}
    torch.save(old, tmp_path / "old.pt")
    assert mos_model_from_checkpoint(load_checkpoint(tmp_path / "old.pt")).sample_rate == 16000


def test_a_sample_rate_mismatch_names_both_rates():
    check_sample_rate(16000, 16000, "m.pt")
    with pytest.raises(ConfigError, match=r"m\.pt: the model was trained at 8000 Hz but data\.sample_rate is 16000 Hz"):
        check_sample_rate(8000, 16000, "m.pt")


def test_fine_tuning_from_an_encoder_of_another_rate_fails_before_training(tmp_path):
    from jsqa.config import FinetuneConfig, ModelConfig
    from jsqa.train.finetune import build_model

    spec = encoder_spec("small")
    save_checkpoint(tmp_path / "enc.pt", "encoder", PretrainModel(spec, sample_rate=8000), spec)
    with pytest.raises(ConfigError, match="enc.pt.*8000 Hz.*16000 Hz"):
        build_model(ModelConfig(), FinetuneConfig(), 3.0, tmp_path / "enc.pt", sample_rate=16000)
    assert build_model(ModelConfig(), FinetuneConfig(), 3.0, tmp_path / "enc.pt", sample_rate=8000).sample_rate == 8000
