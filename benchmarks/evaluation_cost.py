"""Evaluation cost per test clip: each peer against the jsqa MOS model, measured in one run.

Run: .venv/bin/python benchmarks/evaluation_cost.py [--clips 8] [--seconds 4] [--sizes small]
     [--peers dnsmos,distillmos,pesq,stoi] [--threads 2] [--device cpu|cuda]

Generates ``--clips`` speech-like clips (the demo's source-filter synthesis, 16 kHz) in 10 dB
white noise with their clean references, warms every predictor up on one clip (model loading,
ONNX session creation, numba compilation are start-up costs, reported apart), then times
scoring all clips with each jsqa model size (``score_waveforms``, as ``jsqa evaluate`` runs it)
and each peer (``Peer.score``, as the evaluate stage runs it on a cache miss). Wall-clock and
process CPU seconds per clip, and each one's CPU cost as a multiple of the first jsqa size's.
Prints one table. ``--device cuda`` moves the jsqa model (the peers run on the CPU regardless:
speechmos's ONNX sessions and PESQ/STOI are CPU code; DistillMOS runs on the CPU here).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jsqa.data.demo.speech import clean_talkers, synth_utterance
from jsqa.evaluation.peers import PEERS, make_peers
from jsqa.models.mos import MOSModel, encoder_spec
from jsqa.scoring.windows import score_waveforms
from jsqa.signal.levels import mix_at_snr

SR = 16000


def clips(n: int, seconds: float, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(degraded, clean) pairs: synthetic speech in 10 dB white noise."""
    talkers = clean_talkers(4, seed)
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        clean = synth_utterance(talkers[i % len(talkers)], seconds, SR, rng).astype(np.float64)
        deg = mix_at_snr(clean, rng.standard_normal(len(clean)), 10.0, SR)[0]
        out.append((np.clip(deg, -1, 1).astype(np.float32), clean.astype(np.float32)))
    return out


def timed(fn) -> tuple[float, float]:
    """(wall, process CPU) seconds of ``fn()``."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--sizes", default="small")
    ap.add_argument("--peers", default=",".join(PEERS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = clips(args.clips, args.seconds)
    rows = []  # (name, start-up s, wall/clip, cpu/clip)
    for size in args.sizes.split(","):
        spec = encoder_spec(size)
        w0 = time.perf_counter()
        model = MOSModel(spec).eval().to(args.device)
        score_waveforms(model, [data[0][0]], SR)  # warm-up
        startup = time.perf_counter() - w0
        wall, cpu = timed(lambda model=model: score_waveforms(model, [d for d, _ in data], SR))
        rows.append((f"jsqa {size} ({args.device})", startup, wall / len(data), cpu / len(data)))
    for peer in make_peers([p for p in args.peers.split(",") if p]):
        ref = data[0][1] if peer.info.needs_reference else None
        w0 = time.perf_counter()
        peer.score(data[0][0], ref)  # warm-up: model load, sessions, JIT
        startup = time.perf_counter() - w0

        def run(peer=peer) -> None:
            for deg, clean in data:
                peer.score(deg, clean if peer.info.needs_reference else None)

        wall, cpu = timed(run)
        rows.append((f"{peer.info.name} ({', '.join(peer.info.outputs)})", startup, wall / len(data), cpu / len(data)))
    base = rows[0][3]
    print(f"{len(data)} clips of {args.seconds:g} s at {SR} Hz, torch threads {args.threads}")
    print(f"{'predictor':52s} {'start-up s':>10s} {'wall ms/clip':>13s} {'CPU ms/clip':>12s} {'CPU x jsqa':>10s}")
    for name, startup, wall, cpu in rows:
        print(f"{name:52s} {startup:10.2f} {wall * 1e3:13.1f} {cpu * 1e3:12.1f} {cpu / base:10.2f}")


if __name__ == "__main__":
    main()
