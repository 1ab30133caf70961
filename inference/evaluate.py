"""The evaluation report of a sequence model: ELBO / IWAE bounds over many particles, per-step
KL and NLL, recall / pre-recall summaries, penalties and the PSIS diagnostic.

:func:`evaluate` draws the particles in chunks through the importance estimator
(:func:`pgtm.inference.importance.log_weights`), combines them with ``logsumexp`` and summarises
them; :func:`pgtm.inference.psis.pareto_khat` gives the Pareto :math:`\\hat k`. The estimator's
names are re-exported here (their home is :mod:`pgtm.inference.importance`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from pgtm.inference.importance import (
    PARTICLE_DIM,
    LogWeights,
    check_inputs,
    check_positive_int,
    importance_traces,
    log_weights,
    log_weights_of_traces,
    particle_chunk,
    time_index,
)
from pgtm.inference.psis import KHAT_GOOD, KHAT_OK, khat_reading, pareto_khat
from pgtm.io import save_json

__all__ = [
    "LogWeights",
    "PARTICLE_DIM",
    "KHAT_GOOD",
    "KHAT_OK",
    "check_positive_int",
    "time_index",
    "log_weights",
    "importance_traces",
    "log_weights_of_traces",
    "evaluate",
    "pareto_khat",
    "khat_reading",
    "save_json",
]


def _masked_mean(total: Tensor, weight: Tensor) -> float:
    """``total.sum() / weight.sum()`` as a float (``nan`` when nothing is selected)."""
    denom = float(weight.sum())
    return float(total.sum()) / denom if denom > 0 else float("nan")


def _to_plain(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach().cpu().tolist() if value.dim() > 0 else float(value)
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    return value


@torch.no_grad()
def evaluate(
    model: Callable,
    guide: Callable,
    x: Tensor,
    c: Tensor | None = None,
    mask: Tensor | None = None,
    recall: Tensor | None = None,
    num_particles: int = 1000,
    chunk_size: int = 100,
    keep_tensors: bool = False,
) -> dict[str, Any]:
    """Bounds and diagnostics of a model/guide pair on one batch, with many particles.

    The ``K = num_particles`` particles are drawn in chunks of at most ``chunk_size`` (one
    vectorised :func:`log_weights` pass each), so large ``K`` fits in memory; chunk results are
    accumulated in float64 and combined with ``logsumexp``. Runs under ``torch.no_grad()``.
    Seed Pyro (``pyro.set_rng_seed``) beforehand for reproducible numbers.

    With ``log_w [K, B]`` from :func:`log_weights` and ``m = mask [B, T]`` (all True if ``None``),
    the returned dict has

    - ``elbo [B]``: ``mean_k log_w`` (per sequence);
    - ``iwae [B]``: ``logsumexp_k log_w - log K``;
    - ``elbo_sum``, ``iwae_sum``, ``elbo_mean``, ``iwae_mean``: sums / means over the batch;
    - ``kl [T]``: ``sum_{k,b} m[b,t] (log_q_z - log_p_z)[k,b,t] / (K sum_b m[b,t])``,
      ``nan`` where no sequence has step ``t``; ``nll [T]`` likewise with ``-log_p_x``;
    - ``kl_seq [B]``, ``nll_seq [B]``: per-sequence totals over steps (mean over particles);
    - ``kl_mean``, ``nll_mean``: mean per-step value over all valid ``(b, t)``;
    - ``recall_kl``, ``prerecall_kl``, ``recall_nll``, ``prerecall_nll``: mean per-step value over
      the valid steps with ``recall`` True / False (``None`` if ``recall`` is ``None``, ``nan``
      if no such step);
    - ``recall_kl_seq [B]``: each sequence's mean per-step KL over its valid recall steps
      (``nan`` for a sequence without one), and ``recall_kl_median``, its median over the
      sequences that have one: unlike ``recall_kl``, not moved by one sequence's sharp, wrong
      prior (``None`` without ``recall``);
    - ``penalty``: mean over particles and sequences of the summed ``penalty*`` factors (not part
      of any bound); ``penalty_seq [B]``;
    - ``global_kl_seq [B]``: the KL of the latent sites without a time index (e.g. the Kanerva
      memory), ``mean_k (log q - log p)``; ``global_kl``: its mean over the sequences. Part of
      the bounds (``elbo = -nll_seq - kl_seq - global_kl_seq`` up to other untimed sites) but
      not of the per-step ``kl``; zero for models without such sites;
    - ``khat [B]``: PSIS Pareto shape of each sequence's ``K`` importance weights (ArviZ),
      ``khat_max`` (over non-nan entries), ``khat_mean`` (over finite entries) and ``khat_reading``:
      fractions of sequences with ``k < 0.5`` (``good``), ``0.5 <= k <= 0.7`` (``ok``) and
      ``k > 0.7`` (``unreliable``);
    - ``num_particles``, ``chunk_size``, ``num_sequences``, ``num_steps``.

    :param model: Pyro model ``model(x, c=None, mask=None)``.
    :param guide: Pyro guide with the same signature.
    :param x: frames ``[B, T, *frame_shape]``.
    :param c: optional context ``[B, T, A]``.
    :param mask: optional bool ``[B, T]``, True where the step exists.
    :param recall: optional bool ``[B, T]``, True on recall-phase steps.
    :param num_particles: ``K >= 1``.
    :param chunk_size: ``C >= 1`` particles per vectorised pass (fewer where a pass would not fit
        in memory: :func:`~pgtm.inference.importance.particle_chunk`).
    :param keep_tensors: if True, array-valued entries are returned as (CPU, float64) tensors and
        ``log_w [K, B]`` is added; otherwise every value is a plain ``float``/``int``/``list``
        (JSON-serialisable; ``nan``/``inf`` are written as ``null`` by :func:`save_json`).
    :returns: dict as above.
    :raises ValueError: on ``num_particles < 1``, ``chunk_size < 1`` or badly shaped inputs.
    """
    K = check_positive_int(num_particles, "num_particles")
    C = check_positive_int(chunk_size, "chunk_size")
    B, T = check_inputs(x, c, mask, recall)
    C = particle_chunk(C, x)

    f64 = torch.float64
    valid = mask.to("cpu") if mask is not None else torch.ones(B, T, dtype=torch.bool)

    log_w_chunks = []
    kl_sum = torch.zeros(B, T, dtype=f64)
    nll_sum = torch.zeros(B, T, dtype=f64)
    penalty_sum = torch.zeros(B, dtype=f64)
    global_kl_sum = torch.zeros(B, dtype=f64)
    done = 0
    while done < K:
        k = min(C, K - done)
        lw = log_weights(model, guide, x, c=c, mask=mask, num_particles=k)
        log_w_chunks.append(lw.log_w.detach().to("cpu", f64))
        kl_sum += (lw.log_q_z - lw.log_p_z).detach().to("cpu", f64).sum(0)
        nll_sum += (-lw.log_p_x).detach().to("cpu", f64).sum(0)
        penalty_sum += lw.penalty.detach().to("cpu", f64).sum(0)
        global_kl_sum += lw.kl_global.detach().to("cpu", f64).sum(0)
        done += k

    log_w = torch.cat(log_w_chunks, dim=0)  # [K, B]
    elbo = log_w.mean(0)
    iwae = torch.logsumexp(log_w, dim=0) - math.log(K)

    w = valid.to(f64)  # [B, T]
    kl_bt = kl_sum / K * w  # mean over particles, [B, T]
    nll_bt = nll_sum / K * w
    n_t = w.sum(0)
    safe = torch.where(n_t > 0, n_t, torch.ones_like(n_t))
    nan = torch.tensor(float("nan"), dtype=f64)
    kl_t = torch.where(n_t > 0, kl_bt.sum(0) / safe, nan)
    nll_t = torch.where(n_t > 0, nll_bt.sum(0) / safe, nan)

    results: dict[str, Any] = {
        "num_particles": K,
        "chunk_size": C,
        "num_sequences": B,
        "num_steps": T,
        "elbo": elbo,
        "iwae": iwae,
        "elbo_sum": float(elbo.sum()),
        "iwae_sum": float(iwae.sum()),
        "elbo_mean": float(elbo.mean()),
        "iwae_mean": float(iwae.mean()),
        "kl": kl_t,
        "nll": nll_t,
        "kl_seq": kl_bt.sum(1),
        "nll_seq": nll_bt.sum(1),
        "kl_mean": _masked_mean(kl_bt, w),
        "nll_mean": _masked_mean(nll_bt, w),
    }
    if recall is not None:
        rec = recall.to("cpu").to(f64) * w
        pre = (~recall.to("cpu")).to(f64) * w
        # per sequence: its recall steps' KL and their count; the recall KL is their ratio
        recall_sums, recall_steps = (kl_bt * rec).sum(1), rec.sum(1)
        recall_kl_seq = torch.where(recall_steps > 0, recall_sums / recall_steps.clamp(min=1), nan)
        with_recall = recall_kl_seq[recall_steps > 0]
        results.update(
            recall_kl=_masked_mean(recall_sums, recall_steps),
            prerecall_kl=_masked_mean(kl_bt * pre, pre),
            recall_nll=_masked_mean(nll_bt * rec, rec),
            prerecall_nll=_masked_mean(nll_bt * pre, pre),
            recall_kl_seq=recall_kl_seq,
            # the mean of the two middle values for an even count (torch.median takes the lower)
            recall_kl_median=(float(with_recall.quantile(0.5)) if with_recall.numel()
                              else float("nan")),
        )
    else:
        results.update(recall_kl=None, prerecall_kl=None, recall_nll=None, prerecall_nll=None,
                       recall_kl_seq=None, recall_kl_median=None)

    penalty_seq = penalty_sum / K
    results["penalty"] = float(penalty_seq.mean())
    results["penalty_seq"] = penalty_seq
    global_kl_seq = global_kl_sum / K
    results["global_kl"] = float(global_kl_seq.mean())
    results["global_kl_seq"] = global_kl_seq

    khat = pareto_khat(log_w)
    known, finite = khat[~torch.isnan(khat)], khat[torch.isfinite(khat)]
    results["khat"] = khat
    results["khat_max"] = float(known.max()) if known.numel() else float("nan")
    results["khat_mean"] = float(finite.mean()) if finite.numel() else float("nan")
    results["khat_reading"] = khat_reading(khat)

    if keep_tensors:
        results["log_w"] = log_w
        return results
    return {k: _to_plain(v) for k, v in results.items()}
