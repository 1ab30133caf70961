"""Invariants of the Neural Turing Machine memory."""

import memory_contract as contract  # tests/ is on sys.path under pytest
import pytest
import torch
from torch.nn import functional as F

from pgtm.memories.ntm import NTMMemory, address, split_addressing

LATENT, CONTROLLER, SLOTS, WORD, HEADS = 3, 5, 6, 4, 2


def make_memory(dtype=torch.float32, **options):
    torch.manual_seed(0)
    options = {"num_slots": SLOTS, "word_size": WORD, "num_heads": HEADS, **options}
    return NTMMemory(LATENT, CONTROLLER, **options).to(dtype)


@pytest.mark.parametrize("write_heads", [1, 2])
def test_weights_are_distributions_and_the_read_is_w_times_the_written_memory(write_heads):
    """(Shapes, batching and numerics of every memory: ``test_memory_interface.py``.)"""
    memory = make_memory(num_write_heads=write_heads)
    state = memory.initial_state((2, 3))
    for h, z in zip(torch.randn(3, 2, 3, 5), torch.randn(3, 2, 3, 3), strict=True):
        out = memory(state, h, z)
        state = out.state
        assert out.state.write_weights.shape == (2, 3, write_heads, SLOTS)
        for weights in (out.weights, out.state.write_weights):
            assert (weights >= 0).all()
            torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
        # the read is phi = w M of the memory after the write
        expected = (out.weights @ out.state.memory).flatten(-2)
        torch.testing.assert_close(out.read, expected)


def test_address_gives_a_one_hot_read_of_the_row_equal_to_the_key():
    torch.manual_seed(1)
    state_memory = torch.randn(2, SLOTS, WORD)
    # raw parameters: key = row 4, beta = softplus(200), g = sigmoid(50) = 1, shift logits
    # favouring offset 0, gamma = 1 + softplus(60)
    key = state_memory[:, 4:5]
    scalars = torch.tensor([200.0, 50.0, -50.0, 50.0, -50.0, 60.0]).expand(2, 1, 6)
    params = split_addressing(torch.cat([key, scalars], -1), WORD, 3)
    previous = torch.softmax(torch.randn(2, 1, SLOTS), -1)
    weights = address(state_memory, params, previous)
    torch.testing.assert_close(weights, F.one_hot(torch.full((2, 1), 4), SLOTS).float())
    torch.testing.assert_close(weights @ state_memory, key)


def test_gate_zero_and_a_unit_shift_walk_through_the_slots():
    """Pure location addressing (g = 0, shift +1) moves the write head one slot per step."""
    memory = make_memory(dtype=torch.float64)
    with torch.no_grad():
        memory.write_head.weight.zero_()
        bias = memory.write_head.bias.view(1, -1)  # [H, W + 3 + S + 2W]
        bias.zero_()
        bias[0, WORD + 1] = -100.0  # gate -> 0
        bias[0, WORD + 2 : WORD + 5] = torch.tensor([-100.0, -100.0, 100.0])  # shift +1
        bias[0, WORD + 5] = 100.0  # sharp
    state = memory.initial_state((2,), dtype=torch.float64)
    for t in range(SLOTS + 1):
        h, z = torch.randn(2, 5, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
        state = memory(state, h, z).state
        expected = F.one_hot(torch.full((2, 1), (t + 1) % SLOTS), SLOTS).double()
        torch.testing.assert_close(state.write_weights, expected)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_slots"):
        NTMMemory(3, 5, num_slots=0)
    with pytest.raises(ValueError, match="shift_range"):
        NTMMemory(3, 5, shift_range=-1)


class TestNTMContract(contract.MemoryContract):
    name = "ntm"
    options = {
        "num_slots": contract.N,
        "word_size": contract.W,
        "num_heads": contract.R,
        "num_write_heads": contract.H,
    }
    state_shapes = {
        "memory": (contract.N, contract.W),
        "read_weights": (contract.R, contract.N),
        "write_weights": (contract.H, contract.N),
    }
    read_size = contract.R * contract.W
    with_weights = checks_sizes = records_write_weights = fast_gradcheck = True
    matrix_field = "memory"


def test_sequential_write_init_fills_consecutive_slots_from_the_start():
    """At initialisation the default writes stay near slot 0 and blur; with
    sequential_write_init the write of step t goes to slot t (one slot forward per step)."""
    def written_slots(**options):
        torch.manual_seed(0)
        memory = NTMMemory(LATENT, CONTROLLER, num_slots=12, word_size=WORD, num_heads=HEADS,
                           **options)
        state, slots = memory.initial_state((8,)), []
        for _ in range(10):
            out = memory(state, torch.randn(8, CONTROLLER), torch.randn(8, LATENT))
            state = out.state
            slots.append(state.write_weights[:, 0].argmax(-1))
        return torch.stack(slots, 1), state.write_weights[:, 0].amax(-1)  # [8, 10], [8]

    slots, peak = written_slots(sequential_write_init=0.95)
    assert (slots == torch.arange(1, 11)).all() and (peak > 0.5).all()
    default_slots, _ = written_slots()
    assert not (default_slots == torch.arange(1, 11)).all()


@pytest.mark.parametrize("options,message", [
    ({"sequential_write_init": 1.0}, r"sequential_write_init must be a number in \(0, 1\)"),
    ({"sequential_write_init": 0.9, "shift_range": 0}, "needs shift_range >= 1"),
])
def test_bad_sequential_write_init_is_rejected_by_name(options, message):
    with pytest.raises(ValueError, match=message):
        NTMMemory(LATENT, CONTROLLER, **options)
