"""KL annealing: the schedule of beta and the messenger that scales the latent sites, so that
the loss is -reconstruction + beta KL under both ELBOs."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch import nn

from pgtm.inference.train import LatentScale, kl_beta


def test_kl_beta_schedule():
    assert kl_beta(1, 0) == 1.0
    assert kl_beta(1, 4, 0.2) == pytest.approx(0.2)
    assert kl_beta(3, 4, 0.2) == pytest.approx(0.6)
    assert kl_beta(5, 4, 0.2) == 1.0
    assert kl_beta(100, 4, 0.2) == 1.0


class ConjugateToy(nn.Module):
    """z ~ N(0, 1), x ~ N(z, 1), q(z) = N(mu, sigma), plus a penalty factor."""

    def __init__(self) -> None:
        super().__init__()
        self.mu = nn.Parameter(torch.tensor([0.3, -0.2]))
        self.log_sigma = nn.Parameter(torch.tensor([-0.5, 0.1]))

    def model(self, x, c=None, mask=None):
        pyro.module("gtm", self)
        with pyro.plate("sequences", x.shape[0], dim=-2):
            z = pyro.sample("z_0", dist.Normal(torch.zeros(1, 1, 2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)
        pyro.factor("penalty_mu", -0.7 * self.mu.pow(2).sum())

    def guide(self, x, c=None, mask=None):
        pyro.module("gtm", self)
        with pyro.plate("sequences", x.shape[0], dim=-2):
            q = dist.Normal(self.mu.expand(x.shape[0], 1, 2), self.log_sigma.exp()).to_event(1)
            pyro.sample("z_0", q)


@pytest.mark.parametrize("elbo_name", ["trace", "meanfield"])
@pytest.mark.parametrize("beta", [0.0, 0.25, 1.0])
def test_latent_scale_gives_beta_kl_plus_recon(elbo_name, beta):
    toy = ConjugateToy()
    x = torch.tensor([[[0.5, 1.0]], [[-1.0, 2.0]], [[0.0, 0.1]]])  # [B=3, 1, 2]
    scaler = LatentScale(beta)

    def model(x):
        with scaler:
            toy.model(x)

    def guide(x):
        with scaler:
            toy.guide(x)

    elbo = (Trace_ELBO if elbo_name == "trace" else TraceMeanField_ELBO)(max_plate_nesting=2)
    pyro.set_rng_seed(11)
    loss = elbo.loss(model, guide, x)

    # Same draw of z, unscaled log densities computed by hand.
    pyro.set_rng_seed(11)
    gtr = poutine.trace(toy.guide).get_trace(x)
    mtr = poutine.trace(poutine.replay(toy.model, trace=gtr)).get_trace(x)
    z = gtr.nodes["z_0"]["value"]
    q = gtr.nodes["z_0"]["fn"]
    p = mtr.nodes["z_0"]["fn"]
    recon = dist.Normal(z, 1.0).to_event(1).log_prob(x).sum()
    penalty = -0.7 * toy.mu.pow(2).sum()
    if elbo_name == "trace":
        kl = (q.log_prob(z) - p.log_prob(z)).sum()
    else:
        kl = torch.distributions.kl_divergence(q, p).sum()
    expected = -(recon + penalty) + beta * kl
    assert loss == pytest.approx(float(expected.detach()), rel=1e-5, abs=1e-5)
