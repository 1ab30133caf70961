r"""Least-recently-used access memory (Santoro et al., 2016, "One-shot learning with
memory-augmented neural networks") as a GTM memory (Gemici et al., 2017, §3.2).

The memory :math:`M \in \mathbb{R}^{N \times W}` has :math:`R` heads; head :math:`r` both reads
(with a key) and writes (with a word). The state carries the memory :math:`M_{t-1}`, the previous
read weights :math:`w^r_{t-1}` and the usage :math:`u_{t-1} \in \mathbb{R}^N`. One step of the GTM
(``memory(state, h_t, z_{t-1})``) is:

1. **Least-used slot** of the previous usage, one-hot (ties go to the lowest index):
   :math:`w^{lu}_{t-1} = \mathrm{onehot}(\arg\min_i u_{t-1}(i))`.
2. **Write weights** of head :math:`r`, interpolating between the slot it read last and the
   least-used slot with a learned gate :math:`\alpha^r = f_\alpha(z_{t-1}, h_t)`:

   .. math:: w^{w,r}_t = \sigma(\alpha^r)\, w^r_{t-1} + (1 - \sigma(\alpha^r))\, w^{lu}_{t-1}.

3. **Write** :math:`z_{t-1}`: the least-used row is zeroed, then every head adds its word
   :math:`a^r_t = f_a(z_{t-1}, h_t)` (a linear map of :math:`[z_{t-1}, h_t]`):

   .. math:: M_t = M_{t-1} \odot (1 - w^{lu}_{t-1} \mathbf{1}^\top)
                   + \textstyle\sum_r w^{w,r}_t\, a^{r\top}_t.

4. **Read** with keys :math:`k^r_t = f_k(h_t)` and strengths
   :math:`\beta^r_t = \mathrm{softplus}(f_\beta(h_t)) \ge 0`, by content on the memory *after*
   the write:

   .. math:: w^r_t = \mathrm{softmax}_i\big(\beta^r_t\, K(k^r_t, M_t(i))\big), \qquad
             \phi^r_t = w^{r\top}_t M_t, \qquad \Psi_t = [\phi^1_t, \dots, \phi^R_t].

5. **Usage** with decay :math:`\gamma` (default 0.95), summed over heads:

   .. math:: u_t = \gamma\, u_{t-1} + \textstyle\sum_r w^r_t + \sum_r w^{w,r}_t.

All weights are non-negative and sum to at most one per head (:math:`w^r_{t-1}` sums to one, or
zero in the empty state). The empty state is a zero memory, zero read weights and zero usage, so
the first write goes to slot 0 with weight :math:`1 - \sigma(\alpha)`.

**Choices the references leave open** (pinned down here):

* *One least-used slot shared by all heads.* Santoro et al. mark the :math:`n` least-used slots
  (:math:`n` = number of reads) in a single vector, while some implementations give each head
  its own least-used slot. A GTM writes one latent per step, so one fresh row per step is what a
  sequence needs: with a shared slot, ``num_slots >= T`` rows hold a whole sequence without
  eviction, whereas per-head slots would use up :math:`R` rows per step (``num_slots >= R T``) to
  store :math:`R` redundant linear views of the same :math:`z_{t-1}`. Heads that write to the
  least-used slot add their words into that one row, which is the same as writing the sum of
  their linear maps, itself a linear map of :math:`[z_{t-1}, h_t]`; nothing is lost. Only that
  one row is zeroed before the write, as in the paper's text.
* *Reads see the memory after the write.* The GTM's memory step writes :math:`z_{t-1}` and then
  reads for step :math:`t`, so the read of step :math:`t` may use :math:`z_{t-1}` (never
  :math:`z_t`); the write weights use the *previous* read weights :math:`w^r_{t-1}` and the
  least-used slot of the *previous* usage :math:`u_{t-1}`, as in the paper.

**Defaults.** ``num_heads = 5`` heads of ``word_size = 32`` give ``read_size = 160``, as the
Introspective memory's :math:`5 \times 32`, so the rest of the GTM is unchanged; the heads have
:math:`256 \cdot 5 \cdot 33 + 165 = 42{,}405` (read: key and strength) and
:math:`288 \cdot 5 \cdot 33 + 165 = 47{,}685` (write: word and gate) parameters. With
``num_slots = 32`` (at least the length of every task, 15 or 25 steps, so no latent of a sequence
is evicted) ``build_gtm(LRUMemory, sequence_length=15)`` has 2,002,411 parameters, 3.6% more
than the Introspective GTM (1,932,881).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.nn import functional as F

from pgtm.checks import number
from pgtm.memories.addressing import content_weights
from pgtm.memories.base import MemoryOutput, SlotMemory
from pgtm.shapes import broadcast_leading, cat_features
from pgtm.unrolled_linear import UnrolledLinear


class LRUState(NamedTuple):
    """:ivar memory: ``[*batch, num_slots, word_size]``, :math:`M_{t-1}`.
    :ivar read_weights: ``[*batch, num_heads, num_slots]``, :math:`w^r_{t-1}`.
    :ivar usage: ``[*batch, num_slots]``, :math:`u_{t-1}`.
    """

    memory: torch.Tensor
    read_weights: torch.Tensor
    usage: torch.Tensor


def least_used_weights(usage: torch.Tensor) -> torch.Tensor:
    """One-hot weights on the least-used slot (the lowest index among ties).

    :param usage: ``[..., N]``.
    :returns: ``[..., N]``, same dtype as ``usage``, no gradient.
    """
    if usage.dim() < 1:
        raise ValueError(f"usage must have shape [..., N], got {list(usage.shape)}")
    index = usage.detach().argmin(dim=-1)  # the first minimum, on every device
    return F.one_hot(index, usage.shape[-1]).to(usage.dtype)


def lru_write_weights(
    previous_read: torch.Tensor, least_used: torch.Tensor, gate: torch.Tensor
) -> torch.Tensor:
    r""":math:`\sigma(\alpha) w^r_{t-1} + (1 - \sigma(\alpha)) w^{lu}_{t-1}`.

    :param previous_read: ``[..., R, N]``.
    :param least_used: ``[..., N]``.
    :param gate: ``[..., R]``, :math:`\sigma(\alpha) \in [0, 1]`.
    :returns: ``[..., R, N]``.
    """
    gate = gate.unsqueeze(-1)
    return gate * previous_read + (1 - gate) * least_used.unsqueeze(-2)


def update_usage(
    usage: torch.Tensor, read_weights: torch.Tensor, write_weights: torch.Tensor, decay: float
) -> torch.Tensor:
    r""":math:`u_t = \gamma u_{t-1} + \sum_r w^r_t + \sum_r w^{w,r}_t`.

    :param usage: ``[..., N]``.
    :param read_weights: ``[..., R, N]``.
    :param write_weights: ``[..., R, N]``.
    :returns: ``[..., N]``.
    """
    return decay * usage + read_weights.sum(-2) + write_weights.sum(-2)


class LRUMemory(SlotMemory):
    """Least-recently-used access memory (MANN): content reads, writes to the least-used slot or
    to the slot read last.

    :param latent_size: :math:`Z`.
    :param controller_size: size of :math:`h_t`.
    :param num_slots: :math:`N` (default 32).
    :param word_size: :math:`W` (default 32).
    :param num_heads: :math:`R`, heads that each read and write (default 5).
    :param decay: usage decay :math:`\\gamma \\in [0, 1]` (default 0.95).
    """

    def __init__(
        self,
        latent_size: int,
        controller_size: int,
        *,
        num_slots: int = 32,
        word_size: int = 32,
        num_heads: int = 5,
        decay: float = 0.95,
    ):
        super().__init__(latent_size, controller_size, num_slots, word_size, num_heads)
        number("decay", decay, 0, 1)
        self.decay = float(decay)
        self.read_head = UnrolledLinear(controller_size, self.num_heads * (self.word_size + 1))
        self.write_head = UnrolledLinear(
            latent_size + controller_size, self.num_heads * (self.word_size + 1)
        )

    def initial_state(self, batch_shape, device=None, dtype=None) -> LRUState:
        batch_shape = tuple(batch_shape)
        kwargs = {"device": device, "dtype": dtype}
        return LRUState(
            torch.zeros(batch_shape + (self.num_slots, self.word_size), **kwargs),
            torch.zeros(batch_shape + (self.num_heads, self.num_slots), **kwargs),
            torch.zeros(batch_shape + (self.num_slots,), **kwargs),
        )

    def forward(self, state: LRUState, controller_output, latent) -> MemoryOutput:
        """Write :math:`z_{t-1}` (``latent``), then read with :math:`h_t` (``controller_output``).

        :returns: :class:`MemoryOutput` with ``read [*batch, R * W]``, the new :class:`LRUState`
            and the read weights ``[*batch, R, N]``.
        """
        self.check_step_inputs(controller_output, latent)
        # 1-3. write z_{t-1} to the least-used slot and/or the slots read last
        raw = self.write_head(cat_features(latent, controller_output))
        words, gate = raw.unflatten(-1, (self.num_heads, -1)).split([self.word_size, 1], dim=-1)
        least_used = least_used_weights(state.usage)  # [*, N]
        write_weights = lru_write_weights(
            state.read_weights, least_used, torch.sigmoid(gate.squeeze(-1))
        )
        memory = state.memory * (1 - least_used.unsqueeze(-1))
        memory = memory + write_weights.transpose(-1, -2) @ words
        # 4. content reads with h_t from the memory after the write
        raw = self.read_head(controller_output).unflatten(-1, (self.num_heads, -1))
        keys, strength = raw.split([self.word_size, 1], dim=-1)
        read_weights = content_weights(keys, F.softplus(strength.squeeze(-1)), memory)
        phi = read_weights @ memory  # [*, R, W]
        # 5. usage
        usage = update_usage(state.usage, read_weights, write_weights, self.decay)
        memory, read_weights, phi, usage = broadcast_leading(
            memory, read_weights, phi, usage, event_dims=(2, 2, 2, 1)
        )
        return MemoryOutput(phi.flatten(-2), LRUState(memory, read_weights, usage), read_weights)
