"""`jsqa export`: a TorchScript or ONNX file that scores like the eager model, at any input length."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from jsqa.cli import main
from jsqa.errors import JsqaError
from jsqa.models.mos import MOSModel, encoder_spec, load_checkpoint, mos_model_from_checkpoint, save_checkpoint
from jsqa.scoring import export

pytestmark = pytest.mark.integration


def _small_checkpoint(path: Path, projection: bool) -> Path:
    """A small MOS checkpoint whose scores vary with the input."""
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
    save_checkpoint(path, "mos", m, m.encoder.spec, head=m.head_config)
    return path


@pytest.mark.parametrize("projection", [False, True])
def test_exported_model_scores_like_the_eager_model_at_two_lengths(tmp_path, capsys, projection):
    _small_checkpoint(tmp_path / "m.pt", projection)
    assert (
        main(
            [
                "export",
                "--model",
                str(tmp_path / "m.pt"),
                "--format",
                "torchscript",
                "--out",
                str(tmp_path / "model.ts"),
            ]
        )
        == 0
    )
    assert "model.ts" in capsys.readouterr().out
    eager = mos_model_from_checkpoint(load_checkpoint(tmp_path / "m.pt"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        ts = torch.jit.load(str(tmp_path / "model.ts"))
    g = torch.Generator().manual_seed(1)
    for n in (12_000, 51_234):
        x = torch.randn(3, n, generator=g) * torch.tensor([[0.05], [0.2], [0.6]])
        with torch.inference_mode():
            (got, found), want = ts(x), eager.predict(x)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
        assert found.all()  # a model without a recorded input level scores every row
        assert want.std() > 1e-3  # three inputs, three different scores


def test_export_of_a_missing_checkpoint_is_one_error_line(tmp_path, capsys):
    assert main(["export", "--model", str(tmp_path / "none.pt"), "--out", str(tmp_path / "m.ts")]) == 2
    assert "none.pt" in capsys.readouterr().err
    assert not (tmp_path / "m.ts").exists()


@pytest.mark.parametrize("projection", [False, True])
def test_onnx_export_scores_like_the_eager_model_at_two_lengths_and_batch_sizes(tmp_path, capsys, projection):
    import onnxruntime as ort

    _small_checkpoint(tmp_path / "m.pt", projection)
    assert (
        main(["export", "--model", str(tmp_path / "m.pt"), "--format", "onnx", "--out", str(tmp_path / "model.onnx")])
        == 0
    )
    assert "model.onnx" in capsys.readouterr().out
    eager = mos_model_from_checkpoint(load_checkpoint(tmp_path / "m.pt"))
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["waveform"]
    assert [o.name for o in session.get_outputs()] == ["mos", "speech_found"]
    g = torch.Generator().manual_seed(1)
    for batch, n in ((3, 12_000), (1, 51_234), (5, 7_777)):
        x = torch.randn(batch, n, generator=g) * torch.linspace(0.05, 0.6, batch).unsqueeze(1)
        got, found = session.run(None, {"waveform": x.numpy()})
        assert found.all()
        want = eager.predict(x).numpy()
        assert got.shape == (batch,) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
        if batch > 1:
            assert want.std() > 1e-3  # different inputs, different scores


def test_onnx_export_without_the_onnx_packages_says_which_extra_to_install(tmp_path, monkeypatch):
    _small_checkpoint(tmp_path / "m.pt", projection=False)
    real_find_spec = export.importlib.util.find_spec
    monkeypatch.setattr(
        export.importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real_find_spec(name, *a)
    )
    with pytest.raises(JsqaError, match=r"onnxscript.*pip install 'jsqa\[onnx\]'"):
        export.export_model(tmp_path / "m.pt", tmp_path / "model.onnx", "onnx")
    assert not (tmp_path / "model.onnx").exists()
