"""The ELU of the prior and posterior networks, written with ``exp``.

On a CPU with AVX-512, torch (2.14) computes ``expm1`` one element at a time: about 9 ns per
element against 1 ns for ``exp`` (``benchmarks/elementwise.py``), which makes ``F.elu`` three
times slower forward and backward than :func:`elu` here, whose derivative is kept from the
forward pass. On a GPU torch's own kernel is used.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

__all__ = ["ELU", "elu"]


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
