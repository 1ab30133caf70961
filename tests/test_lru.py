"""Invariants of the least-recently-used access memory (Santoro et al., 2016)."""

import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam
from torch.nn import functional as F

from pgtm.memories.lru import LRUMemory, LRUState, least_used_weights, update_usage
from pgtm.models import build_gtm, count_parameters

LATENT, CONTROLLER, SLOTS, WORD, HEADS = 3, 5, 4, 3, 2


def make_memory(dtype=torch.float32, **options):
    torch.manual_seed(0)
    options = {"num_slots": SLOTS, "word_size": WORD, "num_heads": HEADS, **options}
    return LRUMemory(LATENT, CONTROLLER, **options).to(dtype)


def run(memory, state, hs, zs):
    outputs = []
    for h, z in zip(hs, zs, strict=True):
        out = memory(state, h, z)
        state = out.state
        outputs.append(out)
    return outputs


def set_write_gate(memory, logit):
    """Zero the gate's weights and set its bias: sigma(alpha) = sigmoid(logit) for every head."""
    with torch.no_grad():
        weight = memory.write_head.weight.view(HEADS, WORD + 1, -1)
        bias = memory.write_head.bias.view(HEADS, WORD + 1)
        weight[:, WORD] = 0.0
        bias[:, WORD] = logit


@pytest.mark.parametrize("batch_shape", [(), (3,), (2, 3)])
def test_shapes_weights_and_reads_after_the_write(batch_shape):
    memory = make_memory()
    state = memory.initial_state(batch_shape)
    hs, zs = torch.randn(3, *batch_shape, 5), torch.randn(3, *batch_shape, 3)
    for out in run(memory, state, hs, zs):
        assert out.read.shape == batch_shape + (HEADS * WORD,) == batch_shape + (memory.read_size,)
        assert out.weights.shape == batch_shape + (HEADS, SLOTS)
        assert out.state.memory.shape == batch_shape + (SLOTS, WORD)
        assert out.state.usage.shape == batch_shape + (SLOTS,)
        assert out.penalty is None and out.gates is None
        assert (out.weights >= 0).all()
        torch.testing.assert_close(out.weights.sum(-1), torch.ones(batch_shape + (HEADS,)))
        # reads see the memory after the write of z_{t-1}
        torch.testing.assert_close(out.read, (out.weights @ out.state.memory).flatten(-2))
    assert (run(memory, state, hs[:1], zs[:1])[0].read != 0).any()  # empty before the write


def test_state_broadcasts_against_a_new_particle_dimension():
    memory = make_memory()
    state = memory.initial_state((4, 1))
    out = memory(state, torch.randn(4, 1, 5), torch.randn(10, 4, 1, 3))  # z: [K, B, 1, Z]
    assert out.read.shape == (10, 4, 1, memory.read_size)
    assert out.state.memory.shape == (10, 4, 1, SLOTS, WORD)
    assert out.state.read_weights.shape == (10, 4, 1, HEADS, SLOTS)
    assert out.state.usage.shape == (10, 4, 1, SLOTS)
    out = memory(out.state, torch.randn(10, 4, 1, 5), torch.randn(10, 4, 1, 3))
    assert out.read.shape == (10, 4, 1, memory.read_size)


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
    hs, zs = torch.randn(4, 1, 5, dtype=torch.float64), torch.randn(4, 1, 3, dtype=torch.float64)
    usages = [out.state.usage[0] for out in run(memory, state, hs, zs)]
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


def test_no_nan_with_all_zero_memory_in_values_or_gradients():
    memory = make_memory()
    with torch.no_grad():  # zero words: the memory stays all-zero
        for parameter in memory.parameters():
            parameter.zero_()
    h = torch.zeros(3, 5, requires_grad=True)
    z = torch.zeros(3, 3, requires_grad=True)
    outputs = run(memory, memory.initial_state((3,)), [h, h, h], [z, z, z])
    assert (outputs[-1].state.memory == 0).all()
    loss = sum(
        out.read.sum() + (out.weights * torch.randn(3, HEADS, SLOTS)).sum() for out in outputs
    )
    loss.backward()
    for out in outputs:
        for tensor in (out.read, out.weights, *out.state):
            assert torch.isfinite(tensor).all()
    for tensor in (h.grad, z.grad, *(p.grad for p in memory.parameters())):
        assert torch.isfinite(tensor).all()


def test_gradcheck_float64():
    memory = make_memory(dtype=torch.float64)
    options = {"dtype": torch.float64, "requires_grad": True}
    torch.manual_seed(2)
    inputs = (
        torch.randn(2, SLOTS, WORD, **options),
        torch.randn(2, HEADS, SLOTS, **options),
        torch.tensor([[0.9, 0.2, 0.5, 0.7], [0.1, 0.8, 0.4, 0.3]], **options),
        torch.randn(2, 5, **options),
        torch.randn(2, 3, **options),
    )

    def step(state_memory, read_logits, usage, h, z):
        out = memory(LRUState(state_memory, read_logits.softmax(-1), usage), h, z)
        return out.read, out.weights, *out.state

    assert torch.autograd.gradcheck(step, inputs, fast_mode=True)


def test_batch_of_b_equals_b_runs_of_one():
    memory = make_memory()
    hs, zs = torch.randn(5, 3, 2, 5), torch.randn(5, 3, 2, 3)  # [T, *batch, ...]
    batched = run(memory, memory.initial_state((3, 2)), hs, zs)
    for i in range(3):
        for j in range(2):
            single = run(
                memory, memory.initial_state((1,)), hs[:, i, j : j + 1], zs[:, i, j : j + 1]
            )
            for out_b, out_1 in zip(batched, single, strict=True):
                torch.testing.assert_close(out_1.read[0], out_b.read[i, j])
                torch.testing.assert_close(out_1.state.usage[0], out_b.state.usage[i, j])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
def test_cpu_equals_cuda():
    memory = make_memory(dtype=torch.float64)
    hs, zs = torch.randn(5, 3, 5, dtype=torch.float64), torch.randn(5, 3, 3, dtype=torch.float64)
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
        LRUMemory,
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
    memory = LRUMemory(32, 256)
    assert memory.read_size == 160  # as the Introspective memory's 5 x 32
    assert count_parameters(memory) == 90_090
    introspective = count_parameters(build_gtm("introspective", sequence_length=15))
    lru = count_parameters(build_gtm(LRUMemory, sequence_length=15))
    assert (introspective, lru) == (1_932_881, 2_002_411)
    assert abs(lru - introspective) < 0.05 * introspective


def test_bad_arguments():
    with pytest.raises(ValueError, match="decay"):
        LRUMemory(3, 5, decay=1.5)
    with pytest.raises(ValueError, match="num_heads"):
        LRUMemory(3, 5, num_heads=0)
    memory = make_memory()
    with pytest.raises(ValueError, match="controller_output"):
        memory(memory.initial_state((2,)), torch.randn(2, 4), torch.randn(2, 3))
    with pytest.raises(ValueError, match="latent"):
        memory(memory.initial_state((2,)), torch.randn(2, 5), torch.randn(2, 4))
