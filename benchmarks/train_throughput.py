"""Training throughput of one pretraining step and one fine-tuning step, per encoder size.

Run: .venv/bin/python benchmarks/train_throughput.py [--device cpu|cuda] [--sizes small,paper]
     [--batch 32] [--seconds 1.0] [--steps 10] [--threads 2] [--bf16]
Prints, per size, samples (pairs or clips) per second and audio seconds per second. Synthetic
waveforms in memory, so the figure is the model's cost alone, not the loader's.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch

from jsqa.losses import nt_xent
from jsqa.models.encoder import count_parameters
from jsqa.models.mos import MOSModel, PretrainModel, encoder_spec


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


def bench(size: str, device: torch.device, batch: int, seconds: float, steps: int, bf16: bool) -> dict:
    spec = encoder_spec(size)
    n = int(seconds * 16000)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    pre = PretrainModel(spec).to(device)
    opt = torch.optim.AdamW(pre.parameters(), lr=1e-4)
    a, b = (torch.randn(batch, n, device=device) * 0.05 for _ in range(2))

    def pre_step() -> None:
        with autocast:
            z = pre(torch.cat([a, b]))
            loss = nt_xent(z[:batch].float(), z[batch:].float(), 0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t_pre = _time_steps(pre_step, steps, device)

    mos = MOSModel(spec).to(device)
    opt2 = torch.optim.AdamW(mos.parameters(), lr=1e-4)
    y = torch.rand(batch, device=device) * 4 + 1

    def ft_step() -> None:
        with autocast:
            loss = torch.nn.functional.mse_loss(mos(a).float(), y)
        opt2.zero_grad(set_to_none=True)
        loss.backward()
        opt2.step()

    t_ft = _time_steps(ft_step, steps, device)
    return {
        "params": count_parameters(pre.encoder),
        "pretrain_pairs_per_s": batch / t_pre,
        "pretrain_audio_s_per_s": 2 * batch * seconds / t_pre,
        "finetune_clips_per_s": batch / t_ft,
        "finetune_audio_s_per_s": batch * seconds / t_ft,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--sizes", default="small,paper")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"
    print(f"device: {where}; batch {args.batch} x {args.seconds:g} s; {'bf16 autocast' if args.bf16 else 'fp32'}")
    for size in args.sizes.split(","):
        r = bench(size, device, args.batch, args.seconds, args.steps, args.bf16)
        print(f"{size:6s} {r['params']:>11,d} params | pretrain {r['pretrain_pairs_per_s']:8.1f} pairs/s "
              f"({r['pretrain_audio_s_per_s']:8.1f} audio s/s) | finetune {r['finetune_clips_per_s']:8.1f} clips/s "
              f"({r['finetune_audio_s_per_s']:8.1f} audio s/s)")


if __name__ == "__main__":
    main()
