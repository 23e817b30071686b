"""Data-parallel training under torchrun: which process this is, and the few collectives the trainer needs.

torchrun starts one process per device and tells each its RANK, LOCAL_RANK and WORLD_SIZE in the environment.
Without torchrun lrnbn trains in one process and every collective here returns its input unchanged, so the
training loop has a single code path.

What a data-parallel run shares with a one-process run of the same config: the global batch (train.batch_size),
its order and its augmentation. Every rank draws the same random numbers, trains on its contiguous slice of each
global batch, and DDP averages the gradients, which gives the gradient of the global batch's mean loss. What
differs: batch-norm statistics come from each rank's slice unless model.sync_bn is on, dropout masks come from
per-rank generators, and sums are added in another order (float rounding).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist

from lrnbn.errors import UserError

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    launched: bool = False  # started by torchrun; even one process then takes the DDP path (NCCL/gloo included)
    backend: str | None = None  # set once joined

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes the run directory and shows progress."""
        return self.rank == 0

    def describe(self) -> dict:
        return {"world_size": self.size, "backend": self.backend}

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The element-wise sum over ranks (in place)."""
        if self.launched:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def min(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.launched:
            dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
        return tensor

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when `flag` is true on any: how ranks agree to stop at the same step."""
        if not self.launched:
            return flag
        return bool(self.sum(torch.tensor(int(flag), device=device)).item())

    def gather(self, obj) -> list:
        """Every rank's `obj`, in rank order, on every rank."""
        if not self.launched:
            return [obj]
        gathered = [None] * self.size
        dist.all_gather_object(gathered, obj)
        return gathered

    def share_buffers(self, module: torch.nn.Module) -> None:
        """Give every rank rank 0's buffers (BN running statistics), so that all ranks evaluate, and rank 0
        checkpoints, one model."""
        if self.launched:
            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)

    def main_first(self, action: Callable[[], T], others: Callable[[], T] | None = None) -> T:
        """Run `action` on rank 0; once it has returned, the other ranks run `others`, or without it receive rank 0's
        result. A UserError on rank 0 is raised on every rank, so that all stop with its message rather than with
        a lost connection to rank 0."""
        if not self.launched:
            return action()
        outcome = [None]
        if self.main:
            try:
                result = action()
                outcome = [("ok", None if others else result)]
            except UserError as err:
                outcome = [("error", err)]
        dist.broadcast_object_list(outcome, src=0)
        status, value = outcome[0]
        if status == "error":
            raise value
        if self.main:
            return result
        return others() if others else value

    def slice(self, total: int) -> slice:
        """This rank's contiguous share of `total` items (shares differ in size by at most one): of each global
        training batch, and of the test split."""
        return slice(total * self.rank // self.size, total * (self.rank + 1) // self.size)

    def seed(self, seed: int) -> int:
        """A seed for this rank's own random draws (dropout), distinct across ranks and seeds."""
        return int(np.random.SeedSequence([seed, self.rank]).generate_state(1)[0])


def current() -> World:
    """The world torchrun describes in the environment, or a world of one process."""
    env = os.environ
    if "WORLD_SIZE" not in env:
        return World()
    world = World(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)), launched=True)
    if dist.is_initialized():
        return dataclasses.replace(world, backend=dist.get_backend())
    return world


def join(device: torch.device) -> World:
    """Join torchrun's process group, once: NCCL for CUDA, gloo otherwise. Without torchrun, a world of one."""
    world = current()
    if world.launched and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
        world = dataclasses.replace(world, backend=dist.get_backend())
    return world


def leave() -> None:
    """Leave the process group at the end, so that no rank exits while a peer still holds a connection to it."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
