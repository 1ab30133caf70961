r"""What the read heads do over training: the "sparsity dynamics" of a memory's read weights.

At every periodic evaluation, :func:`read_head_statistics` summarises the read weights
:math:`w^r_t \in \mathbb{R}^N` and gates :math:`g^r_t` of each head :math:`r` on held-out
sequences (latents from the posterior), over the recall steps (every step when a task has no
recall phase):

* ``entropy`` :math:`-\sum_i \bar w_i \log \bar w_i` with :math:`\bar w = w / \sum_i w_i`
  (nats; 0 for one-hot, :math:`\log N` for uniform weights),
* ``max_weight`` :math:`\max_i w_i` and ``mass`` :math:`\sum_i w_i` (1 unless the weights are
  unnormalised),
* ``gate`` :math:`g`, and ``slot_profile`` the mean weight on each slot (the heat maps),
* ``attended_slot``: :math:`\arg\max_i w_i` at each recall step of the first sequence.

When the task says which earlier step each recall frame repeats, the statistics also say
whether a head reads the slot holding that step's latent: ``hit_rate`` per head, and
``best_hit_rate`` for the head with the largest gated weight at each step. The memory says
which slot that is (:meth:`~pgtm.memories.base.Memory.latent_slots`): for a FIFO of latents
(the Introspective memory) slot :math:`i` of :math:`N` holds :math:`z_{t-N+i}` at step
:math:`t`; a memory that records its write weights (NTM, DNC) wrote :math:`z_p` at step
:math:`p+1` to the slot of its largest write weight (a slot written again before the recall
step is still counted as that latent's).

:class:`ReadHeadLog` appends one record per evaluation to ``read_heads.jsonl`` (resume-safe) and
:func:`pgtm.plotting.plot_read_head_dynamics` draws them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from pgtm.io import write_text_atomically

READ_HEADS_LOG = "read_heads.jsonl"
_EPS = 1e-12


@torch.no_grad()
def read_head_statistics(
    weights: torch.Tensor,
    gates: torch.Tensor | None,
    recall: torch.Tensor,
    addresses: torch.Tensor | None = None,
    latent_slots: Callable[[torch.Tensor, torch.Tensor], torch.Tensor | None] | None = None,
) -> dict:
    """Per-head summaries of read weights over the recall steps.

    :param weights: ``[B, T, R, N]`` read weights.
    :param gates: ``[B, T, R]`` read gates, or ``None`` (treated as 1).
    :param recall: ``[T]`` bool, the steps to summarise (all steps when none is True).
    :param addresses: ``[B, T]`` long, the step each recall frame repeats (-1 elsewhere).
    :param latent_slots: ``(steps [B, S], times [S]) -> [B, S]``, the slot holding the latent
        of each step when read at each time, or ``None`` where unknown (a memory's
        :meth:`~pgtm.memories.base.Memory.latent_slots`). With it and ``addresses``,
        ``hit_rate`` is reported over the summarised steps that repeat a frame.
    :returns: dict of per-head lists (length ``R``): ``entropy``, ``max_weight``, ``mass``,
        ``gate``, ``slot_profile`` (``R`` lists of ``N``), ``attended_slot`` (``R`` lists of
        the recall steps' argmax slots, first sequence) and, with ``addresses`` of at least
        one summarised step, ``hit_rate`` and the scalar ``best_hit_rate``.
    """
    if weights.dim() != 4:
        raise ValueError(f"weights must have shape [B, T, R, N], got {tuple(weights.shape)}")
    b, t, r, n = weights.shape
    if recall.shape != (t,):
        raise ValueError(f"recall must have shape [{t}], got {tuple(recall.shape)}")
    if gates is None:
        gates = weights.new_ones(b, t, r)
    steps = recall.nonzero().squeeze(-1) if bool(recall.any()) else torch.arange(t)
    steps = steps.to(weights.device)
    w = weights[:, steps].double()  # [B, S, R, N]
    g = gates[:, steps].double()  # [B, S, R]
    mass = w.sum(-1)
    p = w / (mass.unsqueeze(-1) + _EPS)
    entropy = -(p * (p + _EPS).log()).sum(-1)
    stats = {
        "entropy": entropy.mean((0, 1)).tolist(),
        "max_weight": w.amax(-1).mean((0, 1)).tolist(),
        "mass": mass.mean((0, 1)).tolist(),
        "gate": g.mean((0, 1)).tolist(),
        "slot_profile": w.mean((0, 1)).tolist(),
        "attended_slot": w[0].argmax(-1).T.tolist(),
    }
    repeated = None if addresses is None else addresses[:, steps].to(weights.device)  # [B, S]
    target = None if repeated is None or latent_slots is None else latent_slots(repeated, steps)
    if target is not None:
        if target.shape != repeated.shape:
            raise ValueError(f"latent_slots must return the slots [B, S] = "
                             f"{list(repeated.shape)}, got {list(target.shape)}")
        counted = repeated >= 0
        if bool(counted.any()):
            hits = (w.argmax(-1) == target.unsqueeze(-1))[counted]  # [M, R]
            stats["hit_rate"] = hits.double().mean(0).tolist()
            best_head = (w.amax(-1) * g).argmax(-1, keepdim=True)[counted]  # [M, 1]
            stats["best_hit_rate"] = float(hits.gather(-1, best_head).double().mean())
    return stats


class ReadHeadLog:
    """``read_heads.jsonl`` in a run folder: one JSON record per evaluation step.

    Writing the record of step ``s`` drops any record of a step ``>= s`` first, so a run that
    resumes from an earlier checkpoint does not keep the records of the steps it repeats.
    """

    def __init__(self, out_dir):
        self.path = Path(out_dir) / READ_HEADS_LOG

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def write(self, step: int, stats: dict) -> None:
        records = [r for r in self.read() if r["step"] < step] + [{"step": step, **stats}]
        write_text_atomically(self.path, "".join(json.dumps(r) + "\n" for r in records))
