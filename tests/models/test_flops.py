"""The FLOP counter of jsqa/models/flops.py agrees with torch's own counter on the real modules."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from jsqa.models.encoder import ENCODER_SIZES, Encoder
from jsqa.models.flops import TRAIN_FACTOR, encoder_flops, mos_model_flops, pretrain_model_flops
from jsqa.models.mos import MOSModel, PretrainModel


def _counted(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


# Meta tensors: torch counts from shapes alone, so the paper encoder costs no compute here.
@pytest.mark.parametrize("size", ["small", "paper"])
@pytest.mark.parametrize("n", [16_000, 12_345, 31])
def test_encoder_flops_match_torch_flop_counter(size, n):
    spec = ENCODER_SIZES[size]
    with torch.device("meta"):
        enc, x = Encoder(spec), torch.zeros(3, n)
    want = _counted(lambda: enc(x))
    assert encoder_flops(spec, n) * 3 == pytest.approx(want, rel=0.01)


@pytest.mark.parametrize("size", ["small", "paper"])
@pytest.mark.parametrize("projection", [False, True])
def test_mos_model_flops_match_torch_flop_counter(size, projection):
    spec = ENCODER_SIZES[size]
    with torch.device("meta"):
        model, x = MOSModel(spec, projection=projection).eval(), torch.zeros(2, 16_000)
    assert mos_model_flops(spec, 16_000, projection=projection) * 2 == pytest.approx(
        _counted(lambda: model(x)), rel=0.01
    )


@pytest.mark.parametrize("size", ["small", "paper"])
def test_a_training_step_is_about_three_forwards(size):
    spec = ENCODER_SIZES[size]
    with torch.device("meta"):
        model, x = PretrainModel(spec), torch.zeros(4, 8_000)
    counted = _counted(lambda: model(x).sum().backward())
    assert TRAIN_FACTOR * pretrain_model_flops(spec, 8_000) * 4 == pytest.approx(counted, rel=0.03)


def test_paper_encoder_flops_per_second_of_audio():
    # 16 layers of kernel 15 at 16/8/4/2 k frames: about 72.8 G MACs per second of 16 kHz audio.
    assert encoder_flops(ENCODER_SIZES["paper"], 16_000) == 145_520_640_000


def test_encoder_flops_reject_an_empty_input():
    with pytest.raises(ValueError):
        encoder_flops(ENCODER_SIZES["small"], 0)
