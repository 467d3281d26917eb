"""An exported model scores as `jsqa predict` does: level normalisation and the no-speech rule are
part of the TorchScript and ONNX files, and a long recording scored in the documented windows
(docs/scoring.md) gets the MOS `jsqa predict` gives it.

The model, inputs and export runners here are shared with tests/scoring/test_serving.py, whose
served champion is this model: there the same inputs are scored by all five paths (`jsqa predict`,
the pyfunc model, `jsqa serve` over HTTP, TorchScript, ONNX) against one another."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from jsqa.data.demo.speech import clean_talkers, synth_utterance
from jsqa.models.mos import MOSModel, encoder_spec, save_checkpoint
from jsqa.scoring.export import export_model
from jsqa.scoring.export_rules import SpeechRule
from jsqa.scoring.windows import WINDOW_S, windows
from jsqa.signal.speech import check_speech

SR = 16_000
LEVEL = -26.0

pytestmark = pytest.mark.integration


def _speech(talker: int, seconds: float) -> np.ndarray:
    talkers = clean_talkers(3, seed=7)
    return synth_utterance(talkers[talker], seconds, SR, np.random.default_rng(talker), LEVEL).astype(np.float32)


def parity_inputs() -> dict[str, np.ndarray]:
    """Demo-like speech at several levels and lengths, silence, a tone, a long clip with a silent window."""
    base = _speech(0, 4.0)
    long = np.concatenate([_speech(1, 16.0), np.zeros(8 * SR, np.float32), _speech(2, 6.0)])
    out = {f"gain{db:+d}dB": (base * 10 ** (db / 20)).astype(np.float32) for db in (-30, -20, 0, 6)}
    out |= {"talker1_3s": _speech(1, 3.0), "talker2_8s": _speech(2, WINDOW_S), "talker0_11s": _speech(0, 11.0)}
    out |= {"silence": np.zeros(2 * SR, np.float32), "long_30s": long}
    out["tone_1k"] = (0.3 * np.sin(2 * np.pi * 1000 * np.arange(3 * SR) / SR)).astype(np.float32)
    out["faint_noise"] = (1e-4 * np.random.default_rng(0).standard_normal(3 * SR)).astype(np.float32)
    return out


def parity_checkpoint(path: Path) -> Path:
    """A small level-normalised MOS checkpoint (fixed seed, a steep head so scores vary) at ``path``."""
    torch.manual_seed(0)
    m = MOSModel(encoder_spec("small"), input_level_dbov=LEVEL)
    for mod in m.modules():  # measured BatchNorm statistics: scores vary with the input
        if isinstance(mod, torch.nn.BatchNorm1d):
            mod.momentum = None
            mod.reset_running_stats()
    m.train()
    with torch.no_grad():
        m.head.net[-1].weight.mul_(20)
        batch = torch.from_numpy(np.stack([_speech(i, 2.0) for i in range(3)]))
        for _ in range(3):
            m(batch)
        m.eval()
        m.head.net[-1].bias.add_(3.0 - m(batch).mean())  # centred on the scale, not clamped at 5
    save_checkpoint(path, "mos", m, m.encoder.spec, head=m.head_config, metrics={"val_rmse": 0.5})
    return path


def write_inputs(folder: Path) -> dict[str, Path]:
    """:func:`parity_inputs` written as float WAV files (exact float32 round trip) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, x in parity_inputs().items():
        sf.write(folder / f"{name}.wav", x, SR, subtype="FLOAT")
        files[name] = folder / f"{name}.wav"
    return files


def export_both(checkpoint: Path, folder: Path) -> tuple[Path, Path]:
    """``checkpoint`` exported as TorchScript and as ONNX into ``folder``."""
    ts, onnx = folder / "m.ts", folder / "m.onnx"
    export_model(checkpoint, ts, "torchscript")
    export_model(checkpoint, onnx, "onnx")
    return ts, onnx


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The parity model, its TorchScript and ONNX exports, and the inputs as float WAV files."""
    d = tmp_path_factory.mktemp("export")
    export_both(parity_checkpoint(d / "m.pt"), d)
    return d, write_inputs(d)


def windowed_score(run, x: np.ndarray) -> tuple[float, bool]:
    """The caller's side of docs/scoring.md: windows of jsqa.scoring.windows scored as rows (those
    of one length batched), MOS the length-weighted mean over windows with speech, NaN without."""
    total = weight = 0.0
    for a, b in windows(len(x), int(WINDOW_S * SR), int(WINDOW_S * SR)):
        mos, found = run(x[None, a:b])
        if bool(found[0]):
            total, weight = total + float(mos[0]) * (b - a), weight + (b - a)
    return (total / weight, True) if weight else (float("nan"), False)


def export_runners(d: Path):
    """Score functions (waveform batch -> (mos, speech_found) arrays) of ``d``'s m.ts and m.onnx."""
    import onnxruntime as ort

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        ts = torch.jit.load(str(d / "m.ts"))
    session = ort.InferenceSession(str(d / "m.onnx"), providers=["CPUExecutionProvider"])

    def run_ts(x: np.ndarray):
        with torch.inference_mode():
            mos, found = ts(torch.from_numpy(np.ascontiguousarray(x)))
        return mos.numpy(), found.numpy()

    def run_onnx(x: np.ndarray):
        mos, found = session.run(None, {"waveform": np.ascontiguousarray(x)})
        return mos, found

    return {"torchscript": run_ts, "onnx": run_onnx}


def test_a_batch_scores_row_by_row_with_nan_and_speech_found_per_row(exported):
    d, _ = exported
    inputs = parity_inputs()
    names = ["gain-20dB", "silence", "tone_1k", "talker1_3s"]
    n = 2 * SR
    batch = np.stack([inputs[k][:n] for k in names])
    for path, run in export_runners(d).items():
        mos, found = run(batch)
        assert mos.dtype == np.float32 and mos.shape == (4,)
        assert found.tolist() == [True, False, False, True], path
        assert np.isnan(mos[1:3]).all() and np.isfinite(mos[[0, 3]]).all()
        for i in (0, 3):
            alone, _ = run(batch[i : i + 1])
            assert abs(float(mos[i]) - float(alone[0])) < 1e-4, path


@pytest.mark.parametrize("seconds", [0.05, 0.5, 3.0, 12.0])
def test_the_torch_speech_rule_measures_as_the_numpy_one(seconds):
    rule = SpeechRule(SR, LEVEL)
    x = _speech(1, 12.0)[: int(seconds * SR)]
    tone = (0.1 * np.sin(2 * np.pi * 440 * np.arange(len(x)) / SR)).astype(np.float32)
    batch = np.stack([x, x * 0.01, tone, np.zeros_like(x)])
    with torch.inference_mode():
        levels = rule.active_level(torch.from_numpy(batch)).numpy()
        _, speech = rule(torch.from_numpy(batch))
    for i, check in enumerate(check_speech(list(batch), SR)):
        if check.level_dbov is None:
            assert np.isnan(levels[i])
        else:
            assert abs(levels[i] - check.level_dbov) < 1e-3
        assert bool(speech[i]) == check.has_speech
