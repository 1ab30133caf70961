"""The invariants every memory of :data:`pgtm.models.MEMORIES` shares (one conformance suite).

Every test runs over all the memories, each built with tiny sizes by :func:`make_memory` from
:data:`OPTIONS`; what only one memory promises is tested in its own file (``test_ntm.py``,
``test_lru.py``, ``test_dnc.py``, ``test_introspective.py``, ``test_fast_weights.py``,
``test_kanerva.py``). The Kanerva memory's content is a latent variable sampled by its own hooks
in a GTM; here it runs from its deterministic ``initial_state`` (the prior mean), which fits
every assumption of this suite (its read does not depend on ``z``, but it broadcasts ``z``'s
leading dims like the memories that write it).
"""

import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

from pgtm.experiment import read_heads_on
from pgtm.models import MEMORIES, build_gtm, count_parameters
from pgtm.tasks import SequenceBatch

Z, C, N, W, R, H = 3, 5, 4, 3, 2, 2  # latent, controller, slots, word, read heads, write heads
D = 6  # size of the fast-weights memory (its other form is tested in test_fast_weights.py)
CK = 7  # code size of the Kanerva memory (larger than its N slots, as by default)

#: tiny constructor options of each memory (the Introspective one with both penalties, so that
#: every field of ``MemoryOutput`` is exercised by some memory)
OPTIONS = {
    "vrnn": {},
    "introspective": {"num_slots": N, "num_heads": R, "weighting": "unnormalised", "sparsity": 0.1},
    "ntm": {"num_slots": N, "word_size": W, "num_heads": R, "num_write_heads": H},
    "lru": {"num_slots": N, "word_size": W, "num_heads": R},
    "dnc": {"num_slots": N, "word_size": W, "num_heads": R, "num_write_heads": H},
    "fast-weights": {"size": D, "num_slots": N, "inner_steps": 2, "form": "attention"},
    "kanerva": {"num_slots": N, "code_size": CK},
}
#: the trailing shape of every state tensor of the memories built from OPTIONS
STATE_SHAPES = {
    "vrnn": {},
    "introspective": {"buffer": (N, Z)},
    "ntm": {"memory": (N, W), "read_weights": (R, N), "write_weights": (H, N)},
    "lru": {"memory": (N, W), "read_weights": (R, N), "usage": (N,)},
    "dnc": {
        "memory": (N, W),
        "usage": (N,),
        "link": (H, N, N),
        "precedence": (H, N),
        "read_weights": (R, N),
        "write_weights": (H, N),
        "step": (),
    },
    "fast-weights": {"history": (N, D)},
    "kanerva": {"memory": (N, CK)},
}
READ_SIZES = {
    "vrnn": 0,
    "introspective": R * Z,
    "ntm": R * W,
    "lru": R * W,
    "dnc": R * W,
    "fast-weights": D,
    "kanerva": CK,
}
#: the memories that return read weights, gates and a penalty
WITH_WEIGHTS = {"introspective", "ntm", "lru", "dnc"}
WITH_GATES = WITH_PENALTY = {"introspective"}
#: the memories that check the sizes of h and z
CHECKING_SIZES = ["ntm", "lru", "dnc", "fast-weights", "kanerva"]
#: memories whose step does not write z (the Kanerva memory is written by its guide hook, from
#: the frames' features), and the parameters that only those hooks use (the prior variance)
NOT_WRITING_Z = {"kanerva"}
HOOK_ONLY_PARAMETERS = {"kanerva": {"prior_variance_raw"}}
#: memories whose step is too slow for a full (not ``fast_mode``) gradcheck
FAST_GRADCHECK = {"ntm", "lru", "dnc"}
NAMES = list(MEMORIES)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")


def make_memory(name, dtype=torch.float32):
    torch.manual_seed(0)
    return MEMORIES[name](latent_size=Z, controller_size=C, **OPTIONS[name]).to(dtype)


def run(memory, state, hs, zs):
    """One step per ``(h, z)`` pair from ``state``; returns the outputs."""
    outputs = []
    for h, z in zip(hs, zs, strict=True):
        outputs.append(memory(state, h, z))
        state = outputs[-1].state
    return outputs


def tensors(out):
    """Every tensor of a ``MemoryOutput``: read, weights, penalty, gates, then the state's."""
    fields = (out.read, out.weights, out.penalty, out.gates, *out.state)
    return [tensor for tensor in fields if tensor is not None]


def check_state(name, state, batch_shape):
    expected = {field: batch_shape + shape for field, shape in STATE_SHAPES[name].items()}
    shapes = {field: tuple(t.shape) for field, t in zip(state._fields, state, strict=True)}
    assert shapes == expected


def check_output(name, memory, out, batch_shape):
    assert memory.read_size == READ_SIZES[name]
    assert out.read.shape == batch_shape + (memory.read_size,)
    check_state(name, out.state, batch_shape)
    if name in WITH_WEIGHTS:
        assert out.weights.shape == batch_shape + (R, N) and (out.weights >= 0).all()
    else:
        assert out.weights is None
    if name in WITH_GATES:
        assert out.gates.shape == batch_shape + (R,)
        assert ((out.gates > 0) & (out.gates < 1)).all()
    else:
        assert out.gates is None
    if name in WITH_PENALTY:
        assert out.penalty.shape == batch_shape and torch.isfinite(out.penalty).all()
    else:
        assert out.penalty is None


def test_every_memory_is_covered():
    assert set(OPTIONS) == set(STATE_SHAPES) == set(READ_SIZES) == set(MEMORIES)


@pytest.mark.parametrize("batch_shape", [(), (3,), (2, 3)])
@pytest.mark.parametrize("name", NAMES)
def test_output_and_state_shapes(name, batch_shape):
    memory = make_memory(name)
    state = memory.initial_state(batch_shape)
    check_state(name, state, batch_shape)
    hs, zs = torch.randn(2, *batch_shape, C), torch.randn(2, *batch_shape, Z)
    for out in run(memory, state, hs, zs):
        assert type(out.state) is type(state)
        check_output(name, memory, out, batch_shape)


@pytest.mark.parametrize("name", NAMES)
def test_state_of_batch_shape_b1_broadcasts_against_a_new_particle_dimension(name):
    memory = make_memory(name)
    state = memory.initial_state((4, 1))  # [B, 1] before the first sample
    out = memory(state, torch.randn(4, 1, C), torch.randn(7, 4, 1, Z))  # z: [K, B, 1, Z]
    # a memory's read depends on z; without one the read follows h alone
    leading = (7, 4, 1) if STATE_SHAPES[name] else (4, 1)
    assert out.read.shape == leading + (memory.read_size,)
    check_state(name, out.state, (7, 4, 1))
    out = memory(out.state, torch.randn(7, 4, 1, C), torch.randn(7, 4, 1, Z))
    check_output(name, memory, out, (7, 4, 1))


@pytest.mark.parametrize("name", NAMES)
def test_no_nan_or_inf_in_values_or_gradients_with_an_all_zero_memory(name):
    for zero_parameters in (True, False):
        memory = make_memory(name)
        if zero_parameters:  # zero words too: the memory stays all-zero
            with torch.no_grad():
                for parameter in memory.parameters():
                    parameter.zero_()
        h = torch.zeros(3, C, requires_grad=True)
        z = torch.zeros(3, Z, requires_grad=True)
        outputs = run(memory, memory.initial_state((3,)), [h] * 3, [z] * 3)
        for field in ("memory", "buffer", "history"):
            if zero_parameters and field in STATE_SHAPES[name]:
                assert (getattr(outputs[-1].state, field) == 0).all()
        for out in outputs:
            for tensor in tensors(out):
                assert torch.isfinite(tensor).all()
        # random weights, so that normalised weights pass on a gradient
        generator = torch.Generator().manual_seed(1)
        loss = sum(
            (t * torch.randn(t.shape, generator=generator)).sum()
            for out in outputs
            for t in tensors(out)
        )
        if name == "vrnn":  # nothing to differentiate
            assert not loss.requires_grad
            continue
        loss.backward()
        hook_only = HOOK_ONLY_PARAMETERS.get(name, set())
        used = [p for n, p in memory.named_parameters() if n not in hook_only]
        if name in NOT_WRITING_Z:
            assert z.grad is None
        for grad in (h.grad, *([] if name in NOT_WRITING_Z else [z.grad]), *(p.grad for p in used)):
            assert grad is not None and torch.isfinite(grad).all()


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_of_one_step_in_float64(name):
    memory = make_memory(name, torch.float64)
    generator = torch.Generator().manual_seed(2)

    def randn(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    with torch.no_grad():  # a state a few steps in
        state = memory.initial_state((2,), dtype=torch.float64)
        state = run(memory, state, randn(2, 2, C), randn(2, 2, Z))[-1].state
    if "usage" in STATE_SHAPES[name]:
        # distinct usages keep the least-used slot (LRU) and the sort of the allocation (DNC,
        # a permutation) fixed under the finite differences; unwritten slots tie otherwise
        usage = torch.tensor([[0.9, 0.2, 0.5, 0.7], [0.1, 0.8, 0.4, 0.3]], dtype=torch.float64)
        state = state._replace(usage=usage)
    assert all(t.is_floating_point() for t in state)
    inputs = [t.clone().requires_grad_(True) for t in (randn(2, C), randn(2, Z), *state)]

    def step(h, z, *state_tensors):
        return tuple(tensors(memory(type(state)(*state_tensors), h, z)))

    assert torch.autograd.gradcheck(step, inputs, fast_mode=name in FAST_GRADCHECK)


@pytest.mark.parametrize("name", NAMES)
def test_a_batch_of_b_equals_b_runs_of_one(name):
    memory = make_memory(name)
    torch.manual_seed(7)
    hs, zs = 3 * torch.randn(3, 3, 2, C), torch.randn(3, 3, 2, Z)  # [T, *batch, ...]
    batched = run(memory, memory.initial_state((3, 2)), hs, zs)
    for i in range(3):
        for j in range(2):
            state = memory.initial_state((1,))
            single = run(memory, state, hs[:, i, j : j + 1], zs[:, i, j : j + 1])
            for out_b, out_1 in zip(batched, single, strict=True):
                for b, one in zip(tensors(out_b), tensors(out_1), strict=True):
                    torch.testing.assert_close(one[0], b[i, j])


@pytest.mark.parametrize("name", CHECKING_SIZES)
def test_wrong_sizes_of_h_or_z_are_rejected_by_name(name):
    memory = make_memory(name)
    state = memory.initial_state((2,))
    with pytest.raises(ValueError, match="controller_output"):
        memory(state, torch.randn(2, C + 1), torch.randn(2, Z))
    with pytest.raises(ValueError, match="latent"):
        memory(state, torch.randn(2, C), torch.randn(2, Z + 1))


@cuda
@pytest.mark.parametrize("name", NAMES)
def test_cpu_equals_cuda(name):
    memory = make_memory(name, torch.float64)
    generator = torch.Generator().manual_seed(8)
    hs = 3 * torch.randn(4, 3, C, dtype=torch.float64, generator=generator)
    zs = torch.randn(4, 3, Z, dtype=torch.float64, generator=generator)
    cpu = run(memory, memory.initial_state((3,), dtype=torch.float64), hs, zs)
    memory.cuda()
    state = memory.initial_state((3,), device="cuda", dtype=torch.float64)
    for a, b in zip(cpu, run(memory, state, hs.cuda(), zs.cuda()), strict=True):
        for x, y in zip(tensors(a), tensors(b), strict=True):
            assert y.is_cuda
            torch.testing.assert_close(y.cpu(), x)


# ----------------------------------------------------------------------------- in a GTM
def small_gtm(name):
    torch.manual_seed(0)
    return build_gtm(
        name,
        frame_shape=(1, 1, 6),
        sequence_length=5,
        latent_size=4,
        controller_size=16,
        feature_size=16,
        network="mlp",
        **OPTIONS[name],
    )


def frames():
    return torch.bernoulli(torch.full((3, 5, 1, 1, 6), 0.4))  # [B, T, *frame]


@pytest.mark.parametrize("name", NAMES)
def test_gtm_takes_two_svi_steps_with_finite_losses(name):
    gtm = small_gtm(name)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    before = [p.detach().clone() for p in gtm.parameters()]
    memory_before = [p.detach().clone() for p in gtm.memory.parameters()]
    svi = SVI(gtm.model, gtm.guide, Adam({"lr": 1e-2}), Trace_ELBO(max_plate_nesting=2))
    losses = [svi.step(frames()) for _ in range(2)]
    pyro.clear_param_store()
    assert torch.isfinite(torch.tensor(losses)).all()
    assert any(not torch.equal(p, b) for p, b in zip(gtm.parameters(), before, strict=True))
    if memory_before:  # the memory learns too
        pairs = zip(gtm.memory.parameters(), memory_before, strict=True)
        assert any(not torch.equal(p, b) for p, b in pairs)


@pytest.mark.parametrize("name", NAMES)
def test_gtm_runs_under_a_particle_plate(name):
    gtm = small_gtm(name)
    x = frames()
    pyro.set_rng_seed(0)
    with pyro.plate("particles", 7, dim=-3):
        guide_trace = poutine.trace(gtm.guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(gtm.model, guide_trace)).get_trace(x)
    model_trace.compute_log_prob()
    for t in range(5):
        assert model_trace.nodes[f"z_{t}"]["value"].shape == (7, 3, 1, 4)
        assert model_trace.nodes[f"z_{t}"]["log_prob"].shape == (7, 3, 1)
    assert model_trace.nodes["x"]["log_prob"].shape == (7, 3, 5)
    assert torch.isfinite(model_trace.log_prob_sum())
    elbo = Trace_ELBO(num_particles=5, vectorize_particles=True, max_plate_nesting=2)
    assert torch.isfinite(torch.tensor(elbo.loss(gtm.model, gtm.guide, x)))


#: parameters of the default memory (latent 32, controller 256) and of
#: ``build_gtm(name, sequence_length=15)``, as the memories' docstrings state
DEFAULT_PARAMETERS = {
    "introspective": (20_560, 1_932_881),
    "ntm": (78_308, 1_990_629),
    "lru": (90_090, 2_002_411),
    "dnc": (74_012, 1_986_333),
    "fast-weights": (46_560, 1_958_881),
}
_default_counts = {}  # name -> counts, so that each default GTM is built once


def default_parameter_counts(name):
    if name not in _default_counts:
        gtm = build_gtm(name, sequence_length=15)
        assert gtm.memory.read_size == 160  # 5 heads of 32, as the Introspective memory's
        _default_counts[name] = (count_parameters(gtm.memory), count_parameters(gtm))
    return _default_counts[name]


@pytest.mark.parametrize("name", ["ntm", "lru", "dnc", "fast-weights"])
def test_default_gtm_keeps_the_parameter_count_of_the_introspective_one(name):
    introspective = default_parameter_counts("introspective")
    counts = default_parameter_counts(name)
    assert introspective == DEFAULT_PARAMETERS["introspective"]
    assert counts == DEFAULT_PARAMETERS[name]
    assert abs(counts[1] - introspective[1]) < 0.05 * introspective[1]


@pytest.mark.parametrize("name", NAMES)
def test_generate_returns_the_write_weights_a_memory_records(name):
    gtm = small_gtm(name).eval()
    x = frames()
    path = gtm.generate(5, x=x, observed_steps=5)
    state = gtm.memory.initial_state((3,))
    if not hasattr(state, "write_weights"):
        assert path.write_weights is None
        return
    heads, slots = state.write_weights.shape[-2:]
    assert path.write_weights.shape == (3, 5, heads, slots)
    assert torch.all(path.write_weights >= 0) and torch.all(path.write_weights.sum(-1) <= 1 + 1e-6)
    stats = read_heads_on(gtm, SequenceBatch(
        x, None, torch.ones(3, 5, dtype=torch.bool), torch.arange(5).expand(3, 5) >= 3,
        torch.full((3, 5), -1), torch.tensor([-1, -1, -1, 0, 1]).expand(3, 5),
    ))
    assert 0 <= stats["best_hit_rate"] <= 1 and len(stats["hit_rate"]) == path.weights.shape[2]
