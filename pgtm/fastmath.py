r"""Elementwise functions of the training step, written with ``exp`` and ``log``.

Torch's CPU kernels of ``expm1`` and ``log1p`` (behind ``F.elu`` and
``binary_cross_entropy_with_logits``, hence the Bernoulli likelihood) take 11-22 ns per element
on this project's machines, against 0.7 ns for ``exp``; the Bernoulli log-likelihood of a
perfect-recall batch alone took 5-9 ms of a 75 ms step. The functions here compute the same
values from ``exp`` and ``log`` with Kahan's corrections, which keep ``expm1`` and ``log1p``
accurate near 0, as one autograd node each (the backward is written by hand):

.. math::

    \mathrm{log1p}(u) = \log(w)\,\frac{u}{w - 1},\; w = 1 + u \quad(u \text{ if } w = 1), \qquad
    \mathrm{expm1}(a) = (v - 1)\,\frac{a}{\log v},\; v = e^a \quad(a \text{ if } v = 1).

``python benchmarks/matmul_floor.py`` measures the step they are part of.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ELU", "bernoulli_log_prob", "elu"]


def _log1p(u: torch.Tensor) -> torch.Tensor:
    """:math:`\\log(1 + u)` for :math:`u > -1`."""
    w = 1 + u
    return torch.where(w == 1, u, torch.log(w) * (u / (w - 1)))


def _expm1(a: torch.Tensor) -> torch.Tensor:
    """:math:`e^a - 1` for :math:`a \\le 0` (``exp`` overflows above ~88); below -1 there is
    no cancellation to correct (and :math:`e^a` may underflow to 0)."""
    v = torch.exp(a)
    return torch.where(v == 1, a, torch.where(a < -1, v - 1, (v - 1) * (a / torch.log(v))))


class _ELU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a):
        out = torch.where(a > 0, a, _expm1(a.clamp(max=0)))
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        return grad * torch.where(out > 0, 1, out + 1)


class _BernoulliLogProb(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, value):
        ctx.save_for_backward(logits, value)
        # log p = x l - softplus(l); x l - max(l, 0) first, which is exact for binary x
        return (value * logits - logits.clamp(min=0)) - _log1p(torch.exp(-logits.abs()))

    @staticmethod
    def backward(ctx, grad):
        logits, value = ctx.saved_tensors
        grad_logits = grad * (value - torch.sigmoid(logits))
        grad_value = grad * logits if ctx.needs_input_grad[1] else None
        return grad_logits, grad_value


def elu(a: torch.Tensor) -> torch.Tensor:
    """:math:`a` for :math:`a > 0`, else :math:`e^a - 1`: ``F.elu`` with ``alpha=1``."""
    return _ELU.apply(a)


def bernoulli_log_prob(logits: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """:math:`\\log p(x)` of Bernoulli pixels with ``logits``: :math:`x l - \\log(1 + e^l)`,
    as ``-binary_cross_entropy_with_logits(logits, value, reduction="none")`` (broadcast
    shapes)."""
    logits, value = torch.broadcast_tensors(logits, value)
    return _BernoulliLogProb.apply(logits, value)


class ELU(nn.Module):
    """``nn.ELU()`` computed by :func:`elu`."""

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return elu(a)
