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
    """Base class: subclasses set ``read_size`` and implement :meth:`initial_state` and
    :meth:`forward`.

    What generic code (the builder, Memory Forcing, read-head statistics) may ask of a memory is
    declared here, with defaults meaning "not available"; a memory overrides what it has:

    * :attr:`min_slots`: the memory has ``num_slots`` and, unless one is given, gets
      :meth:`default_num_slots` of them for sequences of length :math:`T`;
    * :meth:`memory_matrix`: its content ``[*batch, N, W]``;
    * :meth:`write_weights`: the weights of its last write ``[*batch, H, N]``;
    * :meth:`latent_slots`: which slot holds the latent of a given step.
    """

    read_size: int = 0
    #: ``None``: the memory's size does not follow the sequence length; else it takes
    #: ``num_slots`` and a sequence of length ``T`` gets ``max(min_slots, T)`` slots by default
    min_slots: int | None = None

    @classmethod
    def default_num_slots(cls, sequence_length: int) -> int | None:
        """``num_slots`` for sequences of length ``sequence_length`` (``None``: not sized by
        the length, see :attr:`min_slots`)."""
        return None if cls.min_slots is None else max(cls.min_slots, sequence_length)

    def memory_matrix(self, state) -> torch.Tensor | None:
        """The content of the memory in ``state``, ``[*batch, N, W]`` (``None``: none)."""
        return None

    def write_weights(self, state) -> torch.Tensor | None:
        """The weights ``[*batch, H, N]`` with which the step that returned ``state`` wrote
        (``None``: the memory does not record them)."""
        return None

    def latent_slots(
        self, steps: torch.Tensor, times: torch.Tensor, write_weights: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """The slot that holds :math:`z_s` when the memory is read at step :math:`t`.

        By default the slot written at step :math:`s + 1` (step :math:`t` writes
        :math:`z_{t-1}`), the argmax of ``write_weights`` summed over the write heads.

        :param steps: ``[B, S]`` long, the step :math:`s` of each latent.
        :param times: ``[S]`` long, the read step :math:`t` of each column.
        :param write_weights: ``[B, T, H, N]``, the :meth:`write_weights` of every step of a
            sequence, or ``None``.
        :returns: ``[B, S]`` long, or ``None`` when unknown.
        """
        if write_weights is None:
            return None
        if write_weights.dim() != 4 or write_weights.shape[0] != steps.shape[0]:
            raise ValueError(f"write_weights must have shape [{steps.shape[0]}, T, H, N], got "
                             f"{list(write_weights.shape)}")
        written = write_weights.sum(-2).argmax(-1)  # [B, T]: the slot each step wrote
        return written.gather(1, (steps + 1).clamp(0, written.shape[1] - 1))

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
    (the state's ``memory``) read by ``num_heads`` heads, so ``read_size = num_heads *
    word_size``."""

    min_slots = 32

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

    def memory_matrix(self, state) -> torch.Tensor:
        return state.memory


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
