"""Tests of the generic training loop (``pgtm.inference.train``) and its checkpoints.

The task and model are tiny stand-ins written here (following docs/CONVENTIONS.md) so that the
loop is tested independently of ``pgtm.tasks`` and ``pgtm.models``.
"""

from __future__ import annotations

import csv
import math
import random
import warnings
from typing import NamedTuple

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from torch import nn

from pgtm.inference.checkpoint import (
    CHECKPOINT_NAME,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from pgtm.inference.train import (
    TrainConfig,
    TrainingDiverged,
    register_module,
    train,
)

T, W, Z = 2, 3, 2


class Batch(NamedTuple):
    """Stand-in for ``pgtm.tasks.SequenceBatch`` (same fields)."""

    x: torch.Tensor
    c: torch.Tensor | None
    mask: torch.Tensor
    recall: torch.Tensor
    labels: torch.Tensor
    addresses: torch.Tensor


class TinyTask:
    """Random binary-ish frames ``[B, T, 1, 1, W]``; the generator is the only randomness."""

    def sample(self, batch_size: int, split: str, generator: torch.Generator) -> Batch:
        assert split in ("train", "test")
        x = torch.rand(batch_size, T, 1, 1, W, generator=generator)
        full = torch.ones(batch_size, T, dtype=torch.bool)
        none = torch.full((batch_size, T), -1, dtype=torch.long)
        return Batch(x, None, full, torch.zeros_like(full), none, none.clone())


class TinyGTM(nn.Module):
    """2-step Gaussian latent model: z_0 ~ N(0, I), z_1 ~ N(A z_0, I), x_t ~ N(sigmoid(D z_t), .3).

    ``nan_at`` makes the ``nan_at``-th model call return a NaN penalty factor (divergence test),
    ``nan_from`` every call from that one on, and ``explode_at`` a finite penalty of -1e12.
    """

    def __init__(self, seed: int = 0, nan_at: int | None = None, nan_from: int | None = None,
                 explode_at: int | None = None) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.trans = nn.Linear(Z, Z)
        self.dec = nn.Linear(Z, W)
        self.enc = nn.Linear(W, 2 * Z)
        self.nan_at = nan_at
        self.nan_from = nan_from
        self.explode_at = explode_at
        self.calls = 0

    def model(self, x, c=None, mask=None):
        pyro.module("gtm", self)
        self.calls += 1
        B = x.shape[-5]
        frames = x.reshape(*x.shape[:-3], W)
        with pyro.plate("sequences", B, dim=-2):
            zs = []
            loc = x.new_zeros(B, 1, Z)
            for t in range(T):
                z = pyro.sample(f"z_{t}", dist.Normal(loc, 1.0).to_event(1))
                zs.append(z)
                loc = self.trans(z)
            zcat = torch.cat(zs, dim=-2)  # [..., B, T, Z]
            with pyro.plate("time", T, dim=-1), poutine.mask(mask=mask):
                mean = torch.sigmoid(self.dec(zcat))
                pyro.sample("x", dist.Normal(mean, 0.3).to_event(1), obs=frames)
        penalty = -1e-3 * self.dec.weight.pow(2).sum()
        if self.calls == self.nan_at or (self.nan_from is not None and self.calls >= self.nan_from):
            penalty = penalty * float("nan")
        if self.calls == self.explode_at:
            penalty = penalty - 1e12
        pyro.factor("penalty_dec", penalty)

    def guide(self, x, c=None, mask=None):
        pyro.module("gtm", self)
        B = x.shape[-5]
        frames = x.reshape(*x.shape[:-3], W)
        with pyro.plate("sequences", B, dim=-2):
            for t in range(T):
                h = self.enc(frames[..., t : t + 1, :])  # [B, 1, 2Z]
                loc, log_scale = h[..., :Z], h[..., Z:]
                pyro.sample(f"z_{t}", dist.Normal(loc, log_scale.exp() * 0.5 + 0.1).to_event(1))


def _cfg(tmp_path, **kw) -> TrainConfig:
    base = dict(
        steps=8,
        batch_size=4,
        learning_rate=0.05,
        checkpoint_every=2,
        kl_anneal_steps=5,
        kl_anneal_start=0.2,
        progress=False,
        seed=3,
        out_dir=tmp_path,
    )
    base.update(kw)
    return TrainConfig(**base)


def _params(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def _csv(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(autouse=True)
def _clean_store():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


# ----------------------------------------------------------------------------------------------
# config validation


@pytest.mark.parametrize(
    "field, value",
    [
        ("steps", 0),
        ("steps", 1.5),
        ("batch_size", 0),
        ("elbo", "iwae"),
        ("learning_rate", 0.0),
        ("clip_norm", -1.0),
        ("lr_decay", 1.5),
        ("kl_anneal_steps", -1),
        ("kl_anneal_start", 2.0),
        ("device", "tpu"),
        ("eval_every", 0),
        ("checkpoint_every", 0),
        ("num_particles", 0),
    ],
)
def test_bad_config_raises_naming_field(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


def test_bad_config_message_gives_range():
    with pytest.raises(ValueError, match=r"steps must be an integer >= 1, got 0"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="elbo must be one of 'trace', 'meanfield', 'fivo',"):
        TrainConfig(elbo="foo")


def test_config_roundtrip(tmp_path):
    cfg = _cfg(tmp_path)
    assert TrainConfig.from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_unavailable_is_clear_error(tmp_path):
    with pytest.raises(ValueError, match="CUDA is not available"):
        train(TinyGTM(), TinyTask(), _cfg(tmp_path, device="cuda"))


# ----------------------------------------------------------------------------------------------
# training, checkpoints, resume


def test_train_runs_and_writes_log_and_checkpoint(tmp_path):
    gtm = TinyGTM()
    before = _params(gtm)
    res = train(gtm, TinyTask(), _cfg(tmp_path))
    assert res.step == 8 and len(res.losses) == 8 and res.start_step == 0
    assert all(math.isfinite(v) for v in res.losses)
    assert res.checkpoint_path == tmp_path / CHECKPOINT_NAME
    assert res.seconds > 0
    assert any(not torch.equal(before[k], v) for k, v in _params(gtm).items())
    # The param store holds the module's own Parameter objects.
    store = pyro.get_param_store()
    assert store["gtm$$$dec.weight"] is gtm.dec.weight
    rows = _csv(tmp_path / "log.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 9))
    assert float(rows[0]["beta"]) == pytest.approx(0.2)
    assert float(rows[-1]["beta"]) == 1.0
    assert [float(r["loss"]) for r in rows] == res.losses


def test_each_log_row_is_on_disk_before_the_next_checkpoint(tmp_path):
    seen = {}

    def evaluate(gtm, step):
        seen[step] = [int(r["step"]) for r in _csv(tmp_path / "log.csv")]
        return {}

    train(TinyGTM(), TinyTask(), _cfg(tmp_path, checkpoint_every=100, eval_every=5),
          evaluate_fn=evaluate)
    assert seen[5] == [1, 2, 3, 4]  # no checkpoint since the start, yet every row is readable


def test_checkpoint_loads_weights_only(tmp_path):
    train(TinyGTM(), TinyTask(), _cfg(tmp_path, steps=3))
    ck = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert ck["step"] == 3
    assert set(ck["module"]) == set(TinyGTM().state_dict())
    assert ck["format_version"] == 2 and set(ck["optim"]) == {"state", "param_groups"}
    assert len(ck["optim"]["state"]) == len(TinyGTM().state_dict())  # one Adam state each
    assert ck["config"]["steps"] == 3 and ck["csv_rows"] == 3
    assert ck["losses"].shape == (3,)
    assert isinstance(ck["rng"]["torch"], torch.Tensor)
    assert isinstance(ck["batch_generator"], torch.Tensor)
    # No temporaries left behind by the atomic writes.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".lock", "checkpoint.pt", "checkpoints", "log.csv"
    ]
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-00000002.pt"]


def test_rng_state_roundtrip(tmp_path):
    torch.manual_seed(1)
    random.seed(2)
    np.random.seed(3)  # noqa: NPY002 (the legacy global state is what is checkpointed)
    state = capture_rng_state("cpu")
    save_checkpoint({"rng": state}, tmp_path / "r.pt")
    a = (torch.rand(3), random.random(), np.random.rand())  # noqa: NPY002
    loaded = torch.load(tmp_path / "r.pt", weights_only=True)["rng"]
    restore_rng_state(loaded, "cpu")
    b = (torch.rand(3), random.random(), np.random.rand())  # noqa: NPY002
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]


@pytest.mark.parametrize("elbo_name", ["trace", "meanfield"])
def test_resume_is_exact(tmp_path, elbo_name):
    task = TinyTask()
    full = TinyGTM(seed=0)
    res_full = train(full, task, _cfg(tmp_path / "full", elbo=elbo_name))

    pyro.clear_param_store()
    half = TinyGTM(seed=0)
    train(half, task, _cfg(tmp_path / "split", steps=4, elbo=elbo_name))

    # Fresh objects, different initial weights, cleared store: all state must come from disk.
    pyro.clear_param_store()
    fresh = TinyGTM(seed=123)
    res = train(fresh, task, _cfg(tmp_path / "split", elbo=elbo_name), resume=True)

    assert res.start_step == 4 and res.step == 8
    for k, v in _params(full).items():
        assert torch.equal(v, fresh.state_dict()[k]), k
    assert res.losses == res_full.losses
    assert pyro.get_param_store()["gtm$$$trans.weight"] is fresh.trans.weight
    rows = _csv(tmp_path / "split" / "log.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 9))
    assert [r["loss"] for r in rows] == [r["loss"] for r in _csv(tmp_path / "full" / "log.csv")]


def test_resume_when_already_finished_does_nothing(tmp_path):
    gtm = TinyGTM()
    train(gtm, TinyTask(), _cfg(tmp_path, steps=3))
    pyro.clear_param_store()
    again = TinyGTM(seed=5)
    res = train(again, TinyTask(), _cfg(tmp_path, steps=3))
    assert res.step == 3 and res.start_step == 3 and len(res.losses) == 3
    for k, v in gtm.state_dict().items():
        assert torch.equal(v, again.state_dict()[k])
    assert len(_csv(tmp_path / "log.csv")) == 3


def test_stale_param_store_entries_are_replaced(tmp_path):
    train(TinyGTM(seed=0), TinyTask(), _cfg(tmp_path / "a", steps=2))
    # No clear_param_store(): the store still holds the first module's tensors.
    second = TinyGTM(seed=1)
    before = _params(second)
    train(second, TinyTask(), _cfg(tmp_path / "b", steps=2))
    assert any(not torch.equal(before[k], v) for k, v in _params(second).items())
    assert pyro.get_param_store()["gtm$$$enc.bias"] is second.enc.bias


def test_register_module_makes_store_reference_module():
    a, b = TinyGTM(seed=0), TinyGTM(seed=1)
    register_module(a)
    register_module(b)
    store = pyro.get_param_store()
    assert all(store[f"gtm$$${n}"] is p for n, p in b.named_parameters())


@pytest.mark.filterwarnings("ignore:Encountered NaN")
@pytest.mark.parametrize("check_every_step", [True, False])
def test_divergence_keeps_last_good_checkpoint_and_resume_is_exact(tmp_path, check_every_step):
    # checked step: the NaN surfaces as torch's distribution-validation ValueError;
    # unchecked (the steps after the first of a shape): as a NaN loss.
    task = TinyTask()
    cfg = _cfg(tmp_path / "run", checkpoint_every=4, check_every_step=check_every_step)
    ckpt = tmp_path / "run" / CHECKPOINT_NAME

    bad = TinyGTM(seed=0, nan_at=6)  # model call 6 == step 6 (one particle)
    with pytest.raises(TrainingDiverged) as info:
        train(bad, task, cfg)
    err = info.value
    assert err.step == 6 and math.isnan(err.loss)
    assert err.checkpoint_path == ckpt and err.checkpoint_step == 4
    msg = str(err)
    assert "step 6" in msg and "nan" in msg and str(ckpt) in msg
    good_bytes = ckpt.read_bytes()
    assert load_checkpoint(ckpt)["step"] == 4
    # Rows 1..5 were logged before the crash; the in-memory module kept its step-5 weights.
    assert [int(r["step"]) for r in _csv(tmp_path / "run" / "log.csv")] == [1, 2, 3, 4, 5]
    assert all(torch.isfinite(p).all() for p in bad.parameters())
    assert ckpt.read_bytes() == good_bytes

    # Resuming from the step-4 checkpoint reproduces an uninterrupted run exactly and does not
    # duplicate the rows the crashed run wrote after the checkpoint.
    pyro.clear_param_store()
    resumed = TinyGTM(seed=9)
    train(resumed, task, cfg)
    pyro.clear_param_store()
    full = TinyGTM(seed=0)
    train(full, task, _cfg(tmp_path / "full", checkpoint_every=4,
                           check_every_step=check_every_step))
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    assert [int(r["step"]) for r in _csv(tmp_path / "run" / "log.csv")] == list(range(1, 9))


def test_divergence_without_checkpoint_says_so(tmp_path):
    with pytest.raises(TrainingDiverged, match="no checkpoint has been written"):
        train(TinyGTM(nan_at=1), TinyTask(), _cfg(None, checkpoint_every=None))


def test_evaluate_fn_logged_and_does_not_change_trajectory(tmp_path):
    calls = []

    def evaluate(gtm, step):
        calls.append(step)
        # Draws from every global RNG: must not perturb training.
        torch.rand(5)
        random.random()
        np.random.rand()  # noqa: NPY002
        return {"score": torch.tensor(float(step)), "n": step, "loss": 1.0, "text": "x"}

    with_eval = TinyGTM(seed=0)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        res = train(with_eval, TinyTask(), _cfg(tmp_path / "e", eval_every=3),
                    evaluate_fn=evaluate)
    assert any("'text'" in str(x.message) for x in w)
    assert calls == [3, 6, 8]
    assert res.evals[3] == {"score": 3.0, "n": 3.0, "loss": 1.0}
    rows = _csv(tmp_path / "e" / "log.csv")
    assert [r["score"] for r in rows] == ["", "", "3.0", "", "", "6.0", "", "8.0"]
    assert rows[2]["eval_loss"] == "1.0"

    pyro.clear_param_store()
    without = TinyGTM(seed=0)
    train(without, TinyTask(), _cfg(tmp_path / "n"))
    for k, v in without.state_dict().items():
        assert torch.equal(v, with_eval.state_dict()[k]), k


def test_changed_learning_rate_on_resume_warns_and_applies(tmp_path):
    train(TinyGTM(), TinyTask(), _cfg(tmp_path, steps=2))
    pyro.clear_param_store()
    with pytest.warns(UserWarning, match="learning_rate"):
        train(TinyGTM(), TinyTask(), _cfg(tmp_path, steps=3, learning_rate=0.01))
    ck = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    groups = ck["optim"]["param_groups"]
    assert groups[0]["lr"] == pytest.approx(0.01)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_resume_is_exact(tmp_path):
    task = TinyTask()
    full = TinyGTM(seed=0)
    train(full, task, _cfg(tmp_path / "full", device="cuda"))
    assert full.dec.weight.is_cuda
    pyro.clear_param_store()
    train(TinyGTM(seed=0), task, _cfg(tmp_path / "split", steps=4, device="cuda"))
    assert load_checkpoint(tmp_path / "split" / CHECKPOINT_NAME)["rng"]["cuda"] is not None
    pyro.clear_param_store()
    fresh = TinyGTM(seed=7)
    train(fresh, task, _cfg(tmp_path / "split", device="cuda"))
    for k, v in full.state_dict().items():
        assert torch.equal(v, fresh.state_dict()[k]), k


def test_no_out_dir_trains_in_memory():
    res = train(TinyGTM(), TinyTask(), TrainConfig(steps=2, batch_size=2, progress=False))
    assert res.step == 2 and res.checkpoint_path is None


def test_vectorized_particles(tmp_path):
    res = train(TinyGTM(), TinyTask(), _cfg(tmp_path, steps=2, num_particles=3))
    assert len(res.losses) == 2 and all(math.isfinite(v) for v in res.losses)


class CheckRecordingGTM(TinyGTM):
    """Records, at every model call, whether Pyro's own checks are on."""

    def __init__(self):
        super().__init__()
        self.checks = []

    def model(self, x, c=None, mask=None):
        self.checks.append(pyro.infer.is_validation_enabled() and
                           pyro.poutine.is_validation_enabled())
        return super().model(x, c, mask)


class ChangingBatchTask(TinyTask):
    """Batches of 2, 2, 3, 3, 2 sequences (whatever ``batch_size`` asks for)."""

    def __init__(self):
        self.sizes = [2, 2, 3, 3, 2]

    def sample(self, batch_size, split, generator):
        return super().sample(self.sizes.pop(0) if split == "train" else batch_size, split,
                              generator)


@pytest.mark.parametrize("every_step", [False, True])
def test_pyro_checks_run_on_each_new_batch_shape(every_step):
    gtm = CheckRecordingGTM()
    config = TrainConfig(steps=5, batch_size=2, progress=False, check_every_step=every_step)
    train(gtm, ChangingBatchTask(), config)
    assert gtm.checks == ([True] * 5 if every_step else [True, False, True, False, False])
    assert pyro.infer.is_validation_enabled() and pyro.poutine.is_validation_enabled()


class MisplatedGTM(TinyGTM):
    """A model whose ``x`` site has the wrong batch shape for its plates."""

    def model(self, x, c=None, mask=None):
        pyro.module("gtm", self)
        with pyro.plate("rows", x.shape[0] + 1, dim=-2):
            zeros = x.new_zeros(x.shape[0], 1)
            pyro.sample("x", dist.Normal(zeros, 1.0), obs=zeros)


def test_a_structural_error_is_caught_on_the_first_step():
    with pytest.raises(ValueError, match="[Ss]hape mismatch"):
        train(MisplatedGTM(), TinyTask(), TrainConfig(steps=2, batch_size=2, progress=False))


def test_thread_count_is_recorded_and_a_different_one_on_resume_warns(tmp_path):
    task = TinyTask()
    train(TinyGTM(), task, _cfg(tmp_path, steps=4))
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["threads"] == \
        torch.get_num_threads()
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)
    try:
        with pytest.warns(UserWarning, match="not bit-identical"):
            train(TinyGTM(), task, _cfg(tmp_path, steps=6))
    finally:
        torch.set_num_threads(threads)
