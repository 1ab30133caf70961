"""PSIS diagnostics of importance weights: the Pareto shape :math:`\\hat k` of their tail
(Vehtari et al., 2024) and its reading."""

from __future__ import annotations

import math

import numpy as np
import torch
from pyro.ops.stats import fit_generalized_pareto
from torch import Tensor

__all__ = ["KHAT_GOOD", "KHAT_OK", "khat_reading", "pareto_khat"]

#: PSIS reading thresholds: ``k < KHAT_GOOD`` good, ``KHAT_GOOD <= k <= KHAT_OK`` ok, else
#: unreliable (Vehtari et al., 2024).
KHAT_GOOD = 0.5
KHAT_OK = 0.7
#: log weights this many ulps apart (of their dtype, relative to their size) count as equal
_EXACT_ULPS = 64
_LOG_TINY = math.log(np.finfo(np.float64).tiny)



def pareto_khat(log_weights: Tensor) -> Tensor:
    """PSIS Pareto shape estimate :math:`\\hat k` of importance weights (Vehtari et al., 2024).

    For each sequence, the largest :math:`M = \\lceil \\min(0.2 K, 3 \\sqrt K) \\rceil`
    weights above the next one (the threshold) are fitted with a generalised Pareto distribution
    by Pyro's :func:`~pyro.ops.stats.fit_generalized_pareto` (Zhang & Stephens' estimator with
    the weakly informative prior of PSIS). This is the procedure of ArviZ 0.x ``psislw``, which
    it matches to rounding; ArviZ 1.x moved it (``arviz_stats``) and takes *negated* log
    weights (LOO's log-likelihood convention), so no ArviZ call is made here and every ArviZ
    version works. Computed in float64 on the CPU.

    :param log_weights: ``[K, B]`` (K particles per sequence) or ``[K]`` (one set of weights).
    :returns: ``[B]`` (or a 0-d tensor for a ``[K]`` input), float64 on the input's device.
        ``nan`` when ``K < 2``; ``-inf`` for weights equal to within a few ulps of their dtype
        (no tail: importance sampling is exact); ``inf`` when the tail holds too few draws to
        fit (at most 4, i.e. ``K <= 24``).
    :raises ValueError: if ``log_weights`` is not 1-d or 2-d.
    """
    if not isinstance(log_weights, Tensor) or log_weights.dim() not in (1, 2):
        shape = tuple(log_weights.shape) if isinstance(log_weights, Tensor) else type(log_weights)
        raise ValueError(f"log_weights must be a tensor of shape [K, B] or [K], got {shape}")
    squeeze = log_weights.dim() == 1
    eps = torch.finfo(log_weights.dtype).eps if log_weights.is_floating_point() else 0.0
    lw = log_weights.detach().to("cpu", torch.float64)
    if squeeze:
        lw = lw.unsqueeze(-1)
    K, B = lw.shape
    out = torch.full((B,), float("nan"), dtype=torch.float64)
    if K >= 2:
        tail = math.ceil(min(0.2 * K, 3 * math.sqrt(K)))
        for b in range(B):
            out[b] = _pareto_khat_one(lw[:, b], tail, eps)
    out = out.to(log_weights.device)
    return out[0] if squeeze else out


def _pareto_khat_one(lw: Tensor, tail: int, eps: float) -> float:
    """:math:`\\hat k` of one set of float64 log weights; zero weights (``-inf``) are left
    out, a ``nan`` or ``+inf`` weight gives ``nan``."""
    if torch.isnan(lw).any() or torch.isposinf(lw).any():
        return math.nan
    lw = lw[torch.isfinite(lw)]
    if lw.numel() < 2:
        return math.nan
    tail = min(tail, lw.numel() - 1)
    scale = max(1.0, float(lw.abs().max()))
    if float(lw.max() - lw.min()) <= _EXACT_ULPS * eps * scale:
        return -math.inf
    shifted = lw - lw.max()
    threshold = max(float(torch.sort(shifted).values[-tail - 1]), _LOG_TINY)
    exceedances = shifted[shifted > threshold]
    if exceedances.numel() <= 4:
        return math.inf
    k, _ = fit_generalized_pareto(exceedances.exp() - math.exp(threshold))
    return float(k)


def khat_reading(khat: Tensor) -> dict[str, float]:
    """Fractions of sequences in the usual PSIS bands.

    :param khat: ``[B]`` Pareto shape estimates (``nan`` entries are ignored, ``inf`` counts as
        unreliable).
    :returns: ``{"good": frac(k < 0.5), "ok": frac(0.5 <= k <= 0.7),
        "unreliable": frac(k > 0.7)}``; all ``nan`` if no estimate is available.
    """
    k = khat.detach().to("cpu", torch.float64).reshape(-1)
    k = k[~torch.isnan(k)]
    n = k.numel()
    if n == 0:
        return {"good": float("nan"), "ok": float("nan"), "unreliable": float("nan")}
    return {
        "good": float((k < KHAT_GOOD).sum()) / n,
        "ok": float(((k >= KHAT_GOOD) & (k <= KHAT_OK)).sum()) / n,
        "unreliable": float((k > KHAT_OK).sum()) / n,
    }
