"""The importance estimator of sequence models: one vectorised pass of ``K`` particles through
a Pyro model/guide pair, returning per-particle, per-sequence, per-step log densities.

Generic over any pair that follows ``docs/CONVENTIONS.md``:

- ``model(x, c=None, mask=None)`` / ``guide(x, c=None, mask=None)``;
- plates ``"sequences"`` (dim -2) and ``"time"`` (dim -1), so a vectorised particle plate is put
  at dim -3 (``max_plate_nesting == 3`` as far as this module is concerned);
- latent sites ``z_{t}`` with batch shape ``[*particles, B, 1]``;
- the observation site ``"x"`` with batch shape ``[*particles, B, T]``;
- ``pyro.factor`` sites whose names start with ``penalty`` are regularisers: they are returned
  separately and are *excluded* from the weights;
- latent sites without a time index (e.g. the Kanerva memory's ``"memory"``, one per sequence)
  are part of the weights; their KL is returned separately (``kl_global``);
- masking is done by the model/guide themselves (``poutine.mask``), so the log probabilities
  returned by ``trace.compute_log_prob()`` are already masked.

:func:`log_weights` is the pass (:class:`LogWeights`); :func:`importance_traces` and
:func:`log_weights_of_traces` are its two halves (the traces, then their densities), used where
the samples themselves are wanted (:mod:`pgtm.inference.outliers`). The report over many
particles is :func:`pgtm.inference.evaluate.evaluate`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NamedTuple

import pyro
import pyro.poutine as poutine
import torch
from torch import Tensor

from pgtm.checks import integer

__all__ = [
    "MAX_CHUNK_NUMBERS",
    "PARTICLE_DIM",
    "LogWeights",
    "check_inputs",
    "check_positive_int",
    "importance_traces",
    "log_weights",
    "log_weights_of_traces",
    "particle_chunk",
    "time_index",
]

#: Dimension of the vectorised particle plate (the model uses dims -2 and -1).
PARTICLE_DIM = -3
_OBS_SITE = "x"
_PENALTY_PREFIX = "penalty"
_TIME_INDEX_RE = re.compile(r"_(\d+)$")


class LogWeights(NamedTuple):
    """Per-particle log densities of one vectorised importance-sampling pass.

    All tensors are float, on the device of the model's outputs; ``K`` particles, ``B``
    sequences, ``T`` steps. Masked steps are zero (the model/guide mask them).

    :ivar log_w: ``[K, B]`` log importance weight of each particle and sequence,
        ``sum_t (log_p_x + log_p_z - log_q_z) + log_extra``; penalties excluded.
    :ivar log_p_x: ``[K, B, T]`` observation log-likelihood ``log p(x_t | ...)`` per step.
    :ivar log_p_z: ``[K, B, T]`` model (prior) log density of the latents of step ``t``
        (all latent sites whose name ends in ``_t``).
    :ivar log_q_z: ``[K, B, T]`` guide log density of the latents of step ``t``.
    :ivar penalty: ``[K, B]`` sum of the ``penalty*`` factor sites (as added to the model's log
        joint, i.e. usually ``<= 0``); *not* part of ``log_w``.
    :ivar log_extra: ``[K, B]`` log p - log q of sites without a time index (latents without a
        ``_t`` suffix, observed sites other than ``"x"``); zero for models without such sites.
        Part of ``log_w``.
    :ivar kl_global: ``[K, B]`` log q - log p of the latent sites without a time index that the
        guide samples (e.g. the Kanerva memory ``"memory"``): the one-sample KL estimate of the
        sequence-level latents, the latent part of ``-log_extra``.
    """

    log_w: Tensor
    log_p_x: Tensor
    log_p_z: Tensor
    log_q_z: Tensor
    penalty: Tensor
    log_extra: Tensor
    kl_global: Tensor


def time_index(site_name: str) -> int | None:
    """Time index of a site: the (non-negative) integer after the last ``_`` of its name.

    :param site_name: e.g. ``"z_12"``.
    :returns: e.g. ``12``; ``None`` when the name has no ``_<digits>`` suffix (``"x"``,
        ``"z_a"``, ``"z_"``).
    """
    match = _TIME_INDEX_RE.search(site_name)
    return int(match.group(1)) if match else None


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------


def check_positive_int(value: Any, name: str) -> int:
    """``value`` as an ``int`` if it is an integer >= 1 (:func:`pgtm.checks.integer`)."""
    return integer(name, value, 1)


def check_inputs(
    x: Tensor, c: Tensor | None, mask: Tensor | None, recall: Tensor | None = None
) -> tuple[int, int]:
    """Validate the batch tensors; return ``(B, T)``."""
    if not isinstance(x, Tensor):
        raise ValueError(f"x must be a torch.Tensor of shape [B, T, *frame_shape], got {type(x)}")
    if x.dim() < 2:
        raise ValueError(
            f"x must have shape [B, T, *frame_shape] (at least 2 dims), got {tuple(x.shape)}"
        )
    B, T = int(x.shape[0]), int(x.shape[1])
    if B < 1 or T < 1:
        raise ValueError(f"x must have B >= 1 sequences and T >= 1 steps, got {tuple(x.shape)}")
    if c is not None:
        if not isinstance(c, Tensor) or c.dim() < 2 or tuple(c.shape[:2]) != (B, T):
            shape = tuple(c.shape) if isinstance(c, Tensor) else type(c)
            raise ValueError(f"c must have shape [B, T, ...] = [{B}, {T}, ...], got {shape}")
    for name, m in (("mask", mask), ("recall", recall)):
        if m is None:
            continue
        if not isinstance(m, Tensor) or tuple(m.shape) != (B, T):
            shape = tuple(m.shape) if isinstance(m, Tensor) else type(m)
            raise ValueError(
                f"{name} must be a bool tensor of shape [B, T] = [{B}, {T}], got {shape}"
            )
        if m.dtype != torch.bool:
            raise ValueError(f"{name} must have dtype torch.bool, got {m.dtype}")
    return B, T


# --------------------------------------------------------------------------------------------
# one vectorised pass
# --------------------------------------------------------------------------------------------


def _vectorise(fn: Callable, num_particles: int) -> Callable:
    def wrapped(*args, **kwargs):
        with pyro.plate("particles", num_particles, dim=PARTICLE_DIM):
            return fn(*args, **kwargs)

    return wrapped


def _as_k_b_t(log_prob: Tensor, K: int, B: int, name: str) -> Tensor:
    """Bring a site's log prob (batch shape broadcastable to ``[K, B, T']``) to ``[K, B, T']``.

    A site without a sequence dimension (size 1 while ``B > 1``) is shared by the whole batch;
    its value is spread evenly over the sequences (divided by ``B``) so that sums over the
    batch are unchanged.
    """
    lp = log_prob
    if lp.dim() > 3:
        raise ValueError(
            f"site {name!r} has log_prob shape {tuple(lp.shape)}: more than 3 batch dims "
            "(particles, sequences, time); the conventions allow max_plate_nesting=2"
        )
    while lp.dim() < 3:
        lp = lp.unsqueeze(0)
    if lp.shape[0] not in (1, K) or lp.shape[1] not in (1, B):
        raise ValueError(
            f"site {name!r} has log_prob shape {tuple(log_prob.shape)}, not broadcastable to "
            f"[K, B, *] = [{K}, {B}, *]"
        )
    if lp.shape[1] == 1 and B > 1:
        lp = lp / B
    return lp.expand(K, B, lp.shape[2])


def log_weights(
    model: Callable,
    guide: Callable,
    x: Tensor,
    c: Tensor | None = None,
    mask: Tensor | None = None,
    num_particles: int = 1,
) -> LogWeights:
    """One vectorised importance-sampling pass with ``K = num_particles`` particles.

    The guide is run under ``pyro.plate("particles", K, dim=-3)``, the model is replayed on the
    guide trace under the same plate, and the log densities of all sites are split by kind:
    observation ``"x"`` (per step), latents ``z_t`` (by their time index, see
    :func:`time_index`), ``penalty*`` factors (reported, not in the bound), and anything else
    (``log_extra``, in the bound).

    Model latent sites that the guide does not sample are drawn from the model's prior; their
    proposal equals their prior so they cancel in the importance weight and are left out.

    :param model: Pyro model ``model(x, c=None, mask=None)``.
    :param guide: Pyro guide with the same signature.
    :param x: frames ``[B, T, *frame_shape]``.
    :param c: optional context ``[B, T, A]``.
    :param mask: optional bool ``[B, T]``, True where the step exists.
    :param num_particles: ``K >= 1``.
    :returns: :class:`LogWeights` (``log_w [K, B]``, ``log_p_x/log_p_z/log_q_z [K, B, T]``,
        ``penalty [K, B]``, ``log_extra [K, B]``, ``kl_global [K, B]``).
    :raises ValueError: on ``num_particles < 1``, a badly shaped ``x``/``c``/``mask``, or a model
        without an ``"x"`` site or with sites whose shapes break the conventions.
    """
    guide_trace, model_trace = importance_traces(model, guide, x, c, mask, num_particles)
    B, T = x.shape[:2]  # checked by importance_traces
    return log_weights_of_traces(guide_trace, model_trace, int(num_particles), B, T)


def importance_traces(
    model: Callable,
    guide: Callable,
    x: Tensor,
    c: Tensor | None = None,
    mask: Tensor | None = None,
    num_particles: int = 1,
) -> tuple[poutine.Trace, poutine.Trace]:
    """The pass behind :func:`log_weights`: the guide's trace under
    ``pyro.plate("particles", K, dim=-3)`` and the model's trace replayed on it, both with their
    log probabilities computed. Arguments as for :func:`log_weights`."""
    K = check_positive_int(num_particles, "num_particles")
    check_inputs(x, c, mask)
    try:
        guide_trace = poutine.trace(_vectorise(guide, K)).get_trace(x, c=c, mask=mask)
        model_trace = poutine.trace(
            poutine.replay(_vectorise(model, K), trace=guide_trace)
        ).get_trace(x, c=c, mask=mask)
    except ValueError as e:
        # Pyro appends the trace's shapes to an error raised inside the program (e.g. the
        # GTM's input checks); the first line is the message
        raise ValueError(str(e).splitlines()[0]) from e
    guide_trace.compute_log_prob()
    model_trace.compute_log_prob()
    return guide_trace, model_trace


def log_weights_of_traces(
    guide_trace: poutine.Trace, model_trace: poutine.Trace, K: int, B: int, T: int
) -> LogWeights:
    """:class:`LogWeights` of a pair from :func:`importance_traces` (``K`` particles, ``B``
    sequences, ``T`` steps)."""
    if _OBS_SITE not in model_trace.nodes:
        raise ValueError(f"model has no observation site {_OBS_SITE!r} (see CONVENTIONS.md)")
    observed = model_trace.nodes[_OBS_SITE]["log_prob"]
    zeros_kbt = observed.new_zeros((K, B, T), dtype=torch.get_default_dtype())
    log_p_x = None
    log_p_z = zeros_kbt.clone()
    log_q_z = zeros_kbt.clone()
    penalty = zeros_kbt.new_zeros((K, B))
    log_extra = zeros_kbt.new_zeros((K, B))
    kl_global = zeros_kbt.new_zeros((K, B))

    def add_timed(target: Tensor, name: str, lp: Tensor) -> tuple[Tensor, Tensor | None]:
        """Add ``lp [K, B, T']`` to column ``t`` of ``target``; no time index: return it summed."""
        t = time_index(name)
        if t is None:
            return target, lp.sum(-1)
        if t >= T:
            raise ValueError(f"site {name!r} has time index {t} but x has only T={T} steps")
        target = target.to(torch.promote_types(target.dtype, lp.dtype)).clone()
        target[:, :, t] += lp.sum(-1)
        return target, None

    guide_latents = set()
    for name, site in guide_trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"]:
            continue
        if type(site["fn"]).__name__ == "_Subsample":
            continue
        guide_latents.add(name)
        lp = _as_k_b_t(site["log_prob"], K, B, name)
        log_q_z, extra = add_timed(log_q_z, name, lp)
        if extra is not None:
            log_extra = log_extra - extra
            kl_global = kl_global + extra

    for name, site in model_trace.nodes.items():
        if site["type"] != "sample" or type(site["fn"]).__name__ == "_Subsample":
            continue
        lp = _as_k_b_t(site["log_prob"], K, B, name)
        if name.startswith(_PENALTY_PREFIX):
            penalty = penalty + lp.sum(-1)
        elif name == _OBS_SITE:
            raw = site["log_prob"]
            if raw.dim() < 2 or raw.shape[-2] != B or raw.shape[-1] not in (1, T) or (
                raw.shape[-1] == 1 and T != 1
            ):
                raise ValueError(
                    f"observation site 'x' must have batch shape [K, B, T] = [{K}, {B}, {T}], "
                    f"got log_prob shape {tuple(raw.shape)}"
                )
            log_p_x = lp.expand(K, B, T)
        elif site["is_observed"]:
            log_extra = log_extra + lp.sum(-1)
        elif name in guide_latents:
            log_p_z, extra = add_timed(log_p_z, name, lp)
            if extra is not None:
                log_extra = log_extra + extra
                kl_global = kl_global - extra
        # else: a model latent the guide does not sample: proposal == prior, cancels.

    log_w = (log_p_x + log_p_z - log_q_z).sum(-1) + log_extra
    return LogWeights(
        log_w=log_w,
        log_p_x=log_p_x,
        log_p_z=log_p_z,
        log_q_z=log_q_z,
        penalty=penalty,
        log_extra=log_extra,
        kl_global=kl_global,
    )


# --------------------------------------------------------------------------------------------
# chunked evaluation
# --------------------------------------------------------------------------------------------

#: the most numbers a vectorised pass's frame-sized tensor ``[C, B, T, *frame]`` may hold (2^26
#: float32, 256 MiB): the likelihood of a pass holds several such tensors at once
MAX_CHUNK_NUMBERS = 2**26


def particle_chunk(chunk_size: int, x: Tensor) -> int:
    """Particles per vectorised pass over frames ``x [B, T, *frame]``: ``chunk_size``, or fewer
    where ``chunk_size`` copies of ``x`` would exceed :data:`MAX_CHUNK_NUMBERS` (at 50 particles
    the rotating room's 64 x 30 RGB frames of 3x32x32 took 23 GB), at least one."""
    return max(1, min(chunk_size, MAX_CHUNK_NUMBERS // x.numel()))
