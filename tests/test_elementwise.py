"""The ELU written with exp gives torch's values and gradients."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from pgtm.elementwise import ELU, elu


def _inputs(dtype) -> torch.Tensor:
    # far in both tails and around 0
    generator = torch.Generator().manual_seed(0)
    spread = torch.randn(4000, generator=generator, dtype=dtype) * 8
    edges = torch.tensor([-100.0, -30.0, -17.0, -1e-6, 0.0, 1e-6, 17.0, 30.0, 100.0], dtype=dtype)
    return torch.cat([spread, edges])


@pytest.mark.parametrize("dtype, rtol", [(torch.float32, 1e-6), (torch.float64, 1e-14)])
def test_elu_and_gradient_are_torchs(dtype, rtol):
    x = _inputs(dtype).requires_grad_()
    weights = torch.randn(x.shape, dtype=dtype)
    ours, torchs = ELU()(x), F.elu(x)
    atol = 1e-7 if dtype == torch.float32 else 1e-15  # exp(x) - 1 near 0: one ulp of 1
    torch.testing.assert_close(ours, torchs, rtol=rtol, atol=atol)
    assert torch.equal(ours[x > 0], x[x > 0])  # the identity, exactly
    (grad_ours,) = torch.autograd.grad((ours * weights).sum(), x)
    (grad_torch,) = torch.autograd.grad((torchs * weights).sum(), x)
    torch.testing.assert_close(grad_ours, grad_torch, rtol=rtol, atol=1e-7)
    assert torch.equal(elu(x.detach()), ours.detach())


def test_elu_refuses_a_second_derivative_instead_of_giving_a_wrong_one():
    x = torch.randn(5, requires_grad=True)
    (grad,) = torch.autograd.grad(elu(x).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError):
        grad.sum().backward()
