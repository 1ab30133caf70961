"""The ELU written with exp gives torch's values and gradients."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from pgtm.elementwise import ELU, bernoulli_log_prob, elu, log1mexp, log1p, log_sigmoid


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bernoulli_log_prob_is_accurate_to_a_few_ulps(dtype):
    """Against ``x l - max(l, 0) - log1p(exp(-|l|))`` in float64 with torch's ``log1p`` (torch's
    own float64 ``binary_cross_entropy_with_logits`` is off by 1e-7 relative where the
    log-density is near 0, e.g. x = 0, l = -18.5)."""
    logits = _inputs(dtype)
    value = (torch.rand(logits.shape, generator=torch.Generator().manual_seed(1)) < 0.4)
    value = value.to(dtype)
    wide_logits, wide_value = logits.double(), value.double()
    exact = (wide_value * wide_logits - wide_logits.clamp(min=0)
             - torch.log1p(torch.exp(-wide_logits.abs())))
    ours = bernoulli_log_prob(logits, value).double()
    finfo = torch.finfo(dtype)  # relative to a few ulps; absolute among the subnormals
    assert torch.all((ours - exact).abs() <= 4 * finfo.eps * exact.abs() + finfo.tiny)
    torchs = -F.binary_cross_entropy_with_logits(logits, value, reduction="none").double()
    assert (ours - exact).abs().max() <= (torchs - exact).abs().max()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bernoulli_log_prob_gradients_are_torchs(dtype):
    logits = _inputs(dtype).requires_grad_()
    value = torch.rand(logits.shape, generator=torch.Generator().manual_seed(2), dtype=dtype)
    value.requires_grad_()
    weights = torch.randn(logits.shape, dtype=dtype)
    ours = torch.autograd.grad((bernoulli_log_prob(logits, value) * weights).sum(),
                               (logits, value))
    torchs = torch.autograd.grad(
        (-F.binary_cross_entropy_with_logits(logits, value, reduction="none") * weights).sum(),
        (logits, value))
    rtol = 1e-6 if dtype == torch.float32 else 1e-14
    for a, b in zip(ours, torchs, strict=True):
        torch.testing.assert_close(a, b, rtol=rtol, atol=rtol)


def test_bernoulli_log_prob_passes_gradcheck():
    generator = torch.Generator().manual_seed(3)
    logits = (5 * torch.randn(20, generator=generator, dtype=torch.float64)).requires_grad_()
    value = torch.rand(20, generator=generator, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(bernoulli_log_prob, (logits, value))


def _within_ulps(ours, exact, dtype, ulps):
    finfo = torch.finfo(dtype)  # relative to a few ulps; absolute among the subnormals
    return torch.all((ours.double() - exact).abs() <= ulps * finfo.eps * exact.abs() + finfo.tiny)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_log1p_log_sigmoid_and_log1mexp_are_accurate(dtype):
    """Against torch's ``log1p``, ``logsigmoid`` and Mächler's ``log1mexp`` in float64 (for
    float64 inputs: agreement to a few ulps of two float64 evaluations)."""
    generator = torch.Generator().manual_seed(4)
    fractions = torch.rand(4000, generator=generator, dtype=torch.float64)
    tiny = torch.tensor([1e-30, 1e-12, 1e-8, 1e-4, 0.5, 0.6931, 0.6932, 1.0], dtype=torch.float64)
    above_minus_one = torch.cat([fractions * 2 - 1, fractions * 1e6, tiny, -tiny[:-1]]).to(dtype)
    assert _within_ulps(log1p(above_minus_one), torch.log1p(above_minus_one.double()), dtype, 4)
    reals = _inputs(dtype)
    assert _within_ulps(log_sigmoid(reals), F.logsigmoid(reals.double()), dtype, 4)
    positive = torch.cat([fractions * 3, 10 ** (8 * fractions - 7), tiny, tiny * 40]).to(dtype)
    wide = positive.double()
    exact = torch.where(wide < 0.6931, torch.log(-torch.expm1(-wide)),
                        torch.log1p(-torch.exp(-wide)))
    assert _within_ulps(log1mexp(positive), exact, dtype, 8)
    assert torch.isfinite(log1mexp(positive)).all()
