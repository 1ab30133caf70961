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
The log-mass is one autograd node with its gradient written out (:class:`_LogMass`): autograd
of the formula above makes about sixty passes over every pixel of a batch of frames, most of the
time of a step on RGB frames, against about twenty.
"""

from __future__ import annotations

import torch
from pyro.distributions import TorchDistribution
from torch.autograd.function import once_differentiable
from torch.distributions import constraints

from pgtm.elementwise import log1mexp, log_sigmoid

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
        return _LogMass.apply(self.loc, self.log_scale, level)

    def sample(self, sample_shape=()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device)
            u = u.clamp(torch.finfo(u.dtype).tiny, 1 - torch.finfo(u.dtype).eps)
            x = self.loc + torch.exp(self.log_scale) * (torch.log(u) - torch.log1p(-u))
            return (x * (LEVELS - 1)).round().clamp(0, LEVELS - 1) / (LEVELS - 1)


class _LogMass(torch.autograd.Function):
    r"""``log P(level)`` of the bins of logistics ``(loc, log_scale)``, broadcast together.

    With :math:`k = e^{-\log s}`, :math:`a = (x + h - \mu) k`, :math:`b = (x - h - \mu) k`
    and the bin's width :math:`w = 2 h k = a - b`: inner bins
    :math:`\log\sigma(a) + \log\sigma(-b) + \log(1 - e^{-w})`, the bin at 0
    :math:`\log\sigma(a)`, the bin at 1 :math:`\log\sigma(-b)`. The backward pass uses
    :math:`\partial_a \log\sigma(a) = \sigma(-a)`, :math:`\partial_b \log\sigma(-b) =
    -\sigma(b)`, :math:`\partial_w \log(1 - e^{-w}) = e^{-w - \log(1 - e^{-w})}` (from the
    forward value, so no cancellation at small widths), :math:`\partial_\mu = -k(\partial_a +
    \partial_b)` and :math:`\partial_{\log s} = -(a \partial_a + b \partial_b + w
    \partial_w)`. First-order only.
    """

    @staticmethod
    def forward(ctx, loc, log_scale, level):
        inverse_scale = torch.exp(-log_scale)
        upper = (level + _HALF_BIN - loc) * inverse_scale
        lower = (level - _HALF_BIN - loc) * inverse_scale
        width = (2 * _HALF_BIN) * inverse_scale
        log_cdf_upper = log_sigmoid(upper)
        log_survival_lower = log_sigmoid(-lower)
        log_width_mass = log1mexp(width)
        at_zero, at_one = level <= 0, level >= 1
        # every branch is finite, so where() selects without NaN
        inner = log_cdf_upper + log_survival_lower + log_width_mass
        log_p = torch.where(at_zero, log_cdf_upper, torch.where(at_one, log_survival_lower, inner))
        ctx.save_for_backward(upper, lower, width, log_width_mass, inverse_scale, at_zero, at_one)
        ctx.shapes = loc.shape, log_scale.shape
        return log_p

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        upper, lower, width, log_width_mass, inverse_scale, at_zero, at_one = ctx.saved_tensors
        zero = grad.new_zeros(())
        d_upper = torch.where(at_one, zero, torch.sigmoid(-upper) * grad)
        d_lower = torch.where(at_zero, zero, torch.sigmoid(lower).neg_().mul_(grad))
        d_width = torch.where(at_zero | at_one, zero,
                              torch.exp(-(width + log_width_mass)) * grad)
        loc_shape, log_scale_shape = ctx.shapes
        d_loc = d_log_scale = None
        if ctx.needs_input_grad[0]:
            d_loc = ((d_upper + d_lower) * inverse_scale).neg_().sum_to_size(loc_shape)
        if ctx.needs_input_grad[1]:
            d_log_scale = (upper * d_upper).add_(lower * d_lower).add_(width * d_width)
            d_log_scale = d_log_scale.neg_().sum_to_size(log_scale_shape)
        return d_loc, d_log_scale, None
