r"""Linear layers applied at every step of an unrolled recurrence, whose weight gradient is one
matrix product over all steps.

A layer called at each of :math:`T` steps of a recurrence (the controller's LSTM, the posterior
network, a memory's heads) gets, from autograd, :math:`T` weight gradients
:math:`G_t^\top X_t` of ``[B, out] x [B, in]``, each accumulated into ``weight.grad``: on a CPU
each product reads and writes the whole gradient matrix again (the LSTM's recurrent one is 1 MiB,
as large as a core's L2 cache) and runs at half the speed of the same product on warm data.
Inside :func:`unrolling` the layers of this module keep each step's input and output gradient
instead, and the weight and bias gradients are computed once, when the backward pass has passed
every step: :math:`\sum_t G_t^\top X_t = [G_0; \dots; G_{T-1}]^\top [X_0; \dots; X_{T-1}]`,
one ``[out, T B] x [T B, in]`` product (the sum's rounding differs from the step-by-step one by
float precision, as any change in summation order does).

Outside :func:`unrolling`, with gradients off, for a weight that needs no gradient, or for a
weight of fewer than :data:`SMALLEST_UNROLLED_WEIGHT` numbers (whose product costs less than the
≈40 µs of Python a taped step adds), they are ``torch.nn.functional.linear``. The batched
gradient is first-order only (no double backward).
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

__all__ = ["SMALLEST_UNROLLED_WEIGHT", "UnrolledLinear", "unrolled_linear", "unrolling"]

#: weights with fewer numbers keep autograd's per-step gradients (256 KiB of float32)
SMALLEST_UNROLLED_WEIGHT = 65536


class _Tape:
    """One layer's ``(input, output gradient)`` of every step of one pass, by step."""

    __slots__ = ("steps", "__weakref__")

    def __init__(self) -> None:
        self.steps: list[tuple[torch.Tensor, torch.Tensor] | None] = []


class _Gather(torch.autograd.Function):
    """Identity on ``(weight, bias)``; its backward, which autograd runs once every step that
    used its outputs has run its own, computes their gradients from the tape."""

    @staticmethod
    def forward(ctx, tape, weight, bias):
        ctx.tape, ctx.has_bias = tape, bias is not None
        ctx.set_materialize_grads(False)  # the steps return no gradient: do not fill zeros
        return weight.view_as(weight), (bias.view_as(bias) if bias is not None else None)

    @staticmethod
    @once_differentiable
    def backward(ctx, *unused):
        steps = [step for step in ctx.tape.steps if step is not None]
        if not steps:
            return None, None, None
        inputs = torch.cat([x for x, _ in steps]) if len(steps) > 1 else steps[0][0]
        grads = torch.cat([g for _, g in steps]) if len(steps) > 1 else steps[0][1]
        weight_grad = grads.t().mm(inputs) if ctx.needs_input_grad[1] else None
        bias_grad = grads.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return None, weight_grad, bias_grad


class _Step(torch.autograd.Function):
    """``x @ weight.T + bias`` for ``x [n, in]``; its backward gives ``x`` its gradient and
    leaves ``(x, grad)`` on the tape for :class:`_Gather`."""

    @staticmethod
    def forward(ctx, x, weight, bias, tape, index):
        ctx.save_for_backward(x, weight)
        ctx.tape, ctx.index = tape, index
        return x.mm(weight.t()) if bias is None else torch.addmm(bias, x, weight.t())

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        # detached: the tape lives in the graph, and x's own grad_fn on it would make a
        # reference cycle through autograd's C++ nodes that Python's collector cannot free
        ctx.tape.steps[ctx.index] = (x.detach(), grad)
        return (grad.mm(weight) if ctx.needs_input_grad[0] else None), None, None, None, None


class _Pass:
    """The tapes of one unrolled pass, one per weight, with the gathered views the steps use."""

    def __init__(self) -> None:
        self.layers: dict[int, tuple[torch.Tensor, _Tape, torch.Tensor, torch.Tensor | None]] = {}

    def linear(self, x, weight, bias):
        entry = self.layers.get(id(weight))
        if entry is None or entry[0] is not weight:
            tape = _Tape()
            entry = (weight, tape, *_Gather.apply(tape, weight, bias))
            self.layers[id(weight)] = entry
        _, tape, weight_view, bias_view = entry
        tape.steps.append(None)
        flat = x if x.dim() == 2 else x.reshape(-1, x.shape[-1])
        out = _Step.apply(flat, weight_view, bias_view, tape, len(tape.steps) - 1)
        return out if x.dim() == 2 else out.reshape(*x.shape[:-1], out.shape[-1])


_current: ContextVar[_Pass | None] = ContextVar("pgtm_unrolled_pass", default=None)


@contextlib.contextmanager
def unrolling():
    """The steps of one unrolled pass: within it, :func:`unrolled_linear` defers the weight
    gradients of each weight to one product. Open one per pass (a guide's, a model's own, an
    unroll); the tapes live in the autograd graph, so the backward pass may come after exit."""
    token = _current.set(_Pass())
    try:
        yield
    finally:
        _current.reset(token)


def unrolled_linear(x: torch.Tensor, weight: torch.Tensor,
                    bias: torch.Tensor | None = None) -> torch.Tensor:
    """``torch.nn.functional.linear(x, weight, bias)`` for ``x [*batch, in]``, with the weight
    gradient batched over the steps of the :func:`unrolling` pass it runs in."""
    unrolled = _current.get()
    if (unrolled is None or weight.numel() < SMALLEST_UNROLLED_WEIGHT
            or not torch.is_grad_enabled()
            or not (weight.requires_grad or (bias is not None and bias.requires_grad))):
        return F.linear(x, weight, bias)
    return unrolled.linear(x, weight, bias)


class UnrolledLinear(nn.Linear):
    """``torch.nn.Linear`` (same parameters and state-dict keys) computed by
    :func:`unrolled_linear`: for the layers a recurrence calls at every step."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return unrolled_linear(x, self.weight, self.bias)
