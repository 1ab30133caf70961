"""Data-parallel training over processes with ``torch.distributed`` (launched by ``torchrun``).

The training loop asks :func:`ranks` where it runs. With one process everything is as before.
With ``W`` processes (a process group initialised by the caller, e.g. ``pgtm train`` under
``torchrun``): each rank draws ``batch_size / W`` sequences from its own generator seeded by
:func:`rank_seed` ``(seed, rank)``; :class:`~torch.nn.parallel.DistributedDataParallel` averages
the gradients, so each rank's loss is multiplied by ``W`` to make the update that of the summed
loss of the whole batch; losses and stop decisions are reduced over ranks, so every rank takes
the same decisions; rank 0 alone writes logs, checkpoints and pictures, and a checkpoint holds
every rank's generator states.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, NamedTuple

import torch
import torch.distributed as dist

__all__ = ["Ranks", "all_states", "any_rank", "init_from_environment", "rank_seed", "ranks",
           "sum_over_ranks"]


class Ranks(NamedTuple):
    """This process's place: ``rank`` in ``0 .. world - 1``."""

    rank: int
    world: int

    @property
    def main(self) -> bool:
        """The process that writes (rank 0)."""
        return self.rank == 0


def ranks() -> Ranks:
    """Where this process runs: ``Ranks(0, 1)`` without a process group."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    return Ranks(0, 1)


def init_from_environment(device: str) -> Ranks:
    """Join the process group ``torchrun`` describes in the environment (``WORLD_SIZE``,
    ``RANK``, ``MASTER_ADDR``, ...): gloo on the CPU, NCCL on CUDA. A no-op for one process."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        # torch._dynamo, imported while a group exists (torchvision imports it), keeps references
        # to that group, so destroy_process_group cannot free it: gloo's threads then live on
        # into the interpreter's exit, where a rank was seen to abort ("terminate called without
        # an active exception"). Imported before the group, it holds none.
        import torch._dynamo  # noqa: F401

        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return ranks()


def rank_seed(seed: int, rank: int) -> int:
    """The batch and RNG seed of ``rank``: ``seed`` itself for rank 0 (so one process trains as
    it always did), a hash of ``(seed, rank)`` for the others."""
    if rank == 0:
        return seed
    digest = hashlib.sha256(f"pgtm:{seed}:{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 2


def _device_of_group() -> torch.device:
    cuda = dist.get_backend() == "nccl"
    return torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")


def sum_over_ranks(value: float) -> float:
    """``value`` summed over ranks (itself for one process)."""
    if ranks().world == 1:
        return value
    total = torch.tensor([value], dtype=torch.float64, device=_device_of_group())
    dist.all_reduce(total)
    return float(total.item())


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` holds on some rank (itself for one process)."""
    return sum_over_ranks(float(flag)) > 0


def all_states(state: Any) -> list[Any]:
    """Every rank's ``state`` (a picklable object), in rank order."""
    if ranks().world == 1:
        return [state]
    gathered: list[Any] = [None] * ranks().world
    dist.all_gather_object(gathered, state)
    return gathered
