"""Pretraining data loader throughput (shards -> device-ready batches) against training consumption.

Run: .venv/bin/python benchmarks/loader_throughput.py [--utterances 200] [--batch 32] [--threads 2]
     [--sizes small,paper] [--steps 5] [--paper-steps 2] [--paper-batch 4] [--device cpu|cuda] [--keep DIR]
Renders a synthetic pair set (1 s pairs, 4 per utterance, via jsqa.pairs.generate.generate_pairs), then
times one epoch of the batch plan through three loaders, best of --repeats passes (shards in
the page cache after the first pass: this is the warm-cache figure):

* per-pair: the previous loader, one float conversion and copy per pair, then np.stack;
* batched: PairBatchLoader without read-ahead (one int16 fancy-index read per shard per batch);
* read-ahead: PairBatchLoader as training uses it (a thread reads 2 batches ahead).

Training consumption is the training loop's own step on in-memory batches of the same shape
(benchmarks/train_throughput.py), per size; the ratio loader / training is the headroom (goal
>= 2). For `small` it also times real steps fed by the loader against steps on a fixed batch:
the loader's cost inside the loop. Prints one table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pairs_throughput import make_corpus
from train_throughput import pretrain_step_time

from jsqa.config import PairsConfig
from jsqa.models.mos import PretrainModel, encoder_spec
from jsqa.pairs.generate import generate_pairs
from jsqa.pairs.store import PairSet, load_pairs
from jsqa.train.pair_batches import PairBatch, PairBatchLoader
from jsqa.train.pretrain import contrastive_loss, grouped_batches, lr_factor, optimizer_step


def per_pair_batches(pairs: PairSet, plan: list[np.ndarray], device: torch.device):
    """The loader before this benchmark existed: pair by pair, float32 on the host."""
    for idx in plan:
        audio = torch.from_numpy(np.stack([pairs[int(i)] for i in idx]))
        mask = torch.from_numpy(pairs.positives_mask(idx)).to(device)
        yield audio[:, 0].to(device), audio[:, 1].to(device), mask


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_loader(make_iter, n_pairs: int, device: torch.device, repeats: int) -> float:
    """Best pairs/s over ``repeats`` full passes."""
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _batch in make_iter():
            pass
        _sync(device)
        best = max(best, n_pairs / (time.perf_counter() - t0))
    return best


def loop_overhead(pairs: PairSet, plan: list[np.ndarray], device: torch.device, steps: int) -> tuple[float, float]:
    """(pairs/s of `small` steps fed by the read-ahead loader, pairs/s of the same steps on one fixed batch)."""
    torch.manual_seed(0)
    model = PretrainModel(encoder_spec("small")).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(10_000, 1))
    plan = [p for p in plan if len(p) == len(plan[0])][: steps + 2]

    def step(batch: PairBatch) -> None:
        loss, _, _ = contrastive_loss(model, batch, 0.1, None)
        optimizer_step(model, loss, opt, sched, 5.0)

    with PairBatchLoader(pairs, plan, device, with_mask=True) as loader:
        it = iter(loader)
        for _ in range(2):  # warm-up
            step(next(it))
        t0 = time.perf_counter()
        n = 0
        for batch in it:
            step(batch)
            n += len(batch.idx)
        _sync(device)
        fed = n / (time.perf_counter() - t0)
    fixed = next(iter(PairBatchLoader(pairs, plan[:1], device, with_mask=True, prefetch=0)))
    t0 = time.perf_counter()
    for _ in range(len(plan) - 2):
        step(fixed)
    _sync(device)
    return fed, (len(plan) - 2) * len(plan[0]) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--utterances", type=int, default=200)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--group", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", default="small,paper")
    ap.add_argument("--steps", type=int, default=5, help="timed training steps (small)")
    ap.add_argument("--paper-steps", type=int, default=2, help="timed training steps (paper)")
    ap.add_argument(
        "--paper-batch",
        type=int,
        default=4,
        help="pairs per step when timing 'paper' training (batch 32 needs ~13 GB on a CPU)",
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--keep", default=None, help="build the pair set here and keep it (reused when present)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.keep) if args.keep else Path(tmp)
        pairs_dir = base / "pairs"
        if not (pairs_dir / "index.json").exists():
            t0 = time.perf_counter()
            make_corpus(base, args.utterances, 6)
            cfg = PairsConfig(pairs_per_utterance=4, segment_seconds=1.0, shard_size=256, workers=1).for_profile(
                "paper"
            )
            generate_pairs(
                base / "manifests" / "clean.parquet", base / "manifests" / "noise.parquet", cfg, 0, pairs_dir, root=base
            )
            print(f"pair set: rendered in {time.perf_counter() - t0:.1f} s")
        pairs = load_pairs(pairs_dir)
        utt = pairs.recipes["utterance_id"].to_numpy()
        plan = grouped_batches(utt, args.batch, args.group, np.random.default_rng(0))
        n = sum(len(p) for p in plan)
        mb = n * 2 * pairs.segment_samples * 2 / 2**20
        where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} torch threads"
        print(
            f"device: {where}; {pairs.n} pairs x 2 x {pairs.segment_samples} samples ({mb:.0f} MiB int16), "
            f"{len(plan)} batches of <= {args.batch}"
        )

        loaders = {
            "per-pair": lambda: per_pair_batches(pairs, plan, device),
            "batched": lambda: PairBatchLoader(pairs, plan, device, with_mask=True, prefetch=0),
            "read-ahead": lambda: PairBatchLoader(pairs, plan, device, with_mask=True, prefetch=2),
        }
        rates = {name: time_loader(f, n, device, args.repeats) for name, f in loaders.items()}
        for name, r in rates.items():
            print(f"loader {name:10s} {r:9.1f} pairs/s")
        for size in args.sizes.split(","):
            steps = args.paper_steps if size == "paper" else args.steps
            batch = args.paper_batch if size == "paper" else args.batch
            train = batch / pretrain_step_time(size, device, batch, pairs.segment_samples / 16000, steps, bf16=False)
            print(
                f"{size:6s} training consumes {train:8.1f} pairs/s | loader/training: "
                + ", ".join(f"{k} {v / train:6.1f}x" for k, v in rates.items())
                + f" [{steps} steps of {batch}]"
            )
        if "small" in args.sizes.split(","):
            fed, fixed = loop_overhead(pairs, plan, device, args.steps)
            print(
                f"small  steps fed by the read-ahead loader {fed:.1f} pairs/s vs one fixed batch {fixed:.1f} pairs/s "
                f"(loader cost in the loop {100 * (1 - fed / fixed):+.1f}%)"
            )


if __name__ == "__main__":
    main()
