"""Scoring cost: CPU milliseconds per second of audio for each encoder size, and what lowers it.

Run: .venv/bin/python benchmarks/scoring_cost.py [--threads 2] [--seconds 10] [--repeats 3]
                                                 [--sizes small,paper] [--variants overlap,tiled,frozen,bf16]
Prints one line per size and variant. CPU time (process_time) rather than wall time, so the
figure depends less on what else the machine is doing; the ratios between variants are the
robust numbers. Variants (none changes the architecture or the parameter count):

- overlap: 8 s windows at 4 s hop, the last aligned to the end (how scoring windowed long clips before tiling);
- tiled:   8 s windows that tile the clip (jsqa.scoring.windows's default now), inference_mode;
- frozen:  tiled, through a traced + ``torch.jit.freeze``-d model (BatchNorm folded into convs);
- bf16:    tiled under CPU bf16 autocast; prints the largest MOS change against fp32.

``--evaluation N`` instead times how a test set of N clips is scored: clip by clip
(:func:`score_waveform` in a loop, how evaluation once scored a test set) against
:func:`score_waveforms` (windows of equal length batched across clips), for clips of one length
(as in many test sets) and of N distinct lengths (the demo corpus draws each clip's length), and
prints the ratio and the largest score difference.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

from jsqa.models.encoder import ENCODER_SIZES, count_parameters
from jsqa.models.mos import MOSModel
from jsqa.scoring.windows import score_waveform, score_waveforms

VARIANTS = ("overlap", "tiled", "frozen", "bf16")


def _frozen(model: MOSModel) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(model.eval(), torch.zeros(1, 16000))
        return torch.jit.freeze(traced)


def _scorer(model: MOSModel, variant: str):
    if variant == "overlap":
        return lambda x: score_waveform(model, x, hop_s=4.0)
    if variant == "tiled":
        return lambda x: score_waveform(model, x)
    if variant == "frozen":
        frozen = _frozen(model)
        return lambda x: score_waveform(frozen, x)

    def bf16(x: np.ndarray) -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return score_waveform(model, x)

    return bf16


def measure(size: str, variant: str, seconds: float, repeats: int) -> tuple[float, float]:
    """(CPU ms per second of audio, best of ``repeats``; MOS minus the fp32 tiled MOS)."""
    torch.manual_seed(0)
    model = MOSModel(ENCODER_SIZES[size]).eval()
    x = np.random.default_rng(0).standard_normal(int(seconds * 16000)).astype(np.float32) * 0.1
    score = _scorer(model, variant)
    score(x[:16000])  # warm-up (allocator, oneDNN primitive cache) on a short clip
    best, value = float("inf"), 0.0
    for _ in range(repeats):
        t0 = time.process_time()
        value = score(x)
        best = min(best, time.process_time() - t0)
    return best * 1000.0 / seconds, value - score_waveform(model, x)


def evaluation_cost(size: str, n_clips: int, lengths: str, repeats: int) -> tuple[float, float, float, float]:
    """(CPU s clip by clip, CPU s batched, seconds of audio, largest |MOS difference|), best of ``repeats``.

    ``lengths``: "equal" (every clip 4 s) or "distinct" (uniform in 3-6 s, the demo's MOS clips).
    """
    torch.manual_seed(0)
    model = MOSModel(ENCODER_SIZES[size]).eval()
    rng = np.random.default_rng(0)
    seconds = np.full(n_clips, 4.0) if lengths == "equal" else rng.uniform(3.0, 6.0, n_clips)
    clips = [rng.standard_normal(int(s * 16000)).astype(np.float32) * 0.1 for s in seconds]
    score_waveforms(model, clips[:2])  # warm-up
    times = {"per_clip": float("inf"), "batched": float("inf")}
    out = {}
    runs = [
        ("per_clip", lambda: np.asarray([score_waveform(model, c) for c in clips])),
        ("batched", lambda: score_waveforms(model, clips)),
    ]
    for r in range(repeats):
        # Alternate which goes first: oneDNN caches a primitive per input shape, and the second
        # of two passes over the same shapes would otherwise find them ready.
        for name, fn in runs if r % 2 == 0 else runs[::-1]:
            t0 = time.process_time()
            out[name] = fn()
            times[name] = min(times[name], time.process_time() - t0)
    return (
        times["per_clip"],
        times["batched"],
        float(seconds.sum()),
        float(np.abs(out["per_clip"] - out["batched"]).max()),
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", default="small,paper")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument(
        "--evaluation",
        type=int,
        default=0,
        metavar="N",
        help="time scoring a test set of N clips, clip by clip against batched, instead",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.evaluation:
        for size in args.sizes.split(","):
            for lengths in ("equal", "distinct"):
                one, batched, audio, diff = evaluation_cost(size, args.evaluation, lengths, args.repeats)
                print(
                    f"{size:6s} encoder  {args.evaluation} clips of {lengths} lengths ({audio:.0f} s of audio): "
                    f"clip by clip {one:.2f} CPU s, batched {batched:.2f} CPU s ({one / batched:.2f}x); "
                    f"largest MOS difference {diff:.1e} ({args.threads} threads, best of {args.repeats})",
                    flush=True,
                )
        return
    for size in args.sizes.split(","):
        n = count_parameters(MOSModel(ENCODER_SIZES[size]).encoder)
        for variant in args.variants.split(","):
            ms, delta = measure(size, variant, args.seconds, args.repeats)
            print(
                f"{size:6s} encoder {n:>11,d} params  {variant:8s} {ms:8.1f} CPU ms per second of audio  "
                f"(MOS vs fp32 tiled {delta:+.4f}; {args.threads} threads, best of {args.repeats}, "
                f"{args.seconds:g} s clip)",
                flush=True,
            )


if __name__ == "__main__":
    main()
