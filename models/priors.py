r"""Priors :math:`p(z_t \mid \Psi_{t-1}, h_t)`.

A prior is an ``nn.Module`` built as ``Prior(context_size, latent_size)`` whose
``forward(context)`` maps the context :math:`[\Psi_{t-1}, h_t]` ``[*batch, context_size]`` to a
distribution over :math:`z_t` with batch shape ``[*batch]`` and event shape ``[latent_size]``.
To try a new prior, subclass :class:`Prior` and pass the class to
:func:`pgtm.models.build_gtm` (see ``examples/custom_prior.py``).
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from pgtm.checks import number
from pgtm.elementwise import ELU
from pgtm.shapes import cat_steps
from pgtm.unrolled_linear import UnrolledLinear

#: the floor added to every learned scale (prior and posterior), unless ``min_scale`` is given
DEFAULT_MIN_SCALE = 1e-3


class Prior(nn.Module):
    """Base class of priors."""

    def __init__(self, context_size: int, latent_size: int):
        super().__init__()
        self.context_size = context_size
        self.latent_size = latent_size

    def forward(self, context: torch.Tensor) -> dist.TorchDistribution:
        raise NotImplementedError

    def over_steps(self, contexts: list[torch.Tensor]) -> list[dist.TorchDistribution]:
        """The prior of each of ``T`` steps from their contexts (``T`` tensors ``[*batch, 1,
        context_size]``). This calls :meth:`forward` step by step; a prior whose network can
        take all steps at once overrides it (the model uses it when it replays the guide's
        path, whose contexts are all known)."""
        return [self(context) for context in contexts]


def location_scale_net(input_size: int, output_size: int, hidden_size: int) -> nn.Module:
    """An MLP producing ``2 * output_size`` numbers: a location and a pre-softplus scale."""
    return nn.Sequential(
        UnrolledLinear(input_size, hidden_size), ELU(), UnrolledLinear(hidden_size, 2 * output_size)
    )


def split_location_scale(
    out: torch.Tensor, min_scale: float = DEFAULT_MIN_SCALE
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""A location and a scale :math:`\mathrm{softplus}(\cdot) + ` ``min_scale`` from the two
    halves of ``out``'s last dim."""
    loc, raw_scale = out.chunk(2, dim=-1)
    return loc, F.softplus(raw_scale) + min_scale


def checked_min_scale(min_scale: float) -> float:
    """``min_scale`` > 0: a scale floor (a floor of 0 lets a KL term overflow)."""
    return number("min_scale", min_scale, 0, low_open=True)


class LearnedGaussianPrior(Prior):
    r"""The paper's prior: :math:`\mathcal{N}(\mu(\Psi, h), \mathrm{diag}\,\sigma^2(\Psi, h))`,
    :math:`\sigma \ge` ``min_scale``."""

    def __init__(self, context_size: int, latent_size: int, hidden_size: int = 256,
                 min_scale: float = DEFAULT_MIN_SCALE):
        super().__init__(context_size, latent_size)
        self.net = location_scale_net(context_size, latent_size, hidden_size)
        self.min_scale = checked_min_scale(min_scale)

    def forward(self, context):
        loc, scale = split_location_scale(self.net(context), self.min_scale)
        return dist.Normal(loc, scale).to_event(1)

    def over_steps(self, contexts):
        loc, scale = split_location_scale(self.net(cat_steps(contexts)), self.min_scale)
        return [dist.Normal(*step).to_event(1)
                for step in zip(loc.split(1, dim=-2), scale.split(1, dim=-2), strict=True)]


class StandardNormalPrior(Prior):
    r"""A fixed :math:`\mathcal{N}(0, I)` that ignores the context (no parameters)."""

    def forward(self, context):
        loc = context.new_zeros(context.shape[:-1] + (self.latent_size,))
        return dist.Normal(loc, torch.ones_like(loc)).to_event(1)


class StudentTPrior(Prior):
    r"""Heavy-tailed: :math:`\mathrm{StudentT}(\nu, \mu(\Psi, h), \sigma(\Psi, h))` per dimension
    with one learned :math:`\nu > 2` per latent dimension (finite variance),
    :math:`\sigma \ge` ``min_scale``."""

    def __init__(self, context_size: int, latent_size: int, hidden_size: int = 256,
                 min_scale: float = DEFAULT_MIN_SCALE):
        super().__init__(context_size, latent_size)
        self.net = location_scale_net(context_size, latent_size, hidden_size)
        self.raw_df = nn.Parameter(torch.full((latent_size,), 2.0))
        self.min_scale = checked_min_scale(min_scale)

    def forward(self, context):
        loc, scale = split_location_scale(self.net(context), self.min_scale)
        df = (F.softplus(self.raw_df) + 2.0).expand(loc.shape)
        return dist.StudentT(df, loc, scale).to_event(1)


PRIORS = {
    "learned-gaussian": LearnedGaussianPrior,
    "standard-normal": StandardNormalPrior,
    "student-t": StudentTPrior,
}
