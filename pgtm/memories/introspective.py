r"""Introspective memory (Gemici et al., 2017, §3.1): a FIFO buffer of past latents.

The memory holds the last :math:`L` latents, :math:`M_{t-1} = [z_{t-L}, \dots, z_{t-1}]`
(slot :math:`L-1` is the newest; slots not yet written hold zeros). Each of the :math:`R`
read heads has *location* weights computed from the controller output alone,

.. math::

    w^r_t = \mathrm{normalise}(\mathrm{softplus}(f^r_{att}(h_t))) \in \Delta^{L-1},
    \qquad \phi^r_t = (w^r_t)^\top M_{t-1},
    \qquad \Psi^r_t = \phi^r_t \odot \sigma(g^r_t),

with a scalar gate :math:`g^r_t = f^r_{gate}(h_t)` per head; the read vector is
:math:`[\Psi^1_t, \dots, \Psi^R_t]`. Weighting options:

* ``"softplus"`` (the paper): :math:`w = \mathrm{softplus}(s) / \sum_i \mathrm{softplus}(s_i)`;
* ``"softmax"``: :math:`w = \mathrm{softmax}(s)`;
* ``"unnormalised"``: :math:`w = \mathrm{softplus}(s)` with the penalty
  :math:`b\,(\sum_i w_i - 1)^2` per head.

An optional sparsity penalty :math:`\alpha \sum_i \sqrt{w_i}` per head (the :math:`l_{1/2}`
regulariser of a published replication) can be added to any weighting. Penalties are returned
per example and enter the objective through ``pyro.factor``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.nn import functional as F

from pgtm.checks import number, one_of
from pgtm.memories.base import Memory, MemoryOutput, require_positive_sizes
from pgtm.shapes import broadcast_leading
from pgtm.unrolled_linear import UnrolledLinear

WEIGHTINGS = ("softplus", "softmax", "unnormalised")
_EPS = 1e-8


class IntrospectiveState(NamedTuple):
    """:ivar buffer: ``[*batch, num_slots, latent_size]``; slot ``-1`` is the newest latent."""

    buffer: torch.Tensor


def fifo_push(buffer: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
    """Drop the oldest slot and append ``latent`` as the newest.

    :param buffer: ``[*batch, L, Z]``.
    :param latent: ``[*batch, Z]``.
    :returns: ``[*batch, L, Z]``.
    """
    buffer, latent = broadcast_leading(buffer, latent, event_dims=(2, 1))
    return torch.cat([buffer[..., 1:, :], latent.unsqueeze(-2)], dim=-2)


def location_weights(scores: torch.Tensor, weighting: str = "softplus") -> torch.Tensor:
    """Map head scores ``[..., L]`` to non-negative location weights ``[..., L]``.

    ``"softplus"`` and ``"softmax"`` sum to one over the last dim; ``"unnormalised"`` does not.
    """
    one_of("weighting", weighting, WEIGHTINGS)
    if weighting == "softplus":
        w = F.softplus(scores)
        return w / (w.sum(-1, keepdim=True) + _EPS)
    if weighting == "softmax":
        return torch.softmax(scores, dim=-1)
    return F.softplus(scores)  # "unnormalised"


def weight_penalty(
    weights: torch.Tensor, sum_penalty: float = 0.0, sparsity: float = 0.0
) -> torch.Tensor:
    r"""Regulariser of location weights ``[..., R, L]`` summed over heads: ``[...]``.

    :math:`\sum_r b(\sum_i w^r_i - 1)^2 + \alpha \sum_r \sum_i \sqrt{w^r_i}`.
    """
    penalty = weights.new_zeros(weights.shape[:-2])
    if sum_penalty:
        penalty = penalty + sum_penalty * (weights.sum(-1) - 1).pow(2).sum(-1)
    if sparsity:
        # eps keeps the gradient of sqrt finite at w = 0
        penalty = penalty + sparsity * (weights + _EPS).sqrt().sum((-1, -2))
    return penalty


class IntrospectiveMemory(Memory):
    """FIFO buffer of past latents read by gated location-addressed heads.

    :param latent_size: :math:`Z`.
    :param controller_size: size of :math:`h_t`.
    :param num_slots: :math:`L`, the number of past latents kept (default: sequence length).
    :param num_heads: :math:`R` (the paper uses 5).
    :param weighting: ``"softplus"`` (paper), ``"softmax"`` or ``"unnormalised"``.
    :param sum_penalty: :math:`b`, used with ``"unnormalised"`` (default 1).
    :param sparsity: :math:`\\alpha` of the :math:`l_{1/2}` penalty (default 0: off).
    """

    min_slots = 0

    def __init__(
        self,
        latent_size: int,
        controller_size: int,
        num_slots: int,
        num_heads: int = 5,
        weighting: str = "softplus",
        sum_penalty: float = 1.0,
        sparsity: float = 0.0,
    ):
        super().__init__()
        one_of("weighting", weighting, WEIGHTINGS)
        require_positive_sizes(num_slots=num_slots, num_heads=num_heads)
        number("sparsity", sparsity, 0)
        number("sum_penalty", sum_penalty, 0)
        self.latent_size = latent_size
        self.num_slots = int(num_slots)
        self.num_heads = int(num_heads)
        self.weighting = weighting
        self.sum_penalty = float(sum_penalty) if weighting == "unnormalised" else 0.0
        self.sparsity = float(sparsity)
        self.read_size = self.num_heads * latent_size
        self.attention = UnrolledLinear(controller_size, self.num_heads * self.num_slots)
        self.gate = UnrolledLinear(controller_size, self.num_heads)

    def initial_state(self, batch_shape, device=None, dtype=None) -> IntrospectiveState:
        shape = tuple(batch_shape) + (self.num_slots, self.latent_size)
        return IntrospectiveState(torch.zeros(shape, device=device, dtype=dtype))

    def memory_matrix(self, state: IntrospectiveState) -> torch.Tensor:
        return state.buffer

    def latent_slots(self, steps, times, write_weights=None) -> torch.Tensor:
        """A FIFO: read at step :math:`t`, slot :math:`L - 1` holds :math:`z_{t-1}`, so
        :math:`z_s` is in slot :math:`s - t + L` (negative once it has left the buffer)."""
        return steps - times + self.num_slots

    def forward(self, state: IntrospectiveState, controller_output, latent) -> MemoryOutput:
        buffer = fifo_push(state.buffer, latent)
        scores = self.attention(controller_output)
        scores = scores.unflatten(-1, (self.num_heads, self.num_slots))
        weights = location_weights(scores, self.weighting)  # [*, R, L]
        weights, buffer_b = broadcast_leading(weights, buffer, event_dims=2)
        phi = weights @ buffer_b  # [*, R, Z]
        gates = torch.sigmoid(self.gate(controller_output))  # [*, R]
        read = (phi * gates.unsqueeze(-1)).flatten(-2)
        penalty = None
        if self.sum_penalty or self.sparsity:
            penalty = weight_penalty(weights, self.sum_penalty, self.sparsity)
        return MemoryOutput(read, IntrospectiveState(buffer), weights, penalty, gates)
