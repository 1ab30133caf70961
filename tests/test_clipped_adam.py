"""The multi-tensor ClippedAdam takes exactly Pyro's ClippedAdam steps and shares its state."""

from __future__ import annotations

import copy

import pytest
import torch
from pyro.optim.clipped_adam import ClippedAdam

from pgtm.inference.clipped_adam import MultiTensorClippedAdam


def _parameters(seed: int = 0) -> list[torch.nn.Parameter]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(shape, generator=generator))
            for shape in [(5, 3), (3,), (7,), ()]]


def _run(optimizer_class, params, steps: int, options: dict, seed: int = 1):
    optimizer = optimizer_class(params, **options)
    generator = torch.Generator().manual_seed(seed)
    for step in range(steps):
        for i, p in enumerate(params):
            # large gradients, so that the clamp acts; the third parameter skips odd steps
            p.grad = None if i == 2 and step % 2 else 30 * torch.randn(p.shape, generator=generator)
        optimizer.step()
    return optimizer


@pytest.mark.parametrize("options", [
    {"lr": 0.1},
    {"lr": 0.05, "clip_norm": 2.0, "lrd": 0.99, "weight_decay": 0.01},
    {"lr": 0.05, "betas": (0.8, 0.9), "eps": 1e-4, "centered_variance": True},
])
def test_the_steps_are_pyros_bit_for_bit(options):
    pyro_params, ours = _parameters(), _parameters()
    pyro_optimizer = _run(ClippedAdam, pyro_params, 6, options)
    our_optimizer = _run(MultiTensorClippedAdam, ours, 6, options)
    for a, b in zip(pyro_params, ours, strict=True):
        assert torch.equal(a, b)
    assert our_optimizer.param_groups[0]["lr"] == pyro_optimizer.param_groups[0]["lr"]
    for a, b in zip(pyro_params, ours, strict=True):
        state_a, state_b = pyro_optimizer.state[a], our_optimizer.state[b]
        assert state_a["step"] == state_b["step"]
        assert torch.equal(state_a["exp_avg"], state_b["exp_avg"])
        assert torch.equal(state_a["exp_avg_sq"], state_b["exp_avg_sq"])


def test_each_loads_the_others_state():
    options = {"lr": 0.1, "lrd": 0.98}
    params = _parameters()
    pyro_optimizer = _run(ClippedAdam, params, 3, options)
    ours = [copy.deepcopy(p) for p in params]
    resumed = MultiTensorClippedAdam(ours, **options)
    resumed.load_state_dict(copy.deepcopy(pyro_optimizer.state_dict()))
    generator = torch.Generator().manual_seed(5)
    for _ in range(2):
        grads = [torch.randn(p.shape, generator=generator) for p in params]
        for optimizer, group in ((pyro_optimizer, params), (resumed, ours)):
            for p, g in zip(group, grads, strict=True):
                p.grad = g.clone()
            optimizer.step()
    for a, b in zip(params, ours, strict=True):
        assert torch.equal(a, b)
