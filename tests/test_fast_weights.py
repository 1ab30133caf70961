"""What the fast-weights memory promises beyond the conformance suite: its two forms agree, the
update and the inner loop follow the equations, layer normalisation is per example, and the
options reach it from ``build_gtm`` and the command line."""

import math

import memory_contract as contract  # tests/ is on sys.path under pytest
import pyro
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam
from torch import nn
from torch.func import functional_call

from pgtm.cli import build_parser, main
from pgtm.commands import model_options_from_args
from pgtm.memories.fast_weights import (
    FastWeightsAttentionState,
    FastWeightsMatrixState,
    FastWeightsMemory,
)
from pgtm.models import build_gtm

Z, C, D, L = 3, 5, 6, 4  # latent, controller, size, num_slots
F64 = torch.float64


def make(form, inner_steps=1, dtype=F64, **options):
    torch.manual_seed(0)
    options = {"size": D, "num_slots": L, "inner_steps": inner_steps, **options}
    memory = FastWeightsMemory(Z, C, form=form, **options).to(dtype)
    with torch.no_grad():  # a learned gain and bias that are not the identity
        memory.norm.weight.uniform_(0.5, 1.5)
        memory.norm.bias.uniform_(-0.3, 0.3)
    return memory


def twins(inner_steps):
    """The matrix and attention forms with the same parameters."""
    matrix, attention = make("matrix", inner_steps), make("attention", inner_steps)
    attention.load_state_dict(matrix.state_dict())
    return matrix, attention


def inputs(steps, batch_shape, seed=0, dtype=F64):
    generator = torch.Generator().manual_seed(seed)
    hs = 2 * torch.randn(steps, *batch_shape, C, generator=generator, dtype=dtype)
    zs = torch.randn(steps, *batch_shape, Z, generator=generator, dtype=dtype)
    return hs, zs


def matrix_from_history(memory, history):
    r""":math:`\eta \sum_i \lambda^{L-1-i} m_i m_i^\top` of an attention state ``[*, L, D]``."""
    exponents = torch.arange(L - 1, -1, -1, dtype=history.dtype)
    scaled = history * (memory.fast_learning_rate * memory.decay**exponents).unsqueeze(-1)
    return scaled.transpose(-1, -2) @ history


def layer_norm_by_hand(x, norm):
    """Per-example layer normalisation over the last (feature) dim."""
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


# ----------------------------------------------------------------------------- (a) the two forms
@pytest.mark.parametrize("inner_steps", [1, 3])
@pytest.mark.parametrize(
    "state_shape,input_shape",
    [((), ()), ((3,), (3,)), ((2, 3), (2, 3)), ((4, 1), (7, 4, 1))],  # last: a particle dim
)
def test_matrix_and_attention_forms_give_the_same_reads(inner_steps, state_shape, input_shape):
    matrix, attention = twins(inner_steps)
    hs, zs = inputs(L, input_shape)  # T = L steps: the attention form is exact
    state_m = matrix.initial_state(state_shape, dtype=F64)
    state_a = attention.initial_state(state_shape, dtype=F64)
    assert isinstance(state_m, FastWeightsMatrixState)
    assert isinstance(state_a, FastWeightsAttentionState)
    outs_m, outs_a = contract.run(matrix, state_m, hs, zs), contract.run(attention, state_a, hs, zs)
    for out_m, out_a in zip(outs_m, outs_a, strict=True):
        assert out_m.read.shape == out_a.read.shape == input_shape + (D,)
        torch.testing.assert_close(out_a.read, out_m.read, rtol=1e-10, atol=1e-10)
        rebuilt = matrix_from_history(attention, out_a.state.history)
        torch.testing.assert_close(rebuilt, out_m.state.fast_weights, rtol=1e-10, atol=1e-10)
        assert out_m.weights is out_m.gates is out_m.penalty is None
        assert out_a.weights is out_a.gates is out_a.penalty is None
    # the reads use the memory: they differ from those of an empty memory at later steps
    fresh = matrix(matrix.initial_state(state_shape, dtype=F64), hs[-1], zs[-1]).read
    assert not torch.allclose(fresh, outs_m[-1].read)


def test_attention_form_forgets_what_falls_out_of_the_fifo():
    matrix, attention = twins(1)
    hs, zs = inputs(L + 2, (2,))
    outs_m = contract.run(matrix, matrix.initial_state((2,), dtype=F64), hs, zs)
    outs_a = contract.run(attention, attention.initial_state((2,), dtype=F64), hs, zs)
    # exact up to step L (its read sees the L vectors of steps 0..L-1), then it drifts
    for t in range(L + 1):
        torch.testing.assert_close(outs_a[t].read, outs_m[t].read)
    assert not torch.allclose(outs_a[L + 1].read, outs_m[L + 1].read)


# ----------------------------------------------------------------------------- (b) by hand
@pytest.mark.parametrize("inner_steps", [1, 3])
def test_one_step_follows_the_equations(inner_steps):
    memory = make("matrix", inner_steps, decay=0.7, fast_learning_rate=0.3)
    generator = torch.Generator().manual_seed(3)
    h = torch.randn(2, C, generator=generator, dtype=F64)
    z = torch.randn(2, Z, generator=generator, dtype=F64)
    A = torch.randn(2, D, D, generator=generator, dtype=F64) / D
    out = memory(FastWeightsMatrixState(A), h, z)
    for b in range(2):
        W, C_, bias = memory.slow.weight[:, :C], memory.slow.weight[:, C:], memory.slow.bias
        u = W @ h[b] + C_ @ z[b] + bias
        a = torch.relu(layer_norm_by_hand(u, memory.norm))
        for _ in range(inner_steps):
            a = torch.relu(layer_norm_by_hand(u + A[b] @ a, memory.norm))
        torch.testing.assert_close(out.read[b], a)
        expected = 0.7 * A[b] + 0.3 * torch.outer(a, a)
        torch.testing.assert_close(out.state.fast_weights[b], expected)


def test_attention_step_pushes_the_read_into_the_fifo():
    memory = make("attention")
    history = torch.randn(2, L, D, dtype=F64)
    h, z = inputs(1, (2,))
    out = memory(FastWeightsAttentionState(history), h[0], z[0])
    torch.testing.assert_close(out.state.history[:, :-1], history[:, 1:])
    torch.testing.assert_close(out.state.history[:, -1], out.read)


# ----------------------------------------------------------------------------- (c) per example
class BatchAxisNorm(nn.Module):
    """The mistake of some public implementations: moments over the batch axis (dim 0)."""

    def __init__(self, norm: nn.LayerNorm):
        super().__init__()
        self.norm = norm

    def forward(self, x):
        mean = x.mean(0, keepdim=True)
        var = ((x - mean) ** 2).mean(0, keepdim=True)
        return (x - mean) / torch.sqrt(var + self.norm.eps) * self.norm.weight + self.norm.bias


def batch_equals_runs_of_one(memory, batch_size=4, steps=3):
    """Whether a batch of ``batch_size`` gives the reads and states of as many runs of one."""
    hs, zs = inputs(steps, (batch_size,), seed=5)
    batched = contract.run(memory, memory.initial_state((batch_size,), dtype=F64), hs, zs)
    for i in range(batch_size):
        single = contract.run(memory, memory.initial_state((1,), dtype=F64), hs[:, i : i + 1],
                     zs[:, i : i + 1])
        for out_b, out_1 in zip(batched, single, strict=True):
            for b, one in ((out_b.read, out_1.read), (out_b.state[0], out_1.state[0])):
                if not torch.allclose(one[0], b[i], rtol=1e-9, atol=1e-9):
                    return False
    return True


@pytest.mark.parametrize("form", ["matrix", "attention"])
def test_layer_norm_is_per_example_so_a_batch_equals_runs_of_one(form):
    memory = make(form, inner_steps=2)
    assert batch_equals_runs_of_one(memory)
    # the check has teeth: normalising over the batch axis instead breaks it
    memory.norm = BatchAxisNorm(memory.norm)
    assert not batch_equals_runs_of_one(memory)


# ----------------------------------------------------------------------------- (d) auto
@pytest.mark.parametrize(
    "num_slots,size,form",
    [(3, 4, "attention"), (4, 4, "matrix"), (9, 4, "matrix"), (None, 4, "matrix"),
     (15, 160, "attention")],
)
def test_auto_picks_attention_iff_num_slots_is_below_size(num_slots, size, form):
    memory = FastWeightsMemory(Z, C, size=size, num_slots=num_slots)
    assert memory.form == form
    state = memory.initial_state((2,))
    cls = FastWeightsAttentionState if form == "attention" else FastWeightsMatrixState
    assert type(state) is cls
    event = (num_slots, size) if form == "attention" else (size, size)
    assert state[0].shape == (2,) + event and (state[0] == 0).all()


def test_build_gtm_gives_the_sequence_length_as_num_slots():
    gtm = build_gtm("fast-weights", frame_shape=(1, 1, 8), sequence_length=6, network="mlp")
    assert gtm.memory.num_slots == 6 and gtm.memory.form == "attention"
    assert gtm.memory.read_size == gtm.memory.size == 160


# ----------------------------------------------------------------------------- (e) gradcheck
@pytest.mark.parametrize("form", ["matrix", "attention"])
def test_gradcheck_of_a_few_steps_in_float64(form):
    memory = make(form, inner_steps=2)
    hs, zs = inputs(3, (2,), seed=4)
    generator = torch.Generator().manual_seed(6)
    state = memory.initial_state((2,), dtype=F64)
    state0 = 0.3 * torch.randn(state[0].shape, generator=generator, dtype=F64)
    names = [name for name, _ in memory.named_parameters()]
    parameters = [p.detach().clone() for p in memory.parameters()]
    leaves = [t.clone().requires_grad_(True) for t in (hs, zs, state0, *parameters)]

    def steps(hs, zs, state0, *params):
        outputs = functional_call(
            memory, dict(zip(names, params, strict=True)), (type(state)(state0), hs[0], zs[0])
        )
        results, current = [outputs.read], outputs.state
        for h, z in zip(hs[1:], zs[1:], strict=True):
            out = functional_call(memory, dict(zip(names, params, strict=True)), (current, h, z))
            results.append(out.read)
            current = out.state
        return (*results, current[0])

    assert torch.autograd.gradcheck(steps, leaves)


# ----------------------------------------------------------------------------- (f) empty memory
@pytest.mark.parametrize("form", ["matrix", "attention"])
@pytest.mark.parametrize("zero_parameters", [True, False])
def test_an_all_zero_state_gives_finite_values_and_gradients(form, zero_parameters):
    memory = make(form, inner_steps=2, dtype=torch.float32)
    if zero_parameters:  # then u = 0: layer normalisation of a constant vector
        with torch.no_grad():
            for parameter in memory.parameters():
                parameter.zero_()
    h = torch.zeros(3, C, requires_grad=True)
    z = torch.zeros(3, Z, requires_grad=True)
    outputs = contract.run(memory, memory.initial_state((3,)), [h] * 3, [z] * 3)
    loss = 0
    generator = torch.Generator().manual_seed(1)
    for out in outputs:
        for tensor in (out.read, out.state[0]):
            assert torch.isfinite(tensor).all()
            loss = loss + (tensor * torch.randn(tensor.shape, generator=generator)).sum()
    loss.backward()
    for grad in (h.grad, z.grad, *(p.grad for p in memory.parameters())):
        assert grad is not None and torch.isfinite(grad).all()


# ----------------------------------------------------------------------------- (g) bad input
@pytest.mark.parametrize(
    "options,name",
    [
        ({"latent_size": 0}, "latent_size"),
        ({"controller_size": -1}, "controller_size"),
        ({"size": 0}, "size"),
        ({"size": 2.5}, "size"),
        ({"num_slots": 0}, "num_slots"),
        ({"decay": -0.1}, "decay"),
        ({"decay": 1.5}, "decay"),
        ({"decay": math.nan}, "decay"),
        ({"fast_learning_rate": 0.0}, "fast_learning_rate"),
        ({"fast_learning_rate": -1.0}, "fast_learning_rate"),
        ({"fast_learning_rate": math.inf}, "fast_learning_rate"),
        ({"inner_steps": 0}, "inner_steps"),
        ({"inner_steps": 1.5}, "inner_steps"),
        ({"form": "fourier"}, "form"),
        ({"form": "attention", "num_slots": None}, "num_slots"),
    ],
)
def test_bad_arguments_are_rejected_by_name(options, name):
    kwargs = {"latent_size": Z, "controller_size": C, "size": D, "num_slots": L, **options}
    with pytest.raises(ValueError, match=name):
        FastWeightsMemory(**kwargs)


@pytest.mark.parametrize("form", ["matrix", "attention"])
def test_bad_inputs_are_rejected_by_name(form):
    memory = make(form)
    state = memory.initial_state((2,), dtype=F64)
    h, z = torch.randn(2, C, dtype=F64), torch.randn(2, Z, dtype=F64)
    with pytest.raises(ValueError, match="controller_output"):
        memory(state, torch.randn(2, C + 1, dtype=F64), z)
    with pytest.raises(ValueError, match="latent"):
        memory(state, h, torch.randn(2, Z - 1, dtype=F64))
    other = make("attention" if form == "matrix" else "matrix")
    with pytest.raises(ValueError, match="state"):  # the state of the other form
        memory(other.initial_state((2,), dtype=F64), h, z)


# ----------------------------------------------------------------------------- (h) in a GTM
def test_default_gtm_takes_an_svi_step_with_a_finite_loss():
    torch.manual_seed(0)
    gtm = build_gtm("fast-weights", frame_shape=(1, 1, 8), sequence_length=6, network="mlp")
    x = torch.bernoulli(torch.full((2, 6, 1, 1, 8), 0.4))
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    before = [p.detach().clone() for p in gtm.memory.parameters()]
    svi = SVI(gtm.model, gtm.guide, Adam({"lr": 1e-3}), Trace_ELBO(max_plate_nesting=2))
    loss = svi.step(x)
    pyro.clear_param_store()
    assert math.isfinite(loss)
    pairs = zip(gtm.memory.parameters(), before, strict=True)
    assert all(not torch.equal(p, b) for p, b in pairs)  # every memory parameter learns


# ----------------------------------------------------------------------------- (i) command line
def options_of(*argv):
    args = build_parser().parse_args(["train", "perfect-recall", "--out", "X", *argv])
    return model_options_from_args(args)


def test_command_line_options_reach_the_memory():
    options = options_of("--model", "fast-weights", "--fast-size", "32", "--fast-decay", "0.8",
                         "--fast-learning-rate", "0.25", "--inner-steps", "2")
    expected = {"size": 32, "decay": 0.8, "fast_learning_rate": 0.25, "inner_steps": 2}
    assert {k: options[k] for k in expected} == expected
    assert not {"decay", "size", "inner_steps"} & set(options_of("--model", "fast-weights"))


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--fast-decay", "0.5"], "--fast-decay applies to --model fast-weights only"),
        (["--model", "ntm", "--inner-steps", "2"],
         "--inner-steps applies to --model fast-weights only"),
        (["--model", "fast-weights", "--num-heads", "3"],
         "--num-heads does not apply to --model fast-weights"),
    ],
)
def test_command_line_options_of_other_models_are_rejected(argv, message):
    with pytest.raises(ValueError, match=message):
        options_of(*argv)


def test_fast_decay_with_the_introspective_model_is_a_one_line_error(capsys, tmp_path,
                                                                       monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PGTM_DATA_DIR", raising=False)
    argv = ["train", "perfect-recall", "-l", "4", "-k", "2", "--model", "introspective",
            "--fast-decay", "0.5", "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == "pgtm: error: --fast-decay applies to --model fast-weights only"
    assert not (tmp_path / "run").exists()  # nothing was trained


class TestFastWeightsContract(contract.MemoryContract):
    # the attention form (the matrix form is checked against it above)
    name = "fast-weights"
    options = {"size": D, "num_slots": contract.N, "inner_steps": 2, "form": "attention"}
    state_shapes = {"history": (contract.N, D)}
    read_size = D
    checks_sizes = True
    matrix_field = "history"


def test_the_memory_matrix_of_the_matrix_form_is_the_fast_weights():
    memory = FastWeightsMemory(latent_size=Z, controller_size=C, size=D, form="matrix")
    state = memory.initial_state((2,))
    assert memory.memory_matrix(state) is state.fast_weights
