"""Invariants of the least-recently-used access memory (Santoro et al., 2016)."""

import memory_contract as contract  # tests/ is on sys.path under pytest
import pytest
import torch
from torch.nn import functional as F

from pgtm.memories.lru import LRUMemory, LRUState, least_used_weights, update_usage

LATENT, CONTROLLER, SLOTS, WORD, HEADS = 3, 5, 4, 3, 2


def make_memory(dtype=torch.float32, **options):
    torch.manual_seed(0)
    options = {"num_slots": SLOTS, "word_size": WORD, "num_heads": HEADS, **options}
    return LRUMemory(LATENT, CONTROLLER, **options).to(dtype)


def set_write_gate(memory, logit):
    """Zero the gate's weights and set its bias: sigma(alpha) = sigmoid(logit) for every head."""
    with torch.no_grad():
        weight = memory.write_head.weight.view(HEADS, WORD + 1, -1)
        bias = memory.write_head.bias.view(HEADS, WORD + 1)
        weight[:, WORD] = 0.0
        bias[:, WORD] = logit


def test_weights_are_distributions_and_reads_see_the_memory_after_the_write():
    """(Shapes, batching and numerics of every memory: ``test_memory_interface.py``.)"""
    memory = make_memory()
    state = memory.initial_state((2, 3))
    for step in range(3):
        out = memory(state, torch.randn(2, 3, 5), torch.randn(2, 3, 3))
        state = out.state
        assert (out.weights >= 0).all()
        torch.testing.assert_close(out.weights.sum(-1), torch.ones(2, 3, HEADS))
        # reads see the memory after the write of z_{t-1}
        torch.testing.assert_close(out.read, (out.weights @ out.state.memory).flatten(-2))
        if step == 0:
            assert (out.read != 0).any()  # the memory was empty before the write


def test_least_used_weights_break_ties_towards_the_lowest_index():
    usage = torch.tensor([[0.3, 0.1, 0.1, 0.5], [0.0, 0.0, 0.0, 0.0], [2.0, 1.0, 3.0, 0.5]])
    expected = F.one_hot(torch.tensor([1, 0, 3]), 4).float()
    torch.testing.assert_close(least_used_weights(usage), expected)


def test_the_write_goes_to_the_least_used_slot_when_the_gate_selects_it():
    memory = make_memory(dtype=torch.float64)
    set_write_gate(memory, -100.0)  # sigma(alpha) = 0: write weights = least-used one-hot
    torch.manual_seed(1)
    old = torch.randn(2, SLOTS, WORD, dtype=torch.float64)
    usage = torch.tensor([[0.9, 0.2, 0.5, 0.7], [0.1, 0.8, 0.4, 0.3]], dtype=torch.float64)
    previous = torch.softmax(torch.randn(2, HEADS, SLOTS, dtype=torch.float64), -1)
    h, z = torch.randn(2, 5, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    out = memory(LRUState(old, previous, usage), h, z)
    words = memory.write_head(torch.cat([z, h], -1)).view(2, HEADS, WORD + 1)[..., :WORD]
    least = [1, 0]
    for b in range(2):
        expected = old[b].clone()
        expected[least[b]] = words[b].sum(0)  # zeroed, then every head's word added
        torch.testing.assert_close(out.state.memory[b], expected.detach())
    # with sigma(alpha) = 1 the heads update the slots they read last; the least-used row is
    # still zeroed first
    set_write_gate(memory, 100.0)
    out = memory(LRUState(old, previous, usage), h, z)
    expected = old.clone()
    expected[0, 1] = 0
    expected[1, 0] = 0
    expected = expected + previous.transpose(-1, -2) @ words
    torch.testing.assert_close(out.state.memory, expected.detach())


def test_usage_decays_as_specified_by_hand():
    """Uniform reads (strength 0) and least-used writes: usage by hand with gamma = 0.95."""
    memory = make_memory(dtype=torch.float64)
    set_write_gate(memory, -100.0)
    with torch.no_grad():
        weight = memory.read_head.weight.view(HEADS, WORD + 1, -1)
        bias = memory.read_head.bias.view(HEADS, WORD + 1)
        weight[:, WORD] = 0.0
        bias[:, WORD] = -100.0  # strength softplus(-100) = 0: every read weight is 1/4
    state = memory.initial_state((1,), dtype=torch.float64)
    usages = []
    for _ in range(4):
        h, z = torch.randn(1, 5, dtype=torch.float64), torch.randn(1, 3, dtype=torch.float64)
        state = memory(state, h, z).state
        usages.append(state.usage[0])
    # each step: both heads read 1/4 everywhere (+0.5 per slot) and write 1 to the least-used
    # slot (+2 there), which fills slots 0, 1, 2, 3 in turn
    expected = [
        [2.5, 0.5, 0.5, 0.5],
        [0.95 * 2.5 + 0.5, 0.95 * 0.5 + 2.5, 0.95 * 0.5 + 0.5, 0.95 * 0.5 + 0.5],
    ]
    expected.append([0.95 * u + 0.5 + 2.0 * (i == 2) for i, u in enumerate(expected[-1])])
    expected.append([0.95 * u + 0.5 + 2.0 * (i == 3) for i, u in enumerate(expected[-1])])
    torch.testing.assert_close(usages[0], torch.tensor(expected[0], dtype=torch.float64))
    torch.testing.assert_close(usages[1], torch.tensor([2.875, 2.975, 0.975, 0.975]).double())
    torch.testing.assert_close(torch.stack(usages), torch.tensor(expected, dtype=torch.float64))
    # the pure update
    usage = update_usage(
        torch.tensor([1.0, 2.0]),
        torch.tensor([[0.5, 0.5], [1.0, 0.0]]),
        torch.tensor([[0.0, 0.25], [0.0, 0.0]]),
        decay=0.5,
    )
    torch.testing.assert_close(usage, torch.tensor([0.5 + 1.5, 1.0 + 0.5 + 0.25]))


def test_bad_arguments():
    with pytest.raises(ValueError, match="decay"):
        LRUMemory(3, 5, decay=1.5)
    with pytest.raises(ValueError, match="num_heads"):
        LRUMemory(3, 5, num_heads=0)


class TestLRUContract(contract.MemoryContract):
    name = "lru"
    options = {"num_slots": contract.N, "word_size": contract.W, "num_heads": contract.R}
    state_shapes = {
        "memory": (contract.N, contract.W),
        "read_weights": (contract.R, contract.N),
        "usage": (contract.N,),
    }
    read_size = contract.R * contract.W
    with_weights = checks_sizes = fast_gradcheck = True
    matrix_field = "memory"

    def distinct_state(self, state):
        # distinct usages keep the least-used slot fixed under the finite differences
        return state._replace(usage=contract.DISTINCT_USAGE)
