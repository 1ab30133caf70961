"""Elementwise functions written with ``exp`` and ``log``: the ELU of the prior and posterior
networks and the Bernoulli log-density of the frames.

On a CPU torch (2.14) computes ``expm1`` and ``log1p`` one element at a time: about 9 ns per
element against 1-2 ns for ``exp`` and ``log`` (``benchmarks/elementwise.py``), which makes
``F.elu`` three times slower forward and backward than :func:`elu` here, whose derivative is
kept from the forward pass, and ``F.binary_cross_entropy_with_logits`` (through ``log1p``)
twice as slow as :func:`bernoulli_log_prob`. On a GPU torch's own kernels are used.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

__all__ = ["ELU", "bernoulli_log_prob", "elu"]


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
        # log p = x l - softplus(l), softplus(l) = max(l, 0) + log1p(exp(-|l|)); log1p(y) as
        # log(u) - ((u - 1) - y) / u with u = 1 + y, which undoes the rounding of 1 + y
        tail = logits.abs().neg_().exp_()
        u = tail + 1
        log1p_tail = u.log().sub_((u - 1).sub_(tail).div_(u))
        return (value * logits).sub_(logits.clamp(min=0)).sub_(log1p_tail)

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
