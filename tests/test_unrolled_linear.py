"""``pgtm.unrolled_linear``: inside ``unrolling()`` a layer called at every step of a recurrence
gets the same output and the same gradients (to float rounding) as ``torch.nn.Linear``, with
its weight gradient computed in one product; outside it, or without gradients, it is
``F.linear``."""

import contextlib
import gc
import weakref

import pytest
import torch
from torch.nn import functional as F

import pgtm.unrolled_linear
from pgtm.unrolled_linear import UnrolledLinear, unrolled_linear, unrolling


@pytest.fixture(autouse=True)
def every_weight_unrolled(monkeypatch):
    """These tests' weights are small: unroll them anyway (the size rule has its own test)."""
    monkeypatch.setattr(pgtm.unrolled_linear, "SMALLEST_UNROLLED_WEIGHT", 0)


def recurrence(layer_fn, weight, bias, start, steps=6, unused_last=False):
    """A tanh RNN ``h <- tanh(W h + b)`` whose every step's output also enters the loss (as a
    recurrence's contexts do), with a step whose output is unused when ``unused_last``."""
    h, loss = start, 0.0
    for t in range(steps):
        h = torch.tanh(layer_fn(h, weight, bias))
        if not (unused_last and t == steps - 1):
            loss = loss + (h * (t + 1)).sum()
    return loss


def gradients(layer_fn, unrolled, **options):
    torch.manual_seed(0)
    weight = torch.randn(5, 5, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(5, dtype=torch.float64, requires_grad=True)
    start = torch.randn(3, 2, 5, dtype=torch.float64, requires_grad=True)  # leading dims kept
    with unrolling() if unrolled else contextlib.nullcontext():
        loss = recurrence(layer_fn, weight, bias, start, **options)
    loss.backward()  # after the pass has closed, as Pyro's loss does
    return loss.detach(), weight.grad, bias.grad, start.grad


@pytest.mark.parametrize("unused_last", [False, True])
def test_an_unrolled_pass_has_the_gradients_of_f_linear(unused_last):
    reference = gradients(F.linear, False, unused_last=unused_last)
    ours = gradients(unrolled_linear, True, unused_last=unused_last)
    for a, b in zip(reference, ours, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_the_weight_gradient_is_one_product_for_all_steps():
    """Autograd's per-step products are ``[5, 6] x [6, 5]``; the unrolled pass issues one
    ``[5, 36] x [36, 5]`` (6 steps of a 3 x 2 batch)."""
    shapes = {}
    for unrolled in (False, True):
        with torch.profiler.profile(record_shapes=True) as prof:
            gradients(unrolled_linear, unrolled)
        shapes[unrolled] = [e.input_shapes for e in prof.key_averages(group_by_input_shape=True)
                            if e.key == "aten::mm" and e.input_shapes[0][0] == 5]
    assert [[5, 36], [36, 5]] in shapes[True]
    assert [[5, 36], [36, 5]] not in shapes[False]


def test_two_passes_over_the_same_weights_add_their_gradients():
    """As a guide's pass and a model's own pass over one network: both reach the weights."""
    torch.manual_seed(1)
    layer = UnrolledLinear(4, 4).double()
    start = torch.randn(2, 4, dtype=torch.float64)
    grads = {}
    for unrolled in (False, True):
        layer.zero_grad()
        total = 0.0
        for scale in (1.0, -2.0):
            with unrolling() if unrolled else contextlib.nullcontext():
                total = total + scale * recurrence(unrolled_linear, layer.weight, layer.bias,
                                                   start)
        total.backward()
        grads[unrolled] = (layer.weight.grad.clone(), layer.bias.grad.clone())
    torch.testing.assert_close(grads[True], grads[False], rtol=1e-12, atol=1e-12)


def test_a_pass_frees_its_graph_after_backward():
    """No reference cycle keeps a backwarded pass's tape alive (garbage collection off)."""
    layer = UnrolledLinear(4, 4)
    gc.disable()
    try:
        with unrolling():
            loss = recurrence(lambda h, w, b: layer(h), None, None, torch.randn(2, 4))
            tapes = [weakref.ref(entry[1])
                     for entry in pgtm.unrolled_linear._current.get().layers.values()]
        loss.backward()
        del loss
        assert tapes and all(tape() is None for tape in tapes)
    finally:
        gc.enable()


def test_outside_a_pass_or_without_gradients_it_is_f_linear():
    torch.manual_seed(2)
    layer = UnrolledLinear(4, 3)
    x = torch.randn(2, 4)
    assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))
    with unrolling(), torch.no_grad():
        out = layer(x)
    assert not out.requires_grad and torch.equal(out, F.linear(x, layer.weight, layer.bias))
    frozen = torch.randn(3, 4)  # no parameter needs a gradient: nothing is taped
    with unrolling():
        out = unrolled_linear(x.requires_grad_(), frozen)
    assert out.grad_fn.name() == "MmBackward0"


def test_only_weights_of_the_smallest_unrolled_size_are_taped(monkeypatch):
    monkeypatch.setattr(pgtm.unrolled_linear, "SMALLEST_UNROLLED_WEIGHT", 12)
    x = torch.randn(2, 4)
    with unrolling():
        taped, plain = UnrolledLinear(4, 3)(x), UnrolledLinear(4, 2)(x)  # 12 and 8 numbers
    assert (taped.grad_fn.name(), plain.grad_fn.name()) == ("_StepBackward", "AddmmBackward0")


def test_the_state_dict_is_that_of_nn_linear():
    assert UnrolledLinear(4, 3).state_dict().keys() == torch.nn.Linear(4, 3).state_dict().keys()
