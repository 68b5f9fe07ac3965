"""Multi-process training with PyTorch's own DistributedDataParallel, set up from torchrun's environment.

`torchrun --nproc-per-node N -m ssat train ...` sets RANK / WORLD_SIZE / LOCAL_RANK; a plain `ssat train` has none
of them and runs as a world of one (every helper here is then a no-op)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Optional

import torch
import torch.distributed as dist

from ssat.errors import UserError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


SINGLE = World()  # one process, no process group: the default of functions that take a World


def assert_in_sync(world: World, model: torch.nn.Module) -> None:
    """Fail loudly if the ranks' parameters differ (DDP keeps them bit-identical; a difference means a rank ran a
    different step, e.g. a data set that differs between machines). One all-reduce of per-tensor checksums."""
    if not world.distributed:
        return
    sums = torch.stack([p.detach().double().sum() for p in model.parameters()])
    both = torch.cat([sums, -sums])
    dist.all_reduce(both, op=dist.ReduceOp.MAX)
    spread = (both[:len(sums)] + both[len(sums):]).abs().max().item()
    if spread > 0:
        raise RuntimeError(f"the {world.size} processes' parameters differ (max checksum spread {spread:.3g}); "
                           f"check that every node reads the same data set and ssat version")


def from_env() -> World:
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    return World(rank=int(os.environ["RANK"]), size=size, local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def init(world: World, device_name: str) -> torch.device:
    """Join the process group (NCCL on GPUs, gloo on CPUs) and return this rank's device."""
    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    if device_name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {device_name} asked for, but CUDA is not available here; use --device cpu")
        if world.local_rank >= torch.cuda.device_count():
            raise UserError(f"local rank {world.local_rank} has no GPU ({torch.cuda.device_count()} visible); "
                            f"lower --nproc-per-node to the GPU count")
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device_name == "cpu":
        device, backend = torch.device("cpu"), "gloo"
    else:
        raise UserError(f"--device {device_name} cannot be used with torchrun; use auto, cpu or cuda")
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timedelta(minutes=30))
    return device


def backend(world: World) -> Optional[str]:
    """The process group's backend ("nccl", "gloo"), None for a plain single process: recorded in the summary."""
    return dist.get_backend() if world.distributed and dist.is_initialized() else None


def shutdown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of one epoch on one rank: augmentation, masks and drop-path differ per rank (otherwise every rank
    would draw the same masks for different images); rank 0 of any world draws what a single process draws."""
    return seed * 100_003 + epoch + rank * 1_000_003
