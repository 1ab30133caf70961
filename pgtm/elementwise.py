"""Elementwise functions written with ``exp`` and ``log``: the ELU of the prior and posterior
networks, the Bernoulli log-density of binary frames and the log-sigmoid and ``log(1 - e^-x)``
of the discretised logistic's log-mass.

On some CPUs torch (2.14) computes ``expm1`` and ``log1p`` one element at a time: 8.5 ns per
element against 1 ns for ``exp`` and ``log`` on this project's AMD EPYC machines
(``benchmarks/elementwise.py``; vectorised on an Intel Xeon), and ``F.elu``, ``F.logsigmoid``
and ``F.binary_cross_entropy_with_logits`` go through them. Here :func:`log1p` is ``log`` with a
correction of the rounding of ``1 + y``, as accurate, and the functions built on it are twice
as fast there; the ELU keeps its derivative from the forward pass. On a GPU torch's own kernels
are used.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

__all__ = ["ELU", "bernoulli_log_prob", "elu", "log1mexp", "log1p", "log_sigmoid"]

LOG_2 = math.log(2.0)


class _ELU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        # exp(min(x, 0)) is the derivative on both sides of 0; slope - 1 is exactly 0 for x > 0
        slope = x.clamp(max=0).exp_()
        ctx.save_for_backward(slope)
        return (slope - 1).add_(x.clamp(min=0))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (slope,) = ctx.saved_tensors
        return grad * slope


def elu(x: torch.Tensor) -> torch.Tensor:
    """``torch.nn.functional.elu`` with ``alpha = 1``."""
    return F.elu(x) if x.is_cuda else _ELU.apply(x)


class ELU(nn.Module):
    """:func:`elu` as a module (``torch.nn.ELU()``'s values; no parameters)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return elu(x)


class _BernoulliLogProb(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, value):
        ctx.save_for_backward(logits, value)
        # log p = x l - softplus(l), softplus(l) = max(l, 0) + log1p(exp(-|l|)), in this order
        # so that x l - max(l, 0) cancels exactly before the small term
        softplus_tail = log1p(logits.abs().neg_().exp_())
        return (value * logits).sub_(logits.clamp(min=0)).sub_(softplus_tail)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        logits, value = ctx.saved_tensors
        grad_logits = grad * (value - torch.sigmoid(logits)) if ctx.needs_input_grad[0] else None
        grad_value = grad * logits if ctx.needs_input_grad[1] else None
        return grad_logits, grad_value


def bernoulli_log_prob(logits: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``-F.binary_cross_entropy_with_logits(logits, value, reduction="none")``, the
    elementwise Bernoulli log-density (``logits`` and ``value`` of one shape), as accurate
    (the same largest error against a float64 evaluation in float32)."""
    if logits.is_cuda:
        return -F.binary_cross_entropy_with_logits(logits, value, reduction="none")
    return _BernoulliLogProb.apply(logits, value)


def log1p(y: torch.Tensor) -> torch.Tensor:
    """``torch.log1p(y)`` for ``y > -1``: :math:`\\log u - ((u - 1) - y) / u` with ``u = 1 + y``
    (the second term undoes the rounding of ``1 + y``; a few ulps)."""
    if y.is_cuda:
        return torch.log1p(y)
    u = y + 1
    return u.log().sub_((u - 1).sub_(y).div_(u))


def log_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """``F.logsigmoid(x)`` as :math:`\\min(x, 0) - \\mathrm{log1p}(e^{-|x|})`."""
    if x.is_cuda:
        return F.logsigmoid(x)
    return x.clamp(max=0).sub_(log1p(x.abs().neg_().exp_()))


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    r""":math:`\log(1 - e^{-x})` for ``x > 0``, accurate for small and large ``x``: Mächler's
    (2012) :math:`\log(-\mathrm{expm1}(-x))` below :math:`\log 2`, with Kahan's
    :math:`\mathrm{expm1}(-x) = (e - 1)\,x / \log e` for :math:`e = e^{-x}` (``-x`` where
    ``e`` rounds to 1), and :math:`\mathrm{log1p}(-e^{-x})` above."""
    if x.is_cuda:
        return torch.where(x < LOG_2, torch.log(-torch.expm1(-x)), torch.log1p(-torch.exp(-x)))
    e = x.neg().exp_()
    log_e = e.log()
    small = torch.where(log_e == 0, x, (1 - e).mul_(x).div_(log_e.neg_())).log_()
    return torch.where(x < LOG_2, small, log1p(e.neg_()))
