"""Training and inference throughput per encoder size, and the model FLOP utilisation it means.

Run: .venv/bin/python benchmarks/train_throughput.py [--device cpu|cuda] [--sizes small,paper]
     [--batch 32] [--infer-batch N] [--seconds 1.0] [--steps 10] [--warmup 2] [--threads 2]
     [--bf16] [--compile] [--pretrain-only] [--paper-steps 3] [--paper-batch 4] [--peak-n N]
GPU, e.g.: benchmarks/train_throughput.py --device cuda --bf16 --compile --batch 128 --sizes paper

Prints, per size and for the pretraining step, the fine-tuning step and inference: samples (pairs
or clips) per second, audio seconds per second, model FLOPs per step (counted from the encoder
spec by jsqa.models.flops: 2 FLOPs a MAC, a training step 3 forwards), the achieved FLOP/s, and
the utilisation: achieved FLOP/s over the peak matmul rate measured on the same device in the
same precision (a large square matmul: bf16 with --bf16, fp32 without; on a GPU fp32 matmuls
may use TF32 per torch's defaults). Synthetic waveforms in memory, so the figures are the model's
cost alone, not the loader's. The pretraining step is the training loop's own (jsqa.train.pretrain:
forward under autocast, NT-Xent in fp32, backward, clipping, AdamW, schedule); inference is the
eval-mode MOS model under inference_mode.

--compile wraps each model in torch.compile (the first warm-up steps include compilation).
channels_last is not offered: it is a layout for 4-D (and 5-D) tensors, and the encoder is Conv1d.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jsqa.models.encoder import count_parameters
from jsqa.models.flops import TRAIN_FACTOR, mos_model_flops, pretrain_model_flops
from jsqa.models.mos import MOSModel, PretrainModel, encoder_spec
from jsqa.train.pair_batches import PairBatch
from jsqa.train.pretrain import contrastive_loss, lr_factor, optimizer_step

SAMPLE_RATE = 16000


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_steps(step: Callable[[], None], steps: int, warmup: int, device: torch.device) -> float:
    """Mean seconds per call of ``step`` after ``warmup`` untimed calls (autotuning, compilation)."""
    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - t0) / steps


def peak_matmul_flops(device: torch.device, dtype: torch.dtype, n: int, reps: int) -> float:
    """FLOP/s of an n x n matmul in ``dtype`` on ``device``, best of ``reps`` timed calls: the
    reference for utilisation (best, not mean: on a shared machine a mean counts others' load)."""
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))

    def mm() -> None:
        torch.mm(a, b)

    _time_steps(mm, 1, 1, device)  # warm-up
    return 2 * n**3 / min(_time_steps(mm, 1, 0, device) for _ in range(reps))


def _maybe_compile(model: torch.nn.Module, compile_: bool) -> torch.nn.Module:
    return torch.compile(model) if compile_ else model  # type: ignore[return-value]


def bench(
    size: str,
    device: torch.device,
    batch: int,
    infer_batch: int,
    seconds: float,
    steps: int,
    warmup: int,
    bf16: bool,
    compile_: bool,
    finetune: bool = True,
) -> dict:
    """Seconds per step and model FLOPs per step of pretraining, fine-tuning and inference."""
    spec = encoder_spec(size)
    n = int(seconds * SAMPLE_RATE)
    amp = torch.bfloat16 if bf16 else None
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    out: dict = {"params": count_parameters(MOSModel(spec).encoder), "phases": {}}

    pre = PretrainModel(spec).to(device)
    opt = torch.optim.AdamW(pre.parameters(), lr=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(10_000, 1))
    a, b = (torch.randn(batch, n, device=device) * 0.05 for _ in range(2))
    pb = PairBatch(a=a, b=b, mask=torch.eye(batch, dtype=torch.bool, device=device), idx=np.arange(batch))
    pre_run = _maybe_compile(pre, compile_)

    def pre_step() -> None:
        loss, _, _ = contrastive_loss(pre_run, pb, 0.1, amp)
        optimizer_step(pre, loss, opt, sched, clip_norm=5.0)

    out["phases"]["pretrain"] = {
        "unit": "pairs",
        "batch": batch,
        "audio_per_item": 2 * seconds,
        "s_per_step": _time_steps(pre_step, steps, warmup, device),
        "flops_per_step": TRAIN_FACTOR * 2 * batch * pretrain_model_flops(spec, n),
    }
    if not finetune:
        return out

    mos = MOSModel(spec).to(device)
    mos_run = _maybe_compile(mos, compile_)
    opt2 = torch.optim.AdamW(mos.parameters(), lr=1e-4)
    x = torch.randn(batch, n, device=device) * 0.05
    y = torch.rand(batch, device=device) * 4 + 1

    def ft_step() -> None:
        with autocast:
            loss = torch.nn.functional.mse_loss(mos_run(x).float(), y)
        opt2.zero_grad(set_to_none=True)
        loss.backward()
        opt2.step()

    fwd = mos_model_flops(spec, n)
    out["phases"]["finetune"] = {
        "unit": "clips",
        "batch": batch,
        "audio_per_item": seconds,
        "s_per_step": _time_steps(ft_step, steps, warmup, device),
        "flops_per_step": TRAIN_FACTOR * batch * fwd,
    }

    mos.eval()
    xi = torch.randn(infer_batch, n, device=device) * 0.05

    def infer_step() -> None:
        with torch.inference_mode(), autocast:
            mos_run(xi)

    out["phases"]["inference"] = {
        "unit": "clips",
        "batch": infer_batch,
        "audio_per_item": seconds,
        "s_per_step": _time_steps(infer_step, steps, warmup, device),
        "flops_per_step": infer_batch * fwd,
    }
    return out


def _rate(flops_per_s: float) -> str:
    return f"{flops_per_s / 1e12:8.2f} TFLOP/s" if flops_per_s >= 1e12 else f"{flops_per_s / 1e9:8.1f} GFLOP/s"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--sizes", default="small,paper")
    ap.add_argument("--batch", type=int, default=32, help="pairs (pretraining) or clips (fine-tuning) per step")
    ap.add_argument("--infer-batch", type=int, default=None, help="clips per inference call (default --batch)")
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (more with --compile)")
    ap.add_argument("--paper-steps", type=int, default=None, help="timed steps for 'paper' (default --steps)")
    ap.add_argument(
        "--paper-batch",
        type=int,
        default=None,
        help="batch for 'paper' (default --batch; on a CPU batch 32 needs ~13 GB)",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU); the peak is then a bf16 matmul")
    ap.add_argument("--compile", action="store_true", help="torch.compile the models")
    ap.add_argument("--peak-n", type=int, default=None, help="matmul size for the peak (default 8192 GPU, 2048 CPU)")
    ap.add_argument("--pretrain-only", action="store_true", help="skip fine-tuning and inference")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"
    precision = "bf16 autocast" if args.bf16 else "fp32"
    print(f"device: {where}; {args.seconds:g} s clips; {precision}{'; torch.compile' if args.compile else ''}")

    peak_dtype = torch.bfloat16 if args.bf16 else torch.float32
    peak_n = args.peak_n or (8192 if device.type == "cuda" else 2048)
    peak_reps = 20 if device.type == "cuda" else 10
    peak = peak_matmul_flops(device, peak_dtype, peak_n, peak_reps)
    peak_name = f"peak matmul ({str(peak_dtype).removeprefix('torch.')}, {peak_n}x{peak_n})"
    print(f"{peak_name}: {_rate(peak).strip()}")

    results = {}
    for size in args.sizes.split(","):
        steps = args.paper_steps if size == "paper" and args.paper_steps else args.steps
        batch = args.paper_batch if size == "paper" and args.paper_batch else args.batch
        infer_batch = args.infer_batch or batch
        results[size] = (
            steps,
            bench(
                size,
                device,
                batch,
                infer_batch,
                args.seconds,
                steps,
                args.warmup,
                args.bf16,
                args.compile,
                finetune=not args.pretrain_only,
            ),
        )
    # Measured again after the runs: on a shared machine the rate moves, and utilisation is
    # reported against the better of the two (so it is never flattered by a slow peak).
    peak_after = peak_matmul_flops(device, peak_dtype, peak_n, peak_reps)
    peak = max(peak, peak_after)
    print(f"{peak_name} after the runs: {_rate(peak_after).strip()}; utilisation is against {_rate(peak).strip()}")
    for size, (steps, r) in results.items():
        print(f"{size}: {r['params']:,d} encoder params, {steps} timed steps")
        for phase, p in r["phases"].items():
            per_s = p["batch"] / p["s_per_step"]
            achieved = p["flops_per_step"] / p["s_per_step"]
            print(
                f"  {phase:9s} batch {p['batch']:4d} | {p['s_per_step']:8.3f} s/step | {per_s:8.3g} {p['unit']}/s"
                f" ({per_s * p['audio_per_item']:8.3g} audio s/s) | {p['flops_per_step'] / 1e9:9.1f} GFLOP/step"
                f" | {_rate(achieved)} | {100 * achieved / peak:5.1f}% of peak"
            )


if __name__ == "__main__":
    main()
