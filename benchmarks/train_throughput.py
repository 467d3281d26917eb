"""Training throughput of one pretraining step and one fine-tuning step, per encoder size.

Run: .venv/bin/python benchmarks/train_throughput.py [--device cpu|cuda] [--sizes small,paper]
     [--batch 32] [--seconds 1.0] [--steps 10] [--threads 2] [--bf16]
     [--pretrain-only] [--paper-steps 3] [--paper-batch 4]
Prints, per size, samples (pairs or clips) per second and audio seconds per second. Synthetic
waveforms in memory, so the figure is the model's cost alone, not the loader's. The pretraining
step is the training loop's own (jsqa.train.pretrain: forward under autocast, NT-Xent in fp32,
backward, clipping, AdamW, schedule).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jsqa.models.encoder import count_parameters
from jsqa.models.mos import MOSModel, PretrainModel, encoder_spec
from jsqa.train.pair_batches import PairBatch
from jsqa.train.pretrain import contrastive_loss, lr_factor, optimizer_step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time_steps(step, steps: int, device: torch.device) -> float:
    for _ in range(2):  # warm-up (cuDNN autotuning, allocator)
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - t0) / steps


def pretrain_step_time(size: str, device: torch.device, batch: int, seconds: float, steps: int, bf16: bool) -> float:
    """Seconds per pretraining optimizer step of ``batch`` pairs of ``seconds`` each."""
    n = int(seconds * 16000)
    pre = PretrainModel(encoder_spec(size)).to(device)
    opt = torch.optim.AdamW(pre.parameters(), lr=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(10_000, 1))
    a, b = (torch.randn(batch, n, device=device) * 0.05 for _ in range(2))
    pb = PairBatch(a=a, b=b, mask=torch.eye(batch, dtype=torch.bool, device=device), idx=np.arange(batch))
    amp = torch.bfloat16 if bf16 else None

    def pre_step() -> None:
        loss, _, _ = contrastive_loss(pre, pb, 0.1, amp)
        optimizer_step(pre, loss, opt, sched, clip_norm=5.0)

    return _time_steps(pre_step, steps, device)


def bench(size: str, device: torch.device, batch: int, seconds: float, steps: int, bf16: bool,
          finetune: bool = True) -> dict:
    spec = encoder_spec(size)
    n = int(seconds * 16000)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    t_pre = pretrain_step_time(size, device, batch, seconds, steps, bf16)
    out = {
        "params": count_parameters(MOSModel(spec).encoder),
        "pretrain_pairs_per_s": batch / t_pre,
        "pretrain_audio_s_per_s": 2 * batch * seconds / t_pre,
    }
    if not finetune:
        return out

    mos = MOSModel(spec).to(device)
    opt2 = torch.optim.AdamW(mos.parameters(), lr=1e-4)
    a = torch.randn(batch, n, device=device) * 0.05
    y = torch.rand(batch, device=device) * 4 + 1

    def ft_step() -> None:
        with autocast:
            loss = torch.nn.functional.mse_loss(mos(a).float(), y)
        opt2.zero_grad(set_to_none=True)
        loss.backward()
        opt2.step()

    t_ft = _time_steps(ft_step, steps, device)
    return {**out, "finetune_clips_per_s": batch / t_ft, "finetune_audio_s_per_s": batch * seconds / t_ft}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--sizes", default="small,paper")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--paper-steps", type=int, default=None, help="timed steps for 'paper' (default --steps)")
    ap.add_argument("--paper-batch", type=int, default=None,
                    help="batch for 'paper' (default --batch; on a CPU batch 32 needs ~13 GB)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU)")
    ap.add_argument("--pretrain-only", action="store_true", help="skip the fine-tuning step")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"
    print(f"device: {where}; batch {args.batch} x {args.seconds:g} s; {'bf16 autocast' if args.bf16 else 'fp32'}")
    for size in args.sizes.split(","):
        steps = args.paper_steps if size == "paper" and args.paper_steps else args.steps
        batch = args.paper_batch if size == "paper" and args.paper_batch else args.batch
        r = bench(size, device, batch, args.seconds, steps, args.bf16, finetune=not args.pretrain_only)
        line = (f"{size:6s} {r['params']:>11,d} params | pretrain {r['pretrain_pairs_per_s']:8.1f} pairs/s "
                f"({r['pretrain_audio_s_per_s']:8.1f} audio s/s)")
        if "finetune_clips_per_s" in r:
            line += (f" | finetune {r['finetune_clips_per_s']:8.1f} clips/s "
                     f"({r['finetune_audio_s_per_s']:8.1f} audio s/s)")
        print(line + f" [{steps} steps of {batch}]")


if __name__ == "__main__":
    main()
