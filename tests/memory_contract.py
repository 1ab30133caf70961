"""The contract every memory of :data:`pgtm.memories.MEMORIES` keeps, as a reusable test class.

A memory's test file declares what the memory is and inherits the tests::

    import memory_contract as contract  # tests/ is on sys.path under pytest

    class TestEMAContract(contract.MemoryContract):
        name = "ema"                             # its name in MEMORIES
        options = {"decay": 0.8}                 # tiny constructor options
        state_shapes = {"average": (contract.Z,)}  # trailing shape of each state field
        read_size = contract.Z

The tests run the memory alone (shapes for any leading batch shape, a new particle dimension,
an all-zero memory, a float64 gradcheck, a batch equal to runs of one, CPU equal to CUDA) and
inside a small GTM (two SVI steps, a particle plate, ``generate``), and check what generic code
may ask of it (:class:`~pgtm.memories.base.Memory`'s ``min_slots``, ``memory_matrix``,
``write_weights``, ``latent_slots``). What only one memory promises is tested beside its
contract, in its own file. ``tests/test_memory_interface.py`` checks that every registered
memory has a contract.
"""

from __future__ import annotations

from typing import ClassVar

import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

from pgtm.experiment import read_heads_on
from pgtm.memories import MEMORIES
from pgtm.models import build_gtm
from pgtm.tasks import SequenceBatch

Z, C, N, W, R, H = 3, 5, 4, 3, 2, 2  # latent, controller, slots, word, read heads, write heads
#: the small GTM the contract trains: sequences of T steps, B sequences
T, B = 5, 3
#: usages with no ties, for memories whose step is piecewise in the usage (LRU, DNC)
DISTINCT_USAGE = torch.tensor([[0.9, 0.2, 0.5, 0.7], [0.1, 0.8, 0.4, 0.3]], dtype=torch.float64)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")


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


class MemoryContract:
    """Set the class attributes; every ``test_`` method then checks the memory."""

    #: the memory's name in :data:`~pgtm.memories.MEMORIES`
    name: ClassVar[str]
    #: tiny constructor options (beyond ``latent_size=Z, controller_size=C``)
    options: ClassVar[dict] = {}
    #: the trailing shape of every state field, in order
    state_shapes: ClassVar[dict] = {}
    read_size: ClassVar[int]
    #: the step returns read weights ``[*batch, R, N]`` / gates ``[*batch, R]`` / a penalty
    with_weights = with_gates = with_penalty = False
    #: the step checks the sizes of ``h`` and ``z`` and names them in its errors
    checks_sizes = False
    #: the step writes ``z`` (a memory written by its guide hook does not)
    writes_latent = True
    #: parameters that only the hooks use (no gradient from the step alone)
    hook_only_parameters: ClassVar[frozenset] = frozenset()
    #: the state field that ``memory_matrix`` returns (``None``: no matrix)
    matrix_field: ClassVar[str | None] = None
    #: the state records its write weights (``write_weights`` returns that field)
    records_write_weights = False
    #: a full (not ``fast_mode``) gradcheck is too slow
    fast_gradcheck = False

    # ----------------------------------------------------------------- helpers
    def make(self, dtype=torch.float32):
        torch.manual_seed(0)
        return MEMORIES[self.name](latent_size=Z, controller_size=C, **self.options).to(dtype)

    def check_state(self, state, batch_shape):
        expected = {field: batch_shape + shape for field, shape in self.state_shapes.items()}
        assert {field: tuple(t.shape) for field, t in zip(state._fields, state, strict=True)} \
            == expected

    def check_output(self, memory, out, batch_shape):
        assert memory.read_size == self.read_size
        assert out.read.shape == batch_shape + (memory.read_size,)
        self.check_state(out.state, batch_shape)
        if self.with_weights:
            assert out.weights.shape == batch_shape + (R, N) and (out.weights >= 0).all()
        else:
            assert out.weights is None
        if self.with_gates:
            assert out.gates.shape == batch_shape + (R,)
            assert ((out.gates > 0) & (out.gates < 1)).all()
        else:
            assert out.gates is None
        if self.with_penalty:
            assert out.penalty.shape == batch_shape and torch.isfinite(out.penalty).all()
        else:
            assert out.penalty is None

    def small_gtm(self):
        torch.manual_seed(0)
        return build_gtm(self.name, frame_shape=(1, 1, 6), sequence_length=T, latent_size=4,
                         controller_size=16, feature_size=16, network="mlp", **self.options)

    @staticmethod
    def frames():
        return torch.bernoulli(torch.full((B, T, 1, 1, 6), 0.4))  # [B, T, *frame]

    # ----------------------------------------------------------------- the memory alone
    @pytest.mark.parametrize("batch_shape", [(), (3,), (2, 3)])
    def test_output_and_state_shapes(self, batch_shape):
        memory = self.make()
        state = memory.initial_state(batch_shape)
        self.check_state(state, batch_shape)
        hs, zs = torch.randn(2, *batch_shape, C), torch.randn(2, *batch_shape, Z)
        for out in run(memory, state, hs, zs):
            assert type(out.state) is type(state)
            self.check_output(memory, out, batch_shape)

    def test_state_of_batch_shape_b1_broadcasts_against_a_new_particle_dimension(self):
        memory = self.make()
        state = memory.initial_state((4, 1))  # [B, 1] before the first sample
        out = memory(state, torch.randn(4, 1, C), torch.randn(7, 4, 1, Z))  # z: [K, B, 1, Z]
        # a memory's read depends on z; without one the read follows h alone
        leading = (7, 4, 1) if self.state_shapes else (4, 1)
        assert out.read.shape == leading + (memory.read_size,)
        self.check_state(out.state, (7, 4, 1))
        out = memory(out.state, torch.randn(7, 4, 1, C), torch.randn(7, 4, 1, Z))
        self.check_output(memory, out, (7, 4, 1))

    @pytest.mark.parametrize("zero_parameters", [True, False])
    def test_no_nan_or_inf_in_values_or_gradients_with_an_all_zero_memory(self, zero_parameters):
        memory = self.make()
        if zero_parameters:  # zero words too: the memory stays all-zero
            with torch.no_grad():
                for parameter in memory.parameters():
                    parameter.zero_()
        h = torch.zeros(3, C, requires_grad=True)
        z = torch.zeros(3, Z, requires_grad=True)
        outputs = run(memory, memory.initial_state((3,)), [h] * 3, [z] * 3)
        matrix = memory.memory_matrix(outputs[-1].state)
        if zero_parameters and matrix is not None:
            assert (matrix == 0).all()
        for out in outputs:
            for tensor in tensors(out):
                assert torch.isfinite(tensor).all()
        # random weights, so that normalised weights pass on a gradient
        generator = torch.Generator().manual_seed(1)
        loss = sum((t * torch.randn(t.shape, generator=generator)).sum()
                   for out in outputs for t in tensors(out))
        if not self.state_shapes:  # nothing to differentiate
            assert not loss.requires_grad
            return
        loss.backward()
        used = [p for n, p in memory.named_parameters() if n not in self.hook_only_parameters]
        if not self.writes_latent:
            assert z.grad is None
        for grad in (h.grad, *([z.grad] if self.writes_latent else []), *(p.grad for p in used)):
            assert grad is not None and torch.isfinite(grad).all()

    def test_gradcheck_of_one_step_in_float64(self):
        memory = self.make(torch.float64)
        generator = torch.Generator().manual_seed(2)

        def randn(*shape):
            return torch.randn(*shape, generator=generator, dtype=torch.float64)

        with torch.no_grad():  # a state a few steps in
            state = memory.initial_state((2,), dtype=torch.float64)
            state = run(memory, state, randn(2, 2, C), randn(2, 2, Z))[-1].state
        state = self.distinct_state(state)
        assert all(t.is_floating_point() for t in state)
        inputs = [t.clone().requires_grad_(True) for t in (randn(2, C), randn(2, Z), *state)]

        def step(h, z, *state_tensors):
            return tuple(tensors(memory(type(state)(*state_tensors), h, z)))

        assert torch.autograd.gradcheck(step, inputs, fast_mode=self.fast_gradcheck)

    def distinct_state(self, state):
        """A state on which the step is smooth under finite differences (override where ties,
        e.g. of usages, make it piecewise)."""
        return state

    def test_a_batch_of_b_equals_b_runs_of_one(self):
        memory = self.make()
        torch.manual_seed(7)
        hs, zs = 3 * torch.randn(3, 3, 2, C), torch.randn(3, 3, 2, Z)  # [T, *batch, ...]
        batched = run(memory, memory.initial_state((3, 2)), hs, zs)
        for i in range(3):
            for j in range(2):
                single = run(memory, memory.initial_state((1,)), hs[:, i, j : j + 1],
                             zs[:, i, j : j + 1])
                for out_b, out_1 in zip(batched, single, strict=True):
                    for b, one in zip(tensors(out_b), tensors(out_1), strict=True):
                        torch.testing.assert_close(one[0], b[i, j])

    def test_wrong_sizes_of_h_or_z_are_rejected_by_name(self):
        if not self.checks_sizes:
            pytest.skip(f"{self.name} does not check the sizes of h and z")
        memory = self.make()
        state = memory.initial_state((2,))
        with pytest.raises(ValueError, match="controller_output"):
            memory(state, torch.randn(2, C + 1), torch.randn(2, Z))
        with pytest.raises(ValueError, match="latent"):
            memory(state, torch.randn(2, C), torch.randn(2, Z + 1))

    @cuda
    def test_cpu_equals_cuda(self):
        memory = self.make(torch.float64)
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

    # ----------------------------------------------------------------- what generic code asks
    def test_memory_matrix_and_write_weights_are_the_declared_fields(self):
        memory = self.make()
        state = run(memory, memory.initial_state((2,)), torch.randn(2, 2, C),
                    torch.randn(2, 2, Z))[-1].state
        matrix = memory.memory_matrix(state)
        if self.matrix_field is None:
            assert matrix is None
        else:
            assert matrix is getattr(state, self.matrix_field) and matrix.dim() == 3
        writes = memory.write_weights(state)
        if self.records_write_weights:
            assert writes is state.write_weights and writes.shape[:1] == (2,)
        else:
            assert writes is None

    def test_the_builder_sizes_the_memory_by_the_sequence_length(self):
        memory_cls = MEMORIES[self.name]
        options = {k: v for k, v in self.options.items() if k != "num_slots"}
        if memory_cls.min_slots is None:
            assert memory_cls.default_num_slots(100) is None
            return
        for length in (1, 100):
            gtm = build_gtm(self.name, frame_shape=(1, 1, 6), sequence_length=length,
                            latent_size=4, controller_size=16, feature_size=16, network="mlp",
                            **options)
            assert gtm.memory.num_slots == max(memory_cls.min_slots, length)
        with pytest.raises(ValueError, match="needs sequence_length"):
            build_gtm(self.name, frame_shape=(1, 1, 6), network="mlp", **options)

    # ----------------------------------------------------------------- in a GTM
    def test_gtm_takes_two_svi_steps_with_finite_losses(self):
        gtm = self.small_gtm()
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        before = [p.detach().clone() for p in gtm.parameters()]
        memory_before = [p.detach().clone() for p in gtm.memory.parameters()]
        svi = SVI(gtm.model, gtm.guide, Adam({"lr": 1e-2}), Trace_ELBO(max_plate_nesting=2))
        losses = [svi.step(self.frames()) for _ in range(2)]
        pyro.clear_param_store()
        assert torch.isfinite(torch.tensor(losses)).all()
        assert any(not torch.equal(p, b) for p, b in zip(gtm.parameters(), before, strict=True))
        if memory_before:  # the memory learns too
            pairs = zip(gtm.memory.parameters(), memory_before, strict=True)
            assert any(not torch.equal(p, b) for p, b in pairs)

    def test_gtm_runs_under_a_particle_plate(self):
        gtm = self.small_gtm()
        x = self.frames()
        pyro.set_rng_seed(0)
        with pyro.plate("particles", 7, dim=-3):
            guide_trace = poutine.trace(gtm.guide).get_trace(x)
            model_trace = poutine.trace(poutine.replay(gtm.model, guide_trace)).get_trace(x)
        model_trace.compute_log_prob()
        for t in range(T):
            assert model_trace.nodes[f"z_{t}"]["value"].shape == (7, B, 1, 4)
            assert model_trace.nodes[f"z_{t}"]["log_prob"].shape == (7, B, 1)
        assert model_trace.nodes["x"]["log_prob"].shape == (7, B, T)
        assert torch.isfinite(model_trace.log_prob_sum())
        elbo = Trace_ELBO(num_particles=5, vectorize_particles=True, max_plate_nesting=2)
        assert torch.isfinite(torch.tensor(elbo.loss(gtm.model, gtm.guide, x)))

    def test_generate_returns_the_write_weights_and_read_head_statistics(self):
        gtm = self.small_gtm().eval()
        x = self.frames()
        path = gtm.generate(T, x=x, observed_steps=T)
        assert path.frames.shape == x.shape
        if self.records_write_weights:
            heads, slots = gtm.memory.initial_state((B,)).write_weights.shape[-2:]
            assert path.write_weights.shape == (B, T, heads, slots)
            assert (path.write_weights >= 0).all()
            assert (path.write_weights.sum(-1) <= 1 + 1e-6).all()
        else:
            assert path.write_weights is None
        recall = torch.arange(T) >= 3
        batch = SequenceBatch(x, None, torch.ones(B, T, dtype=torch.bool), recall.expand(B, T),
                              torch.full((B, T), -1),
                              torch.tensor([-1, -1, -1, 0, 1]).expand(B, T))
        stats = read_heads_on(gtm, batch)
        if not self.with_weights:
            assert stats is None
            return
        known = gtm.memory.latent_slots(batch.addresses[:, recall], torch.arange(T)[recall],
                                        path.write_weights) is not None
        assert ("hit_rate" in stats) == known
        if known:
            assert 0 <= stats["best_hit_rate"] <= 1
            assert len(stats["hit_rate"]) == path.weights.shape[2]
