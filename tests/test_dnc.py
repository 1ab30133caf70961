"""Invariants of the DNC memory (usage, allocation, temporal links, read modes).

Shapes, batching, numerics and GTM use of every memory: ``test_memory_interface.py``.
"""

import memory_contract as contract  # tests/ is on sys.path under pytest
import pytest
import torch

from pgtm.cli import build_parser
from pgtm.commands import model_options_from_args
from pgtm.memories.dnc import (
    DNCMemory,
    DNCState,
    allocation_weights,
    directional_weights,
    read_weights,
    time_stamps,
    update_link,
    update_precedence,
    update_usage,
    write_allocation_weights,
    write_weights,
)
from pgtm.models import build_gtm

Z, C, N, W, R = 3, 6, 5, 4, 2


def make_memory(num_write_heads=1, dtype=torch.float32, seed=0, **kwargs):
    torch.manual_seed(seed)
    options = {"num_slots": N, "word_size": W, "num_heads": R}
    options.update(kwargs)
    return DNCMemory(Z, C, num_write_heads=num_write_heads, **options).to(dtype)


def run_steps(memory, state, steps, batch=(), scale=3.0, generator=None):
    """Run ``steps`` random steps, returning the list of outputs."""
    outputs = []
    for _ in range(steps):
        h = scale * torch.randn(batch + (C,), generator=generator, dtype=state.memory.dtype)
        z = torch.randn(batch + (Z,), generator=generator, dtype=state.memory.dtype)
        out = memory(state, h, z)
        state = out.state
        outputs.append(out)
    return outputs


def one_hot(index, size=N, dtype=torch.float32):
    return torch.nn.functional.one_hot(torch.tensor(index), size).to(dtype)


# ----------------------------------------------------------------------------- links
@pytest.mark.parametrize("heads", [1, 2])
def test_link_precedence_usage_and_weights_stay_in_range_after_random_steps(heads):
    memory = make_memory(heads)
    outputs = run_steps(memory, memory.initial_state((16,)), 8, (16,), scale=5.0)
    tol = 1e-5
    for out in outputs:
        s = out.state
        expected = DNCState((16, N, W), (16, N), (16, heads, N, N), (16, heads, N), (16, R, N),
                            (16, heads, N), (16,))
        assert tuple(tuple(t.shape) for t in s) == expected
        assert ((s.link >= 0) & (s.link <= 1 + tol)).all()
        assert torch.diagonal(s.link, dim1=-2, dim2=-1).abs().max() == 0
        assert (s.link.sum(-1) <= 1 + tol).all() and (s.link.sum(-2) <= 1 + tol).all()
        assert ((s.precedence >= 0) & (s.precedence <= 1 + tol)).all()
        assert (s.precedence.sum(-1) <= 1 + tol).all()
        assert ((s.usage >= 0) & (s.usage <= 1 + tol)).all()
        assert (s.write_weights >= 0).all() and (s.write_weights.sum(-1) <= 1 + tol).all()
        assert (s.read_weights >= 0).all() and (s.read_weights.sum(-1) <= 1 + tol).all()
    # the random steps did write links (the test is not vacuous)
    assert outputs[-1].state.link.sum() > 1


def test_scripted_one_hot_writes_give_expected_links_and_directional_reads():
    order = [0, 3, 1, 4]  # slots written one after the other
    link, precedence = torch.zeros(1, N, N), torch.zeros(1, N)
    for slot in order:
        w = one_hot(slot).unsqueeze(0)  # [H=1, N]
        link = update_link(link, precedence, w)
        precedence = update_precedence(precedence, w)
    expected = torch.zeros(N, N)
    for before, after in zip(order[:-1], order[1:], strict=True):
        expected[after, before] = 1.0  # L[i, j]: i written right after j
    torch.testing.assert_close(link[0], expected)
    torch.testing.assert_close(precedence[0], one_hot(4))

    reads = torch.stack([one_hot(0), one_hot(1)])  # [R=2, N]: reading slots 0 and 1
    forward = directional_weights(link, reads, forward=True)  # [R, H, N]
    backward = directional_weights(link, reads, forward=False)
    torch.testing.assert_close(forward[:, 0], torch.stack([one_hot(3), one_hot(4)]))
    torch.testing.assert_close(backward[:, 0], torch.stack([torch.zeros(N), one_hot(3)]))
    content = torch.full((2, N), 1.0 / N)
    modes = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # forward / backward
    mixed = read_weights(content, backward, forward, modes)
    torch.testing.assert_close(mixed, torch.stack([one_hot(3), one_hot(3)]))
    content_only = read_weights(content, backward, forward, torch.tensor([[0.0, 0.0, 1.0]] * 2))
    torch.testing.assert_close(content_only, content)


def test_module_follows_links_through_written_slots():
    """Scripted gates: allocate a fresh slot per step, then read forward/backward from the first."""
    memory = make_memory(1, num_heads=1)
    state = memory.initial_state((1,))
    written = []
    for _ in range(3):  # full allocation writes (free gates 0, no reads yet)
        state = state._replace(read_weights=torch.zeros(1, 1, N))
        state = _forced_step(memory, state, allocation_gate=1.0, modes=(0, 0, 1.0)).state
        assert state.write_weights.max() > 1 - 1e-4  # a one-hot write
        written.append(int(state.write_weights[0, 0].argmax()))
    assert written == [0, 1, 2]  # free slots are taken in index order
    state = state._replace(read_weights=one_hot(written[0]).view(1, 1, N))
    for expected, modes in ((1, (0, 1.0, 0)), (2, (0, 1.0, 0)), (1, (1.0, 0, 0))):
        out = _forced_step(memory, state, allocation_gate=1.0, write_gate=0.0, modes=modes)
        torch.testing.assert_close(out.weights[0, 0], one_hot(written[expected]), atol=1e-4,
                                   rtol=0)
        state = out.state


def _forced_step(memory, state, allocation_gate, modes, write_gate=1.0):
    """One step with the interface replaced by fixed gates (free gates 0)."""
    big = 40.0
    with torch.no_grad():
        memory.interface.weight.zero_()
        bias = torch.zeros_like(memory.interface.bias)
        parts = dict(
            zip(
                [name for name, _ in memory._interface],
                bias.split(memory._interface_sizes),
                strict=True,
            )
        )
        parts["free_gates"].fill_(-big)
        parts["allocation_gates"].fill_(big if allocation_gate else -big)
        parts["write_gates"].fill_(big if write_gate else -big)
        parts["read_modes"].copy_(torch.tensor([big if m else -big for m in modes]))
        memory.interface.bias.copy_(bias)
    return memory(state, torch.zeros(1, C), torch.randn(1, Z))


# ----------------------------------------------------------------------------- precedence
def test_precedence_unchanged_by_zero_write_and_replaced_by_full_write():
    torch.manual_seed(1)
    precedence = torch.softmax(torch.randn(3, 2, N), -1) * 0.7
    assert ((precedence >= 0) & (precedence <= 1)).all()
    torch.testing.assert_close(update_precedence(precedence, torch.zeros(3, 2, N)), precedence)
    full = torch.softmax(torch.randn(3, 2, N), -1)
    torch.testing.assert_close(update_precedence(precedence, full), full)


# ----------------------------------------------------------------------------- usage
def test_usage_is_one_after_full_write_and_zero_after_full_read_with_free_gate_one():
    torch.manual_seed(2)
    usage = torch.rand(4, N)
    no_free, no_read = torch.zeros(4, R), torch.zeros(4, R, N)
    written = update_usage(usage, one_hot(2).expand(4, 1, N), no_free, no_read)
    assert ((written >= 0) & (written <= 1)).all()
    torch.testing.assert_close(written[:, 2], torch.ones(4))
    torch.testing.assert_close(written[:, [0, 1, 3, 4]], usage[:, [0, 1, 3, 4]])
    reads = torch.stack([one_hot(2), one_hot(0)]).expand(4, R, N)
    freed = update_usage(written, torch.zeros(4, 1, N), torch.ones(4, R), reads)
    torch.testing.assert_close(freed[:, [0, 2]], torch.zeros(4, 2))
    torch.testing.assert_close(freed[:, [1, 3, 4]], written[:, [1, 3, 4]])
    # a free gate of 0 frees nothing
    kept = update_usage(written, torch.zeros(4, 1, N), torch.zeros(4, R), reads)
    torch.testing.assert_close(kept, written)


# ----------------------------------------------------------------------------- allocation
def test_allocation_argmax_is_argmin_of_usage():
    torch.manual_seed(3)
    usage = torch.rand(50, 8)
    allocation = allocation_weights(usage)
    assert (allocation.argmax(-1) == usage.argmin(-1)).all()
    assert (allocation >= 0).all() and (allocation.sum(-1) <= 1 + 1e-6).all()
    # allocation is larger for less used slots
    order = usage.argsort(-1)
    assert (allocation.gather(-1, order).diff(dim=-1) <= 1e-7).all()


def test_allocation_ties_are_broken_stably():
    allocation = allocation_weights(torch.zeros(N))
    assert allocation.argmax() == 0
    torch.testing.assert_close(allocation, one_hot(0))
    usage = torch.tensor([0.5, 0.2, 0.9, 0.2, 0.2])
    torch.testing.assert_close(allocation_weights(usage)[1], torch.tensor(0.8))
    assert allocation_weights(usage).argmax() == 1
    # three full-strength write heads take the tied slots in index order
    allocations = write_allocation_weights(torch.zeros(N), torch.ones(3))
    torch.testing.assert_close(allocations, torch.eye(N)[:3])
    allocations = write_allocation_weights(torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0]), torch.ones(3))
    torch.testing.assert_close(allocations, torch.eye(N)[[1, 3, 4]])


def test_write_head_with_gate_zero_leaves_next_allocation_unchanged():
    torch.manual_seed(4)
    usage = torch.rand(6, N)
    allocations = write_allocation_weights(usage, torch.tensor([0.0, 0.8, 0.3]).expand(6, 3))
    torch.testing.assert_close(allocations[:, 1], allocations[:, 0])
    torch.testing.assert_close(allocations[:, 0], allocation_weights(usage))
    assert not torch.allclose(allocations[:, 2], allocations[:, 1])


def test_write_weights_sum_to_the_write_gate_when_allocation_is_full():
    torch.manual_seed(5)
    usage = torch.rand(6, N)
    usage[:, 1] = 0.0  # a free slot: the allocation sums to one
    allocation = write_allocation_weights(usage, torch.zeros(6, 1))
    content = torch.softmax(torch.randn(6, 1, N), -1)
    g_a, g_w = torch.rand(6, 1), torch.rand(6, 1)
    w = write_weights(allocation, content, g_a, g_w)
    torch.testing.assert_close(w.sum(-1), g_w, atol=1e-5, rtol=0)
    # through the module: an empty memory has free slots for every head
    memory = make_memory(2)
    h = torch.randn(6, C)
    out = memory(memory.initial_state((6,)), h, torch.randn(6, Z))
    gates = memory.split_interface(h)["write_gates"]
    torch.testing.assert_close(out.state.write_weights.sum(-1), gates, atol=1e-5, rtol=0)


def test_gradcheck_allocation_float64_at_distinct_usages():
    usage = torch.tensor([[0.3, 0.05, 0.9, 0.6, 0.0], [0.1, 0.2, 0.4, 0.8, 0.95]],
                         dtype=torch.float64, requires_grad=True)
    gates = torch.tensor([[0.7, 0.4], [0.9, 0.1]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(allocation_weights, (usage,))
    assert torch.autograd.gradcheck(write_allocation_weights, (usage, gates))
    # the gradient stays finite on an empty memory (all usages tied at 0)
    empty = torch.zeros(N, requires_grad=True)
    write_allocation_weights(empty, torch.ones(2)).pow(2).sum().backward()
    assert torch.isfinite(empty.grad).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_slots"):
        DNCMemory(Z, C, num_slots=0)
    with pytest.raises(ValueError, match="num_write_heads"):
        DNCMemory(Z, C, num_write_heads=0)
    with pytest.raises(ValueError, match="read_strength_init must be a number > 1"):
        DNCMemory(Z, C, read_strength_init=1.0)
    for bad in (0.0, 1.0):
        with pytest.raises(ValueError, match=r"content_mode_init must be a number in \(0, 1\)"):
            DNCMemory(Z, C, content_mode_init=bad)
    with pytest.raises(ValueError, match=r"time_stamp_size must be an integer >= 0"):
        DNCMemory(Z, C, word_size=W, time_stamp_size=-2)
    for bad in (3, W):
        with pytest.raises(ValueError, match=r"time_stamp_size must be even and in \[0, word_size"):
            DNCMemory(Z, C, word_size=W, time_stamp_size=bad)


# ----------------------------------------------------------------------------- initial reads
@pytest.mark.parametrize("heads", [1, 2])
def test_read_addressing_init_sets_strength_and_content_mode_at_zero_controller_output(heads):
    memory = make_memory(heads, read_strength_init=10.0, content_mode_init=0.9)
    parts = memory.split_interface(torch.zeros(C))
    torch.testing.assert_close(parts["read_strengths"], torch.full((R,), 10.0))
    link_modes = torch.full((R, 2 * heads), 0.1 / (2 * heads))
    expected_modes = torch.cat([link_modes, torch.full((R, 1), 0.9)], dim=-1)
    torch.testing.assert_close(parts["read_modes"], expected_modes)


def test_read_addressing_init_leaves_everything_else_as_the_default_initialisation():
    default, sharp = make_memory(), make_memory(read_strength_init=10.0, content_mode_init=0.9)
    h = torch.randn(7, C)
    parts_default, parts_sharp = default.split_interface(h), sharp.split_interface(h)
    for name in ("read_keys", "free_gates", "write_keys", "erase", "write_gates"):
        torch.testing.assert_close(parts_sharp[name], parts_default[name])
    torch.testing.assert_close(sharp.interface.weight, default.interface.weight)
    # the strengths and modes still depend on the controller output
    assert parts_sharp["read_strengths"].std(0).min() > 0
    assert parts_sharp["read_modes"].std(0).min() > 0


def test_sharp_content_init_concentrates_the_first_reads():
    """After a few writes, the default reads are near uniform; the sharp init's are not."""
    entropies = []
    for options in ({}, {"read_strength_init": 20.0, "content_mode_init": 0.99}):
        memory = make_memory(**options)
        generator = torch.Generator().manual_seed(1)
        state = memory.initial_state((64,))
        out = run_steps(memory, state, N, batch=(64,), generator=generator)[-1]
        weights = out.weights / out.weights.sum(-1, keepdim=True)
        entropies.append(-(weights * weights.clamp_min(1e-12).log()).sum(-1).mean())
    assert entropies[1] < entropies[0] - 0.2


def test_default_sizes_leave_a_slot_for_every_latent_of_the_longest_task():
    """(Read size and parameter counts: ``test_memory_interface.py``.)"""
    memory = DNCMemory(32, 256)
    assert (memory.num_slots, memory.word_size, memory.num_heads) == (32, 32, 5)
    assert memory.num_slots >= 25 and memory.read_size == 160


def test_read_addressing_flags_reach_the_memory_and_only_the_dnc():
    def options_of(*argv):
        args = build_parser().parse_args(["train", "perfect-recall", "--out", "X", *argv])
        return model_options_from_args(args)

    options = options_of(
        "--model", "dnc", "--dnc-read-strength-init", "10", "--dnc-content-mode-init", "0.9"
    )
    assert (options["read_strength_init"], options["content_mode_init"]) == (10.0, 0.9)
    gtm = build_gtm("dnc", frame_shape=(1, 4, 4), sequence_length=6, **options)
    parts = gtm.memory.split_interface(torch.zeros(gtm.memory.controller_size))
    torch.testing.assert_close(parts["read_strengths"], torch.full((5,), 10.0))
    with pytest.raises(ValueError, match="--dnc-content-mode-init applies to --model dnc only"):
        options_of("--model", "ntm", "--dnc-content-mode-init", "0.9")
    options = options_of("--model", "dnc", "--dnc-time-stamp-size", "16")
    gtm = build_gtm("dnc", frame_shape=(1, 4, 4), sequence_length=6, **options)
    assert gtm.memory.time_stamp_size == 16
    with pytest.raises(ValueError, match="--dnc-time-stamp-size applies to --model dnc only"):
        options_of("--model", "lru", "--dnc-time-stamp-size", "16")


# ----------------------------------------------------------------------------- time stamps
def test_time_stamps_of_distinct_steps_are_nearly_orthogonal():
    """The bound the docstring states: cosine at most 0.23 among the first 32 steps (D = 16)."""
    memory = DNCMemory(Z, C, word_size=32, time_stamp_size=16)
    stamps = time_stamps(torch.arange(32.0), memory.time_stamp_frequencies)
    torch.testing.assert_close(stamps.pow(2).sum(-1), torch.full((32,), 8.0))
    cosine = (stamps @ stamps.T) / 8.0
    off_diagonal = cosine[~torch.eye(32, dtype=torch.bool)]
    assert off_diagonal.max() < 0.23


def scripted_stamp_memory(position, read_strength=60.0):
    """A stamped DNC whose interface ignores ``h``: every step writes fully (allocation), frees
    nothing, adds a zero latent part, and reads by content with the key ``[0, stamp of
    position]``."""
    width, stamp = 10, 8
    memory = DNCMemory(Z, C, num_slots=N + 3, word_size=width, num_heads=R,
                       time_stamp_size=stamp).double()
    key = torch.cat([torch.zeros(width - stamp, dtype=torch.float64),
                     time_stamps(torch.tensor(float(position)), memory.time_stamp_frequencies)])
    bias = dict(zip((name for name, _ in memory._interface),
                    memory.interface.bias.detach().split(memory._interface_sizes), strict=True))
    with torch.no_grad():
        memory.interface.weight.zero_()
        memory.add_vector.weight.zero_()
        memory.add_vector.bias.zero_()
        bias["read_keys"].copy_(key.repeat(R))
        bias["read_strengths"].fill_(read_strength)  # oneplus(60) = 61
        bias["free_gates"].fill_(-30.0)
        bias["read_modes"].copy_(torch.tensor([-30.0, -30.0, 30.0]).repeat(R))
        for name in ("allocation_gates", "write_gates"):
            bias[name].fill_(30.0)
    return memory


def test_full_writes_stamp_each_slot_with_its_step_and_a_stamp_key_reads_that_slot():
    steps, position = N + 2, 3
    memory = scripted_stamp_memory(position)
    state, slots = memory.initial_state((2,), dtype=torch.float64), []
    for _ in range(steps):
        out = memory(state, torch.randn(2, C, dtype=torch.float64),
                     torch.randn(2, Z, dtype=torch.float64))
        state = out.state
        assert (state.write_weights.amax(-1) > 1 - 1e-9).all()  # a full write of one slot
        slots.append(state.write_weights[:, 0].argmax(-1))
    slots = torch.stack(slots, 1)  # [2, steps]: the slot written at each step
    assert (state.step == steps).all()
    assert all(len(set(row.tolist())) == steps for row in slots)
    # the slot written at step s holds the stamp of s in its last 8 numbers, and 0 elsewhere
    written = torch.stack([state.memory[b, slots[b]] for b in range(2)])
    expected = time_stamps(torch.arange(float(steps)), memory.time_stamp_frequencies)
    torch.testing.assert_close(written[..., 2:], expected.expand(2, -1, -1))
    assert state.memory[..., :2].abs().max() == 0
    # every head reads the slot written at step `position`
    read_slot = out.weights.argmax(-1)
    assert (read_slot == slots[:, position : position + 1]).all()
    assert (out.weights.amax(-1) > 0.99).all()


def test_time_stamped_memory_batch_equals_single_runs_and_passes_gradcheck():
    memory = make_memory(word_size=6, time_stamp_size=4, dtype=torch.float64)
    generator = torch.Generator().manual_seed(3)
    h = torch.randn(3, 4, C, generator=generator, dtype=torch.float64)
    z = torch.randn(3, 4, Z, generator=generator, dtype=torch.float64)

    def reads(h, z):
        state, out = memory.initial_state(h.shape[:1], dtype=h.dtype), []
        for t in range(h.shape[1]):
            step = memory(state, h[:, t], z[:, t])
            state = step.state
            out.append(step.read)
        return torch.stack(out, 1)

    batched = reads(h, z)
    singles = torch.cat([reads(h[b : b + 1], z[b : b + 1]) for b in range(3)])
    torch.testing.assert_close(batched, singles)
    assert torch.autograd.gradcheck(reads, (h[:1].requires_grad_(), z[:1].requires_grad_()),
                                    fast_mode=True)


class TestDNCContract(contract.MemoryContract):
    name = "dnc"
    options = {
        "num_slots": contract.N,
        "word_size": contract.W,
        "num_heads": contract.R,
        "num_write_heads": contract.H,
    }
    state_shapes = {
        "memory": (contract.N, contract.W),
        "usage": (contract.N,),
        "link": (contract.H, contract.N, contract.N),
        "precedence": (contract.H, contract.N),
        "read_weights": (contract.R, contract.N),
        "write_weights": (contract.H, contract.N),
        "step": (),
    }
    read_size = contract.R * contract.W
    with_weights = checks_sizes = records_write_weights = fast_gradcheck = True
    matrix_field = "memory"

    def distinct_state(self, state):
        # distinct usages keep the sort of the allocation (a permutation) fixed under the
        # finite differences
        return state._replace(usage=contract.DISTINCT_USAGE)
