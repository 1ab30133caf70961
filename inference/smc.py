r"""Sequential Monte Carlo (particle filter) estimate of a GTM's log-evidence, per sequence.

With ``K`` particles per sequence, at every step :math:`t` each particle proposes
:math:`z_t \sim q(z_t \mid \Psi_{t-1}, h_t, x_t)` (the guide's proposal) from its own controller
and memory state, is reweighted by

.. math:: w_t = \frac{p(x_t \mid z_t, \Psi_{t-1})\, p(z_t \mid \Psi_{t-1}, h_t)}
                     {q(z_t \mid \Psi_{t-1}, h_t, x_t)},

and, when the effective sample size of the normalised weights :math:`\bar w` falls to
``ess_threshold * K`` or below, the particles are resampled (systematic or multinomial), each
particle's whole state (controller, memory, last read, last latent) gathered by its ancestor
index. The estimate

.. math:: \hat p(x) = \prod_t \sum_k \bar w^k_{t-1} w^k_t

is unbiased, so :math:`\log \hat p(x)` is a stochastic lower bound of :math:`\log p(x)` (Jensen)
that tightens as ``K`` grows (FIVO / AESMC / VSMC: Maddison et al. 2017, Le et al. 2018,
Naesseth et al. 2018). With ``ess_threshold = 0`` nothing is resampled and the estimate is the
IWAE of the same particles.

**A memory that is a latent variable** (the Kanerva memory): the memory hooks are run once,
inside plates ``sequences`` (dim -2) and ``particles`` (dim -1), so every particle draws its own
:math:`M \sim q(M \mid x)`; :math:`\log p(M) - \log q(M)` (from the model hook replayed on the
guide hook's values) is part of the first step's weight, and :math:`M` travels with its particle.

**Why not** :class:`pyro.infer.SMCFilter`: it keeps one particle axis for the whole problem (so a
batch of sequences would be resampled jointly, not per sequence), its state is a flat dict of
tensors (a GTM's state is nested named tuples), and it renormalises the weights at every step
without keeping the normaliser, so it gives no log-evidence.

Penalty factors of a memory (regularisers) are *not* part of the evidence, as in
:mod:`pgtm.inference.evaluate`; the FIVO training objective adds them (``include_penalty``).
The function is differentiable when called with gradients enabled: samples are
reparameterised, and the ancestor indices carry no gradient (the FIVO surrogate).
"""

from __future__ import annotations

import contextlib
import math
from typing import NamedTuple

import pyro
import pyro.poutine as poutine
import torch
from torch import Tensor

from pgtm.checks import integer, number, one_of
from pgtm.shapes import cat_features
from pgtm.unrolled_linear import unrolling

__all__ = ["RESAMPLING", "SMCResult", "smc", "systematic_ancestors", "multinomial_ancestors"]


class SMCResult(NamedTuple):
    """One particle filter over a batch of sequences (``B`` sequences, ``T`` steps).

    :ivar log_evidence: ``[B]`` :math:`\\log \\hat p(x)` per sequence.
    :ivar ess: ``[B, T]`` effective sample size of the weights after step ``t``'s reweighting
        (before any resampling), in ``[1, K]`` (a masked step leaves the weights unchanged).
    :ivar resampled: ``[B, T]`` bool, whether the particles were resampled after step ``t``.
    """

    log_evidence: Tensor
    ess: Tensor
    resampled: Tensor


def systematic_ancestors(log_weights: Tensor) -> Tensor:
    """Systematic resampling, one uniform per row.

    :param log_weights: ``[B, K]`` normalised log weights (``logsumexp`` over ``K`` is 0).
    :returns: ``[B, K]`` ancestor indices in ``[0, K)``, sorted within each row.
    """
    B, K = log_weights.shape
    cdf = log_weights.exp().cumsum(-1)
    cdf = cdf / cdf[:, -1:]  # exactly 1 at the end, whatever the rounding of the sum
    offsets = torch.rand(B, 1, device=cdf.device, dtype=cdf.dtype)
    positions = (offsets + torch.arange(K, device=cdf.device, dtype=cdf.dtype)) / K
    return torch.searchsorted(cdf, positions).clamp_(max=K - 1)


def multinomial_ancestors(log_weights: Tensor) -> Tensor:
    """Multinomial resampling: ``K`` independent draws per row from its weights.

    :param log_weights: ``[B, K]`` normalised log weights.
    :returns: ``[B, K]`` ancestor indices.
    """
    return torch.multinomial(log_weights.exp(), log_weights.shape[-1], replacement=True)


#: Resampling schemes by name.
RESAMPLING = {"systematic": systematic_ancestors, "multinomial": multinomial_ancestors}


def _map_tensors(fn, tree):
    """Apply ``fn`` to every tensor of a (nested) tuple / named tuple."""
    if torch.is_tensor(tree):
        return fn(tree)
    if isinstance(tree, tuple):
        mapped = [_map_tensors(fn, item) for item in tree]
        return type(tree)(*mapped) if hasattr(tree, "_fields") else tuple(mapped)
    return tree


def _expand_particles(tree, batch: tuple[int, int]):
    """Expand every state tensor's two leading dims (broadcastable to ``(B, K)``) to ``(B, K)``."""
    return _map_tensors(lambda t: t.expand(batch + t.shape[2:]), tree)


def _gather_particles(tree, ancestors: Tensor):
    """Particle ``k`` of sequence ``b`` takes the state of particle ``ancestors[b, k]``."""
    rows = torch.arange(ancestors.shape[0], device=ancestors.device).unsqueeze(-1)
    return _map_tensors(lambda t: t[rows, ancestors], tree)


@contextlib.contextmanager
def _particle_plates(num_sequences: int, num_particles: int):
    with pyro.plate("sequences", num_sequences, dim=-2), \
            pyro.plate("particles", num_particles, dim=-1):
        yield


def _start_memory(gtm, encoded: Tensor, mask: Tensor, num_particles: int):
    """Run the memory hooks with one draw per particle.

    :returns: ``(state, log_w)``: the guide hook's memory state ``[B, K, ...]`` and
        ``log p - log q`` of the sites it sampled, ``[B, K]`` (zeros for a deterministic memory).
    """
    B, batch = encoded.shape[0], (encoded.shape[0], num_particles)
    with poutine.trace() as guide_tracer, _particle_plates(*batch):
        state = gtm.memory.posterior_initial_state(encoded.unsqueeze(1), mask.unsqueeze(1))
    guide_trace = guide_tracer.trace
    latents = [
        name for name, site in guide_trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"]
    ]
    log_w = encoded.new_zeros(batch)
    if latents:
        with poutine.trace() as model_tracer, poutine.replay(trace=guide_trace), \
                _particle_plates(*batch):
            gtm.memory.prior_initial_state((B, 1), encoded.device, encoded.dtype)
        for name in latents:
            if name not in model_tracer.trace.nodes:
                raise ValueError(
                    f"the memory's guide hook samples {name!r} but its model hook does not"
                )
            model_site, guide_site = model_tracer.trace.nodes[name], guide_trace.nodes[name]
            log_w = log_w + (
                model_site["fn"].log_prob(model_site["value"])
                - guide_site["fn"].log_prob(guide_site["value"])
            ).expand(batch)
    return _expand_particles(state, batch), log_w


def smc(
    gtm,
    x: Tensor,
    c: Tensor | None = None,
    mask: Tensor | None = None,
    num_particles: int = 100,
    *,
    resampling: str = "systematic",
    ess_threshold: float = 0.5,
    latent_scale: float = 1.0,
    include_penalty: bool = False,
) -> SMCResult:
    """Run the particle filter on a batch of sequences (see the module docstring).

    Seed torch (``pyro.set_rng_seed``) beforehand for reproducible numbers; wrap the call in
    ``torch.no_grad()`` unless you need gradients.

    :param gtm: a :class:`~pgtm.models.GTM` (or a module with its parts and ``path_step``).
    :param x: frames ``[B, T, *frame_shape]``.
    :param c: context ``[B, T, action_size]`` or ``None``.
    :param mask: ``[B, T]`` bool, False past a sequence's end (such steps carry no weight and
        trigger no resampling), or ``None``.
    :param num_particles: ``K >= 1`` particles per sequence.
    :param resampling: ``"systematic"`` or ``"multinomial"``.
    :param ess_threshold: resample a sequence's particles when their ESS is ``<=
        ess_threshold * K``; in ``[0, 1]`` (0: never, 1: at every step).
    :param latent_scale: multiplies :math:`\\log p(z) - \\log q(z)` in every weight (the KL
        annealing of FIVO training); 1 for the evidence.
    :param include_penalty: subtract the memory's penalty from the weights (training).
    :returns: :class:`SMCResult` (``log_evidence [B]``, ``ess [B, T]``, ``resampled [B, T]``).
    :raises ValueError: on a bad ``num_particles``, ``resampling`` or ``ess_threshold`` or badly
        shaped inputs.
    """
    K = integer("num_particles", num_particles, 1)
    one_of("resampling", resampling, sorted(RESAMPLING))
    number("ess_threshold", ess_threshold, 0, 1)
    x, c, mask = gtm.check_inputs(x, c, mask)
    ancestors_of = RESAMPLING[resampling]
    B, T = x.shape[:2]
    batch = (B, K)
    encoded = gtm.encoder(x)  # [B, T, F]
    memory_state, increment = _start_memory(gtm, encoded, mask, K)
    state = gtm.initial_state(batch, x.device, x.dtype, memory_state)
    log_weights = encoded.new_full(batch, -math.log(K))  # normalised
    log_evidence = encoded.new_zeros(B)
    ess = encoded.new_full((B, T), float(K))
    resampled = torch.zeros(B, T, dtype=torch.bool, device=x.device)
    keep = torch.arange(K, device=x.device).expand(batch)
    with unrolling():
        for t in range(T):
            action = None if c is None else c[:, t : t + 1]
            step = gtm.path_step(state, action)
            proposal = gtm.posterior(step.context, encoded[:, t : t + 1].expand(B, K, -1))
            z = proposal.rsample() if proposal.has_rsample else proposal.sample()
            log_latent = gtm.prior(step.context).log_prob(z) - proposal.log_prob(z)
            frames = gtm.likelihood(gtm.decoder(cat_features(z, step.context)))
            increment = increment + frames.log_prob(x[:, t : t + 1]) + latent_scale * log_latent
            if include_penalty and step.penalty is not None:
                increment = increment - step.penalty
            observed = mask[:, t]
            increment = torch.where(observed.unsqueeze(-1), increment, torch.zeros_like(increment))
            unnormalised = log_weights + increment
            log_norm = unnormalised.logsumexp(-1)  # log sum_k wbar_{t-1} w_t
            log_evidence = log_evidence + log_norm
            # a sequence whose every particle has weight 0 keeps log_evidence = -inf; its weights
            # restart uniform so that nothing downstream divides by zero
            finite = torch.isfinite(log_norm).unsqueeze(-1)
            log_weights = torch.where(finite, unnormalised - log_norm.unsqueeze(-1),
                                      torch.full_like(unnormalised, -math.log(K)))
            ess[:, t] = (-(2 * log_weights).logsumexp(-1)).exp().detach()
            state = gtm.next_state(step, z, encoded[:, t : t + 1].expand(B, K, -1))
            resample = observed & (ess[:, t] <= ess_threshold * K)
            if bool(resample.any()):
                ancestors = torch.where(
                    resample.unsqueeze(-1), ancestors_of(log_weights.detach()), keep
                )
                state = _gather_particles(state, ancestors)
                log_weights = torch.where(resample.unsqueeze(-1),
                                          torch.full_like(log_weights, -math.log(K)), log_weights)
                resampled[:, t] = resample
            increment = 0.0
    return SMCResult(log_evidence, ess, resampled)
