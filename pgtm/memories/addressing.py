r"""Pure, batched addressing functions shared by the content-addressed memories.

Every function acts on tensors with any number of leading (batch) dimensions, which broadcast
against each other; the trailing dimensions are named in each docstring (``R`` read keys or
heads, ``H`` write heads, ``N`` slots, ``W`` word size, ``S`` shift offsets). Nothing here holds
state or parameters.

* Cosine similarity, guarded against zero vectors (the norm is
  :math:`\sqrt{\lVert x\rVert^2 + \epsilon}`, so a zero key or an empty slot gives similarity 0
  and finite gradients):

  .. math:: K(k, M_i) = \frac{k \cdot M_i}{\sqrt{\lVert k\rVert^2+\epsilon}\,
                                          \sqrt{\lVert M_i\rVert^2+\epsilon}}

* Content weights (Graves et al., 2014, eq. 5): :math:`w^c_i = \mathrm{softmax}_i(\beta\,
  K(k, M_i))`.
* Interpolation with the previous weights: :math:`w^g = g\,w^c + (1-g)\,w_{t-1}`.
* Circular shift by convolution over the offsets :math:`o \in \{-s, \dots, s\}` (eq. 8):
  :math:`\tilde w_i = \sum_o s_o\, w_{(i - o) \bmod N}`, i.e. the mixture
  :math:`\sum_o s_o\,\mathrm{roll}(w, o)`: a positive offset moves the focus to higher slots.
* Sharpening (eq. 9): :math:`w_i = \tilde w_i^{\gamma} / \sum_j \tilde w_j^{\gamma}`, computed
  as :math:`\mathrm{softmax}(\gamma \log(\tilde w + \epsilon))` so that it never divides by zero
  and a large :math:`\gamma` cannot overflow.
* Erase/add write with several heads (eqs. 3-4; the heads' erases are applied first, then their
  adds): :math:`M_i \leftarrow M_i \odot \prod_h (1 - w^h_i e^h) + \sum_h w^h_i a^h`.
"""

from __future__ import annotations

import torch

COSINE_EPS = 1e-6
SHARPEN_EPS = 1e-8


def _check_last(name: str, tensor: torch.Tensor, size: int, what: str) -> None:
    if tensor.dim() < 1 or tensor.shape[-1] != size:
        raise ValueError(
            f"{name} must have last dimension {what} = {size}, got {list(tensor.shape)}"
        )


def _check_dims(name: str, tensor: torch.Tensor, dims: int, shape: str) -> None:
    if tensor.dim() < dims:
        raise ValueError(f"{name} must have shape {shape}, got {list(tensor.shape)}")


def cosine_similarity(
    keys: torch.Tensor, memory: torch.Tensor, eps: float = COSINE_EPS
) -> torch.Tensor:
    """Cosine similarity of every key with every memory row, safe for zero vectors.

    :param keys: ``[..., R, W]``.
    :param memory: ``[..., N, W]``.
    :param eps: added to the squared norms (a zero vector has similarity 0, finite gradients).
    :returns: ``[..., R, N]`` in ``[-1, 1]``.
    """
    _check_dims("keys", keys, 2, "[..., R, W]")
    _check_dims("memory", memory, 2, "[..., N, W]")
    _check_last("keys", keys, memory.shape[-1], "W (the memory's word size)")
    dot = keys @ memory.transpose(-1, -2)  # [..., R, N]
    key_norm = (keys.pow(2).sum(-1) + eps).sqrt()  # [..., R]
    memory_norm = (memory.pow(2).sum(-1) + eps).sqrt()  # [..., N]
    return dot / (key_norm.unsqueeze(-1) * memory_norm.unsqueeze(-2))


def content_weights(
    keys: torch.Tensor, strengths: torch.Tensor, memory: torch.Tensor, eps: float = COSINE_EPS
) -> torch.Tensor:
    r"""Content-based addressing :math:`\mathrm{softmax}_i(\beta\, K(k, M_i))`.

    :param keys: ``[..., R, W]``.
    :param strengths: ``[..., R]``, :math:`\beta \ge 0` (e.g. a softplus output).
    :param memory: ``[..., N, W]``.
    :returns: ``[..., R, N]``, non-negative, summing to one over the slots.
    """
    _check_dims("strengths", strengths, 1, "[..., R]")
    _check_last("strengths", strengths, keys.shape[-2], "R (the number of keys)")
    similarity = cosine_similarity(keys, memory, eps)
    return torch.softmax(strengths.unsqueeze(-1) * similarity, dim=-1)


def interpolate(content: torch.Tensor, previous: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    r"""Interpolation gate :math:`g\,w^c + (1 - g)\,w_{t-1}`.

    :param content: ``[..., R, N]`` content weights.
    :param previous: ``[..., R, N]`` weights of the previous step.
    :param gate: ``[..., R]`` in ``[0, 1]``.
    :returns: ``[..., R, N]``.
    """
    _check_dims("gate", gate, 1, "[..., R]")
    _check_last("gate", gate, content.shape[-2], "R (the number of heads)")
    gate = gate.unsqueeze(-1)
    return gate * content + (1 - gate) * previous


def circular_convolution(weights: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    r"""Rotate weights by a distribution over the offsets :math:`\{-s, \dots, s\}`.

    :math:`\tilde w_i = \sum_o s_o\, w_{(i - o) \bmod N}`: a one-hot shift on offset ``o`` equals
    ``torch.roll(weights, o, dims=-1)``.

    :param weights: ``[..., N]``.
    :param shift: ``[..., S]`` with ``S = 2s + 1`` odd; entry ``j`` is the weight of offset
        ``j - s``.
    :returns: ``[..., N]``.
    """
    _check_dims("weights", weights, 1, "[..., N]")
    _check_dims("shift", shift, 1, "[..., S]")
    size = shift.shape[-1]
    if size % 2 != 1:
        raise ValueError(f"shift must have an odd last dimension S = 2s + 1, got {size}")
    num_slots = weights.shape[-1]
    offsets = torch.arange(size, device=weights.device) - size // 2  # [S]
    slots = torch.arange(num_slots, device=weights.device)
    index = (slots.unsqueeze(-1) - offsets).remainder(num_slots)  # [N, S]: slot i - o
    rolled = weights[..., index]  # [..., N, S]
    return (rolled * shift.unsqueeze(-2)).sum(-1)


def sharpen(weights: torch.Tensor, gamma: torch.Tensor, eps: float = SHARPEN_EPS) -> torch.Tensor:
    r"""Sharpening :math:`w_i^\gamma / \sum_j w_j^\gamma`, as
    :math:`\mathrm{softmax}(\gamma \log(w + \epsilon))` (stable for zeros and large
    :math:`\gamma`).

    :param weights: ``[..., N]``, non-negative.
    :param gamma: ``[...]``, :math:`\gamma \ge 1`.
    :returns: ``[..., N]``, summing to one.
    """
    _check_dims("weights", weights, 1, "[..., N]")
    return torch.softmax(gamma.unsqueeze(-1) * (weights + eps).log(), dim=-1)


def erase_add_write(
    memory: torch.Tensor, weights: torch.Tensor, erase: torch.Tensor, add: torch.Tensor
) -> torch.Tensor:
    r"""Erase then add with ``H`` write heads:
    :math:`M_i \odot \prod_h (1 - w^h_i e^h) + \sum_h w^h_i a^h`.

    :param memory: ``[..., N, W]``.
    :param weights: ``[..., H, N]`` write weights.
    :param erase: ``[..., H, W]`` erase vectors in ``[0, 1]``.
    :param add: ``[..., H, W]`` add vectors.
    :returns: ``[..., N, W]``.
    """
    _check_dims("memory", memory, 2, "[..., N, W]")
    _check_dims("weights", weights, 2, "[..., H, N]")
    _check_last("weights", weights, memory.shape[-2], "N (the number of slots)")
    for name, vector in (("erase", erase), ("add", add)):
        _check_dims(name, vector, 2, "[..., H, W]")
        _check_last(name, vector, memory.shape[-1], "W (the memory's word size)")
        if vector.shape[-2] != weights.shape[-2]:
            raise ValueError(
                f"{name} must have shape [..., H, W] with H = {weights.shape[-2]} heads, "
                f"got {list(vector.shape)}"
            )
    keep = (1 - weights.unsqueeze(-1) * erase.unsqueeze(-2)).prod(-3)  # [..., N, W]
    return memory * keep + weights.transpose(-1, -2) @ add
