r"""Posteriors (guides) :math:`q(z_t \mid \Psi_{t-1}, h_t, x_t)`.

A posterior is an ``nn.Module`` built as ``Posterior(context_size, feature_size, latent_size)``
whose ``forward(context, features)`` maps the context ``[*batch, context_size]`` and the encoder
features of :math:`x_t` ``[*batch, feature_size]`` to a distribution over :math:`z_t` with batch
shape ``[*batch]`` and event shape ``[latent_size]``. The posterior shares the deterministic
path :math:`(h_t, \Psi_{t-1})` with the prior, as in the paper.
"""

from __future__ import annotations

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from torch import nn

from pgtm.elementwise import ELU
from pgtm.models.priors import (
    DEFAULT_MIN_SCALE,
    checked_min_scale,
    location_scale_net,
    split_location_scale,
)
from pgtm.shapes import cat_features
from pgtm.unrolled_linear import UnrolledLinear


class Posterior(nn.Module):
    """Base class of posteriors."""

    def __init__(self, context_size: int, feature_size: int, latent_size: int):
        super().__init__()
        self.context_size = context_size
        self.feature_size = feature_size
        self.latent_size = latent_size

    def forward(self, context: torch.Tensor, features: torch.Tensor) -> dist.TorchDistribution:
        raise NotImplementedError


class DiagonalGaussianPosterior(Posterior):
    r""":math:`\mathcal{N}(\mu, \mathrm{diag}\,\sigma^2)` with both computed by an MLP of
    :math:`[\Psi_{t-1}, h_t, e(x_t)]`, :math:`\sigma \ge` ``min_scale``."""

    def __init__(self, context_size, feature_size, latent_size, hidden_size: int = 256,
                 min_scale: float = DEFAULT_MIN_SCALE):
        super().__init__(context_size, feature_size, latent_size)
        self.net = location_scale_net(context_size + feature_size, latent_size, hidden_size)
        self.min_scale = checked_min_scale(min_scale)

    def forward(self, context, features):
        loc, scale = split_location_scale(self.net(cat_features(context, features)),
                                          self.min_scale)
        return dist.Normal(loc, scale).to_event(1)


class FlowPosterior(Posterior):
    r"""A diagonal Gaussian pushed through ``num_flows`` conditional affine coupling layers
    (RealNVP-style, Pyro's ``ConditionalAffineCoupling``), with a fixed permutation between
    layers; every layer is conditioned on the same hidden summary of
    :math:`[\Psi_{t-1}, h_t, e(x_t)]`.

    Coupling layers are used rather than inverse autoregressive flows because their inverse is
    one network pass: Pyro scores guide samples after the whole sequence has been drawn, when
    an autoregressive transform's one-element cache no longer holds the sample.
    """

    def __init__(
        self,
        context_size,
        feature_size,
        latent_size,
        hidden_size: int = 256,
        num_flows: int = 2,
        flow_hidden_size: int = 64,
        min_scale: float = DEFAULT_MIN_SCALE,
    ):
        super().__init__(context_size, feature_size, latent_size)
        if latent_size < 2:
            raise ValueError(f"FlowPosterior needs latent_size >= 2, got {latent_size}")
        self.summary = nn.Sequential(
            UnrolledLinear(context_size + feature_size, hidden_size), ELU()
        )
        self.base = UnrolledLinear(hidden_size, 2 * latent_size)
        self.min_scale = checked_min_scale(min_scale)
        self.flows = nn.ModuleList(
            T.conditional_affine_coupling(latent_size, hidden_size, [flow_hidden_size])
            for _ in range(num_flows)
        )
        generator = torch.Generator().manual_seed(0)
        for i in range(num_flows - 1):
            permutation = torch.randperm(latent_size, generator=generator)
            self.register_buffer(f"permutation_{i}", permutation)

    def forward(self, context, features):
        summary = self.summary(cat_features(context, features))
        loc, scale = split_location_scale(self.base(summary), self.min_scale)
        transforms = []
        for i, flow in enumerate(self.flows):
            if i > 0:
                transforms.append(T.Permute(getattr(self, f"permutation_{i - 1}")))
            transforms.append(flow.condition(summary))
        return dist.TransformedDistribution(dist.Normal(loc, scale).to_event(1), transforms)


POSTERIORS = {"gaussian": DiagonalGaussianPosterior, "flow": FlowPosterior}
