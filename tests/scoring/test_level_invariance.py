"""Level invariance and "no speech, no score": a level-normalised MOS model scores a clip the same
at any gain, in every scoring path, and refuses silence, tones and near-silent noise."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from jsqa.audio import write_audio
from jsqa.config import FinetuneConfig, ModelConfig, params_from_dict
from jsqa.data import clips as clips_module
from jsqa.data.clips import load_clips
from jsqa.data.demo.degrade import DEGRADATIONS, apply_degradation
from jsqa.data.demo.noise import NOISE_FAMILIES, make_noise
from jsqa.data.demo.speech import clean_talkers, synth_utterance
from jsqa.errors import ConfigError, NoSpeechError
from jsqa.models.mos import MOSModel, encoder_spec, load_checkpoint, mos_model_from_checkpoint, save_checkpoint
from jsqa.scoring.predict import format_rows, score_files
from jsqa.scoring.serving import score_rows
from jsqa.scoring.windows import score_waveform, score_waveforms
from jsqa.signal.levels import active_speech_level, db_to_gain, mix_at_snr
from jsqa.signal.speech import NO_SPEECH, check_speech, random_gains
from jsqa.train.finetune import build_model

SR = 16000
LEVEL = -26.0


def _speech(seconds: float, seed: int = 0, snr_db: float = 10.0, family: str = "pink") -> np.ndarray:
    """Synthetic speech (the demo corpus's) at -26 dBov in noise, float32 at 16 kHz."""
    rng = np.random.default_rng(seed)
    talker = clean_talkers(2, 0)[seed % 2]
    ref = synth_utterance(talker, seconds, SR, rng).astype(np.float64)
    noise = make_noise(family, seconds, SR, rng)[: len(ref)]
    return mix_at_snr(ref, noise, snr_db, SR)[0]


def _no_speech() -> dict[str, np.ndarray]:
    t = np.arange(4 * SR) / SR
    rng = np.random.default_rng(5)
    return {
        "silence": np.zeros(4 * SR),
        "tone_1k": 0.3 * np.sin(2 * np.pi * 1000 * t),
        "dtmf_1": 0.2 * np.sin(2 * np.pi * 697 * t) + 0.2 * np.sin(2 * np.pi * 1209 * t),
        "noise_-80dBov": db_to_gain(-80.0) * rng.standard_normal(len(t)),
    }


@pytest.fixture(scope="module")
def model() -> MOSModel:
    """A small untrained model normalising to -26 dBov, made input-sensitive: BatchNorm
    statistics measured on speech at varied levels and a steeper head."""
    torch.manual_seed(0)
    m = MOSModel(encoder_spec("small"), input_level_dbov=LEVEL)
    rng = np.random.default_rng(1)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm1d):
            mod.momentum = None
            mod.reset_running_stats()
    base = [_speech(2.0, s, snr) for s, snr in ((0, 0.0), (1, 20.0))]
    m.train()
    with torch.no_grad():
        m.head.net[-1].weight.mul_(20)
        for _ in range(3):
            batch = [base[int(rng.integers(2))] * np.float32(rng.uniform(0.05, 1.0)) for _ in range(8)]
            m(torch.from_numpy(np.stack(batch)))
    return m.eval()


@pytest.fixture(scope="module")
def old_model(model) -> MOSModel:
    """The same weights without a recorded input level: as checkpoints were before."""
    m = MOSModel(encoder_spec("small"))
    m.load_state_dict(model.state_dict())
    return m.eval()


GAINS_DB = (-20.0, 0.0, 20.0)


def test_gain_does_not_move_the_score_of_waveforms(model, old_model):
    x = _speech(3.0, seed=2)
    clips = [x * np.float32(db_to_gain(g)) for g in GAINS_DB]
    scores = score_waveforms(model, clips, SR)
    assert np.ptp(scores) < 1e-3
    assert scores[1] == pytest.approx(score_waveform(model, x, SR), abs=1e-5)
    # The same weights without normalisation are moved by gain: the check above means something.
    assert np.ptp(score_waveforms(old_model, clips, SR)) > 0.05


def test_gain_does_not_move_the_score_of_float_files_of_several_windows(model, tmp_path):
    x = _speech(19.0, seed=3)  # three 8 s windows, scored as the file streams in
    paths = []
    for g in GAINS_DB:
        paths.append(tmp_path / f"gain{g:+.0f}.wav")
        write_audio(paths[-1], x * db_to_gain(g), SR, subtype="FLOAT")  # +20 dB goes past 1.0, unclipped
    rows = score_files(model, paths)
    assert all(r["error"] is None for r in rows)
    scores = [r["mos"] for r in rows]
    assert max(scores) - min(scores) < 1e-3
    assert scores[1] == pytest.approx(score_waveforms(model, [x], SR)[0], abs=1e-4)


def test_gain_does_not_move_the_served_score(model):
    x = _speech(3.0, seed=4)
    rows = [{"audio": (x * db_to_gain(g)).tolist(), "sample_rate": SR} for g in GAINS_DB]
    out = score_rows(model, pd.DataFrame(rows))
    assert out["error"].isna().all()
    assert float(out["mos"].max() - out["mos"].min()) < 1e-3


def test_a_checkpoint_without_an_input_level_scores_exactly_as_before(model, old_model, tmp_path):
    save_checkpoint(tmp_path / "new.pt", "mos", model, model.encoder.spec, head=model.head_config)
    save_checkpoint(tmp_path / "old.pt", "mos", old_model, old_model.encoder.spec, head=old_model.head_config)
    assert "input_level_dbov" not in load_checkpoint(tmp_path / "old.pt")["head"]
    assert mos_model_from_checkpoint(load_checkpoint(tmp_path / "new.pt")).input_level_dbov == LEVEL
    old = mos_model_from_checkpoint(load_checkpoint(tmp_path / "old.pt"))
    assert old.input_level_dbov is None
    x = _speech(3.0, seed=5) * np.float32(0.1)
    with torch.inference_mode():
        direct = float(old(torch.from_numpy(x)[None]).clamp(1, 5))
    assert score_waveform(old, x, SR) == pytest.approx(direct, abs=1e-5)
    assert score_waveforms(old, [x], SR)[0] == pytest.approx(direct, abs=1e-5)
    # Without a recorded level there is no speech check either: silence still gets a number.
    assert np.isfinite(score_waveform(old, np.zeros(SR, dtype=np.float32), SR))


def test_silence_tones_and_very_low_noise_get_no_score_in_predict(model, tmp_path):
    paths = []
    for name, x in {**_no_speech(), "speech": _speech(3.0, seed=6)}.items():
        paths.append(tmp_path / f"{name}.wav")
        write_audio(paths[-1], x, SR, subtype="FLOAT")
    rows = score_files(model, paths)
    by_name = {r["path"].rsplit("/", 1)[-1]: r for r in rows}
    assert by_name["speech.wav"]["error"] is None and 1.0 <= by_name["speech.wav"]["mos"] <= 5.0
    reasons = {
        "silence.wav": "silent",
        "tone_1k.wav": "tonal",
        "dtmf_1.wav": "tonal",
        "noise_-80dBov.wav": "active level -80 dBov below -60",
    }
    for name, why in reasons.items():
        assert by_name[name]["mos"] is None
        assert by_name[name]["error"].startswith(f"{NO_SPEECH} (") and why in by_name[name]["error"]
    as_json = {r["path"].rsplit("/", 1)[-1]: r for r in json.loads(format_rows(rows, "json"))}
    assert as_json["tone_1k.wav"]["mos"] is None and NO_SPEECH in as_json["tone_1k.wav"]["error"]
    csv_lines = format_rows(rows, "csv").splitlines()
    silent = next(line for line in csv_lines if "silence.wav" in line)
    assert f",,{NO_SPEECH} (silent" in silent  # empty mos cell, then the error


def test_silence_tones_and_very_low_noise_get_an_error_row_when_served(model):
    inputs = {**_no_speech(), "speech": _speech(3.0, seed=7)}
    out = score_rows(model, pd.DataFrame([{"audio": x.tolist(), "sample_rate": SR} for x in inputs.values()]))
    assert len(out) == len(inputs)
    for i, (name, mos, error) in enumerate(zip(inputs, out["mos"], out["error"])):
        if name == "speech":
            assert error is None and 1.0 <= mos <= 5.0
        else:
            assert mos is None and error.startswith(f"row {i}: {NO_SPEECH}")


def test_windows_without_speech_are_left_out_of_a_long_clip(model):
    speech = _speech(8.0, seed=8)
    x = np.concatenate([speech, np.zeros(8 * SR, dtype=np.float32)])  # two 8 s windows
    alone = score_waveform(model, speech, SR)
    assert score_waveform(model, x, SR) == pytest.approx(alone, abs=1e-5)
    assert score_waveforms(model, [x], SR)[0] == pytest.approx(alone, abs=1e-5)
    with pytest.raises(NoSpeechError, match="in none of its 2 windows"):
        score_waveform(model, np.zeros(16 * SR, dtype=np.float32), SR)


def test_evaluation_scores_a_clip_without_speech_as_it_is(model, old_model):
    silence, speech = np.zeros(2 * SR, dtype=np.float32), _speech(2.0, seed=9)
    scores = score_waveforms(model, [speech, silence], SR)
    assert np.isfinite(scores).all()
    assert scores[1] == pytest.approx(score_waveform(old_model, silence, SR), abs=1e-5)


def _demo_like_set() -> list[tuple[str, np.ndarray]]:
    """Demo corpus conditions at their harshest: every noise family at -5 dB SNR, each with
    every degradation (band-limits, mu-law, quantisation, clipping, packet loss), plus each
    family at 40 dB."""
    rng = np.random.default_rng(10)
    talkers = clean_talkers(4, 0)
    out = []
    for f, family in enumerate(NOISE_FAMILIES):
        for snr, kinds in ((-5.0, DEGRADATIONS), (40.0, ("none",))):
            for kind in kinds:
                ref = synth_utterance(talkers[f % 4], 2.0, SR, rng).astype(np.float64)
                deg = mix_at_snr(ref, make_noise(family, 2.0, SR, rng)[: len(ref)], snr, SR)[0]
                if kind != "none":
                    deg = apply_degradation(deg.astype(np.float64), kind, SR, rng)[0]
                out.append((f"{family}/{snr:g}dB/{kind}", np.clip(deg, -1.0, 1.0)))
    return out


def test_demo_like_noisy_and_degraded_speech_is_not_flagged():
    clips = _demo_like_set()
    checks = check_speech([x for _, x in clips], SR)
    flagged = [(name, c.reason) for (name, _), c in zip(clips, checks) if not c.has_speech]
    assert len(clips) >= 40 and flagged == []


def test_gain_augmentation_is_deterministic_per_seed_and_bounded():
    a = random_gains(64, 6.0, np.random.default_rng(3))
    assert np.array_equal(a, random_gains(64, 6.0, np.random.default_rng(3)))
    assert not np.array_equal(a, random_gains(64, 6.0, np.random.default_rng(4)))
    db = 20 * np.log10(a)
    assert db.min() >= -6.0 and db.max() <= 6.0 and db.max() - db.min() > 6.0
    rng = np.random.default_rng(3)
    assert np.array_equal(random_gains(5, 0.0, rng), np.ones(5))
    assert rng.random() == np.random.default_rng(3).random()  # off draws nothing: old runs unchanged


def test_training_clips_are_loaded_at_the_target_level(tmp_path):
    x = _speech(2.0, seed=11)
    files = {"quiet.wav": x * db_to_gain(-15.0), "loud.wav": x * db_to_gain(10.0), "silent.wav": np.zeros(SR)}
    for name, y in files.items():
        write_audio(tmp_path / name, y, SR, subtype="FLOAT")
    df = pd.DataFrame({"path": list(files), "mos": [3.0, 3.0, 1.0]})
    clips = load_clips(df, SR, tmp_path, level_dbov=LEVEL)
    assert active_speech_level(clips.audio[0], SR) == pytest.approx(LEVEL, abs=0.01)
    assert np.allclose(clips.audio[0], clips.audio[1], atol=1e-6)
    assert not clips.audio[2].any()  # no speech: kept as it is
    raw = load_clips(df, SR, tmp_path)
    assert active_speech_level(raw.audio[0], SR) == pytest.approx(active_speech_level(x, SR) - 15.0, abs=0.01)


def test_clips_loaded_a_chunk_at_a_time_are_the_clips_loaded_at_once(tmp_path, monkeypatch):
    # Chunks bound the memory of loading a large MOS set; they must not change one sample.
    names = []
    for i in range(5):
        names.append(f"c{i}.wav")
        write_audio(tmp_path / names[-1], _speech(1.0 + 0.3 * i, seed=20 + i) * db_to_gain(-8.0 + 4 * i), SR)
    df = pd.DataFrame({"path": names, "mos": [3.0] * 5})
    whole = load_clips(df, SR, tmp_path, level_dbov=LEVEL)
    monkeypatch.setattr(clips_module, "LOAD_CHUNK", 2)
    chunked = load_clips(df, SR, tmp_path, level_dbov=LEVEL)
    assert all(np.array_equal(a, b) for a, b in zip(whole.audio, chunked.audio, strict=True))


def test_the_input_level_comes_from_config_into_the_model():
    assert build_model(ModelConfig(), FinetuneConfig(), 3.0, None).input_level_dbov == LEVEL
    off = params_from_dict({"finetune": {"input_level_dbov": None, "gain_augment_db": 0}}).finetune
    assert off.input_level_dbov is None and off.gain_augment_db == 0.0
    assert build_model(ModelConfig(), off, 3.0, None).input_level_dbov is None
    with pytest.raises(ConfigError, match="finetune.input_level_dbov"):
        params_from_dict({"finetune": {"input_level_dbov": 3.0}})
    with pytest.raises(ConfigError, match="finetune.gain_augment_db"):
        params_from_dict({"finetune": {"gain_augment_db": -1.0}})
