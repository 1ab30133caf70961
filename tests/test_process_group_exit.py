"""A rank that joined with :func:`~pgtm.inference.distributed.init_from_environment` leaves
nothing of the group behind once it is destroyed: gloo's threads are joined before the
interpreter exits (left to the exit, they were seen to abort a rank). Its own file: the ranks
import only this module, so nothing has imported ``torch._dynamo`` before they join."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from pgtm.inference.distributed import init_from_environment

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or not Path("/proc/self/task").is_dir(),
    reason="needs torch.distributed and Linux's /proc/self/task")


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _train_a_step(module: nn.Module) -> None:
    module(torch.randn(4, 8)).square().sum().backward()


def _rank(rank: int, port: int, counts) -> None:
    torch.set_num_threads(1)
    _train_a_step(nn.Linear(8, 8))  # any thread a step starts exists before the group
    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    before = _threads()
    init_from_environment("cpu")
    joined = _threads()
    import torchvision  # noqa: F401  (pgtm train imports it after joining; it imports dynamo)

    _train_a_step(DistributedDataParallel(nn.Linear(8, 8)))
    torch.distributed.destroy_process_group()
    counts[rank] = (before, joined, _threads())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_destroyed_group_leaves_no_thread_behind():
    counts = mp.Manager().dict()
    mp.spawn(_rank, args=(_free_port(), counts), nprocs=2, join=True)
    for rank in (0, 1):
        before, joined, left = counts[rank]
        assert joined > before, "gloo started no thread: the test would prove nothing"
        assert left == before, f"rank {rank}: {left - before} of the group's threads outlive it"
