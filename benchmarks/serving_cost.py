"""What serving costs: logging the two pyfunc models (from code), loading the MOS model back, and
scoring request rows of several kinds and lengths through the served model's predict.

Run: ``python benchmarks/serving_cost.py`` (a fresh temporary SQLite store; CPU, 1 torch thread
for the scoring figures). Prints seconds for logging/loading and milliseconds per row.
"""

from __future__ import annotations

import base64
import io
import os
import statistics
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import soundfile as sf
import torch

from jsqa import tracking
from jsqa.models.mos import MOSModel, PretrainModel, encoder_spec, save_checkpoint
from jsqa.registry.register import log_models


def _signal(sr: int, seconds: float) -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(int(sr * seconds)) / sr
    return (0.3 * np.sin(2 * np.pi * 200 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def _wav_b64(x: np.ndarray, sr: int) -> str:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="WAV", subtype="PCM_16")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
        spec = encoder_spec("small")
        m = MOSModel(spec)
        save_checkpoint(root / "mos.pt", "mos", m, spec, head=m.head_config, metrics={"val_rmse": 0.5})
        save_checkpoint(root / "enc.pt", "encoder", PretrainModel(spec), spec)
        with tracking.stage_run("bench", {}, root):
            t0 = time.perf_counter()
            uris = log_models(root / "enc.pt", root / "mos.pt")
            logged = time.perf_counter() - t0
        t0 = time.perf_counter()
        model = mlflow.pyfunc.load_model(uris["mos"])
        loaded = time.perf_counter() - t0
        print(f"log_models (encoder + MOS, from code): {logged:.2f} s")
        print(f"pyfunc load of the MOS model:          {loaded:.2f} s")

        torch.set_num_threads(1)
        wav = root / "clip.wav"
        for seconds in (1.0, 10.0, 60.0):
            x16, x44 = _signal(16000, seconds), _signal(44100, seconds)
            sf.write(wav, x16, 16000)
            rows = {
                "path (16 kHz WAV)": {"path": str(wav)},
                "audio_base64 (44.1 kHz WAV)": {"audio_base64": _wav_b64(x44, 44100)},
                "audio floats (44.1 kHz)": {"audio": x44.tolist(), "sample_rate": 44100},
            }
            for label, row in rows.items():
                frame = pd.DataFrame([row])
                model.predict(frame)  # warm-up
                times = []
                for _ in range(3):
                    t0 = time.perf_counter()
                    out = model.predict(frame)
                    times.append(time.perf_counter() - t0)
                assert out["error"][0] is None
                print(f"{seconds:5.0f} s clip, {label:28s} {1000 * statistics.median(times):8.1f} ms/row")


if __name__ == "__main__":
    main()
