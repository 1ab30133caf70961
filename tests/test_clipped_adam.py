"""The foreach ClippedAdam is Pyro's, bit for bit, and shares its checkpoint state."""

import copy

import pytest
import torch
from pyro.optim import clipped_adam as pyro_clipped_adam

from pgtm.inference.clipped_adam import ClippedAdam


def parameters(seed=0):
    generator = torch.Generator().manual_seed(seed)
    shapes = [(3, 4), (4,), (2, 2, 5), ()]
    return [torch.nn.Parameter(torch.randn(s, generator=generator)) for s in shapes]


def run(optimizer_cls, steps, options, seed=0, state=None):
    params = parameters()
    optimizer = optimizer_cls(params, **options)
    if state is not None:  # a copy: loading shares the tensors, which the steps change
        optimizer.load_state_dict(copy.deepcopy(state))
    generator = torch.Generator().manual_seed(seed)
    for step in range(steps):
        for i, p in enumerate(params):
            # large gradients, so that the clamp acts; the last parameter skips odd steps
            p.grad = None if (i == 3 and step % 2) else 30 * torch.randn(p.shape,
                                                                          generator=generator)
        optimizer.step()
    return params, optimizer


@pytest.mark.parametrize("options", [
    {"lr": 1e-2, "clip_norm": 10.0, "lrd": 0.99},
    {"lr": 1e-3, "clip_norm": 5.0, "weight_decay": 0.1, "centered_variance": True},
])
def test_parameters_and_state_are_bit_identical_to_pyros(options):
    ours, our_optimizer = run(ClippedAdam, 7, options)
    theirs, their_optimizer = run(pyro_clipped_adam.ClippedAdam, 7, options)
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)
    ours_state, theirs_state = our_optimizer.state_dict(), their_optimizer.state_dict()
    assert ours_state["param_groups"] == theirs_state["param_groups"]
    for i, state in theirs_state["state"].items():
        assert ours_state["state"][i]["step"] == state["step"]
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(ours_state["state"][i][key], state[key])


def test_a_state_saved_by_pyros_optimiser_continues_identically():
    options = {"lr": 1e-2, "clip_norm": 10.0}
    _, their_optimizer = run(pyro_clipped_adam.ClippedAdam, 3, options)
    saved = their_optimizer.state_dict()
    ours, _ = run(ClippedAdam, 2, options, seed=1, state=saved)
    theirs, _ = run(pyro_clipped_adam.ClippedAdam, 2, options, seed=1, state=saved)
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)
