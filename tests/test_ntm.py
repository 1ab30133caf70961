"""Invariants of the Neural Turing Machine memory."""

import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam
from torch.nn import functional as F

from pgtm.memories.ntm import NTMMemory, NTMState, address, split_addressing
from pgtm.models import build_gtm, count_parameters

LATENT, CONTROLLER, SLOTS, WORD, HEADS = 3, 5, 6, 4, 2


def make_memory(dtype=torch.float32, **options):
    torch.manual_seed(0)
    options = {"num_slots": SLOTS, "word_size": WORD, "num_heads": HEADS, **options}
    return NTMMemory(LATENT, CONTROLLER, **options).to(dtype)


def run(memory, state, hs, zs):
    """Run ``len(hs)`` steps; returns the outputs."""
    outputs = []
    for h, z in zip(hs, zs, strict=True):
        out = memory(state, h, z)
        state = out.state
        outputs.append(out)
    return outputs


@pytest.mark.parametrize("batch_shape", [(), (3,), (2, 3)])
@pytest.mark.parametrize("write_heads", [1, 2])
def test_shapes_and_weights_are_distributions(batch_shape, write_heads):
    memory = make_memory(num_write_heads=write_heads)
    state = memory.initial_state(batch_shape)
    for out in run(memory, state, torch.randn(3, *batch_shape, 5), torch.randn(3, *batch_shape, 3)):
        assert out.read.shape == batch_shape + (HEADS * WORD,) == batch_shape + (memory.read_size,)
        assert out.weights.shape == batch_shape + (HEADS, SLOTS)
        assert out.state.memory.shape == batch_shape + (SLOTS, WORD)
        assert out.state.write_weights.shape == batch_shape + (write_heads, SLOTS)
        assert out.penalty is None and out.gates is None
        for weights in (out.weights, out.state.write_weights):
            assert (weights >= 0).all()
            torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
        # the read is phi = w M of the memory after the write
        expected = (out.weights @ out.state.memory).flatten(-2)
        torch.testing.assert_close(out.read, expected)


def test_state_broadcasts_against_a_new_particle_dimension():
    memory = make_memory()
    state = memory.initial_state((4, 1))  # [B, 1] before the first sample
    out = memory(state, torch.randn(4, 1, 5), torch.randn(10, 4, 1, 3))  # z: [K, B, 1, Z]
    assert out.read.shape == (10, 4, 1, memory.read_size)
    assert out.state.memory.shape == (10, 4, 1, SLOTS, WORD)
    assert out.state.read_weights.shape == (10, 4, 1, HEADS, SLOTS)
    assert out.state.write_weights.shape == (10, 4, 1, 1, SLOTS)
    out = memory(out.state, torch.randn(10, 4, 1, 5), torch.randn(10, 4, 1, 3))
    assert out.read.shape == (10, 4, 1, memory.read_size)


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
    hs = torch.randn(SLOTS + 1, 2, 5, dtype=torch.float64)
    zs = torch.randn(SLOTS + 1, 2, 3, dtype=torch.float64)
    for t, out in enumerate(run(memory, state, hs, zs)):
        expected = F.one_hot(torch.full((2, 1), (t + 1) % SLOTS), SLOTS).double()
        torch.testing.assert_close(out.state.write_weights, expected)


def test_no_nan_with_all_zero_memory_in_values_or_gradients():
    memory = make_memory()
    state = memory.initial_state((3,))
    h = torch.zeros(3, 5, requires_grad=True)
    z = torch.zeros(3, 3, requires_grad=True)
    with torch.no_grad():  # zero words: the memory stays all-zero
        for parameter in memory.parameters():
            parameter.zero_()
    outputs = run(memory, state, [h, h, h], [z, z, z])
    assert (outputs[-1].state.memory == 0).all()
    loss = sum(
        (out.read.sum() + (out.weights * torch.randn(3, HEADS, SLOTS)).sum()) for out in outputs
    )
    loss.backward()
    for out in outputs:
        for tensor in (out.read, out.weights, *out.state):
            assert torch.isfinite(tensor).all()
    for tensor in (h.grad, z.grad, *(p.grad for p in memory.parameters())):
        assert torch.isfinite(tensor).all()


def test_gradcheck_float64():
    memory = make_memory(dtype=torch.float64, num_write_heads=2)
    options = {"dtype": torch.float64, "requires_grad": True}
    torch.manual_seed(2)
    inputs = (
        torch.randn(2, SLOTS, WORD, **options),
        torch.randn(2, HEADS, SLOTS, **options),
        torch.randn(2, 2, SLOTS, **options),
        torch.randn(2, 5, **options),
        torch.randn(2, 3, **options),
    )

    def step(state_memory, read_logits, write_logits, h, z):
        state = NTMState(state_memory, read_logits.softmax(-1), write_logits.softmax(-1))
        out = memory(state, h, z)
        return out.read, out.weights, *out.state

    assert torch.autograd.gradcheck(step, inputs, fast_mode=True)


def test_batch_of_b_equals_b_runs_of_one():
    memory = make_memory(num_write_heads=2)
    hs, zs = torch.randn(4, 3, 2, 5), torch.randn(4, 3, 2, 3)  # [T, *batch, ...]
    batched = run(memory, memory.initial_state((3, 2)), hs, zs)
    for i in range(3):
        for j in range(2):
            single = run(
                memory, memory.initial_state((1,)), hs[:, i, j : j + 1], zs[:, i, j : j + 1]
            )
            for out_b, out_1 in zip(batched, single, strict=True):
                torch.testing.assert_close(out_1.read[0], out_b.read[i, j])
                torch.testing.assert_close(out_1.weights[0], out_b.weights[i, j])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
def test_cpu_equals_cuda():
    memory = make_memory(dtype=torch.float64)
    hs, zs = torch.randn(4, 3, 5, dtype=torch.float64), torch.randn(4, 3, 3, dtype=torch.float64)
    cpu = run(memory, memory.initial_state((3,), dtype=torch.float64), hs, zs)
    memory.cuda()
    state = memory.initial_state((3,), device="cuda", dtype=torch.float64)
    cuda = run(memory, state, hs.cuda(), zs.cuda())
    for a, b in zip(cpu, cuda, strict=True):
        torch.testing.assert_close(b.read.cpu(), a.read)
        for x, y in zip(a.state, b.state, strict=True):
            torch.testing.assert_close(y.cpu(), x)


def small_gtm():
    torch.manual_seed(0)
    return build_gtm(
        NTMMemory,
        frame_shape=(1, 1, 6),
        sequence_length=4,
        latent_size=3,
        controller_size=8,
        feature_size=8,
        network="mlp",
        num_slots=5,
        word_size=4,
        num_heads=2,
    )


def test_gtm_trains_for_two_svi_steps_and_runs_under_a_particle_plate():
    gtm = small_gtm()
    x = torch.bernoulli(torch.full((3, 4, 1, 1, 6), 0.4))
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    before = [p.detach().clone() for p in gtm.parameters()]
    svi = SVI(gtm.model, gtm.guide, Adam({"lr": 1e-2}), Trace_ELBO(max_plate_nesting=2))
    losses = [svi.step(x) for _ in range(2)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert any((p != b).any() for p, b in zip(gtm.parameters(), before, strict=True))
    with pyro.plate("particles", 7, dim=-3):
        guide_trace = poutine.trace(gtm.guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(gtm.model, guide_trace)).get_trace(x)
    model_trace.compute_log_prob()
    for t in range(4):
        assert model_trace.nodes[f"z_{t}"]["log_prob"].shape == (7, 3, 1)
    assert model_trace.nodes["x"]["log_prob"].shape == (7, 3, 4)
    assert torch.isfinite(model_trace.log_prob_sum())
    elbo = Trace_ELBO(num_particles=5, vectorize_particles=True, max_plate_nesting=2)
    assert torch.isfinite(torch.tensor(elbo.loss(gtm.model, gtm.guide, x)))


def test_default_sizes_keep_the_parameter_count_of_the_introspective_gtm():
    memory = NTMMemory(32, 256)
    assert memory.read_size == 160  # as the Introspective memory's 5 x 32
    assert count_parameters(memory) == 78_308
    introspective = count_parameters(build_gtm("introspective", sequence_length=15))
    ntm = count_parameters(build_gtm(NTMMemory, sequence_length=15))
    assert (introspective, ntm) == (1_932_881, 1_990_629)
    assert abs(ntm - introspective) < 0.05 * introspective


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_slots"):
        NTMMemory(3, 5, num_slots=0)
    with pytest.raises(ValueError, match="shift_range"):
        NTMMemory(3, 5, shift_range=-1)
    memory = make_memory()
    with pytest.raises(ValueError, match="controller_output"):
        memory(memory.initial_state((2,)), torch.randn(2, 4), torch.randn(2, 3))
    with pytest.raises(ValueError, match="latent"):
        memory(memory.initial_state((2,)), torch.randn(2, 5), torch.randn(2, 4))
