"""Invariants of the Introspective memory (FIFO buffer read by gated location heads).

Shapes, batching, numerics and GTM use of every memory: ``test_memory_interface.py``.
"""

import memory_contract as contract  # tests/ is on sys.path under pytest
import pytest
import torch

from pgtm.memories.introspective import (
    IntrospectiveMemory,
    fifo_push,
    location_weights,
    weight_penalty,
)


def make_memory(weighting="softplus", sparsity=0.0, dtype=torch.float32):
    torch.manual_seed(0)
    return IntrospectiveMemory(
        latent_size=3, controller_size=5, num_slots=4, num_heads=2, weighting=weighting,
        sparsity=sparsity,
    ).to(dtype)


@pytest.mark.parametrize("weighting", ["softplus", "softmax"])
def test_weights_are_a_distribution_and_gates_in_unit_interval(weighting):
    memory = make_memory(weighting)
    state = memory.initial_state((7, 1))
    h = 10 * torch.randn(7, 1, 5)
    out = memory(state, h, torch.randn(7, 1, 3))
    assert out.weights.shape == (7, 1, 2, 4)
    assert (out.weights >= 0).all()
    torch.testing.assert_close(out.weights.sum(-1), torch.ones(7, 1, 2))
    assert ((out.gates > 0) & (out.gates < 1)).all()
    assert out.read.shape == (7, 1, memory.read_size)
    assert out.penalty is None


def test_unnormalised_weights_carry_the_sum_penalty():
    scores = torch.randn(6, 2, 4)
    weights = location_weights(scores, "unnormalised")
    assert (weights >= 0).all()
    expected = 2.0 * (weights.sum(-1) - 1).pow(2).sum(-1)
    torch.testing.assert_close(weight_penalty(weights, sum_penalty=2.0), expected)
    memory = make_memory("unnormalised", sparsity=0.5)
    out = memory(memory.initial_state((6,)), torch.randn(6, 5), torch.randn(6, 3))
    expected = (out.weights.sum(-1) - 1).pow(2).sum(-1) + 0.5 * out.weights.sqrt().sum((-1, -2))
    torch.testing.assert_close(out.penalty, expected, atol=1e-3, rtol=1e-4)


def test_fifo_order_is_exact():
    buffer = torch.zeros(2, 3, 1)
    for value in range(1, 6):
        buffer = fifo_push(buffer, torch.full((2, 1), float(value)))
    # the last three latents, oldest first
    assert buffer[0, :, 0].tolist() == [3.0, 4.0, 5.0]
    assert buffer[1, :, 0].tolist() == [3.0, 4.0, 5.0]


def test_reads_follow_one_hot_weights_through_time():
    """With all weight on the newest slot, the read of step t is z_{t-1} scaled by its gate."""
    memory = make_memory()
    with torch.no_grad():
        memory.attention.weight.zero_()
        bias = torch.full((2, 4), -30.0)
        bias[:, -1] = 30.0
        memory.attention.bias.copy_(bias.flatten())
    state = memory.initial_state((1,))
    h = torch.randn(1, 5)
    for _ in range(3):
        z = torch.randn(1, 3)
        out = memory(state, h, z)
        state = out.state
        expected = torch.cat([z * out.gates[:, 0:1], z * out.gates[:, 1:2]], -1)
        torch.testing.assert_close(out.read, expected, atol=1e-5, rtol=1e-5)


# "unnormalised" with sparsity 0.1 is the memory of test_memory_interface.py's gradcheck
@pytest.mark.parametrize("weighting", ["softplus", "softmax"])
def test_gradcheck_float64_of_the_other_weightings(weighting):
    memory = make_memory(weighting, sparsity=0.1, dtype=torch.float64)
    buffer = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    h = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    z = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)

    def step(buffer, h, z):
        out = memory(type(memory.initial_state((2,)))(buffer), h, z)
        penalty = out.penalty if out.penalty is not None else torch.zeros(())
        return out.read, out.weights, penalty

    assert torch.autograd.gradcheck(step, (buffer, h, z))


def test_bad_arguments():
    with pytest.raises(ValueError, match="weighting"):
        IntrospectiveMemory(3, 5, num_slots=4, weighting="sparsemax")
    with pytest.raises(ValueError, match="num_slots"):
        IntrospectiveMemory(3, 5, num_slots=0)


class TestIntrospectiveContract(contract.MemoryContract):
    # both penalties, so that every field of MemoryOutput is exercised by some memory
    name = "introspective"
    options = {
        "num_slots": contract.N,
        "num_heads": contract.R,
        "weighting": "unnormalised",
        "sparsity": 0.1,
    }
    state_shapes = {"buffer": (contract.N, contract.Z)}
    read_size = contract.R * contract.Z
    with_weights = with_gates = with_penalty = True
    matrix_field = "buffer"
