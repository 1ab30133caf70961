r"""The discretised logistic distribution of 8-bit pixels (PixelCNN++, Salimans et al., 2017).

A pixel value :math:`x \in \{0, 1/255, \dots, 1\}` gets the mass a logistic of location
:math:`\mu` and scale :math:`s` puts on its bin :math:`[x - \frac{1}{510}, x + \frac{1}{510}]`,
the two edge bins taking the tails:

.. math::

    P(x) = \sigma\!\left(\tfrac{x + 1/510 - \mu}{s}\right)
         - \sigma\!\left(\tfrac{x - 1/510 - \mu}{s}\right),
    \quad \sigma(+\infty) = 1 \text{ at } x = 1, \; \sigma(-\infty) = 0 \text{ at } x = 0,

so the 256 probabilities sum to one.  The difference of sigmoids is computed in log space as
:math:`\log\sigma(a) + \log\sigma(-b) + \log(1 - e^{b - a})` (exact: :math:`\sigma(a) -
\sigma(b) = \sigma(a)\,\sigma(-b)\,(1 - e^{b - a})`), which stays finite and accurate far in the
tails and for tiny scales, where PixelCNN++ switches to a density approximation instead.
"""

from __future__ import annotations

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints
from torch.nn import functional as F

#: pixel levels: values are multiples of 1 / (LEVELS - 1)
LEVELS = 256
_HALF_BIN = 0.5 / (LEVELS - 1)


class DiscretizedLogistic(TorchDistribution):
    r"""Independent discretised logistics, one per element (batch shape ``loc.shape``, event
    shape ``()``; wrap with ``.to_event`` for frames).

    :param loc: :math:`\mu` ``[*shape]`` in pixel units (0 black, 1 white; any real).
    :param log_scale: :math:`\log s` ``[*shape]``.

    ``log_prob(x)`` rounds ``x`` to the nearest level and clamps it to ``[0, 1]`` (values off
    the grid score as their bin); ``sample()`` returns levels, drawn exactly by inverting the
    logistic CDF and rounding.  The mean is the location clamped to ``[0, 1]``, the median of
    the discretised distribution's bins up to rounding, not its expectation (the tails piled on
    the edge bins pull that towards 0 or 1).
    """

    arg_constraints = {"loc": constraints.real, "log_scale": constraints.real}
    support = constraints.unit_interval
    has_rsample = False

    def __init__(self, loc: torch.Tensor, log_scale: torch.Tensor, validate_args=None):
        self.loc, self.log_scale = torch.broadcast_tensors(loc, log_scale)
        super().__init__(self.loc.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(DiscretizedLogistic, _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc = self.loc.expand(batch_shape)
        new.log_scale = self.log_scale.expand(batch_shape)
        super(DiscretizedLogistic, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def mean(self) -> torch.Tensor:
        return self.loc.clamp(0.0, 1.0)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        level = (value * (LEVELS - 1)).round().clamp(0, LEVELS - 1) / (LEVELS - 1)
        inverse_scale = torch.exp(-self.log_scale)
        upper = (level + _HALF_BIN - self.loc) * inverse_scale
        lower = (level - _HALF_BIN - self.loc) * inverse_scale
        # the edge bins take the tails: log P = log sigma(upper) at 0, log sigma(-lower) at 1;
        # every branch is finite, so where() passes no NaN gradient
        bin_width = (2 * _HALF_BIN) * inverse_scale
        inner = F.logsigmoid(upper) + F.logsigmoid(-lower) + _log1mexp(bin_width)
        edge = torch.where(level <= 0, F.logsigmoid(upper), F.logsigmoid(-lower))
        return torch.where((level <= 0) | (level >= 1), edge, inner)

    def sample(self, sample_shape=()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device)
            u = u.clamp(torch.finfo(u.dtype).tiny, 1 - torch.finfo(u.dtype).eps)
            x = self.loc + torch.exp(self.log_scale) * (torch.log(u) - torch.log1p(-u))
            return (x * (LEVELS - 1)).round().clamp(0, LEVELS - 1) / (LEVELS - 1)


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    r""":math:`\log(1 - e^{-x})` for ``x > 0``, accurate for small and large ``x`` (Mächler,
    2012)."""
    return torch.where(x < 0.6931, torch.log(-torch.expm1(-x)), torch.log1p(-torch.exp(-x)))
