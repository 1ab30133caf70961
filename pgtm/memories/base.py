"""The interface shared by every external memory of a GTM.

A memory is an ``nn.Module`` with *functional* state: nothing recurrent is kept on ``self``.
At step :math:`t` the GTM calls

.. code-block:: python

    out = memory(state, h_t, z_prev)   # write z_{t-1}, then read with the controller output h_t

and receives a :class:`MemoryOutput`: the read vector :math:`\\Psi` that conditions the prior,
posterior and likelihood of :math:`z_t` (it depends only on latents written before :math:`t`),
the new state, the read weights (for plots) and an optional regulariser.

State tensors have shape ``[*batch, ...]`` with any number of leading batch dimensions, so a
particle dimension prepended by Pyro flows through without special cases.

**A memory that is a latent variable.** The GTM starts the memory of every sequence with two
hooks, :meth:`Memory.prior_initial_state` in the model and :meth:`Memory.posterior_initial_state`
in the guide (and in ``generate``). By default both return the deterministic
:meth:`Memory.initial_state`; a memory whose content is random (e.g.
:class:`~pgtm.memories.kanerva.KanervaMemory`) samples it there with ``pyro.sample`` under one
site name shared by the two hooks, inside the ``"sequences"`` plate, so that the ELBO and the
importance weights include its :math:`\\log p - \\log q`. The GTM collects the values of the
sites sampled by the hooks: when the model replays the guide's values (the very tensors), it
reuses the guide's deterministic path exactly as it does for the latents :math:`z_t`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from pgtm.checks import integer


def require_positive_sizes(**sizes) -> None:
    """Raise ``ValueError`` naming the first size that is not an integer >= 1."""
    for name, value in sizes.items():
        integer(name, value, 1)


class MemoryOutput(NamedTuple):
    """What one memory step returns.

    :ivar read: ``[*batch, read_size]`` read vector.
    :ivar state: the new state (a named tuple of tensors ``[*batch, ...]``).
    :ivar weights: ``[*batch, num_heads, num_slots]`` read weights, or ``None``.
    :ivar penalty: ``[*batch]`` regulariser in nats (added to the negative ELBO), or ``None``.
    :ivar gates: ``[*batch, num_heads]`` read gates in (0, 1), or ``None``.
    """

    read: torch.Tensor
    state: tuple
    weights: torch.Tensor | None = None
    penalty: torch.Tensor | None = None
    gates: torch.Tensor | None = None


class Memory(nn.Module):
    """Base class: subclasses set ``read_size`` and implement the two methods below."""

    read_size: int = 0

    def initial_state(self, batch_shape, device=None, dtype=None) -> tuple:
        """The empty memory, with leading shape ``batch_shape``."""
        raise NotImplementedError

    def prior_initial_state(self, batch_shape, device=None, dtype=None) -> tuple:
        """The initial state of a sequence in the *model* (a Pyro program: a random memory
        samples its latent site here). Default: :meth:`initial_state`.

        :param batch_shape: leading shape of the state, ``(B, 1)`` in the GTM's model.
        """
        return self.initial_state(batch_shape, device=device, dtype=dtype)

    def posterior_initial_state(self, features: torch.Tensor, mask: torch.Tensor | None = None):
        """The initial state of a sequence in the *guide*, which may condition on the encoder
        features of the whole sequence (a Pyro program: a random memory samples the same site
        as in :meth:`prior_initial_state` here). Default: :meth:`initial_state`.

        :param features: ``[*batch, T, feature_size]`` encoder features of the frames.
        :param mask: ``[*batch, T]`` bool, False for steps past a sequence's end, or ``None``.
        :returns: a state with leading shape ``batch`` (``features.shape[:-2]``).
        """
        batch_shape = features.shape[:-2]
        return self.initial_state(batch_shape, device=features.device, dtype=features.dtype)

    def check_step_inputs(self, controller_output: torch.Tensor, latent: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``controller_output`` is ``[*batch, controller_size]`` and
        ``latent`` is ``[*batch, latent_size]`` (for memories that set both sizes)."""
        for name, tensor, size in (
            ("controller_output", controller_output, self.controller_size),
            ("latent", latent, self.latent_size),
        ):
            if tensor.dim() < 1 or tensor.shape[-1] != size:
                raise ValueError(
                    f"{name} must have shape [*batch, {size}], got {list(tensor.shape)}"
                )

    def forward(self, state, controller_output: torch.Tensor, latent: torch.Tensor) -> MemoryOutput:
        """Write ``latent`` (:math:`z_{t-1}`, ``[*batch, latent_size]``) and read with
        ``controller_output`` (:math:`h_t`, ``[*batch, controller_size]``)."""
        raise NotImplementedError


class SlotMemory(Memory):
    """Base of the content-addressed memories: ``num_slots`` words of ``word_size`` numbers
    read by ``num_heads`` heads, so ``read_size = num_heads * word_size``."""

    def __init__(self, latent_size, controller_size, num_slots, word_size, num_heads):
        super().__init__()
        require_positive_sizes(
            latent_size=latent_size,
            controller_size=controller_size,
            num_slots=num_slots,
            word_size=word_size,
            num_heads=num_heads,
        )
        self.latent_size = int(latent_size)
        self.controller_size = int(controller_size)
        self.num_slots = int(num_slots)
        self.word_size = int(word_size)
        self.num_heads = int(num_heads)
        self.read_size = self.num_heads * self.word_size


class NoMemoryState(NamedTuple):
    pass


class NoMemory(Memory):
    """No external memory: the VRNN baseline, whose context is the controller output alone."""

    read_size = 0

    def __init__(self, latent_size: int | None = None, controller_size: int | None = None):
        super().__init__()

    def initial_state(self, batch_shape, device=None, dtype=None) -> NoMemoryState:
        return NoMemoryState()

    def forward(self, state, controller_output, latent) -> MemoryOutput:
        read = controller_output.new_zeros(controller_output.shape[:-1] + (0,))
        return MemoryOutput(read, state)
