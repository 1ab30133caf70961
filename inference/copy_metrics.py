"""The copy task's exact-match rate: does the model reproduce the input bits from memory?

The input phase (every step before the recall phase, the delimiter included) is observed with
latents from the posterior; the recall (output) phase is generated with latents from the prior
(:meth:`~pgtm.models.gtm.GTM.generate`); the decoder mean is thresholded at 0.5 and a sequence
counts as copied when *every* output frame (all channels, the delimiter flag included) equals its
target. In :class:`~pgtm.tasks.CopyTask` the output phase is the steps with ``recall`` True,
``l + 1 .. l + k`` (the delimiter at step ``l`` is part of the input phase).
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["COPY_TASKS", "exact_match"]

#: tasks for which :func:`exact_match` is reported by the experiment runner
COPY_TASKS = ("copy",)


def _output_phase_start(recall: torch.Tensor) -> int:
    """The first recall step, checking that the recall phase is one common suffix."""
    if recall.dtype != torch.bool or recall.dim() != 2:
        raise ValueError(f"recall must be a bool tensor [B, T], got {recall.dtype} "
                         f"{list(recall.shape)}")
    steps = torch.nonzero(recall.any(0)).flatten()
    if steps.numel() == 0:
        raise ValueError("recall has no recall (output) step")
    start = int(steps[0])
    suffix = torch.zeros_like(recall[0])
    suffix[start:] = True
    if not bool((recall == suffix).all()):
        raise ValueError("recall must mark the same final steps of every sequence (the output "
                         "phase of the copy task)")
    return start


@torch.no_grad()
def exact_match(gtm, batch, *, threshold: float = 0.5, seed: int = 0) -> dict[str, Any]:
    """Exact-match rate of ``gtm`` on a copy-task batch.

    :param gtm: a GTM (anything with ``generate(length, x=, c=, observed_steps=)`` returning
        frame means ``[B, T, *frame_shape]``).
    :param batch: a :class:`~pgtm.tasks.SequenceBatch` whose ``recall`` marks the output phase,
        the same final steps in every sequence; binary targets ``x``.
    :param threshold: the decoder mean is read as 1 above it.
    :param seed: seeds the latent sampling (under a forked RNG, so the caller's stream is kept).
    :returns: ``exact_match`` (fraction of sequences whose output frames all match),
        ``bit_accuracy`` (fraction of output values that match), ``observed_steps`` and
        ``num_sequences``. Steps with ``mask`` False are not compared.
    """
    start = _output_phase_start(batch.recall)
    param = next(gtm.parameters())
    device = param.device
    x = batch.x.to(device)
    c = None if batch.c is None else batch.c.to(device)
    length = x.shape[1]
    with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]):
        torch.manual_seed(seed)
        frames = gtm.generate(length, x=x, c=c, observed_steps=start).frames
    predicted = frames > threshold
    target = x > 0.5
    output = (batch.recall & batch.mask).to(device)  # [B, T]
    equal = (predicted == target).flatten(2)  # [B, T, D]
    step_ok = equal.all(-1) | ~output
    values = equal[output]
    return {
        "exact_match": float(step_ok.all(1).float().mean()),
        "bit_accuracy": float(values.float().mean()) if values.numel() else float("nan"),
        "observed_steps": start,
        "num_sequences": int(x.shape[0]),
    }
