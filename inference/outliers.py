r"""The samples behind a low ELBO.

The ELBO of a sequence, :math:`\frac1K \sum_k \log w_k`, is a mean over posterior samples, so a
single sample whose latent lies many prior standard deviations from the prior's location (a
prior that is confident and wrong) can carry almost all of it, while the IWAE bound,
:math:`\log \frac1K \sum_k w_k`, is left unaffected. :func:`elbo_outliers` finds, for the
sequences with the lowest ELBO, the sample with the lowest log weight and the steps where its
:math:`\log q - \log p` is largest, and reports there the latent dimension farthest from the prior
location, with both distributions' location and scale.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from pgtm.inference.importance import (
    check_inputs,
    check_positive_int,
    importance_traces,
    log_weights_of_traces,
    particle_chunk,
    time_index,
)

__all__ = ["elbo_outliers"]


def _location_scale(fn) -> tuple[Tensor | None, Tensor | None]:
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return getattr(fn, "loc", None), getattr(fn, "scale", None)


def _per_sequence(tensor: Tensor | None, shape: torch.Size, particle: Tensor) -> Tensor | None:
    """``tensor`` broadcast to a site's value shape ``[K, B, ...]``, at ``particle [B]``:
    ``[B, D]`` (the latent flattened)."""
    if tensor is None:
        return None
    full = torch.broadcast_to(tensor, shape)
    return full[particle, torch.arange(shape[1], device=full.device)].reshape(shape[1], -1)


def _step_latents(guide_trace, model_trace, particle: Tensor, T: int) -> dict[int, dict]:
    """Per step ``t``: the latent of the guide's site ``*_t`` at ``particle`` and the location and
    scale of posterior and prior there, each ``[B, D]`` (several sites of one step: the first)."""
    steps: dict[int, dict] = {}
    for name, site in guide_trace.nodes.items():
        t = time_index(name)
        if site["type"] != "sample" or site["is_observed"] or t is None or t >= T or t in steps:
            continue
        shape = site["value"].shape
        if len(shape) < 2:
            continue
        q_loc, q_scale = _location_scale(site["fn"])
        p_loc, p_scale = _location_scale(model_trace.nodes[name]["fn"])
        steps[t] = {
            key: _per_sequence(value, shape, particle)
            for key, value in (("z", site["value"]), ("posterior_loc", q_loc),
                               ("posterior_scale", q_scale), ("prior_loc", p_loc),
                               ("prior_scale", p_scale))
        }
    return steps


def elbo_outliers(
    model: Callable,
    guide: Callable,
    x: Tensor,
    c: Tensor | None = None,
    mask: Tensor | None = None,
    num_particles: int = 100,
    chunk_size: int = 100,
    num_sequences: int = 2,
    num_steps: int = 3,
) -> list[dict]:
    """The samples behind the lowest per-sequence ELBOs of ``model``/``guide`` on ``x``.

    Particles are drawn in chunks of ``chunk_size`` as :func:`~pgtm.inference.evaluate.evaluate`
    draws them, so with the same Pyro seed (``pyro.set_rng_seed``) and chunk size these are the
    very samples whose mean it reported. Runs under ``torch.no_grad()``.

    :param x: frames ``[B, T, *frame_shape]``; ``c``, ``mask`` as for ``evaluate``.
    :param num_particles: ``K``, as in the evaluation to explain.
    :param chunk_size: particles per vectorised pass, as in the evaluation to explain.
    :param num_sequences: how many of the lowest-ELBO sequences to report.
    :param num_steps: how many steps of each sample to report (largest ``log q - log p`` first).
    :returns: one dict per sequence, lowest ELBO first: ``sequence``, ``elbo`` (mean log weight),
        ``particle`` (its lowest-weight sample, ``0..K-1``), ``log_w`` (that sample's log weight)
        and ``steps``, a list of dicts with ``step``, ``kl`` (that sample's ``log q - log p`` of
        the step), ``dimension`` (of the latent, the farthest from the prior location in prior
        scales; ``None`` for distributions without ``loc``/``scale``), ``prior_z_score``
        (``|z - prior_loc| / prior_scale`` there) and ``z``, ``posterior_loc``,
        ``posterior_scale``, ``prior_loc``, ``prior_scale`` in that dimension.
    :raises ValueError: on a count below 1 or badly shaped inputs.
    """
    K = check_positive_int(num_particles, "num_particles")
    C = check_positive_int(chunk_size, "chunk_size")
    check_positive_int(num_sequences, "num_sequences")
    check_positive_int(num_steps, "num_steps")
    B, T = check_inputs(x, c, mask)
    C = particle_chunk(C, x)
    f64 = torch.float64
    log_w_sum = torch.zeros(B, dtype=f64)
    worst_log_w = torch.full((B,), float("inf"), dtype=f64)
    worst_particle = torch.zeros(B, dtype=torch.long)
    worst_kl = torch.zeros(B, T, dtype=f64)
    worst_steps: dict[int, dict] = {}
    done = 0
    with torch.no_grad():
        while done < K:
            k = min(C, K - done)
            guide_trace, model_trace = importance_traces(model, guide, x, c, mask, k)
            weights = log_weights_of_traces(guide_trace, model_trace, k, B, T)
            log_w = weights.log_w.to("cpu", f64)
            log_w_sum += log_w.sum(0)
            chunk_min, chunk_particle = log_w.min(0)
            better = chunk_min < worst_log_w
            kl = (weights.log_q_z - weights.log_p_z).to("cpu", f64)
            steps = _step_latents(guide_trace, model_trace, chunk_particle.to(x.device), T)
            worst_log_w = torch.where(better, chunk_min, worst_log_w)
            worst_particle = torch.where(better, chunk_particle + done, worst_particle)
            worst_kl[better] = kl[chunk_particle, torch.arange(B)][better]
            for t, values in steps.items():
                kept = worst_steps.setdefault(t, {key: None for key in values})
                for key, value in values.items():
                    if value is None:
                        continue
                    value = value.to("cpu", f64)
                    kept[key] = value if kept[key] is None else torch.where(
                        better.unsqueeze(-1), value, kept[key])
            done += k
    elbo = log_w_sum / K
    report = []
    for b in torch.argsort(elbo)[:num_sequences].tolist():
        rows = []
        for t in torch.argsort(worst_kl[b], descending=True)[:num_steps].tolist():
            row = {"step": t, "kl": float(worst_kl[b, t]), "dimension": None,
                   "prior_z_score": None}
            values = worst_steps.get(t, {})
            z, loc, scale = values.get("z"), values.get("prior_loc"), values.get("prior_scale")
            if z is not None and loc is not None and scale is not None:
                score = ((z[b] - loc[b]) / scale[b]).abs()
                d = int(score.argmax())
                row.update(dimension=d, prior_z_score=float(score[d]))
                row.update({key: None if v is None else float(v[b, d])
                            for key, v in values.items()})
            rows.append(row)
        report.append({"sequence": b, "elbo": float(elbo[b]), "particle": int(worst_particle[b]),
                       "log_w": float(worst_log_w[b]), "steps": rows})
    return report
