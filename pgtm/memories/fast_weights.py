r"""Fast-weights memory (Ba et al., 2016, "Using Fast Weights to Attend to the Recent Past") as a
GTM memory.

The memory is a fast weight matrix :math:`A(t-1) \in \mathbb{R}^{D \times D}` (``D = size``), an
outer-product store of the recent hidden vectors that decays geometrically. At step :math:`t` the
GTM calls ``memory(state, h_t, z_{t-1})``; with :math:`f = \mathrm{ReLU}` and :math:`\mathrm{LN}`
layer normalisation with a learned gain and bias,

.. math::

    u_t &= W h_t + C z_{t-1} + b
        && \text{slow pre-activation (one linear layer of } [h_t, z_{t-1}]) \\
    a^0_t &= f(\mathrm{LN}(u_t)) \\
    a^{s+1}_t &= f(\mathrm{LN}(u_t + A(t-1)\, a^s_t)), \quad s = 0, \dots, S-1
        && \text{inner loop} \\
    \Psi_t &= a^S_t && \text{read vector, size } D \\
    A(t) &= \lambda A(t-1) + \eta\, a^S_t (a^S_t)^\top && \text{fast-weight update}

with decay :math:`\lambda \in [0, 1]` (``decay``), fast learning rate :math:`\eta > 0`
(``fast_learning_rate``) and :math:`S \ge 1` inner steps (``inner_steps``). The empty memory is
:math:`A(-1) = 0`. The read of step :math:`t` depends on :math:`z_{t-1}` and on the earlier
latents through :math:`A(t-1)`, never on :math:`z_t`.

**Layer normalisation is per example**, over the :math:`D` features of each :math:`u_t + A a^s`
(``nn.LayerNorm(size)``), as in Ba et al.'s layer normalisation: examples of a batch never
interact, so a batch of :math:`B` sequences gives the same reads as :math:`B` runs of one (public
implementations that take the moments over the batch axis break this; a test checks it).

**Two equivalent forms.** Unrolling the update,
:math:`A(t-1) = \eta \sum_{\tau < t} \lambda^{t-1-\tau} a^S_\tau (a^S_\tau)^\top`, so

.. math::

    A(t-1)\, q = \eta \textstyle\sum_{\tau < t} \lambda^{t-1-\tau}\, a^S_\tau\,
        (a^{S\top}_\tau q),

an attention over the past hidden vectors with scores given by dot products and weights by the
decay. ``form`` picks how the state stores :math:`A(t-1)`:

* ``"matrix"``: :class:`FastWeightsMatrixState`, the matrix itself, ``[*batch, D, D]``;
  :math:`O(D^2)` memory and time per step, exact for any length.
* ``"attention"``: :class:`FastWeightsAttentionState`, a FIFO of the last :math:`L`
  (``num_slots``) vectors :math:`a^S`, ``[*batch, L, D]`` (slot :math:`L-1` the newest, zeros when
  empty), with :math:`A(t-1) q = \eta \sum_{i=0}^{L-1} \lambda^{L-1-i} m_i (m_i^\top q)`;
  :math:`O(L D)` per step, exact as long as the sequence is at most :math:`L` steps long (older
  vectors fall out of the FIFO).
* ``"auto"`` (default): ``"attention"`` when ``num_slots < size`` (cheaper), else ``"matrix"``
  (also when ``num_slots`` is ``None``). The choice is kept in ``memory.form``.

The memory returns no read weights, gates or penalty.

**Defaults.** ``size = 160`` gives ``read_size = 160``, the Introspective memory's default read
size (5 heads of latent size 32), so the controller, prior, posterior and decoder of a GTM are
unchanged and the parameter counts are comparable: the memory has
:math:`(256 + 32) \cdot 160 + 160 = 46{,}240` parameters in the slow layer and :math:`320` in the
layer normalisation, 46,560 in all, and ``build_gtm("fast-weights", sequence_length=15)`` has
1,958,881 parameters, 1.3% more than the Introspective GTM (1,932,881). :math:`\lambda = 0.9`,
:math:`\eta = 0.5`, :math:`S = 1`; with :math:`\lambda = 0.9` a vector written 15 (25) steps back
still has weight :math:`0.9^{15} \approx 0.21` (:math:`0.9^{25} \approx 0.07`), so the
pre-recall items of the tasks stay visible at recall time. ``build_gtm`` sets ``num_slots`` to
the sequence length, so the attention form is exact and (for :math:`T < 160`) chosen by
``"auto"``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from pgtm.checks import number, one_of
from pgtm.memories.base import Memory, MemoryOutput, require_positive_sizes
from pgtm.memories.introspective import fifo_push
from pgtm.shapes import broadcast_leading, cat_features
from pgtm.unrolled_linear import UnrolledLinear

FORMS = ("matrix", "attention", "auto")


class FastWeightsMatrixState(NamedTuple):
    """:ivar fast_weights: ``[*batch, size, size]``, :math:`A(t-1)`."""

    fast_weights: torch.Tensor


class FastWeightsAttentionState(NamedTuple):
    """:ivar history: ``[*batch, num_slots, size]``, the last vectors :math:`a^S`; slot ``-1`` is
    the newest, slots not yet written hold zeros."""

    history: torch.Tensor


def fast_weights_update(
    fast_weights: torch.Tensor, hidden: torch.Tensor, decay: float, learning_rate: float
) -> torch.Tensor:
    r""":math:`A(t) = \lambda A(t-1) + \eta\, a a^\top`.

    :param fast_weights: ``[*batch, D, D]``, :math:`A(t-1)`.
    :param hidden: ``[*batch, D]``, :math:`a`.
    :returns: ``[*batch, D, D]`` (leading dims broadcast).
    """
    outer = hidden.unsqueeze(-1) * hidden.unsqueeze(-2)
    return decay * fast_weights + learning_rate * outer


def matrix_product(fast_weights: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """:math:`A q`.

    :param fast_weights: ``[*batch, D, D]``.
    :param query: ``[*batch, D]``.
    :returns: ``[*batch, D]`` (leading dims broadcast).
    """
    return (fast_weights @ query.unsqueeze(-1)).squeeze(-1)


def history_coefficients(
    num_slots: int, decay: float, learning_rate: float, *, device=None, dtype=None
) -> torch.Tensor:
    r""":math:`\eta \lambda^{L-1-i}` for the slots :math:`i = 0, \dots, L-1`: ``[L]``."""
    exponents = torch.arange(num_slots - 1, -1, -1, device=device, dtype=dtype)
    return learning_rate * torch.pow(decay, exponents)


def history_product(
    history: torch.Tensor, query: torch.Tensor, coefficients: torch.Tensor
) -> torch.Tensor:
    r""":math:`A q = \sum_i c_i\, m_i (m_i^\top q)` without forming :math:`A`.

    :param history: ``[*batch, L, D]``, the vectors :math:`m_i`.
    :param query: ``[*batch, D]``, :math:`q`.
    :param coefficients: ``[L]``, :math:`c_i` (see :func:`history_coefficients`).
    :returns: ``[*batch, D]`` (leading dims broadcast).
    """
    scores = (history @ query.unsqueeze(-1)).squeeze(-1) * coefficients  # [*, L]
    return (scores.unsqueeze(-2) @ history).squeeze(-2)


class FastWeightsMemory(Memory):
    """Fast weights (Ba et al., 2016): a decaying outer-product memory of the recent hidden
    vectors, read by an inner loop of layer-normalised ReLU steps.

    :param latent_size: :math:`Z`.
    :param controller_size: size of :math:`h_t`.
    :param size: :math:`D`, size of the hidden vector :math:`a` and of the read (default 160:
        the Introspective memory's default read size, 5 heads of 32).
    :param num_slots: :math:`L`, vectors kept by the ``"attention"`` form (``build_gtm``: the
        sequence length); ``None`` allows the ``"matrix"`` form only.
    :param decay: :math:`\\lambda \\in [0, 1]` (default 0.9).
    :param fast_learning_rate: :math:`\\eta > 0` (default 0.5).
    :param inner_steps: :math:`S \\ge 1` (default 1).
    :param form: ``"matrix"``, ``"attention"`` or ``"auto"`` (default: attention when
        ``num_slots < size``).
    """

    min_slots = 0

    def __init__(
        self,
        latent_size: int,
        controller_size: int,
        *,
        size: int = 160,
        num_slots: int | None = None,
        decay: float = 0.9,
        fast_learning_rate: float = 0.5,
        inner_steps: int = 1,
        form: str = "auto",
    ):
        super().__init__()
        require_positive_sizes(
            latent_size=latent_size,
            controller_size=controller_size,
            size=size,
            inner_steps=inner_steps,
        )
        if num_slots is not None:
            require_positive_sizes(num_slots=num_slots)
        number("decay", decay, 0, 1)
        number("fast_learning_rate", fast_learning_rate, 0, low_open=True)
        one_of("form", form, FORMS)
        if form == "attention" and num_slots is None:
            raise ValueError("form='attention' needs num_slots (the number of vectors kept)")
        if form == "auto":
            form = "attention" if num_slots is not None and num_slots < size else "matrix"
        self.latent_size = int(latent_size)
        self.controller_size = int(controller_size)
        self.size = int(size)
        self.num_slots = None if num_slots is None else int(num_slots)
        self.decay = float(decay)
        self.fast_learning_rate = float(fast_learning_rate)
        self.inner_steps = int(inner_steps)
        self.form = form
        self.read_size = self.size
        self.slow = UnrolledLinear(controller_size + latent_size, self.size)  # [W, C], b
        self.norm = nn.LayerNorm(self.size)  # per example, over the features

    def extra_repr(self) -> str:
        return (
            f"size={self.size}, num_slots={self.num_slots}, decay={self.decay}, "
            f"fast_learning_rate={self.fast_learning_rate}, inner_steps={self.inner_steps}, "
            f"form={self.form!r}"
        )

    def memory_matrix(self, state) -> torch.Tensor:
        """The fast-weight matrix ``[*batch, D, D]`` or the kept vectors ``[*batch, L, D]``."""
        return state[0]

    def initial_state(
        self, batch_shape, device=None, dtype=None
    ) -> FastWeightsMatrixState | FastWeightsAttentionState:
        """The empty memory :math:`A(-1) = 0`, with leading shape ``batch_shape``."""
        kwargs = {"device": device, "dtype": dtype}
        if self.form == "matrix":
            shape = tuple(batch_shape) + (self.size, self.size)
            return FastWeightsMatrixState(torch.zeros(shape, **kwargs))
        shape = tuple(batch_shape) + (self.num_slots, self.size)
        return FastWeightsAttentionState(torch.zeros(shape, **kwargs))

    def _check(self, state, controller_output: torch.Tensor, latent: torch.Tensor) -> None:
        self.check_step_inputs(controller_output, latent)
        if self.form == "matrix":
            cls, field, event = FastWeightsMatrixState, "fast_weights", (self.size, self.size)
        else:
            cls, field, event = FastWeightsAttentionState, "history", (self.num_slots, self.size)
        tensor = getattr(state, field, None)
        if not isinstance(state, cls) or tensor.dim() < 2 or tuple(tensor.shape[-2:]) != event:
            got = list(tensor.shape) if torch.is_tensor(tensor) else type(state).__name__
            raise ValueError(
                f"state must be a {cls.__name__} with {field} [*batch, {event[0]}, {event[1]}] "
                f"(form={self.form!r}), got {got}"
            )

    def forward(self, state, controller_output, latent) -> MemoryOutput:
        """Run the inner loop with :math:`A(t-1)` (``state``), then store :math:`a^S`.

        :param state: :class:`FastWeightsMatrixState` or :class:`FastWeightsAttentionState`
            (as ``form``).
        :param controller_output: :math:`h_t`, ``[*batch, controller_size]``.
        :param latent: :math:`z_{t-1}`, ``[*batch, latent_size]``.
        :returns: :class:`MemoryOutput` with ``read [*batch, size]`` (:math:`a^S_t`) and the new
            state; no weights, gates or penalty.
        """
        self._check(state, controller_output, latent)
        slow = self.slow(cat_features(controller_output, latent))  # u_t, [*, D]
        if self.form == "matrix":
            fast_weights = state.fast_weights

            def fast(query):
                return matrix_product(fast_weights, query)
        else:
            history = state.history
            coefficients = history_coefficients(
                self.num_slots,
                self.decay,
                self.fast_learning_rate,
                device=history.device,
                dtype=history.dtype,
            )

            def fast(query):
                return history_product(history, query, coefficients)

        hidden = F.relu(self.norm(slow))  # a^0
        for _ in range(self.inner_steps):
            hidden = F.relu(self.norm(slow + fast(hidden)))  # a^{s+1}
        if self.form == "matrix":
            new = fast_weights_update(
                state.fast_weights, hidden, self.decay, self.fast_learning_rate
            )
            read, new = broadcast_leading(hidden, new, event_dims=(1, 2))
            return MemoryOutput(read, FastWeightsMatrixState(new))
        new = fifo_push(state.history, hidden)
        read, new = broadcast_leading(hidden, new, event_dims=(1, 2))
        return MemoryOutput(read, FastWeightsAttentionState(new))
