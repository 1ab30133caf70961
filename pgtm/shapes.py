"""Small helpers for tensors batched over arbitrary leading dimensions.

Every module in pgtm keeps its batch dimensions *leading* and its feature dimensions
*trailing*, so that Pyro can prepend a particle dimension (``vectorize_particles``)
without any module reading the batch size from dim 0.
"""

from __future__ import annotations

import torch


def broadcast_leading(*tensors: torch.Tensor, event_dims: int | tuple[int, ...] = 1):
    """Expand tensors to a common leading (batch) shape, keeping their event dims.

    :param tensors: tensors of shape ``[*batch_i, *event_i]``.
    :param event_dims: number of trailing event dims of each tensor (one int for all, or
        one per tensor).
    :returns: list of tensors of shape ``[*batch, *event_i]`` where ``batch`` is the
        broadcast of all ``batch_i``.
    """
    if isinstance(event_dims, int):
        event_dims = (event_dims,) * len(tensors)
    batch_shapes = [t.shape[: t.dim() - e] for t, e in zip(tensors, event_dims, strict=True)]
    if all(shape == batch_shapes[0] for shape in batch_shapes[1:]):
        # the common case, and torch.broadcast_shapes is Python (≈30 µs a call, 70 calls a step)
        return list(tensors)
    batch = torch.broadcast_shapes(*batch_shapes)
    # a tensor already of the common shape is passed on as it is: an expand to its own shape
    # would still cost an op and a backward node, at every step of every sequence
    return [
        t if t.shape[: t.dim() - e] == batch else t.expand(batch + t.shape[t.dim() - e :])
        for t, e in zip(tensors, event_dims, strict=True)
    ]


def cat_features(*tensors: torch.Tensor) -> torch.Tensor:
    """Concatenate along the last dim after broadcasting the leading dims (parts of width 0,
    e.g. the read of a model without memory, are left out)."""
    parts = broadcast_leading(*tensors, event_dims=1)
    kept = [t for t in parts if t.shape[-1]] or parts[:1]
    return kept[0] if len(kept) == 1 else torch.cat(kept, dim=-1)


def cat_steps(per_step) -> torch.Tensor:
    """``T`` tensors ``[*batch, 1, D]`` -> ``[*batch, T, D]`` (broadcasting leading dims)."""
    return torch.cat(broadcast_leading(*per_step, event_dims=2), dim=-2)


def apply_flat(module, x: torch.Tensor, event_dims: int) -> torch.Tensor:
    """Apply a module that accepts exactly one batch dim to ``x`` with any leading dims.

    :param x: ``[*batch, *event]`` with ``len(event) == event_dims``.
    :returns: ``[*batch, *out_event]``.
    """
    batch = x.shape[: x.dim() - event_dims]
    y = module(x.reshape((-1,) + x.shape[x.dim() - event_dims :]))
    return y.reshape(batch + y.shape[1:])
