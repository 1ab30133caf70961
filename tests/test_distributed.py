"""Data-parallel training with two gloo processes on the CPU: the same update as one process
whose batch is the union of the ranks' batches; exact resume of a 2-rank run; the CLI launcher
(``pgtm train --nproc-per-node 2``, i.e. torchrun) killed and resumed; a destroyed group leaves
no thread behind. The ranks join through
:func:`~pgtm.inference.distributed.init_from_environment`, as ``pgtm train`` does."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.distributed
import torch.multiprocessing as mp
from test_compiled_objective import BinaryFrames
from test_compiled_objective import gtm as memory_gtm
from test_train import TinyGTM, TinyTask, W
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from pgtm.inference.checkpoint import load_checkpoint
from pgtm.inference.distributed import init_from_environment, rank_seed
from pgtm.inference.train import TrainConfig, train

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(),
                                reason="torch.distributed is not available")
STEPS, GLOBAL_BATCH = 5, 8


class Regression(nn.Module):
    """No latent variables: the loss is a deterministic function of the parameters and data,
    so one process and two can be compared step by step."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(W, 8), nn.Tanh(), nn.Linear(8, W))

    def model(self, x, c=None, mask=None):
        frames = x.reshape(*x.shape[:2], W)
        with pyro.plate("sequences", x.shape[0], dim=-2), pyro.plate("time", x.shape[1], dim=-1):
            pyro.sample("x", dist.Normal(torch.sigmoid(self.net(frames.roll(1, 1))),
                                         0.3).to_event(1), obs=frames)

    def guide(self, x, c=None, mask=None):
        pass


class UnionTask:
    """The batches of all ``world`` ranks of a seed, concatenated in rank order."""

    def __init__(self, seed: int, world: int) -> None:
        self.task = TinyTask()
        self.generators = [torch.Generator().manual_seed(rank_seed(seed, r))
                           for r in range(world)]

    def sample(self, batch_size, split, generator):
        share = batch_size // len(self.generators)
        parts = [self.task.sample(share, split, g) for g in self.generators]
        return type(parts[0])(*(None if fields[0] is None else torch.cat(fields)
                                for fields in zip(*parts, strict=True)))


def _config(out, steps, **kw) -> TrainConfig:
    return TrainConfig(steps=steps, batch_size=GLOBAL_BATCH, learning_rate=0.05,
                       checkpoint_every=2, progress=False, tensorboard=False, seed=3,
                       out_dir=out, **kw)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join(rank: int, port: int) -> None:
    """Join a 2-rank group as a ``torchrun`` rank does (its environment)."""
    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    init_from_environment("cpu")


def _worker(rank: int, port: int, out: str, model: str, schedule: list[int],
            options: dict) -> None:
    torch.set_num_threads(1)
    _join(rank, port)
    try:
        module, task = {"regression": (Regression, TinyTask), "gtm": (TinyGTM, TinyTask),
                        "memory-gtm": (memory_gtm, BinaryFrames)}[model]
        module, task = module(), task()
        for steps in schedule:  # several calls: stop, then resume
            train(module, task, _config(out, steps, **options))
    finally:
        torch.distributed.destroy_process_group()


def _two_ranks(tmp_path: Path, name: str, model: str, schedule: list[int], **options) -> dict:
    out = tmp_path / name
    mp.spawn(_worker, args=(_free_port(), str(out), model, schedule, options), nprocs=2,
             join=True)
    return load_checkpoint(out / "checkpoint.pt")


def test_two_ranks_make_the_update_of_one_process_on_the_union_batch(tmp_path):
    ckpt = _two_ranks(tmp_path, "ddp", "regression", [STEPS])
    alone = Regression()
    result = train(alone, UnionTask(seed=3, world=2), _config(tmp_path / "one", STEPS))
    # float32: the gradient sums run in another order (per rank, then across ranks)
    for name, value in alone.state_dict().items():
        torch.testing.assert_close(ckpt["module"][name], value, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ckpt["losses"], torch.tensor(result.losses, dtype=torch.float64),
                               rtol=1e-6, atol=0)
    assert len(ckpt["ranks"]) == 2 and not torch.equal(ckpt["ranks"][0]["batch_generator"],
                                                       ckpt["ranks"][1]["batch_generator"])


def test_a_resumed_two_rank_run_is_bit_identical(tmp_path):
    whole = _two_ranks(tmp_path, "whole", "gtm", [6])
    parts = _two_ranks(tmp_path, "parts", "gtm", [3, 6])  # stopped at 3, resumed to 6
    assert torch.equal(whole["losses"], parts["losses"])
    for name, value in whole["module"].items():
        assert torch.equal(parts["module"][name], value), name


def test_the_compiled_objective_trains_two_ranks_as_the_pyro_objective_does(tmp_path):
    # each rank draws its own noise, the same in both runs: were the compiled gradients not
    # averaged over the ranks, rank 0's parameters would follow its own half of the batch
    pyro_run = _two_ranks(tmp_path, "pyro", "memory-gtm", [4])
    compiled = _two_ranks(tmp_path, "compiled", "memory-gtm", [4], compile=True)
    torch.testing.assert_close(compiled["losses"], pyro_run["losses"], rtol=1e-5, atol=0)
    # Adam divides by the gradient's size, so a gradient near zero turns rounding into steps
    # up to the learning rate (0.05); unaveraged gradients would move most weights that much
    for name, value in pyro_run["module"].items():
        torch.testing.assert_close(compiled["module"][name], value, rtol=1e-3, atol=1e-3)


def test_resuming_with_another_number_of_processes_is_refused(tmp_path):
    _two_ranks(tmp_path, "run", "gtm", [2])
    with pytest.raises(ValueError, match=r"written by 2 process\(es\); resume it with 2"):
        train(TinyGTM(), TinyTask(), _config(tmp_path / "run", 4))


def _cli(out: Path, steps: int) -> list[str]:
    return [sys.executable, "-m", "pgtm", "train", "perfect-recall", "-l", "4", "-k", "2",
            "--model", "vrnn", "--out", str(out), "--steps", str(steps), "--batch-size", "4",
            "--latent-size", "4", "--controller-size", "8", "--network", "mlp",
            "--eval-every", "100", "--checkpoint-every", "4", "--eval-sequences", "2",
            "--iwae-particles", "2", "--no-progress", "--nproc-per-node", "2"]


def _run(command: list[str], env: dict, cwd: Path) -> None:
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


def test_the_cli_launcher_killed_and_resumed_matches_an_uninterrupted_run(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PGTM_DATA_DIR", None)
    steps = 40
    # run outside the source tree, as a user would: there `python -m pgtm` imports the source
    # folder pgtm/, which lacks pgtm.models (installed from models/)
    _run(_cli(tmp_path / "whole", steps), env, tmp_path)
    killed = subprocess.Popen(_cli(tmp_path / "killed", steps), env=env, cwd=tmp_path,
                              start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "killed" / "checkpoint.pt"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and killed.poll() is None:
        if checkpoint.is_file() and load_checkpoint(checkpoint)["step"] >= 8:
            break
        time.sleep(0.2)
    os.killpg(killed.pid, signal.SIGKILL)  # torchrun and both ranks, mid-run
    killed.wait()
    assert load_checkpoint(checkpoint)["step"] < steps, "finished before it could be killed"
    _run(_cli(tmp_path / "killed", steps), env, tmp_path)
    whole = load_checkpoint(tmp_path / "whole" / "checkpoint.pt")
    resumed = load_checkpoint(checkpoint)
    assert torch.equal(whole["losses"], resumed["losses"])
    for name, value in whole["module"].items():
        assert torch.equal(resumed["module"][name], value), name


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _leave(rank: int, port: int, counts) -> None:
    torch.set_num_threads(1)
    nn.Linear(8, 8)(torch.randn(4, 8)).sum().backward()  # a step's own threads start first
    assert "torch._dynamo" not in sys.modules, "imported already: the test would prove nothing"
    before = _threads()
    _join(rank, port)
    joined = _threads()
    import torchvision  # noqa: F401  (pgtm train imports it after joining; it imports dynamo)

    DistributedDataParallel(nn.Linear(8, 8))(torch.randn(4, 8)).sum().backward()
    torch.distributed.destroy_process_group()
    counts[rank] = (before, joined, _threads())


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux's /proc/self/task")
def test_a_destroyed_group_leaves_no_thread_behind():
    # left to the interpreter's exit, the group's gloo threads were seen to abort a rank
    # ("terminate called without an active exception"); torch._dynamo, imported after joining,
    # used to keep the group alive
    counts = mp.Manager().dict()
    mp.spawn(_leave, args=(_free_port(), counts), nprocs=2, join=True)
    for rank in (0, 1):
        before, joined, left = counts[rank]
        assert joined > before, "gloo started no thread: the test would prove nothing"
        assert left == before, f"rank {rank}: {left - before} of the group's threads outlive it"
