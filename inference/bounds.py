r"""Log-likelihood bounds of a GTM at several particle counts ``K``: ELBO, IWAE and SMC, per
sequence and per frame.

- **IWAE at every K from one pass.** One :func:`~pgtm.inference.evaluate.evaluate` pass with
  :math:`K_{max}` particles gives :math:`K_{max}` log weights per sequence; the IWAE at ``K`` is
  the mean of :math:`\lfloor K_{max}/K \rfloor` IWAEs of disjoint groups of ``K`` of them (an
  unbiased estimate of :math:`E[\mathrm{IWAE}_K]` with less spread than one group). The ELBO is
  the mean log weight.
- **SMC at every K**: the mean of :math:`\lfloor K_{max}/K \rfloor` independent
  :func:`~pgtm.inference.smc.smc` runs with ``K`` particles (the same spread-reducing average,
  at the same cost of :math:`K_{max}` particles per ``K``; particles interact through
  resampling, so they cannot be shared between values of ``K``), chunked over sequences so
  that at most ``max_batch`` (sequence, particle) pairs are in flight.

*Per frame* divides a sequence's bound by its number of observed (unmasked) steps; the batch's
``per_frame_mean`` is the sum of the bounds over the sum of observed steps (nats per frame).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from torch import Tensor

from pgtm.checks import integer
from pgtm.inference.evaluate import check_positive_int, evaluate
from pgtm.inference.smc import RESAMPLING, smc

__all__ = ["BOUNDS", "check_particles", "iwae_of_groups", "bound_sweep"]

#: Allowed values of ``bound``.
BOUNDS = ("iwae", "smc", "both")


def check_particles(particles) -> list[int]:
    """The particle counts as a sorted list of distinct integers >= 1 (``ValueError`` else)."""
    values = [particles] if isinstance(particles, numbers.Integral) else list(particles)
    if not values:
        raise ValueError(f"particles must be integers >= 1, got {particles!r}")
    return sorted({integer("particles", k, 1) for k in values})


def iwae_of_groups(log_w: Tensor, num_particles: int) -> Tensor:
    """Mean IWAE of the disjoint groups of ``num_particles`` log weights.

    :param log_w: ``[K_max, B]`` log importance weights.
    :param num_particles: ``K <= K_max``.
    :returns: ``[B]``, the mean over the ``K_max // K`` groups of ``logsumexp - log K``.
    """
    groups = log_w.shape[0] // num_particles
    if groups < 1:
        raise ValueError(f"num_particles={num_particles} exceeds the {log_w.shape[0]} weights")
    grouped = log_w[: groups * num_particles].reshape(groups, num_particles, -1)
    return (grouped.logsumexp(1) - math.log(num_particles)).mean(0)


def _summary(per_sequence: Tensor, observed_steps: Tensor) -> dict[str, Any]:
    per_sequence = per_sequence.detach().to("cpu", torch.float64)
    return {
        "per_sequence": per_sequence.tolist(),
        "per_frame": (per_sequence / observed_steps).tolist(),
        "mean": float(per_sequence.mean()),
        "per_frame_mean": float(per_sequence.sum() / observed_steps.sum()),
    }


@torch.no_grad()
def bound_sweep(
    gtm,
    x: Tensor,
    c: Tensor | None = None,
    mask: Tensor | None = None,
    recall: Tensor | None = None,
    *,
    particles=(1, 10, 100, 1000),
    bound: str = "both",
    chunk_size: int = 100,
    resampling: str = "systematic",
    ess_threshold: float = 0.5,
    max_batch: int = 16384,
) -> dict[str, Any]:
    """ELBO / IWAE / SMC of one batch at every ``K`` of ``particles``.

    Seed torch (``pyro.set_rng_seed``) beforehand for reproducible numbers.

    :param gtm: a :class:`~pgtm.models.GTM`.
    :param x: frames ``[B, T, *frame_shape]``; ``c``, ``mask``, ``recall`` as for
        :func:`~pgtm.inference.evaluate.evaluate`.
    :param particles: particle counts, e.g. ``(1, 10, 100, 1000)``.
    :param bound: ``"iwae"``, ``"smc"`` or ``"both"``.
    :param chunk_size: particles per vectorised IWAE pass.
    :param resampling: SMC resampling scheme (``"systematic"`` or ``"multinomial"``).
    :param ess_threshold: SMC resamples at ESS ``<= ess_threshold * K``, in [0, 1].
    :param max_batch: at most this many (sequence, particle) pairs per SMC pass.
    :returns: ``{"particles", "bound", "resampling", "ess_threshold", "num_sequences",
        "observed_steps" [B], "elbo", "iwae": {K: ...}, "smc": {K: ...}, "evaluation"}``:
        each bound entry holds ``per_sequence [B]``, ``per_frame [B]``, ``mean`` and
        ``per_frame_mean``; an SMC entry also ``ess [T]`` (mean ESS after each step's
        reweighting, over the sequences that have the step) and ``resampling_rate`` (fraction
        of observed steps after which the particles were resampled). ``"elbo"``, ``"iwae"`` and
        ``"evaluation"`` (the full :func:`~pgtm.inference.evaluate.evaluate` report at
        :math:`K_{max}`: per-step KL, PSIS k-hat, ...) are present when ``bound`` includes
        the IWAE.
    :raises ValueError: naming the bad argument.
    """
    ks = check_particles(particles)
    if bound not in BOUNDS:
        raise ValueError(f"bound must be one of {BOUNDS}, got {bound!r}")
    if resampling not in RESAMPLING:
        raise ValueError(f"resampling must be one of {sorted(RESAMPLING)}, got {resampling!r}")
    check_positive_int(max_batch, "max_batch")
    x, c, mask = gtm.check_inputs(x, c, mask)
    B, T = x.shape[:2]
    observed_steps = mask.sum(1).to("cpu", torch.float64)
    results: dict[str, Any] = {
        "particles": ks,
        "bound": bound,
        "resampling": resampling,
        "ess_threshold": float(ess_threshold),
        "num_sequences": B,
        "observed_steps": observed_steps.tolist(),
    }
    if bound in ("iwae", "both"):
        report = evaluate(gtm.model, gtm.guide, x, c, mask, recall, num_particles=ks[-1],
                          chunk_size=min(chunk_size, ks[-1]), keep_tensors=True)
        log_w = report.pop("log_w")
        results["elbo"] = _summary(log_w.mean(0), observed_steps)
        results["iwae"] = {
            str(k): _summary(iwae_of_groups(log_w, k), observed_steps) for k in ks
        }
        results["evaluation"] = report
    if bound in ("smc", "both"):
        results["smc"] = {}
        for k in ks:
            repeats = ks[-1] // k
            xs, cs, masks = (None if v is None else v.repeat((repeats,) + (1,) * (v.dim() - 1))
                             for v in (x, c, mask))
            per_pass = max(1, max_batch // k)
            runs = [
                smc(gtm, xs[i : i + per_pass], None if cs is None else cs[i : i + per_pass],
                    masks[i : i + per_pass], k, resampling=resampling,
                    ess_threshold=ess_threshold)
                for i in range(0, repeats * B, per_pass)
            ]
            log_evidence = torch.cat([r.log_evidence for r in runs]).reshape(repeats, B).mean(0)
            ess = torch.cat([r.ess for r in runs]).to("cpu", torch.float64)
            resampled = torch.cat([r.resampled for r in runs]).to("cpu")
            valid = masks.to("cpu")
            counts = valid.sum(0).clamp(min=1)
            entry = _summary(log_evidence, observed_steps)
            entry["ess"] = ((ess * valid).sum(0) / counts).tolist()
            entry["resampling_rate"] = float(resampled.sum() / valid.sum())
            results["smc"][str(k)] = entry
    return results
