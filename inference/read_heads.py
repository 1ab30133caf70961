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
``best_hit_rate`` for the head with the largest gated weight at each step. The slot is known
for a FIFO memory of latents (the Introspective one, where at step :math:`t` slot :math:`i` of
:math:`N` holds :math:`z_{t-N+i}`) and for a memory that records its write weights (NTM, DNC:
step :math:`p+1` writes :math:`z_p`, to the slot of its largest write weight; a slot written
again before the recall step is still counted as that latent's).

:class:`ReadHeadLog` appends one record per evaluation to ``read_heads.jsonl`` (resume-safe) and
:func:`plot_read_head_dynamics` draws them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from pgtm.io import write_text_atomically
from pgtm.plotting import _prepare, plt

READ_HEADS_LOG = "read_heads.jsonl"
_EPS = 1e-12


def fifo_slot_of_step(steps: torch.Tensor, time: torch.Tensor, num_slots: int) -> torch.Tensor:
    """The slot of a FIFO of the last ``num_slots`` latents that holds :math:`z_{step}` when
    read at step ``time`` (slot ``num_slots - 1`` holds :math:`z_{time-1}`); out of range
    (< 0) once the latent has left the buffer."""
    return steps - time + num_slots


@torch.no_grad()
def read_head_statistics(
    weights: torch.Tensor,
    gates: torch.Tensor | None,
    recall: torch.Tensor,
    addresses: torch.Tensor | None = None,
    write_weights: torch.Tensor | None = None,
) -> dict:
    """Per-head summaries of read weights over the recall steps.

    :param weights: ``[B, T, R, N]`` read weights.
    :param gates: ``[B, T, R]`` read gates, or ``None`` (treated as 1).
    :param recall: ``[T]`` bool, the steps to summarise (all steps when none is True).
    :param addresses: ``[B, T]`` long, the step each recall frame repeats (-1 elsewhere); when
        given, ``hit_rate`` is reported over the summarised steps that repeat one.
    :param write_weights: ``[B, T, H, N]`` write weights of a slot memory, step ``t`` writing
        :math:`z_{t-1}`; without them the weights are taken to be those of a FIFO of latents.
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
    if addresses is not None:
        repeated = addresses[:, steps].to(weights.device)  # [B, S]
        if write_weights is None:
            target = fifo_slot_of_step(repeated, steps, n)
        else:
            if write_weights.shape[:2] != (b, t) or write_weights.shape[-1] != n:
                raise ValueError(f"write_weights must have shape [{b}, {t}, H, {n}], got "
                                 f"{tuple(write_weights.shape)}")
            written = write_weights.sum(-2).argmax(-1)  # [B, T]: slot written at each step
            target = written.gather(1, (repeated + 1).clamp(0, t - 1))
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


_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*")
_DASHES = ("-", "--", "-.", ":")
#: panels of quantities in [0, 1], drawn on that scale
_UNIT_RANGE = ("max_weight", "mass", "gate", "hit_rate")


def plot_read_head_dynamics(path, records: list[dict], title: str | None = None) -> str:
    """Per-head entropy, max weight, mass, gate (and hit rate) over training, and per-head heat maps
    of the mean weight on each slot at the recall steps (training step × slot)."""
    if not records:
        raise ValueError("records is empty: nothing to plot")
    steps = [r["step"] for r in records]
    heads = len(records[0]["entropy"])
    panels = [k for k in ("entropy", "max_weight", "mass", "gate", "hit_rate") if k in records[0]]
    fig, axes = plt.subplots(2, max(len(panels), heads), figsize=(3.0 * max(len(panels), heads),
                             6.0), squeeze=False, layout="constrained")
    for ax, key in zip(axes[0], panels, strict=False):
        for h in range(heads):
            # heads often coincide (hit rate 0, mass 1): later heads get smaller, hollow
            # markers and their own dash, so every head stays visible where they overlap
            ax.plot(steps, [r[key][h] for r in records], label=f"head {h}",
                    marker=_MARKERS[h % len(_MARKERS)], markersize=max(9 - 1.5 * h, 3),
                    markerfacecolor="none", linestyle=_DASHES[h % len(_DASHES)], alpha=0.85)
        ax.set_title(key.replace("_", " "))
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        if key in _UNIT_RANGE:  # keep normalised masses at 1 +- 1e-8 from filling the panel
            top = max(1.0, max(max(r[key]) for r in records))
            ax.set_ylim(-0.03 * top, 1.05 * top)
    axes[0][0].legend(fontsize=7)
    for ax in axes[0][len(panels):]:
        ax.axis("off")
    image = None
    for h, ax in enumerate(axes[1][:heads]):
        profile = torch.tensor([r["slot_profile"][h] for r in records])  # [E, N]
        # one evaluation has no width of its own: give it half a period on either side
        half = (steps[-1] - steps[0]) / (2 * (len(steps) - 1)) if len(steps) > 1 else 0.5
        image = ax.imshow(profile.T.numpy(), aspect="auto", origin="lower", vmin=0, vmax=1,
                          extent=(steps[0] - half, steps[-1] + half, -0.5,
                                  profile.shape[1] - 0.5))
        ax.set_title(f"head {h}: mean weight per slot", fontsize=9)
        ax.set_xlabel("training step")
        if h == 0:
            ax.set_ylabel("slot")
    for ax in axes[1][heads:]:
        ax.axis("off")
    if image is not None:
        fig.colorbar(image, ax=axes[1].tolist(), shrink=0.8, label="weight")
    if title:
        fig.suptitle(title)
    fig.savefig(_prepare(path), dpi=100)
    plt.close(fig)
    return os.fspath(path)
