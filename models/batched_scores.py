r"""The per-step diagonal Gaussians of one pass, scored in one call.

Pyro scores a trace site by site: for the ``T`` latent sites ``z_t`` of a GTM that is ``T``
small log-density computations in the guide and ``T`` in the model, each a dozen operations
forward and more backward (a quarter of a VRNN training step's operations at T = 15). Every
value is known by then — Pyro scores a trace after running it — so :class:`BatchedScores`
stacks the steps' locations, scales and values and computes all ``T`` log-densities at once,
handing each site its slice. The numbers are those of
``Normal(loc, scale).to_event(1).log_prob(value)`` at every step; only their order of evaluation
changes (the gradients agree to rounding).

A program joins each step's distribution (:meth:`BatchedScores.join`) before ``pyro.sample``
and records the value the site took (:meth:`BatchedScores.record`). A distribution that is not
a diagonal Gaussian ``Independent(Normal, 1)`` is passed on as it is; a value other than the
recorded one (a site scored with other values, e.g. by a particle filter), a step whose
distribution was expanded by a plate, or a pass with unrecorded steps is scored step by step.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch

from pgtm.shapes import cat_steps

__all__ = ["BatchedScores"]


class BatchedScores:
    """The steps ``0 .. length-1`` of one pass (one per latent site ``z_t``).

    :param length: :math:`T`, the number of steps.
    """

    def __init__(self, length: int) -> None:
        self._normals: list[dist.Normal | None] = [None] * length
        self._values: list[torch.Tensor | None] = [None] * length
        self._scores: tuple[torch.Tensor, ...] | None = None

    def join(self, t: int, distribution):
        """``distribution`` of step ``t``, scored with the others when it is a diagonal
        Gaussian with batch shape ``[*batch, 1]`` (the step dim) and event ``[Z]``."""
        if (type(distribution) is not dist.Independent
                or type(distribution.base_dist) is not dist.Normal
                or distribution.reinterpreted_batch_ndims != 1
                or distribution.batch_shape[-1:] != (1,)):
            return distribution
        self._normals[t] = distribution.base_dist
        return _JoinedNormal(distribution.base_dist, self, t)

    def record(self, t: int, value: torch.Tensor) -> None:
        """The value ``[*batch, 1, Z]`` that the site of step ``t`` took."""
        self._values[t] = value

    def log_prob(self, t: int, value: torch.Tensor) -> torch.Tensor | None:
        """Step ``t``'s log-density ``[*batch, 1]`` at its recorded ``value``, from one
        computation over every step; ``None`` where it must be scored on its own."""
        if value is not self._values[t]:
            return None
        if self._scores is None:
            if any(v is None for v in self._values) or any(n is None for n in self._normals):
                return None
            steps = dist.Normal(cat_steps([normal.loc for normal in self._normals]),
                                cat_steps([normal.scale for normal in self._normals]),
                                validate_args=False)
            self._scores = steps.log_prob(cat_steps(self._values)).sum(-1).split(1, dim=-1)
        return self._scores[t]


class _JoinedNormal(dist.Independent):
    """``Normal(loc, scale).to_event(1)`` of one step, scored through its
    :class:`BatchedScores`."""

    def __init__(self, normal: dist.Normal, scores: BatchedScores, t: int) -> None:
        super().__init__(normal, 1)
        self._batched_scores = scores
        self._step = t

    def log_prob(self, value):
        joint = self._batched_scores.log_prob(self._step, value)
        return super().log_prob(value) if joint is None else joint

    def expand(self, batch_shape, _instance=None):
        # Pyro's plates expand every site's distribution, most often to the shape it has
        if torch.Size(batch_shape) == self.batch_shape:
            return self
        return dist.Independent(self.base_dist.expand(torch.Size(batch_shape) + self.event_shape),
                                1)
