"""Scoring cost: CPU milliseconds per second of audio for each encoder size.

Run: .venv/bin/python benchmarks/scoring_cost.py [--threads 2] [--seconds 10] [--repeats 5]
Prints one line per size. CPU time (process_time) rather than wall time, so the figure does not
depend on what else the machine is doing; the ratio between sizes is the robust number.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from jsqa.inference import score_waveform
from jsqa.models.encoder import ENCODER_SIZES, count_parameters
from jsqa.models.mos import MOSModel


def measure(size: str, seconds: float, repeats: int) -> float:
    model = MOSModel(ENCODER_SIZES[size]).eval()
    x = np.random.default_rng(0).standard_normal(int(seconds * 16000)).astype(np.float32) * 0.1
    score_waveform(model, x)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        score_waveform(model, x)
        best = min(best, time.process_time() - t0)
    return best * 1000.0 / seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sizes", default="small,paper")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for size in args.sizes.split(","):
        ms = measure(size, args.seconds, args.repeats)
        n = count_parameters(MOSModel(ENCODER_SIZES[size]).encoder)
        print(f"{size:6s} encoder {n:>11,d} params: {ms:8.1f} CPU ms per second of audio "
              f"({args.threads} threads, best of {args.repeats}, {args.seconds:g} s clip)")


if __name__ == "__main__":
    main()
