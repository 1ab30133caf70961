r"""Neural Turing Machine memory (Graves et al., 2014) as a GTM memory (Gemici et al., 2017, §3.2).

The memory :math:`M \in \mathbb{R}^{N \times W}` is addressed by :math:`R` read heads and
:math:`H` write heads. Every head turns its parameters into weights over the slots in four stages
(the functions of :mod:`pgtm.memories.addressing`),

.. math::

    w^c &= \mathrm{softmax}_i\big(\beta\, K(k, M_i)\big),
        \quad \beta = \mathrm{softplus}(\hat\beta) \ge 0 && \text{content} \\
    w^g &= g\, w^c + (1 - g)\, w_{t-1}, \quad g = \sigma(\hat g) && \text{interpolation} \\
    \tilde w_i &= \textstyle\sum_{o \in \{-1, 0, 1\}} s_o\, w^g_{(i - o) \bmod N},
        \quad s = \mathrm{softmax}(\hat s) && \text{circular shift} \\
    w_i &= \tilde w_i^{\gamma} / \textstyle\sum_j \tilde w_j^{\gamma},
        \quad \gamma = 1 + \mathrm{softplus}(\hat\gamma) \ge 1 && \text{sharpening}

with :math:`K` the cosine similarity (guarded against zero vectors, so the empty memory gives
uniform content weights and finite gradients) and sharpening computed as
:math:`\mathrm{softmax}(\gamma \log(\tilde w + \epsilon))`. Every weighting is non-negative and
sums to one. One step of the GTM (``memory(state, h_t, z_{t-1})``) is:

1. **Write** :math:`z_{t-1}`. The write heads' parameters are a linear map of
   :math:`x_t = [z_{t-1}, h_t]`: key, :math:`\hat\beta, \hat g, \hat s, \hat\gamma`, an erase
   vector :math:`e^h = \sigma(\cdot) \in [0, 1]^W` and the written word :math:`a^h` (linear in
   :math:`x_t`). The write weights :math:`w^h_t` address :math:`M_{t-1}`, then

   .. math:: M_t = M_{t-1} \odot \textstyle\prod_h (1 - w^h_t\, e^{h\top})
                   + \sum_h w^h_t\, a^{h\top}.

2. **Read** with :math:`h_t`. The read heads' parameters are a linear map of :math:`h_t`; their
   weights :math:`w^r_t` address the memory *after* the write, :math:`M_t` (so the read of step
   :math:`t` can see :math:`z_{t-1}`, and never :math:`z_t`), and
   :math:`\phi^r_t = w^{r\top}_t M_t`, :math:`\Psi_t = [\phi^1_t, \dots, \phi^R_t]`
   (``read_size = R * W``).

The state is :class:`NTMState`: the memory and the previous read and write weights (needed by
the interpolation gate). The empty state is a zero memory with every head's weights one-hot on
slot 0, so location-based addressing (shifts from slot 0) can tell slots apart while the memory
is still empty; uniform initial weights would keep all slots identical forever.

**Sequential writes at initialisation** (``sequential_write_init``, off by default). Trained on
perfect recall with the default initialisation, the write head settles on "stay" (shift 0 with
probability 0.95, gate 0.08, sharpness 5.4 after 10^4 steps): every latent overwrites the same
slot, and the memory holds only the last one. Nothing in the addressing forbids sequential
writing, but the gradient found the one-slot register first. ``sequential_write_init = p``
starts the write heads one slot forward per step instead (shift +1 with probability ``p``,
gate ``1 - p``), the NTM's copy-task solution. With ``p = 0.9`` on perfect recall (10^4 steps,
one seed) training first blurred the writes, then settled on sharp sequential writes backwards
(shift -1), and the recall KL per step reached 3.3 nats against 18.4 from the default
initialisation (``docs/results/paper_experiments.md``).

**Defaults.** ``num_heads = 5`` read heads of ``word_size = 32`` give ``read_size = 160``, the
same as the Introspective memory's :math:`5 \times 32` (latent size 32), so the controller,
prior, posterior and decoder of a GTM are unchanged and only the head parameters differ:
:math:`256 \cdot 5 \cdot (32 + 6) + 190 = 48{,}830` for the read heads and
:math:`288 \cdot (3 \cdot 32 + 6) + 102 = 29{,}478` for one write head. With ``num_slots = 32``
(at least the sequence length of every task: 15 or 25 steps, so sequential writing never wraps)
``build_gtm(NTMMemory, sequence_length=15)`` has 1,990,629 parameters, 3.0% more than the
Introspective GTM (1,932,881).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch.nn import functional as F

from pgtm.checks import integer, number
from pgtm.memories.addressing import (
    circular_convolution,
    content_weights,
    erase_add_write,
    interpolate,
    sharpen,
)
from pgtm.memories.base import MemoryOutput, SlotMemory, require_positive_sizes
from pgtm.shapes import broadcast_leading, cat_features
from pgtm.unrolled_linear import UnrolledLinear


class NTMState(NamedTuple):
    """:ivar memory: ``[*batch, num_slots, word_size]``.
    :ivar read_weights: ``[*batch, num_heads, num_slots]``, :math:`w^r_{t-1}`.
    :ivar write_weights: ``[*batch, num_write_heads, num_slots]``, :math:`w^h_{t-1}`.
    """

    memory: torch.Tensor
    read_weights: torch.Tensor
    write_weights: torch.Tensor


class AddressingParameters(NamedTuple):
    """Constrained parameters of ``R`` heads (all ``[*batch, R, ...]``)."""

    key: torch.Tensor  # [*, R, W]
    strength: torch.Tensor  # [*, R], >= 0
    gate: torch.Tensor  # [*, R], in (0, 1)
    shift: torch.Tensor  # [*, R, S], a distribution
    sharpness: torch.Tensor  # [*, R], >= 1


def split_addressing(raw: torch.Tensor, word_size: int, shift_size: int) -> AddressingParameters:
    """Split and constrain raw head outputs ``[*batch, R, W + 3 + S]``."""
    key, strength, gate, shift, sharpness = raw.split([word_size, 1, 1, shift_size, 1], dim=-1)
    return AddressingParameters(
        key,
        F.softplus(strength.squeeze(-1)),
        torch.sigmoid(gate.squeeze(-1)),
        torch.softmax(shift, dim=-1),
        1 + F.softplus(sharpness.squeeze(-1)),
    )


def address(
    memory: torch.Tensor, params: AddressingParameters, previous: torch.Tensor
) -> torch.Tensor:
    """NTM addressing: content, interpolation, circular shift, sharpening.

    :param memory: ``[..., N, W]``.
    :param params: parameters of ``R`` heads.
    :param previous: ``[..., R, N]`` weights of the previous step.
    :returns: ``[..., R, N]``, non-negative, summing to one over the slots.
    """
    weights = content_weights(params.key, params.strength, memory)
    weights = interpolate(weights, previous, params.gate)
    weights = circular_convolution(weights, params.shift)
    return sharpen(weights, params.sharpness)


class NTMMemory(SlotMemory):
    """Neural Turing Machine memory: content + location addressing, erase/add writes.

    :param latent_size: :math:`Z`.
    :param controller_size: size of :math:`h_t`.
    :param num_slots: :math:`N` (default 32).
    :param word_size: :math:`W` (default 32).
    :param num_heads: :math:`R` read heads (default 5).
    :param num_write_heads: :math:`H` write heads (default 1: one latent is written per step).
    :param shift_range: :math:`s`, the shifts are :math:`\\{-s, \\dots, s\\}` (default 1).
    :param sequential_write_init: :math:`p \\in (0, 1)`: at initialisation (zero input) the
        write heads shift one slot forward with probability :math:`p` and their interpolation
        gate is :math:`1 - p`, so the writes start by filling consecutive slots (default
        ``None``: PyTorch's initialisation, a near-uniform shift and a gate near 1/2).
    """

    def __init__(
        self,
        latent_size: int,
        controller_size: int,
        *,
        num_slots: int = 32,
        word_size: int = 32,
        num_heads: int = 5,
        num_write_heads: int = 1,
        shift_range: int = 1,
        sequential_write_init: float | None = None,
    ):
        super().__init__(latent_size, controller_size, num_slots, word_size, num_heads)
        require_positive_sizes(num_write_heads=num_write_heads)
        integer("shift_range", shift_range, 0)
        self.num_write_heads = int(num_write_heads)
        self.shift_size = 2 * int(shift_range) + 1
        head_size = self.word_size + 3 + self.shift_size
        self.read_head = UnrolledLinear(controller_size, self.num_heads * head_size)
        self.write_head = UnrolledLinear(
            latent_size + controller_size, self.num_write_heads * (head_size + 2 * self.word_size)
        )
        number("sequential_write_init", sequential_write_init, 0, 1, low_open=True,
               high_open=True, allow_none=True)
        if sequential_write_init is not None:
            if shift_range < 1:
                raise ValueError("sequential_write_init needs shift_range >= 1 (a forward shift)")
            self._start_sequential_writes(float(sequential_write_init))

    def _start_sequential_writes(self, p: float) -> None:
        """Set the write heads' gate and shift biases (see ``sequential_write_init``)."""
        word, shift = self.word_size, self.shift_size
        shift_logits = torch.full((shift,), math.log((1 - p) / (shift - 1)))
        shift_logits[shift // 2 + 1] = math.log(p)  # entry j is the offset j - s
        with torch.no_grad():
            bias = self.write_head.bias.view(self.num_write_heads, -1)
            bias[:, word + 1] = math.log((1 - p) / p)  # sigmoid(gate) = 1 - p
            bias[:, word + 2 : word + 2 + shift] = shift_logits

    def write_weights(self, state: NTMState) -> torch.Tensor:
        return state.write_weights

    def initial_state(self, batch_shape, device=None, dtype=None) -> NTMState:
        batch_shape = tuple(batch_shape)
        kwargs = {"device": device, "dtype": dtype}
        first_slot = torch.zeros(self.num_slots, **kwargs)
        first_slot[0] = 1
        return NTMState(
            torch.zeros(batch_shape + (self.num_slots, self.word_size), **kwargs),
            first_slot.expand(batch_shape + (self.num_heads, self.num_slots)),
            first_slot.expand(batch_shape + (self.num_write_heads, self.num_slots)),
        )

    def forward(self, state: NTMState, controller_output, latent) -> MemoryOutput:
        """Write :math:`z_{t-1}` (``latent``), then read with :math:`h_t` (``controller_output``).

        :returns: :class:`MemoryOutput` with ``read [*batch, R * W]``, the new :class:`NTMState`
            and the read weights ``[*batch, R, N]``.
        """
        self.check_step_inputs(controller_output, latent)
        word, shift = self.word_size, self.shift_size
        # 1. write z_{t-1}: address M_{t-1} with heads computed from [z_{t-1}, h_t]
        raw = self.write_head(cat_features(latent, controller_output))
        raw = raw.unflatten(-1, (self.num_write_heads, -1))  # [*, H, W + 3 + S + 2W]
        raw, erase, add = raw.split([word + 3 + shift, word, word], dim=-1)
        write_weights = address(
            state.memory, split_addressing(raw, word, shift), state.write_weights
        )
        memory = erase_add_write(state.memory, write_weights, torch.sigmoid(erase), add)
        # 2. read with h_t from the memory after the write
        raw = self.read_head(controller_output).unflatten(-1, (self.num_heads, -1))
        read_weights = address(memory, split_addressing(raw, word, shift), state.read_weights)
        phi = read_weights @ memory  # [*, R, W]
        memory, read_weights, write_weights, phi = broadcast_leading(
            memory, read_weights, write_weights, phi, event_dims=2
        )
        new_state = NTMState(memory, read_weights, write_weights)
        return MemoryOutput(phi.flatten(-2), new_state, read_weights)
