"""Multi-process training under ``torchrun``: process group, batch sharding, rank agreement.

Semantics of a step with W processes: each rank takes whole batches from the epoch's batch
plan (batch k goes to rank k mod W), so in-batch negatives stay those of one utterance-grouped
batch of ``batch_size`` pairs, exactly as in a single process. DDP averages the W gradients,
so one optimizer step follows the mean of the W batch losses, and an epoch has ceil(n / W)
steps. To keep every rank in lock-step the plan is padded by wrapping around to its start.
BatchNorm statistics are per rank (no SyncBatchNorm); rank 0's buffers are broadcast each step.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from jsqa.errors import JsqaError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands among its peers; world_size 1 means no process group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def context_from_env() -> DistContext:
    """Rank and world size as torchrun sets them (WORLD_SIZE, RANK, LOCAL_RANK); single process otherwise."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise JsqaError(f"WORLD_SIZE/RANK/LOCAL_RANK must be integers ({exc})") from exc
    if world < 1 or not 0 <= rank < world:
        raise JsqaError(f"invalid distributed environment: RANK={rank}, WORLD_SIZE={world}")
    return DistContext(rank=rank, world_size=world, local_rank=local)


def init_distributed(ctx: DistContext, device: torch.device) -> torch.device:
    """Join the process group (nccl on CUDA, gloo on CPU); return this rank's device."""
    if not ctx.enabled:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=ctx.rank, world_size=ctx.world_size)
        log.info("distributed: rank %d of %d, backend %s, device %s", ctx.rank, ctx.world_size, backend, device)
    return device


def shutdown_distributed(ctx: DistContext) -> None:
    """Leave the process group (after a barrier, so no rank exits while a peer still talks)."""
    if ctx.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def shard_batches(batches: list[np.ndarray], ctx: DistContext) -> list[np.ndarray]:
    """This rank's whole batches: k mod W == rank, the plan wrapped around to a multiple of W."""
    if not ctx.enabled or not batches:
        return list(batches)
    n = -(-len(batches) // ctx.world_size) * ctx.world_size
    padded = [batches[i % len(batches)] for i in range(n)]
    return padded[ctx.rank :: ctx.world_size]


def steps_per_epoch(n_batches: int, world_size: int) -> int:
    """Optimizer steps of an epoch of ``n_batches`` batches shared by ``world_size`` ranks."""
    return -(-n_batches // max(world_size, 1))


def agree_max(value: int, ctx: DistContext, device: torch.device) -> int:
    """The largest ``value`` over all ranks (how a stop signal seen by one rank reaches all)."""
    if not ctx.enabled:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def mean_over_ranks(values: list[float], ctx: DistContext, device: torch.device) -> list[float]:
    """Element-wise mean of per-rank floats (epoch metrics reported by rank 0)."""
    if not ctx.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return (t / ctx.world_size).tolist()
