r"""Differentiable Neural Computer memory (Graves et al., 2016) for a GTM (Gemici et al., 2017).

The memory :math:`M \in \mathbb{R}^{N \times W}` has :math:`N` slots of :math:`W` numbers, is
written by :math:`H` write heads (default 1) and read by :math:`R` read heads. At step
:math:`t` the GTM calls ``memory(state, h_t, z_{t-1})``; the *interface* comes from a linear
layer of the controller output :math:`h_t`,

.. math::

    [k^r, \hat\beta^r, \hat f^r, \hat\pi^r]_{r=1..R},\;
    [k^w, \hat\beta^w, \hat e, \hat g^a, \hat g^w]_{h=1..H} = \mathrm{Linear}(h_t),

with :math:`\beta = \mathrm{oneplus}(\hat\beta) = 1 + \mathrm{softplus}(\hat\beta)`, free,
allocation and write gates and erase vectors squashed by a sigmoid, and read modes
:math:`\pi^r = \mathrm{softmax}(\hat\pi^r)` over :math:`1 + 2H` modes (backward per write head,
forward per write head, content: the paper's three modes when :math:`H = 1`). What is written
(the add vector) is derived from the latent, as the GTM with DNC memory writes its latent:
:math:`v_h = \mathrm{Linear}([z_{t-1}, h_t])`. The step then runs, in this order
(:math:`\odot` element-wise, all quantities batched):

.. math::

    \psi_t &= \textstyle\prod_{r=1}^R (1 - f^r_t\, w^r_{t-1})
        && \text{retention (free gates release what was read)} \\
    \bar w^w_{t-1} &= 1 - \textstyle\prod_h (1 - w^{w,h}_{t-1}),\quad
    u_t = (u_{t-1} + \bar w^w_{t-1} - u_{t-1} \odot \bar w^w_{t-1}) \odot \psi_t
        && \text{usage} \\
    a_t[\phi_j] &= (1 - u_t[\phi_j]) \textstyle\prod_{i<j} u_t[\phi_i],\quad
    \phi = \mathrm{argsort}(u_t) \text{ (stable)}
        && \text{allocation} \\
    c^{w,h}_t &= \mathrm{softmax}_i(\beta^{w,h} \cos(k^{w,h}, M_{t-1}[i]))
        && \text{write content weights} \\
    w^{w,h}_t &= g^{w,h} (g^{a,h} a^h_t + (1 - g^{a,h}) c^{w,h}_t)
        && \text{write weights} \\
    M_t &= M_{t-1} \odot \textstyle\prod_h (1 - w^{w,h}_t e_h^\top)
        + \sum_h w^{w,h}_t v_h^\top
        && \text{erase, then add} \\
    L^h_t[i,j] &= (1 - w^{w,h}_t[i] - w^{w,h}_t[j]) L^h_{t-1}[i,j]
        + w^{w,h}_t[i]\, p^h_{t-1}[j], \quad L^h_t[i,i] = 0
        && \text{temporal links} \\
    p^h_t &= (1 - \textstyle\sum_i w^{w,h}_t[i])\, p^h_{t-1} + w^{w,h}_t
        && \text{precedence} \\
    f^{r,h}_t &= L^h_t w^r_{t-1},\quad b^{r,h}_t = (L^h_t)^\top w^r_{t-1},\quad
    c^r_t = \mathrm{softmax}_i(\beta^r \cos(k^r, M_t[i]))
        && \text{forward, backward, content} \\
    w^r_t &= \textstyle\sum_h \pi^r[h]\, b^{r,h}_t + \sum_h \pi^r[H + h]\, f^{r,h}_t
        + \pi^r[2H]\, c^r_t
        && \text{read weights} \\
    \Psi_t &= [M_t^\top w^1_t, \dots, M_t^\top w^R_t]
        && \text{read vector, size } R W

With several write heads the allocation is sequential: head :math:`h` allocates from the usage
left by heads :math:`< h`, each of which marks its allocation as used scaled by its
allocation-driven write strength :math:`g^{w} g^{a}`,
:math:`u \leftarrow u + (1 - u) \odot g^{w,h} g^{a,h} a^h`. Each write head keeps its own link
matrix and precedence (as in DeepMind's ``dnc``), so the state stores ``link [*, H, N, N]``,
``precedence [*, H, N]`` and ``write_weights [*, H, N]``.

**Defaults** :math:`N = 32,\ W = 32,\ R = 5,\ H = 1`. The number of slots does not change the
parameter count; :math:`N = 32 \ge 25` leaves a fresh slot for every latent of the longest task
(the dynamic dependency task has :math:`T = 25`) with some slack for slots that are freed late.
:math:`W = 32` is the latent size of the paper, so a slot can hold a latent verbatim, and
:math:`R = 5` is the paper's number of read heads, so the read vector has the same size
:math:`R W = 160` as the Introspective memory's (5 heads of a 32-dim latent) and the controller,
prior, posterior and decoder are unchanged. Only the memory's own layers differ: the interface
(:math:`256 \to 5 (32 + 3 + 2) + (2 \cdot 32 + 3) = 252`) and the add vector
(:math:`32 + 256 \to 32`) hold 74,012 parameters instead of the Introspective memory's 20,560, so
``build_gtm(DNCMemory, sequence_length=25)`` has 1,986,333 parameters, 2.8% more than
``build_gtm("introspective", sequence_length=15)`` (1,932,881).

**Initial read addressing.** With the interface at PyTorch's default initialisation every read
key has strength :math:`\beta \approx 1.7` and every head reads with content, backward and
forward modes in equal parts. Cosine similarities lie in :math:`[-1, 1]`, so such content weights
are close to uniform over the :math:`N` slots, and the link modes carry no mass until the memory
has been written in order: the first reads are a faint average of the memory, which the
controller can only learn to ignore. ``read_strength_init`` and ``content_mode_init`` set the
interface biases so that the reads start sharp and content-addressed instead; the weights of the
interface are left as initialised, so the strengths and modes still vary with :math:`h_t`.

**Time-stamped words** (``time_stamp_size`` :math:`D > 0`, off by default). The DNC can only find
a slot by its content or by following the temporal links one step at a time, so a task that
names an item by its *position* (dynamic dependency: "recall the item at position 7") needs the
position inside the written word, which the controller must otherwise learn to count and write.
With :math:`D > 0` the last :math:`D` numbers of every word are a fixed stamp of the step that
wrote it, and the add vector fills only the first :math:`W - D`:

.. math::

    v_h = [\mathrm{Linear}([z_{t-1}, h_t]),\; \tau(s_t)], \quad
    e_h = [\sigma(\hat e_h),\; \mathbf 1], \quad
    \tau(s) = [\sin(s\,\omega_1), \dots, \sin(s\,\omega_{D/2}),
               \cos(s\,\omega_1), \dots, \cos(s\,\omega_{D/2})],

where :math:`s_t` counts the memory's steps (0 for the first) and the frequencies
:math:`\omega_i` are spaced geometrically over :math:`[0.5, 3]` radians per step. These are
high frequencies on purpose: the stamps of different steps are nearly orthogonal (for
:math:`D = 16`, cosine similarity at most 0.23 among the first 32 steps), so a read key equal to
:math:`[0, \tau(p)]` with a large strength picks out the slot written at step :math:`p`. A full
write (weight 1) replaces the stamp; a partial one blends it with the old stamp as it blends the
rest of the word. The read vector keeps size :math:`R W`, and the model has slightly fewer
parameters than without stamps.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch.nn import functional as F

from pgtm.checks import integer, number
from pgtm.memories.addressing import content_weights, erase_add_write
from pgtm.memories.base import MemoryOutput, SlotMemory, require_positive_sizes
from pgtm.shapes import broadcast_leading, cat_features
from pgtm.unrolled_linear import UnrolledLinear

#: default ``eps`` of :func:`allocation_weights` (see there)
ALLOCATION_EPS = 0.0
#: range of the time-stamp frequencies, in radians per step (see the module docstring)
TIME_STAMP_FREQUENCIES = (0.5, 3.0)


class DNCState(NamedTuple):
    """Functional state of the DNC memory (all tensors share the leading ``[*batch]``).

    :ivar memory: ``[*batch, N, W]`` memory matrix :math:`M_t`.
    :ivar usage: ``[*batch, N]`` usage :math:`u_t \\in [0, 1]`.
    :ivar link: ``[*batch, H, N, N]`` temporal link matrix of each write head.
    :ivar precedence: ``[*batch, H, N]`` precedence weights of each write head.
    :ivar read_weights: ``[*batch, R, N]`` read weights :math:`w^r_t`.
    :ivar write_weights: ``[*batch, H, N]`` write weights :math:`w^w_t`.
    :ivar step: ``[*batch]`` number of steps taken :math:`s_t` (the time stamp's clock).
    """

    memory: torch.Tensor
    usage: torch.Tensor
    link: torch.Tensor
    precedence: torch.Tensor
    read_weights: torch.Tensor
    write_weights: torch.Tensor
    step: torch.Tensor


def oneplus(x: torch.Tensor) -> torch.Tensor:
    """:math:`1 + \\mathrm{softplus}(x) \\in (1, \\infty)`, the key strength squashing."""
    return 1 + F.softplus(x)


def retention(free_gates: torch.Tensor, prev_read_weights: torch.Tensor) -> torch.Tensor:
    """Retention :math:`\\psi = \\prod_r (1 - f^r w^r_{t-1})`.

    :param free_gates: ``[*batch, R]`` in [0, 1].
    :param prev_read_weights: ``[*batch, R, N]``.
    :returns: ``[*batch, N]`` in [0, 1].
    """
    return torch.prod(1 - free_gates.unsqueeze(-1) * prev_read_weights, dim=-2)


def update_usage(
    usage: torch.Tensor,
    prev_write_weights: torch.Tensor,
    free_gates: torch.Tensor,
    prev_read_weights: torch.Tensor,
) -> torch.Tensor:
    """Usage after the previous write and the frees of this step.

    :math:`u_t = (u_{t-1} + \\bar w - u_{t-1} \\odot \\bar w) \\odot \\psi` with the combined
    previous write :math:`\\bar w = 1 - \\prod_h (1 - w^{w,h}_{t-1})`.

    :param usage: ``[*batch, N]``.
    :param prev_write_weights: ``[*batch, H, N]``.
    :param free_gates: ``[*batch, R]``.
    :param prev_read_weights: ``[*batch, R, N]``.
    :returns: ``[*batch, N]``.
    """
    written = 1 - torch.prod(1 - prev_write_weights, dim=-2)
    usage = usage + written - usage * written
    return usage * retention(free_gates, prev_read_weights)


def allocation_weights(usage: torch.Tensor, eps: float = ALLOCATION_EPS) -> torch.Tensor:
    """Allocation weights :math:`a[\\phi_j] = (1 - u[\\phi_j]) \\prod_{i<j} u[\\phi_i]`.

    :math:`\\phi` sorts the usage in ascending order with a *stable* sort, so among slots of
    equal usage the lower index is allocated first. With ``eps > 0`` the usage is first mapped to
    ``eps + (1 - eps) u``, as DeepMind's ``dnc`` does (1e-6) to keep TensorFlow's ``cumprod``
    gradient, computed by division, away from zeros. ``torch.cumprod``'s backward is exact at
    zeros, so the default is 0: a free slot is allocated exactly (one-hot), and no allocation
    leaks onto the next free slots, which would make them look used and break the index order
    in which tied free slots are taken.

    :param usage: ``[*batch, N]`` in [0, 1].
    :returns: ``[*batch, N]``, non-negative, summing to at most 1.
    """
    usage = eps + (1 - eps) * usage
    sorted_usage, order = torch.sort(usage, dim=-1, stable=True)
    ones = torch.ones_like(sorted_usage[..., :1])
    exclusive = torch.cumprod(torch.cat([ones, sorted_usage[..., :-1]], dim=-1), dim=-1)
    sorted_allocation = (1 - sorted_usage) * exclusive
    return torch.zeros_like(sorted_allocation).scatter(-1, order, sorted_allocation)


def write_allocation_weights(usage: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """Allocation weights of several write heads, allocated one head after another.

    Head :math:`h` allocates from the usage left by the heads before it; its allocation then
    counts as used in proportion to ``gates[..., h]``:
    :math:`u \\leftarrow u + (1 - u) \\odot g_h a_h`.

    :param usage: ``[*batch, N]``.
    :param gates: ``[*batch, H]`` (the DNC passes :math:`g^w g^a`).
    :returns: ``[*batch, H, N]``.
    """
    usage, gates = broadcast_leading(usage, gates, event_dims=1)
    allocations = []
    for head in range(gates.shape[-1]):
        allocation = allocation_weights(usage)
        allocations.append(allocation)
        usage = usage + (1 - usage) * gates[..., head : head + 1] * allocation
    return torch.stack(allocations, dim=-2)


def write_weights(
    allocation: torch.Tensor,
    content: torch.Tensor,
    allocation_gate: torch.Tensor,
    write_gate: torch.Tensor,
) -> torch.Tensor:
    """:math:`w^w = g^w (g^a a + (1 - g^a) c^w)`.

    :param allocation: ``[*batch, H, N]``.
    :param content: ``[*batch, H, N]`` write content weights.
    :param allocation_gate: ``[*batch, H]``.
    :param write_gate: ``[*batch, H]``.
    :returns: ``[*batch, H, N]``.
    """
    g_a, g_w = allocation_gate.unsqueeze(-1), write_gate.unsqueeze(-1)
    return g_w * (g_a * allocation + (1 - g_a) * content)


def update_link(
    link: torch.Tensor, prev_precedence: torch.Tensor, write_weights: torch.Tensor
) -> torch.Tensor:
    """Temporal link :math:`L_t[i,j] = (1 - w[i] - w[j]) L_{t-1}[i,j] + w[i] p_{t-1}[j]`,
    with a zero diagonal. ``L[i, j]`` is the degree to which slot ``i`` was written right
    after slot ``j``.

    :param link: ``[*batch, H, N, N]``.
    :param prev_precedence: ``[*batch, H, N]``.
    :param write_weights: ``[*batch, H, N]``.
    :returns: ``[*batch, H, N, N]``.
    """
    w_i, w_j = write_weights.unsqueeze(-1), write_weights.unsqueeze(-2)
    link = (1 - w_i - w_j) * link + w_i * prev_precedence.unsqueeze(-2)
    size = link.shape[-1]
    off_diagonal = ~torch.eye(size, dtype=torch.bool, device=link.device)
    return link * off_diagonal


def update_precedence(precedence: torch.Tensor, write_weights: torch.Tensor) -> torch.Tensor:
    """:math:`p_t = (1 - \\sum_i w[i]) p_{t-1} + w`.

    :param precedence: ``[*batch, H, N]``.
    :param write_weights: ``[*batch, H, N]``.
    :returns: ``[*batch, H, N]``.
    """
    return (1 - write_weights.sum(-1, keepdim=True)) * precedence + write_weights


def time_stamps(step: torch.Tensor, frequencies: torch.Tensor) -> torch.Tensor:
    """:math:`\\tau(s) = [\\sin(s\\,\\omega), \\cos(s\\,\\omega)]`.

    :param step: ``[*batch]`` step counts.
    :param frequencies: ``[D / 2]`` frequencies :math:`\\omega` (radians per step).
    :returns: ``[*batch, D]``, each with squared norm :math:`D / 2`.
    """
    angles = step.unsqueeze(-1) * frequencies
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


def directional_weights(
    link: torch.Tensor, prev_read_weights: torch.Tensor, forward: bool
) -> torch.Tensor:
    """Follow the links from the previous read positions.

    Forward :math:`f^{r,h} = L^h w^r` (the slot written after the one read), backward
    :math:`b^{r,h} = (L^h)^\\top w^r` (the slot written before).

    :param link: ``[*batch, H, N, N]``.
    :param prev_read_weights: ``[*batch, R, N]``.
    :returns: ``[*batch, R, H, N]``.
    """
    matrix = link.transpose(-1, -2) if forward else link
    weights = prev_read_weights.unsqueeze(-3) @ matrix  # [*, H, R, N]
    return weights.transpose(-2, -3)


def read_weights(
    content: torch.Tensor, backward: torch.Tensor, forward: torch.Tensor, modes: torch.Tensor
) -> torch.Tensor:
    """Mix the read modes: ``modes[..., :H]`` backward, ``[H:2H]`` forward, ``[2H]`` content.

    :param content: ``[*batch, R, N]``.
    :param backward: ``[*batch, R, H, N]``.
    :param forward: ``[*batch, R, H, N]``.
    :param modes: ``[*batch, R, 1 + 2H]`` (a distribution over modes).
    :returns: ``[*batch, R, N]``.
    """
    heads = backward.shape[-2]
    pi_b = modes[..., :heads].unsqueeze(-1)
    pi_f = modes[..., heads : 2 * heads].unsqueeze(-1)
    pi_c = modes[..., 2 * heads :]
    return (pi_b * backward).sum(-2) + (pi_f * forward).sum(-2) + pi_c * content


class DNCMemory(SlotMemory):
    """DNC memory written with the previous latent and read with the controller output.

    :param latent_size: :math:`Z`.
    :param controller_size: size of :math:`h_t`.
    :param num_slots: :math:`N` (default 32).
    :param word_size: :math:`W` (default 32).
    :param num_heads: :math:`R` (default 5).
    :param num_write_heads: :math:`H` (default 1).
    :param read_strength_init: key strength :math:`\\beta > 1` of the read heads at
        initialisation (bias of the interface; default: PyTorch's initialisation, about 1.7).
    :param content_mode_init: probability :math:`\\pi^r[2H] \\in (0, 1)` of the content read mode
        at initialisation, the link modes sharing the rest equally (default: PyTorch's
        initialisation, about :math:`1 / (1 + 2H)`).
    :param time_stamp_size: :math:`D`, even and less than :math:`W`: the last :math:`D` numbers
        of each word are a time stamp of the step that wrote it (default 0: no stamps).
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
        read_strength_init: float | None = None,
        content_mode_init: float | None = None,
        time_stamp_size: int = 0,
    ):
        super().__init__(latent_size, controller_size, num_slots, word_size, num_heads)
        require_positive_sizes(num_write_heads=num_write_heads)
        number("read_strength_init", read_strength_init, 1, low_open=True, allow_none=True)
        number("content_mode_init", content_mode_init, 0, 1, low_open=True, high_open=True,
               allow_none=True)
        integer("time_stamp_size", time_stamp_size, 0)
        if time_stamp_size >= word_size or time_stamp_size % 2:
            raise ValueError(
                f"time_stamp_size must be even and in [0, word_size={word_size}), "
                f"got {time_stamp_size}"
            )
        W, R = self.word_size, self.num_heads
        self.time_stamp_size = D = int(time_stamp_size)
        low, high = TIME_STAMP_FREQUENCIES
        self.register_buffer(
            "time_stamp_frequencies",
            torch.logspace(math.log10(low), math.log10(high), D // 2),
            persistent=False,  # a function of D, so checkpoints need not carry it
        )
        self.num_write_heads = H = int(num_write_heads)
        self.num_read_modes = 1 + 2 * H
        # (name, shape) of each interface part, in order
        self._interface = (
            ("read_keys", (R, W)),
            ("read_strengths", (R,)),
            ("free_gates", (R,)),
            ("read_modes", (R, self.num_read_modes)),
            ("write_keys", (H, W)),
            ("write_strengths", (H,)),
            ("erase", (H, W - D)),
            ("allocation_gates", (H,)),
            ("write_gates", (H,)),
        )
        self._interface_sizes = [int(torch.Size(shape).numel()) for _, shape in self._interface]
        self.interface = UnrolledLinear(controller_size, sum(self._interface_sizes))
        self.add_vector = UnrolledLinear(latent_size + controller_size, H * (W - D))
        self._init_read_addressing(read_strength_init, content_mode_init)

    def _init_read_addressing(self, read_strength, content_mode) -> None:
        bias = dict(zip(
            (name for name, _ in self._interface),
            self.interface.bias.detach().split(self._interface_sizes),
            strict=True,
        ))
        with torch.no_grad():
            if read_strength is not None:  # the inverse of oneplus
                bias["read_strengths"].fill_(math.log(math.expm1(read_strength - 1)))
            if content_mode is not None:  # softmax of [0, .., 0, logit] gives content_mode
                modes = bias["read_modes"].view(self.num_heads, self.num_read_modes)
                modes.zero_()
                odds = content_mode / (1 - content_mode)
                modes[:, -1] = math.log(odds * (self.num_read_modes - 1))

    def write_weights(self, state: DNCState) -> torch.Tensor:
        return state.write_weights

    def initial_state(self, batch_shape, device=None, dtype=None) -> DNCState:
        """The empty memory: every tensor zero, with leading shape ``batch_shape``."""
        batch = tuple(batch_shape)
        N, W, R, H = self.num_slots, self.word_size, self.num_heads, self.num_write_heads

        def zeros(*shape):
            return torch.zeros(batch + shape, device=device, dtype=dtype)

        return DNCState(
            memory=zeros(N, W),
            usage=zeros(N),
            link=zeros(H, N, N),
            precedence=zeros(H, N),
            read_weights=zeros(R, N),
            write_weights=zeros(H, N),
            step=zeros(),
        )

    def split_interface(self, controller_output: torch.Tensor) -> dict[str, torch.Tensor]:
        """The interface vector of :math:`h_t` ``[*batch, C]``, split and squashed.

        :returns: dict with ``read_keys [*, R, W]``, ``read_strengths [*, R]`` (> 1),
            ``free_gates [*, R]``, ``read_modes [*, R, 1 + 2H]`` (softmax), ``write_keys
            [*, H, W]``, ``write_strengths [*, H]`` (> 1), ``erase [*, H, W - D]``,
            ``allocation_gates [*, H]`` and ``write_gates [*, H]`` (gates in (0, 1)).
        """
        flat = self.interface(controller_output)
        parts = {}
        batch = flat.shape[:-1]
        for (name, shape), chunk in zip(
            self._interface, flat.split(self._interface_sizes, dim=-1), strict=True
        ):
            parts[name] = chunk.reshape(batch + shape)
        for name in ("read_strengths", "write_strengths"):
            parts[name] = oneplus(parts[name])
        for name in ("free_gates", "erase", "allocation_gates", "write_gates"):
            parts[name] = torch.sigmoid(parts[name])
        parts["read_modes"] = torch.softmax(parts["read_modes"], dim=-1)
        return parts

    def _check(self, state: DNCState, controller_output, latent):
        if not isinstance(state, DNCState):
            raise ValueError(f"state must be a DNCState, got {type(state).__name__}")
        self.check_step_inputs(controller_output, latent)
        N, W = self.num_slots, self.word_size
        if tuple(state.memory.shape[-2:]) != (N, W):
            raise ValueError(
                f"state.memory must have shape [*batch, {N}, {W}], got {list(state.memory.shape)}"
            )

    def forward(self, state: DNCState, controller_output, latent) -> MemoryOutput:
        """Write :math:`z_{t-1}` (``latent [*batch, Z]``), then read with :math:`h_t`
        (``controller_output [*batch, C]``); leading dims of the state and the inputs broadcast.

        :returns: :class:`~pgtm.memories.base.MemoryOutput` with ``read [*batch, R W]``, the new
            :class:`DNCState` and ``weights``, the read weights ``[*batch, R, N]``.
        """
        self._check(state, controller_output, latent)
        H, W, D = self.num_write_heads, self.word_size, self.time_stamp_size
        add = self.add_vector(cat_features(latent, controller_output)).unflatten(-1, (H, W - D))
        p = self.split_interface(controller_output)
        # one common leading shape for the state and the interface
        names = list(DNCState._fields) + ["add"] + list(p)
        tensors = list(state) + [add] + list(p.values())
        event = [2, 1, 3, 2, 2, 2, 0, 2] + [len(shape) for _, shape in self._interface]
        x = dict(zip(names, broadcast_leading(*tensors, event_dims=event), strict=True))
        if D:
            stamp = time_stamps(x["step"], self.time_stamp_frequencies)
            stamps = stamp.unsqueeze(-2).expand(*x["add"].shape[:-1], D)  # one per write head
            x["add"] = torch.cat([x["add"], stamps], dim=-1)
            x["erase"] = F.pad(x["erase"], (0, D), value=1.0)

        usage = update_usage(x["usage"], x["write_weights"], x["free_gates"], x["read_weights"])
        allocation = write_allocation_weights(usage, x["allocation_gates"] * x["write_gates"])
        write_content = content_weights(x["write_keys"], x["write_strengths"], x["memory"])
        w_write = write_weights(allocation, write_content, x["allocation_gates"], x["write_gates"])
        memory = erase_add_write(x["memory"], w_write, x["erase"], x["add"])
        link = update_link(x["link"], x["precedence"], w_write)
        precedence = update_precedence(x["precedence"], w_write)

        read_content = content_weights(x["read_keys"], x["read_strengths"], memory)
        forward = directional_weights(link, x["read_weights"], forward=True)
        backward = directional_weights(link, x["read_weights"], forward=False)
        w_read = read_weights(read_content, backward, forward, x["read_modes"])
        read = (w_read @ memory).flatten(-2)  # [*, R * W]
        new_state = DNCState(memory, usage, link, precedence, w_read, w_write, x["step"] + 1)
        return MemoryOutput(read, new_state, w_read)
