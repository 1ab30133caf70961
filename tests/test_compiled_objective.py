"""Training through the compiled objective (``TrainConfig(compile=True)``, ``pgtm train
--compile``) follows the Pyro objective, resumes exactly, and refuses what it cannot train."""

from __future__ import annotations

from typing import NamedTuple

import pyro
import pytest
import torch

from pgtm.inference.objective import training_objective
from pgtm.inference.train import TrainConfig, train
from pgtm.models import build_gtm

FRAME, T = (1, 1, 5), 4
SMALL = {"latent_size": 3, "controller_size": 8, "feature_size": 8, "network": "mlp"}


class Batch(NamedTuple):
    x: torch.Tensor
    c: torch.Tensor | None
    mask: torch.Tensor


class BinaryFrames:
    """Random binary frames ``[B, T, 1, 1, 5]``, the second half of every other sequence
    masked out."""

    def sample(self, batch_size: int, split: str, generator: torch.Generator) -> Batch:
        x = torch.bernoulli(torch.full((batch_size, T, *FRAME), 0.4), generator=generator)
        mask = torch.ones(batch_size, T, dtype=torch.bool)
        mask[::2, T // 2:] = False
        return Batch(x, None, mask)


def gtm(seed=0):
    torch.manual_seed(seed)
    # a memory with a penalty, so that every term of the written-out ELBO is exercised
    return build_gtm("introspective", frame_shape=FRAME, sequence_length=T, **SMALL,
                     weighting="unnormalised", sparsity=0.1)


def config(out_dir, **changes):
    options = {"steps": 6, "batch_size": 4, "learning_rate": 1e-2, "kl_anneal_steps": 4,
               "checkpoint_every": 1, "out_dir": out_dir, "progress": False,
               "tensorboard": False, "compile": True}
    return TrainConfig(**{**options, **changes})


def test_compiled_training_follows_the_pyro_objective():
    eager, compiled = gtm(), gtm()
    eager_run = train(eager, BinaryFrames(), config(None, compile=False))
    pyro.clear_param_store()
    compiled_run = train(compiled, BinaryFrames(), config(None))
    # the same draws; the fused arithmetic rounds differently (KL annealing on: beta < 1)
    assert compiled_run.losses == pytest.approx(eager_run.losses, rel=1e-5)
    assert compiled_run.losses != eager_run.losses
    for a, b in zip(eager.parameters(), compiled.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_compiled_training_resumes_exactly(tmp_path):
    whole = gtm()
    train(whole, BinaryFrames(), config(tmp_path / "whole"))
    pyro.clear_param_store()
    train(gtm(), BinaryFrames(), config(tmp_path / "split", steps=3))
    pyro.clear_param_store()
    resumed = gtm(seed=5)
    result = train(resumed, BinaryFrames(), config(tmp_path / "split"), resume=True)
    assert result.start_step == 3
    for a, b in zip(whole.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_model_edited_beyond_its_parts_is_refused(tmp_path):
    edited = gtm()
    model = edited.model

    def model_with_a_factor(x, c=None, mask=None):
        pyro.factor("extra", torch.tensor(-1.0))
        return model(x, c=c, mask=mask)

    edited.model = model_with_a_factor
    with pytest.raises(ValueError, match="written-out ELBO"):
        train(edited, BinaryFrames(), config(None, steps=1))


def test_compile_refuses_what_it_cannot_train():
    with pytest.raises(ValueError, match="compile needs elbo='trace'"):
        TrainConfig(compile=True, elbo="meanfield")
    with pytest.raises(ValueError, match="num_particles=1"):
        TrainConfig(compile=True, num_particles=2)
    kanerva = build_gtm("kanerva", frame_shape=FRAME, sequence_length=T, **SMALL)
    with pytest.raises(ValueError, match="compile: the Kanerva.* latent variable"):
        training_objective(kanerva, "trace", 1, compiled=True)


def test_a_failed_compilation_names_the_way_out(monkeypatch):
    from torch._dynamo.exc import BackendCompilerFailed

    objective, _ = training_objective(gtm(), "trace", 1, compiled=True)
    batch = BinaryFrames().sample(4, "train", torch.Generator().manual_seed(0))

    def fails(*args):  # as inductor does when the C++ compiler fails
        raise BackendCompilerFailed(fails, RuntimeError("g++ failed"), None)

    monkeypatch.setattr(objective, "compiled_loss", fails)
    with pytest.raises(RuntimeError, match="train without --compile") as info:
        objective(batch.x, mask=batch.mask)
    assert isinstance(info.value.__cause__, BackendCompilerFailed)
