"""Peak memory of `jsqa predict` against file length: flat, because files are read, resampled and
scored block by block (jsqa.scoring.limits.ScoringAudio) rather than decoded whole.

Run: .venv/bin/python benchmarks/scoring_memory.py [--minutes 1,20,120] [--size small]
Writes one 48 kHz mono 16-bit WAV per length in a temporary folder (deleted afterwards), makes a
small untrained MOS checkpoint there, and runs `python -m jsqa.cli predict` once per file in its
own process; prints one row per file: length, file size, wall time, peak RSS (the child's
ru_maxrss, from os.wait4) and the MOS. The CLI runs with the interpreter and PYTHONPATH of this
script, so pointing PYTHONPATH at another checkout measures that code.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from jsqa.models.mos import MOSModel, encoder_spec, save_checkpoint

SR = 48000


def write_wav(path: Path, minutes: float, seed: int = 0) -> None:
    """A speech-band tone under a syllable-rate envelope plus noise, written a minute at a time."""
    rng = np.random.default_rng(seed)
    with sf.SoundFile(str(path), "w", SR, 1, subtype="PCM_16") as f:
        for start in range(0, int(minutes * 60 * SR), 60 * SR):
            n = min(60 * SR, int(minutes * 60 * SR) - start)
            t = (start + np.arange(n)) / SR
            x = 0.2 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
            f.write((x + 0.02 * rng.standard_normal(n)).astype(np.float32))


def peak_rss(cmd: list[str], log: Path) -> tuple[float, float, str]:
    """Run ``cmd``; its peak RSS in MiB (its own ru_maxrss from wait4, not the maximum over every
    child so far that RUSAGE_CHILDREN gives), wall seconds and stdout."""
    t0 = time.monotonic()
    with log.open("w+") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        wall = time.monotonic() - t0
        out.seek(0)
        text = out.read()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{text[-2000:]}")
    return usage.ru_maxrss / 1024, wall, text  # Linux reports KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", default="1,20,120", help="comma-separated file lengths")
    ap.add_argument("--size", default="small", help="encoder size of the throwaway checkpoint")
    args = ap.parse_args()
    minutes = [float(m) for m in args.minutes.split(",")]
    with tempfile.TemporaryDirectory(prefix="jsqa-scoring-memory-") as tmp:
        ckpt = Path(tmp) / "mos.pt"
        spec = encoder_spec(args.size)
        torch.manual_seed(0)
        m = MOSModel(spec)
        save_checkpoint(ckpt, "mos", m, spec, head=m.head_config)
        print(f"{'minutes':>8} {'file MiB':>9} {'wall s':>8} {'peak RSS MiB':>13} {'mos':>6}")
        for mins in minutes:
            wav = Path(tmp) / f"{mins:g}min.wav"
            write_wav(wav, mins)
            cmd = [
                sys.executable,
                "-m",
                "jsqa.cli",
                "predict",
                "--model",
                str(ckpt),
                "--format",
                "csv",
                "--max-seconds",
                str(mins * 60 + 60),
                str(wav),
            ]
            rss, wall, out = peak_rss(cmd, Path(tmp) / "predict.log")
            mos = next(line for line in out.splitlines() if line.startswith(str(wav))).split(",")[1]
            print(
                f"{mins:>8g} {wav.stat().st_size / 2**20:>9.0f} {wall:>8.1f} {rss:>13.0f} {float(mos):>6.3f}",
                flush=True,
            )
            wav.unlink()


if __name__ == "__main__":
    main()
