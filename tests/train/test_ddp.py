"""DDP on 2 CPU processes (gloo): gradients and steps match the documented single-process semantics.

A step with W ranks averages the gradients of W whole batches (each with its own in-batch
negatives), so the reference is the mean of per-batch single-process gradients, and one DDP
optimizer step equals one single-process step on the mean of the W batch losses.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml

from jsqa.io import read_json
from jsqa.models.mos import PretrainModel, encoder_spec, load_checkpoint
from jsqa.train.common import step_seed
from jsqa.train.distributed import DistContext, shard_batches, steps_per_epoch
from jsqa.train.pair_batches import PairBatch
from jsqa.train.pretrain import contrastive_loss, lr_factor, optimizer_step

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
WORLD, B, T, SEED, LR = 2, 6, 8000, 3, 1e-3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batch(rank: int) -> PairBatch:
    g = torch.Generator().manual_seed(100 + rank)
    a = torch.randn(B, T, generator=g) * 0.1
    b = a + torch.randn(B, T, generator=g) * 0.01  # a positive: the same signal, slightly perturbed
    return PairBatch(a=a, b=b, mask=None, idx=np.arange(B))


def _model_and_optim() -> tuple[PretrainModel, torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    torch.manual_seed(SEED)
    model = PretrainModel(encoder_spec("small"))
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=1e-4)
    return model, opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(10, 1))


def _ddp_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        model, opt, sched = _model_and_optim()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        torch.manual_seed(step_seed(SEED, 0, rank))
        loss, _, _ = contrastive_loss(ddp, _batch(rank), 0.1, None)
        optimizer_step(ddp, loss, opt, sched, clip_norm=0.0)  # no clipping: compare raw gradients
        torch.save(
            {
                "grads": {n: p.grad.clone() for n, p in model.named_parameters()},
                "params": {n: p.detach().clone() for n, p in model.named_parameters()},
            },
            Path(out) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def test_shard_batches_gives_each_rank_whole_batches_in_lock_step():
    plan = [np.arange(i * 4, i * 4 + 4) for i in range(5)]
    shards = [shard_batches(plan, DistContext(rank=r, world_size=2)) for r in range(2)]
    assert [len(s) for s in shards] == [3, 3] == [steps_per_epoch(5, 2)] * 2  # equal steps, or DDP hangs
    assert [b.tolist() for b in shards[0]] == [plan[0].tolist(), plan[2].tolist(), plan[4].tolist()]
    assert [b.tolist() for b in shards[1]] == [plan[1].tolist(), plan[3].tolist(), plan[0].tolist()]  # wrapped
    assert shard_batches(plan, DistContext()) == plan


def test_ddp_gradients_and_step_match_single_process_semantics(tmp_path):
    mp.spawn(_ddp_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]

    # reference 1: the mean of the per-rank gradients, each batch alone in one process
    torch.set_num_threads(1)
    model, _, _ = _model_and_optim()
    per_rank = []
    for r in range(WORLD):
        torch.manual_seed(step_seed(SEED, 0, r))
        loss, _, _ = contrastive_loss(model, _batch(r), 0.1, None)
        per_rank.append(torch.autograd.grad(loss, list(model.parameters())))
    for (name, _), *grads in zip(model.named_parameters(), *per_rank):
        mean = torch.stack(grads).mean(0)
        for r in range(WORLD):
            torch.testing.assert_close(ranks[r]["grads"][name], mean, rtol=1e-4, atol=1e-6)

    # reference 2: one single-process step on the mean of the batch losses gives the DDP weights
    model, opt, sched = _model_and_optim()
    losses = []
    for r in range(WORLD):
        torch.manual_seed(step_seed(SEED, 0, r))
        losses.append(contrastive_loss(model, _batch(r), 0.1, None)[0])
    optimizer_step(model, torch.stack(losses).mean(), opt, sched, clip_norm=0.0)
    for name, p in model.named_parameters():
        for r in range(WORLD):
            torch.testing.assert_close(ranks[r]["params"][name], p.detach(), rtol=1e-4, atol=1e-6)


def test_torchrun_pretrain_with_two_processes_writes_one_encoder(small_pairs, tmp_path, empty_mlflow_store):
    empty_mlflow_store(tmp_path / "mlflow.db")
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump(
            {
                "seed": 1,
                "model": {"size": "small"},
                "pretrain": {"epochs": 1, "batch_size": 8, "group_size": 4, "threads": 1, "checkpoint_every": 2},
            }
        )
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    out = tmp_path / "encoder.pt"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(_free_port()),
        "-m",
        "jsqa.cli",
        "pretrain",
        "--params",
        str(tmp_path / "params.yaml"),
        "--root",
        str(tmp_path),
        "--pairs",
        str(small_pairs),
        "--out",
        str(out),
        "--metrics",
        str(tmp_path / "pretrain.json"),
    ]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("pretrain: encoder (93,120 parameters) saved") == 1  # rank 0 alone reports
    assert "rank 1 of 2, backend gloo" in proc.stderr
    summary = read_json(tmp_path / "pretrain.json")
    assert summary["world_size"] == 2 and summary["steps"] == 3  # 6 batches shared by 2 ranks
    assert load_checkpoint(out)["kind"] == "encoder"
