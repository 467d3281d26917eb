"""Scoring on a chosen device, windows batched across clips: the same scores as clip by clip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from jsqa.cli import main
from jsqa.data.manifests import read_manifest
from jsqa.errors import AudioError
from jsqa.evaluation.evaluate import evaluate_models
from jsqa.models.mos import MOSModel, encoder_spec, save_checkpoint
from jsqa.scoring.windows import score_waveform, score_waveforms

SR = 16000
# Under a window, exactly one window, a merged 9 s window, and long clips of 8 s windows plus a tail.
SECONDS = (1.0, 1.5, 1.0, 2.25, 8.0, 9.0, 1.5, 20.0, 17.0, 1.0, 0.3)
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error given without a GPU")


def _clip(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = 0.2 * np.sin(2 * np.pi * rng.uniform(150, 600) * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return (x + rng.uniform(0.01, 0.3) * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def model() -> MOSModel:
    """An untrained small model whose scores differ clearly from clip to clip: BatchNorm
    statistics measured on varied audio and a steeper head."""
    torch.manual_seed(0)
    m = MOSModel(encoder_spec("small"))
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm1d):
            mod.momentum = None  # cumulative average over the calibration batches
            mod.reset_running_stats()
    m.train()
    with torch.no_grad():
        m.head.net[-1].weight.mul_(20)
        for b in range(3):
            m(torch.from_numpy(np.stack([_clip(1.0, 100 + 8 * b + i) for i in range(8)])))
    return m.eval()


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    return [_clip(s, i) for i, s in enumerate(SECONDS)]


def test_batched_scores_equal_clip_by_clip_scores_for_mixed_lengths(model, clips):
    one_by_one = np.asarray([score_waveform(model, c, SR) for c in clips])
    assert np.ptp(one_by_one) > 0.05  # the clips score differently, so the check means something
    shapes: list[tuple[int, ...]] = []
    hook = model.encoder.register_forward_pre_hook(lambda mod, args: shapes.append(tuple(args[0].shape)))
    try:
        batched = score_waveforms(model, clips, SR, device="cpu")
    finally:
        hook.remove()
    np.testing.assert_allclose(batched, one_by_one, rtol=0, atol=1e-5)
    # one pass per window length: the three 1 s clips go through together, as do the four 8 s
    # windows of three clips (8 s; 8 + 8 + 4 s; 8 + 9 s) and the two 9 s ones (9 s; 8 + 9 s: a
    # 1 s tail merges into the last window)
    assert (3, SR) in shapes and (4, 8 * SR) in shapes and (2, 9 * SR) in shapes
    assert len(shapes) == len({s[1] for s in shapes})
    # bounded passes: at most batch_seconds of audio each, at least one window
    shapes.clear()
    hook = model.encoder.register_forward_pre_hook(lambda mod, args: shapes.append(tuple(args[0].shape)))
    try:
        small = score_waveforms(model, clips, SR, batch_seconds=2.0)
    finally:
        hook.remove()
    assert max(b * n for b, n in shapes if n <= 2 * SR) <= 2 * SR and (1, 9 * SR) in shapes
    np.testing.assert_allclose(small, one_by_one, rtol=0, atol=1e-5)
    assert next(model.parameters()).device.type == "cpu" and not model.training


def test_an_empty_clip_is_an_audio_error(model, clips):
    with pytest.raises(AudioError, match="clip 1: audio is empty"):
        score_waveforms(model, [clips[0], np.zeros(0, dtype=np.float32)], SR)


def test_evaluate_on_a_named_device_equals_the_default(small_corpus, model):
    manifest = read_manifest(small_corpus["mos"], "mos")
    models = {"a": model}
    default, _ = evaluate_models(models, manifest, root=small_corpus["root"], resamples=50)
    on_cpu, preds = evaluate_models(models, manifest, root=small_corpus["root"], resamples=50, device="cpu")
    assert on_cpu == default
    assert np.isfinite(preds["pred_a"]).all()


def test_predict_cli_scores_on_the_cpu(model, tmp_path, capsys):
    ckpt = tmp_path / "mos.pt"
    save_checkpoint(ckpt, "mos", model, model.encoder.spec, head=model.head_config)
    wav = tmp_path / "a.wav"
    sf.write(wav, _clip(2.0, 5), SR)
    assert main(["predict", "--model", str(ckpt), "--format", "json", "--device", "cpu", str(wav)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["error"] is None
    assert rows[0]["mos"] == pytest.approx(score_waveform(model, _clip(2.0, 5), SR), abs=1e-4)  # 16-bit file


@NO_GPU
@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_cuda_without_a_gpu_is_a_clear_error_and_exit_2(command, model, tmp_path, capsys):
    ckpt = tmp_path / "mos.pt"
    save_checkpoint(ckpt, "mos", model, model.encoder.spec, head=model.head_config)
    wav = tmp_path / "a.wav"
    sf.write(wav, _clip(1.0, 6), SR)
    args = (
        ["predict", "--model", str(ckpt), str(wav)]
        if command == "predict"
        else ["evaluate", "--model", f"a={ckpt}", "--manifest", str(tmp_path / "none.parquet")]
    )
    assert main([*args, "--device", "cuda"]) == 2
    assert "device 'cuda' was asked for, but torch sees no GPU" in capsys.readouterr().err
