r"""A hand-written PyTorch ELBO for a :class:`~pgtm.models.gtm.GTM`, without Pyro: the floor.

:func:`floor_loss` runs the *same* modules of a GTM built by :func:`pgtm.models.build_gtm` in
the same order as Pyro's ``Trace_ELBO`` runs ``gtm.guide`` and then ``gtm.model`` (with the
guide's deterministic path reused), but with no Pyro machinery at all: no trace, no messengers,
no plates, no ``pyro.module`` registration, no per-site shape checks. It is the speed floor
that the Pyro step is benchmarked against (``benchmarks/bench_step.py``).

One pass over ``t = 0, ..., T-1``:

.. math::

    (h_t, \Psi_{t-1}) &= \texttt{gtm.path\_step}(\cdot) \\
    z_t &= \texttt{gtm.posterior}([\Psi_{t-1}, h_t], e(x_t)).\mathrm{rsample}() \\
    \ell_t &= - \log q(z_t \mid \Psi_{t-1}, h_t, x_t) - \mathrm{penalty}_t

then one prior call and one decoder call for all steps, :math:`\log p(z_t \mid \Psi_{t-1},
h_t)` and :math:`\log p(x_t \mid z_t, \Psi_{t-1})` from ``gtm.prior`` and ``gtm.likelihood``,
masked steps set to zero, and

.. math:: \mathcal{L} = -\sum_{b} \sum_t m_{bt}\,(\log p(x_{bt} \mid \cdot) + \ell_{bt})

the single-sample reparameterised negative ELBO summed over the batch, exactly what
``Trace_ELBO(max_plate_nesting=2).differentiable_loss(gtm.model, gtm.guide, x, c, mask)``
returns. The random draws happen in the same order (one ``rsample`` per step, in site order),
so under the same seed both give the same number.
"""

from __future__ import annotations

import contextlib

import torch

from pgtm.models.batched_scores import BatchedScores
from pgtm.shapes import cat_steps
from pgtm.unrolled_linear import unrolling

__all__ = ["FloorTerms", "floor_loss", "floor_terms", "floor_step"]


class FloorTerms(dict):
    """The pieces of one floor pass (a plain dict with attribute names for readability).

    Keys: ``loss`` (scalar), ``log_p_x [B, T]``, ``log_p_z [B, T]``, ``log_q_z [B, T]``,
    ``penalty [B, T]`` (zeros when the memory has no penalty), all masked.
    """

    __getattr__ = dict.__getitem__


def floor_terms(gtm, x, c=None, mask=None, *, check_inputs: bool = False,
                unrolled: bool = True) -> FloorTerms:
    """Run the GTM's recurrence once and score it by hand (see the module docstring).

    :param gtm: a :class:`~pgtm.models.gtm.GTM`.
    :param x: frames ``[B, T, *frame_shape]``.
    :param c: context ``[B, T, action_size]`` or ``None``.
    :param mask: ``[B, T]`` bool or ``None`` (all steps present).
    :param check_inputs: run ``gtm.check_inputs`` first (it contains a host synchronisation,
        ``torch.isfinite(x).all()``); off by default, since a hand-written loop would not.
    :param unrolled: batch the recurrence's weight gradients over the steps, as the guide does
        (:func:`~pgtm.unrolled_linear.unrolling`); ``False``: autograd's per-step products, a
        loss that ``torch.compile`` traces as one graph (the tape is Python it cannot trace).
    :returns: :class:`FloorTerms` with the scalar negative ELBO under ``"loss"``.
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
    loss = -(log_p_x.sum() + log_p_z.sum() - log_q_z.sum() - penalty.sum())
    return FloorTerms(
        loss=loss, log_p_x=log_p_x, log_p_z=log_p_z, log_q_z=log_q_z, penalty=penalty
    )


def floor_loss(gtm, x, c=None, mask=None, *, check_inputs: bool = False,
               unrolled: bool = True) -> torch.Tensor:
    """The single-sample reparameterised negative ELBO (a differentiable scalar, summed over
    the batch), equal to Pyro's ``Trace_ELBO(max_plate_nesting=2).differentiable_loss`` of
    ``gtm.model``/``gtm.guide`` under the same random draws.

    :param gtm: a :class:`~pgtm.models.gtm.GTM`.
    :param x: frames ``[B, T, *frame_shape]``.
    :param c: context ``[B, T, action_size]`` or ``None``.
    :param mask: ``[B, T]`` bool or ``None``.
    :param check_inputs: also run ``gtm.check_inputs`` (see :func:`floor_terms`).
    :param unrolled: see :func:`floor_terms`.
    :returns: 0-d tensor.
    """
    return floor_terms(gtm, x, c, mask, check_inputs=check_inputs, unrolled=unrolled)["loss"]


def floor_step(gtm, optimizer, x, c=None, mask=None, *, check_inputs: bool = False) -> float:
    """One optimisation step on the floor loss, mirroring ``pyro.infer.SVI.step``: loss,
    backward, optimiser step, gradients cleared, loss returned as a Python float (a host
    synchronisation, as in Pyro).

    :param optimizer: a ``torch.optim.Optimizer`` over ``gtm.parameters()`` (e.g.
        :class:`pyro.optim.clipped_adam.ClippedAdam`, the optimiser Pyro's ``ClippedAdam``
        wraps).
    :returns: the loss.
    """
    loss = floor_loss(gtm, x, c, mask, check_inputs=check_inputs)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()
