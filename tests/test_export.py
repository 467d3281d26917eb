"""`jsqa export`: a TorchScript file that scores like the eager model, at any input length."""

from __future__ import annotations

import warnings

import pytest
import torch

from jsqa.cli import main
from jsqa.models.mos import MOSModel, encoder_spec, load_checkpoint, mos_model_from_checkpoint, save_checkpoint

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("projection", [False, True])
def test_exported_model_scores_like_the_eager_model_at_two_lengths(tmp_path, capsys, projection):
    torch.manual_seed(0)
    m = MOSModel(encoder_spec("small"), projection=projection)
    for mod in m.modules():  # measured BatchNorm statistics and a steep head: scores vary with the input
        if isinstance(mod, torch.nn.BatchNorm1d):
            mod.momentum = None
            mod.reset_running_stats()
    m.train()
    with torch.no_grad():
        m.head.net[-1].weight.mul_(20)
        for _ in range(3):
            m(torch.randn(8, 16000) * torch.rand(8, 1))
    save_checkpoint(tmp_path / "m.pt", "mos", m, m.encoder.spec, head=m.head_config)
    assert main(["export", "--model", str(tmp_path / "m.pt"), "--format", "torchscript",
                 "--out", str(tmp_path / "model.ts")]) == 0
    assert "model.ts" in capsys.readouterr().out
    eager = mos_model_from_checkpoint(load_checkpoint(tmp_path / "m.pt"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        ts = torch.jit.load(str(tmp_path / "model.ts"))
    g = torch.Generator().manual_seed(1)
    for n in (12_000, 51_234):
        x = torch.randn(3, n, generator=g) * torch.tensor([[0.05], [0.2], [0.6]])
        with torch.inference_mode():
            got, want = ts(x), eager.predict(x)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
        assert want.std() > 1e-3  # three inputs, three different scores


def test_export_of_a_missing_checkpoint_is_one_error_line(tmp_path, capsys):
    assert main(["export", "--model", str(tmp_path / "none.pt"), "--out", str(tmp_path / "m.ts")]) == 2
    assert "none.pt" in capsys.readouterr().err
    assert not (tmp_path / "m.ts").exists()
