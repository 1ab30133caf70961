r"""The single-sample reparameterised ELBO of a GTM written out in torch, without Pyro.

:func:`direct_elbo_terms` runs the *same* modules of a :class:`~pgtm.models.gtm.GTM` in the
same order as Pyro's ``Trace_ELBO`` runs ``gtm.guide`` and then ``gtm.model`` (with the guide's
deterministic path reused), with no trace, messengers, plates or site checks. One pass over
:math:`t = 0, \dots, T-1`:

.. math::

    (h_t, \Psi_{t-1}) &= \texttt{gtm.path\_step}(\cdot) \\
    z_t &= \texttt{gtm.posterior}([\Psi_{t-1}, h_t], e(x_t)).\mathrm{rsample}() \\
    \ell_t &= \log p(z_t \mid \Psi_{t-1}, h_t) - \log q(z_t \mid \Psi_{t-1}, h_t, x_t)

(one prior call and one decoder call for all steps), masked steps set to zero, and

.. math:: \mathcal{L} = -\sum_{b} \sum_t m_{bt}\,(\log p(x_{bt} \mid \cdot)
    + \beta\,\ell_{bt} - \mathrm{penalty}_{bt})

the negative ELBO summed over the batch with the KL-annealing factor :math:`\beta` on the
latent terms, as :class:`~pgtm.inference.guarded_step.LatentScale` weights Pyro's latent sites.
The random draws happen in the order of Pyro's sites (one ``rsample`` per step), so under the
same seed it equals ``Trace_ELBO(max_plate_nesting=2).differentiable_loss(gtm.model, gtm.guide,
x, c, mask)``, loss and gradients (``tests/test_direct_elbo.py``). It is the floor the training
step is benchmarked against (``benchmarks/floor.py``) and, compiled whole, the fused training
objective (:class:`~pgtm.inference.objective.CompiledObjective`). A memory that is itself a
latent variable (one whose hooks sample a site, e.g. the Kanerva memory) is not written out
here: :func:`unsupported` says so.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import torch

from pgtm.memories.base import Memory
from pgtm.models.batched_scores import BatchedScores
from pgtm.shapes import cat_steps
from pgtm.unrolled_linear import unrolling

__all__ = ["DirectTerms", "direct_elbo_loss", "direct_elbo_terms", "unsupported"]


class DirectTerms(NamedTuple):
    """The pieces of one pass, all masked: ``loss`` (0-d) and ``[B, T]`` terms (``penalty``
    zeros for a memory without one)."""

    loss: torch.Tensor
    log_p_x: torch.Tensor
    log_p_z: torch.Tensor
    log_q_z: torch.Tensor
    penalty: torch.Tensor


def unsupported(gtm) -> str | None:
    """Why the written-out ELBO does not compute ``gtm``'s objective, or ``None`` when it does."""
    memory = type(gtm.memory)
    if (memory.prior_initial_state is not Memory.prior_initial_state
            or memory.posterior_initial_state is not Memory.posterior_initial_state):
        return (f"the {memory.__name__} memory is a latent variable (its hooks sample a site), "
                "which the written-out ELBO leaves out")
    return None


def direct_elbo_terms(gtm, x, c=None, mask=None, *, beta: float | torch.Tensor = 1.0,
                      check_inputs: bool = False, unrolled: bool = True) -> DirectTerms:
    """Run the GTM's recurrence once and score it (see the module docstring).

    :param gtm: a :class:`~pgtm.models.gtm.GTM` (see :func:`unsupported`).
    :param x: frames ``[B, T, *frame_shape]``.
    :param c: context ``[B, T, action_size]`` or ``None``.
    :param mask: ``[B, T]`` bool or ``None`` (all steps present).
    :param beta: the KL-annealing factor of the latent terms (a float or a 0-d tensor).
    :param check_inputs: run ``gtm.check_inputs`` first (it contains a host synchronisation,
        ``torch.isfinite(x).all()``); off by default, as in a training step.
    :param unrolled: batch the recurrence's weight gradients over the steps, as the guide does
        (:func:`~pgtm.unrolled_linear.unrolling`); ``False``: autograd's per-step products, a
        loss that ``torch.compile`` traces as one graph (the tape is Python it cannot trace).
    """
    if check_inputs:
        x, c, mask = gtm.check_inputs(x, c, mask)
    batch, length = x.shape[:2]
    # one encoder call for all frames, split once (as in the guide: per-step slices would each
    # back-propagate a full [B, T, F] gradient)
    features = gtm.encoder(x).split(1, dim=1)  # T x [B, 1, F]
    state = gtm.initial_state((batch, 1), x.device, x.dtype)
    latents, contexts, posteriors, penalties = [], [], [], []
    scores = BatchedScores(length)  # every step's log q in one computation, as the guide's
    with unrolling() if unrolled else contextlib.nullcontext():
        for t in range(length):
            action = None if c is None else c[:, t : t + 1]
            step = gtm.path_step(state, action)
            posterior = scores.join(t, gtm.posterior(step.context, features[t]))
            z = posterior.rsample()  # [B, 1, Z]: the same draw as Pyro's guide site z_t
            scores.record(t, z)
            posteriors.append(posterior)
            if step.penalty is not None:
                penalties.append(step.penalty)
            state = gtm.next_state(step, z, features[t])
            latents.append(z)
            contexts.append(step.context)
    log_q_z = torch.cat([q.log_prob(z) for q, z in zip(posteriors, latents, strict=True)], -1)
    latents, contexts = cat_steps(latents), cat_steps(contexts)  # [B, T, Z], [B, T, C]
    log_p_z = gtm.prior(contexts).log_prob(latents)  # [B, T]
    log_p_x = gtm.likelihood(gtm.decoder(torch.cat([latents, contexts], dim=-1))).log_prob(x)
    penalty = torch.cat(penalties, dim=-1) if penalties else torch.zeros_like(log_p_z)
    if mask is not None:
        zero = log_p_x.new_zeros(())
        log_p_x = torch.where(mask, log_p_x, zero)
        log_p_z = torch.where(mask, log_p_z, zero)
        log_q_z = torch.where(mask, log_q_z, zero)
        penalty = torch.where(mask, penalty, zero)
    latent_terms = log_p_z.sum() - log_q_z.sum()
    if not (isinstance(beta, float | int) and beta == 1):
        latent_terms = beta * latent_terms
    loss = -(log_p_x.sum() + latent_terms - penalty.sum())
    return DirectTerms(loss, log_p_x, log_p_z, log_q_z, penalty)


def direct_elbo_loss(gtm, x, c=None, mask=None, **options) -> torch.Tensor:
    """The 0-d loss of :func:`direct_elbo_terms` (same arguments)."""
    return direct_elbo_terms(gtm, x, c, mask, **options).loss
