r"""Likelihoods :math:`p(x_t \mid z_t, \Psi_{t-1})`.

A likelihood is an ``nn.Module`` built as ``Likelihood(frame_shape)`` whose ``forward(raw)``
turns the decoder output ``[*batch, *raw_shape]`` into a distribution with batch shape
``[*batch]`` and event shape ``frame_shape``; ``mean(raw)`` gives the frame to draw.  ``raw_shape``
is ``frame_shape`` unless the likelihood needs several numbers per element (the discretised
logistic takes a location and a log-scale: twice the channels).
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from pgtm.elementwise import bernoulli_log_prob
from pgtm.models.discretized_logistic import DiscretizedLogistic


class Likelihood(nn.Module):
    """Base class of likelihoods."""

    def __init__(self, frame_shape):
        super().__init__()
        self.frame_shape = tuple(frame_shape)
        self.raw_shape = self.frame_shape

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
        return _Bernoulli(logits=raw).to_event(len(self.frame_shape))

    def frames_error(self, x):
        if bool(((x == 0) | (x == 1)).all()):
            return None
        return ("x must hold binary frames (0 or 1) for the bernoulli likelihood; binarise them "
                "or use the continuous-bernoulli or gaussian likelihood")


class _Bernoulli(dist.Bernoulli):
    """``Bernoulli(logits=...)`` whose log-density is :func:`pgtm.elementwise.bernoulli_log_prob`
    (on a CPU twice as fast as torch's, as accurate)."""

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        logits, value = torch.broadcast_tensors(self.logits, value)
        return bernoulli_log_prob(logits, value)


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


class DiscretizedLogisticLikelihood(Likelihood):
    """8-bit colour or grey levels: a discretised logistic over the 256 levels of every
    element (:class:`~pgtm.models.discretized_logistic.DiscretizedLogistic`), with location and
    log-scale from the decoder.

    ``raw [*batch, 2C, *rest]`` for frames ``(C, *rest)``: channels ``0..C-1`` are the location
    (offset by 0.5, so that an untrained decoder predicts mid grey), channels ``C..2C-1`` the
    log-scale, floored at :data:`MIN_LOG_SCALE` as in PixelCNN++.
    """

    #: a scale of exp(-7) (about 1/1100) already puts almost all mass on one level
    MIN_LOG_SCALE = -7.0

    def __init__(self, frame_shape):
        super().__init__(frame_shape)
        self.raw_shape = (2 * self.frame_shape[0],) + self.frame_shape[1:]

    def _distribution(self, raw) -> DiscretizedLogistic:
        loc, log_scale = raw.chunk(2, dim=raw.dim() - len(self.frame_shape))
        return DiscretizedLogistic(loc + 0.5, log_scale.clamp(min=self.MIN_LOG_SCALE))

    def forward(self, raw):
        return self._distribution(raw).to_event(len(self.frame_shape))

    def mean(self, raw):
        return self._distribution(raw).mean


LIKELIHOODS = {
    "bernoulli": BernoulliLikelihood,
    "gaussian": GaussianLikelihood,
    "continuous-bernoulli": ContinuousBernoulliLikelihood,
    "discretized-logistic": DiscretizedLogisticLikelihood,
}
