"""Several processes, one run: DistributedDataParallel under `torchrun`.

`torchrun --nproc_per_node=K` (and, across machines, `--nnodes --node_rank
--rdzv_endpoint`) sets RANK, WORLD_SIZE and LOCAL_RANK; each process then trains on
its share of every global batch, and gradients are averaged by DDP (gloo on CPU,
nccl on CUDA). Without those variables there is one process and nothing to do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place: rank among `size` processes (rank 0 writes files)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def is_main() -> bool:
    """Whether this process is rank 0 (before or without `init`)."""
    return int(os.environ.get("RANK", "0")) == 0


def init(device: torch.device) -> World:
    """Join the process group that torchrun describes (if any); CUDA ranks get their GPU."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return World(rank, size, local_rank)


def total(value: float, world: World, device: torch.device) -> float:
    """The sum of `value` over all processes."""
    if not world.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item())


def shutdown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()
