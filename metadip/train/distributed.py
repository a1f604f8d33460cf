"""Data-parallel meta-training: ``torchrun --nproc-per-node N -m metadip train ...``.

Every process samples the same meta-batch (the same seeded generator), takes its share
``batch[rank::N]``, computes the meta-gradient of that share, and the shares' gradients
and losses are averaged over the whole meta-batch with one all-reduce (each weighted by
its task count), so every process takes the identical outer step a single process would
take on the whole meta-batch. Process 0 alone writes the log, checkpoints, init and plots,
and runs the validation. NCCL on GPUs, gloo on CPUs. Without torchrun's environment
(``WORLD_SIZE`` unset or 1) training runs in one process as before.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["Group", "join", "launched_rank", "launched_world"]


@dataclass(frozen=True)
class Group:
    """This process's place among the training processes (rank 0 of 1 when alone)."""

    rank: int = 0
    world: int = 1

    @property
    def writer(self) -> bool:
        """Whether this process writes the run's files (one writer for checkpoints)."""
        return self.rank == 0

    def share(self, batch: list) -> list:
        """This process's tasks of the meta-batch: every ``world``-th from ``rank``."""
        return batch[self.rank :: self.world]

    def mean(self, loss: Tensor, grads: dict[str, Tensor], count: int) -> tuple:
        """The meta-batch's mean loss and gradients from each process's mean over its
        ``count`` tasks: ``Σ_p count_p · g_p / Σ_p count_p`` (one all-reduce)."""
        if self.world == 1:
            return loss, grads
        names = list(grads)
        parts = [loss.reshape(1), *(grads[n].reshape(-1) for n in names)]
        flat = torch.cat([p.to(loss.dtype) for p in parts]) * count
        flat = torch.cat([flat, flat.new_tensor([float(count)])])
        dist.all_reduce(flat)
        flat = flat[:-1] / flat[-1]
        out, offset = {}, 1
        for n in names:
            size = grads[n].numel()
            out[n] = flat[offset : offset + size].view_as(grads[n]).to(grads[n].dtype)
            offset += size
        return flat[0], out


def launched_world() -> int:
    """How many training processes torchrun started (``WORLD_SIZE``; 1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_rank() -> int:
    """This process's rank among them (``RANK``; 0 without torchrun)."""
    return int(os.environ.get("RANK", "0"))


def join(device: Any, meta_batch: int) -> Group:
    """Joins torchrun's process group when ``WORLD_SIZE`` > 1 (NCCL for a CUDA ``device``,
    each process on ``cuda:LOCAL_RANK``; gloo otherwise); the one-process group otherwise.
    Raises if the meta-batch has fewer tasks than there are processes."""
    world = launched_world()
    if world <= 1:
        return Group()
    if meta_batch < world:
        raise ValueError(
            f"meta_batch ({meta_batch}) must be at least the number of training processes "
            f"({world}): each process takes a share of the meta-batch"
        )
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return Group(dist.get_rank(), dist.get_world_size())
