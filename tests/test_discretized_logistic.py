"""The discretised logistic distribution and likelihood (pgtm.models.discretized_logistic)."""

import pytest
import torch
from torch.distributions import Distribution

from pgtm.models import LIKELIHOODS
from pgtm.models.discretized_logistic import LEVELS, DiscretizedLogistic
from pgtm.models.likelihoods import DiscretizedLogisticLikelihood

LEVEL_VALUES = torch.arange(LEVELS, dtype=torch.float64) / (LEVELS - 1)
# (location, log-scale): mid grey, black and white edges, outside [0, 1], tiny and wide scales
PARAMETERS = torch.tensor(
    [[0.5, 0.0], [0.0, -3.0], [1.0, -2.0], [1.3, -1.0], [-0.4, 0.5], [0.31, -4.5], [0.7, 2.0]],
    dtype=torch.float64,
)


def direct_probabilities(loc, log_scale):
    """CDF differences over the 256 bins, edge bins open: ``[N, 256]``."""
    scale = log_scale.exp()[:, None]
    upper = torch.sigmoid((LEVEL_VALUES + 0.5 / 255 - loc[:, None]) / scale)
    lower = torch.sigmoid((LEVEL_VALUES - 0.5 / 255 - loc[:, None]) / scale)
    upper[:, -1], lower[:, 0] = 1.0, 0.0
    return upper - lower


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_probabilities_over_the_256_levels_sum_to_one(dtype):
    loc, log_scale = PARAMETERS.T.to(dtype)
    extreme_loc = torch.tensor([0.5, 0.0, 1.0, 5.0], dtype=dtype)
    extreme_log_scale = torch.tensor([-7.0, -7.0, -7.0, 3.0], dtype=dtype)
    loc, log_scale = torch.cat([loc, extreme_loc]), torch.cat([log_scale, extreme_log_scale])
    d = DiscretizedLogistic(loc[:, None], log_scale[:, None])
    log_p = d.log_prob(LEVEL_VALUES.to(dtype))  # broadcast: [N, 256]
    assert torch.isfinite(log_p).all()
    assert torch.allclose(log_p.double().exp().sum(-1), torch.ones(len(loc), dtype=torch.float64),
                          atol=1e-5, rtol=0)


def test_log_prob_matches_the_cdf_difference():
    loc, log_scale = PARAMETERS.T
    log_p = DiscretizedLogistic(loc[:, None], log_scale[:, None]).log_prob(LEVEL_VALUES)
    direct = direct_probabilities(loc, log_scale)
    usable = direct > 1e-6  # where the naive difference keeps 10 digits
    assert usable.float().mean() > 0.8
    assert torch.allclose(log_p[usable], direct[usable].log(), atol=1e-9, rtol=1e-7)


def test_values_off_the_grid_score_as_their_level():
    d = DiscretizedLogistic(torch.tensor(0.4), torch.tensor(-3.0))
    assert torch.equal(d.log_prob(torch.tensor(100.2 / 255)), d.log_prob(torch.tensor(100 / 255)))


def test_gradients_stay_finite_in_the_tails_and_at_the_edges():
    loc = torch.tensor([0.0, 1.0, 0.5, 3.0], requires_grad=True)
    log_scale = torch.tensor([-7.0, -7.0, -6.0, -5.0], requires_grad=True)
    value = torch.tensor([0.0, 1.0, 1.0, 0.2])
    DiscretizedLogistic(loc, log_scale).log_prob(value).sum().backward()
    assert torch.isfinite(loc.grad).all() and torch.isfinite(log_scale.grad).all()


def reference_log_prob(loc, log_scale, value):
    """The log-mass by autograd-differentiable formulas (the writing-out's reference)."""
    level = (value * 255).round().clamp(0, 255) / 255
    upper = (level + 0.5 / 255 - loc) * torch.exp(-log_scale)
    lower = (level - 0.5 / 255 - loc) * torch.exp(-log_scale)
    inner = (torch.nn.functional.logsigmoid(upper) + torch.nn.functional.logsigmoid(-lower)
             + torch.log(-torch.expm1(-(upper - lower))))
    edge = torch.where(level <= 0, torch.nn.functional.logsigmoid(upper),
                       torch.nn.functional.logsigmoid(-lower))
    return torch.where((level <= 0) | (level >= 1), edge, inner)


def test_written_out_gradient_matches_autograd_and_finite_differences():
    torch.manual_seed(0)
    # every level (edges included) against broadcast locations and scales, tiny to wide bins
    loc = (torch.rand(6, 1, dtype=torch.float64) * 1.6 - 0.3).requires_grad_()
    log_scale = torch.linspace(-7.0, 3.0, 6, dtype=torch.float64)[:, None].requires_grad_()
    value = LEVEL_VALUES
    weights = torch.randn(6, LEVELS, dtype=torch.float64)

    def weighted(d_loc, d_log_scale):
        return (DiscretizedLogistic(d_loc, d_log_scale).log_prob(value) * weights).sum()

    ours = torch.autograd.grad(weighted(loc, log_scale), (loc, log_scale))
    reference = torch.autograd.grad(
        (reference_log_prob(loc, log_scale, value) * weights).sum(), (loc, log_scale))
    for a, b in zip(ours, reference, strict=True):
        assert a.shape == b.shape and torch.allclose(a, b, rtol=1e-9, atol=1e-9)
    assert torch.autograd.gradcheck(weighted, (loc, log_scale))
    # no gradient is asked of an input that needs none
    assert DiscretizedLogistic(loc.detach(), log_scale).log_prob(value).requires_grad


def test_sample_draws_levels_with_the_right_frequencies():
    torch.manual_seed(0)
    loc, log_scale = torch.tensor([0.02, 0.5]), torch.tensor([-4.0, -3.5])
    d = DiscretizedLogistic(loc, log_scale)
    assert isinstance(d, Distribution) and d.batch_shape == (2,) and d.event_shape == ()
    x = d.sample((40000,))
    assert x.shape == (40000, 2) and torch.equal(x, (x * 255).round() / 255)
    assert 0 <= x.min() and x.max() <= 1
    counts = torch.stack([torch.bincount((x[:, i] * 255).round().long(), minlength=256)
                          for i in range(2)]) / 40000
    expected = direct_probabilities(loc.double(), log_scale.double()).float()
    assert (counts - expected).abs().max() < 0.01
    assert torch.equal(d.mean, loc)


def test_expand_and_to_event():
    d = DiscretizedLogistic(torch.zeros(3, 1), torch.zeros(3, 1)).expand((2, 3, 4))
    assert d.batch_shape == (2, 3, 4) and d.sample().shape == (2, 3, 4)
    assert d.to_event(2).log_prob(torch.full((2, 3, 4), 0.5)).shape == (2,)


def test_likelihood_reads_twice_the_channels_and_is_registered():
    assert LIKELIHOODS["discretized-logistic"] is DiscretizedLogisticLikelihood
    likelihood = DiscretizedLogisticLikelihood((3, 8, 8))
    assert likelihood.raw_shape == (6, 8, 8)
    raw = torch.zeros(5, 4, 6, 8, 8)
    raw[:, :, 3:] = -50.0  # log-scales below the floor are floored
    d = likelihood(raw)
    assert d.batch_shape == (5, 4) and d.event_shape == (3, 8, 8)
    assert torch.equal(likelihood.mean(raw), torch.full((5, 4, 3, 8, 8), 0.5))
    assert torch.isfinite(d.log_prob(torch.rand(5, 4, 3, 8, 8))).all()
