"""The exp/log forms of ELU and the Bernoulli log-likelihood equal torch's, values and gradients."""

import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F

from pgtm.fastmath import ELU, bernoulli_log_prob, elu
from pgtm.models.likelihoods import BernoulliLikelihood, FastBernoulli


def arguments(dtype=torch.float32):
    generator = torch.Generator().manual_seed(0)
    spread = torch.randn(5000, generator=generator, dtype=torch.float64) * 10
    edges = torch.tensor([0.0, 1e-12, -1e-12, 1e-6, -1e-6, 1e-3, -1e-3, 30.0, -30.0, 100.0,
                          -100.0, 1e4, -1e4], dtype=torch.float64)
    return torch.cat([spread, edges]).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_elu_equals_torchs(dtype):
    a = arguments(dtype)
    torch.testing.assert_close(elu(a), F.elu(a), rtol=4 * torch.finfo(dtype).eps, atol=1e-30)
    assert isinstance(torch.nn.Sequential(ELU())(a), torch.Tensor)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bernoulli_log_prob_is_as_accurate_as_torchs(dtype):
    logits = arguments(dtype)
    value = (torch.arange(len(logits)) % 3 == 0).to(dtype)
    # log p(x) = -softplus(y), y = l for x = 0 and -l for x = 1, in float64 with log1p
    y = torch.where(value == 1, -logits, logits).double()
    exact = -(y.clamp(min=0) + torch.log1p(torch.exp(-y.abs())))
    torchs = -F.binary_cross_entropy_with_logits(logits, value, reduction="none")
    ours = bernoulli_log_prob(logits, value)
    ours_error = ((ours.double() - exact).abs() / exact.abs().clamp(min=1e-300)).max()
    torchs_error = ((torchs.double() - exact).abs() / exact.abs().clamp(min=1e-300)).max()
    assert ours_error <= max(torchs_error, 4 * torch.finfo(dtype).eps)
    assert ours_error <= 4 * torch.finfo(dtype).eps


def test_gradients_pass_gradcheck_and_equal_torchs():
    a = arguments(torch.float64)[::50].clone().requires_grad_(True)
    value = (torch.arange(len(a)) % 2 == 0).double()
    assert torch.autograd.gradcheck(elu, (a,))
    assert torch.autograd.gradcheck(lambda l: bernoulli_log_prob(l, value), (a,))
    for ours, theirs in ((elu, F.elu),
                         (lambda l: bernoulli_log_prob(l, value),
                          lambda l: -F.binary_cross_entropy_with_logits(l, value,
                                                                        reduction="none"))):
        ours_grad, = torch.autograd.grad(ours(a).sum(), a)
        theirs_grad, = torch.autograd.grad(theirs(a).sum(), a)
        torch.testing.assert_close(ours_grad, theirs_grad)


def test_the_likelihood_scores_frames_as_torchs_bernoulli_and_broadcasts():
    likelihood = BernoulliLikelihood((1, 2, 3))
    raw = torch.randn(4, 5, 1, 2, 3)
    x = torch.bernoulli(torch.full((4, 5, 1, 2, 3), 0.3))
    ours = likelihood(raw)
    assert isinstance(ours.base_dist, FastBernoulli)
    torch.testing.assert_close(ours.log_prob(x),
                               dist.Bernoulli(logits=raw).to_event(3).log_prob(x))
    expanded = ours.expand((7, 4, 5))  # a particle dimension, as Pyro's vectorised ELBO does
    assert expanded.log_prob(x).shape == (7, 4, 5)
    with pytest.raises(ValueError, match="support"):
        ours.log_prob(x + 0.5)  # torch's validation still applies
