r"""An exponential-moving-average memory: a running average of the latents, read through a gate.

.. math::

    m_t = \lambda \odot m_{t-1} + (1 - \lambda) \odot z_{t-1}, \qquad
    \Psi_t = m_t \odot \sigma(W_g h_t + b_g)

with one learned rate :math:`\lambda = \sigma(a) \in (0, 1)` per latent dimension, started at
``decay``, and :math:`m_{-1} = 0`. The read size is the latent size. It remembers the gist of
the sequence so far and nothing in particular; it is the worked example of
``docs/ADDING_A_MEMORY.md`` (this file, ``tests/test_ema.py`` and one line in
:data:`pgtm.memories.MEMORIES`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from pgtm.checks import number
from pgtm.memories.base import Memory, MemoryOutput, require_positive_sizes
from pgtm.unrolled_linear import UnrolledLinear


class EMAState(NamedTuple):
    """:ivar average: ``[*batch, latent_size]``, :math:`m_{t-1}`."""

    average: torch.Tensor


class EMAMemory(Memory):
    """A gated running average of the latents.

    :param latent_size: :math:`Z` (also the read size).
    :param controller_size: size of :math:`h_t`.
    :param decay: initial :math:`\\lambda` of every dimension, in (0, 1) (default 0.9).
    """

    def __init__(self, latent_size: int, controller_size: int, decay: float = 0.9):
        super().__init__()
        require_positive_sizes(latent_size=latent_size, controller_size=controller_size)
        number("decay", decay, 0, 1, low_open=True, high_open=True)
        self.latent_size = self.read_size = int(latent_size)
        self.controller_size = int(controller_size)
        logit = math.log(decay / (1 - decay))
        self.decay_logit = nn.Parameter(torch.full((self.latent_size,), logit))
        self.gate = UnrolledLinear(self.controller_size, self.latent_size)

    def initial_state(self, batch_shape, device=None, dtype=None) -> EMAState:
        return EMAState(torch.zeros(*batch_shape, self.latent_size, device=device, dtype=dtype))

    def forward(self, state: EMAState, controller_output, latent) -> MemoryOutput:
        self.check_step_inputs(controller_output, latent)
        decay = torch.sigmoid(self.decay_logit)
        average = decay * state.average + (1 - decay) * latent  # broadcasts a particle dim
        read = average * torch.sigmoid(self.gate(controller_output))
        return MemoryOutput(read, EMAState(average))
