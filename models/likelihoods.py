r"""Likelihoods :math:`p(x_t \mid z_t, \Psi_{t-1})`.

A likelihood is an ``nn.Module`` built as ``Likelihood(frame_shape)`` whose ``forward(raw)``
turns the decoder output ``[*batch, *frame_shape]`` into a distribution with batch shape
``[*batch]`` and event shape ``frame_shape``; ``mean(raw)`` gives the frame to draw.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F


class Likelihood(nn.Module):
    """Base class of likelihoods."""

    def __init__(self, frame_shape):
        super().__init__()
        self.frame_shape = tuple(frame_shape)

    def forward(self, raw: torch.Tensor) -> dist.TorchDistribution:
        raise NotImplementedError

    def mean(self, raw: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(raw)

    def frames_error(self, x: torch.Tensor) -> str | None:
        """Why frames ``x`` are outside this likelihood's support, or ``None``."""
        return None


class BernoulliLikelihood(Likelihood):
    """Bernoulli pixels with logits ``raw``: for binarised frames."""

    def forward(self, raw):
        return dist.Bernoulli(logits=raw).to_event(len(self.frame_shape))

    def frames_error(self, x):
        if bool(((x == 0) | (x == 1)).all()):
            return None
        return ("x must hold binary frames (0 or 1) for the bernoulli likelihood; binarise them "
                "or use the continuous-bernoulli or gaussian likelihood")


class GaussianLikelihood(Likelihood):
    r"""Grey-level frames: :math:`\mathcal{N}(\mathrm{sigmoid}(raw), \sigma^2)` with one learned
    :math:`\sigma` per pixel (floored at 0.01)."""

    def __init__(self, frame_shape):
        super().__init__(frame_shape)
        self.raw_scale = nn.Parameter(torch.full(self.frame_shape, -1.0))

    def forward(self, raw):
        scale = (F.softplus(self.raw_scale) + 0.01).expand(raw.shape)
        return dist.Normal(torch.sigmoid(raw), scale).to_event(len(self.frame_shape))


class ContinuousBernoulliLikelihood(Likelihood):
    """Continuous Bernoulli (Loaiza-Ganem & Cunningham, 2019) for grey levels in [0, 1]."""

    def forward(self, raw):
        return dist.ContinuousBernoulli(logits=raw).to_event(len(self.frame_shape))

    def mean(self, raw):
        return dist.ContinuousBernoulli(logits=raw).mean

    def frames_error(self, x):
        if bool(((x >= 0) & (x <= 1)).all()):
            return None
        return "x must hold frames in [0, 1] for the continuous-bernoulli likelihood"


LIKELIHOODS = {
    "bernoulli": BernoulliLikelihood,
    "gaussian": GaussianLikelihood,
    "continuous-bernoulli": ContinuousBernoulliLikelihood,
}
