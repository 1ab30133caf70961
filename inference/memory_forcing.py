r"""Memory Forcing (Asadulaev, Tretyak & Filchenkov), after Professor Forcing (Lamb et al., 2016).

A GTM is run in two regimes: *teacher forced*, with its latents drawn from the posterior
:math:`q(z_t \mid \Psi_{t-1}, h_t, x_t)` (as in the guide, so the data drive the dynamics), and
*free running*, with its latents drawn from the prior :math:`p(z_t \mid \Psi_{t-1}, h_t)` (as
when it generates). Memory Forcing trains the generator so that its deterministic dynamics look
the same in both regimes. Two discriminators watch them:

* :math:`D_h` reads the controller's hidden-state sequence :math:`h_{1:T}`;
* :math:`D_m` reads the memory-state sequence :math:`M_{1:T}` through a *slot-order-invariant*
  summary (:class:`MemorySummary`), since a memory whose slots are permuted holds the same
  content.

Each discriminator minimises its classification loss (teacher forced = label 1, free running =
label 0). The generator minimises :math:`-\mathrm{ELBO} + \lambda (C_h + C_m)` where
:math:`C_h, C_m` are the discriminators' losses on the free-running behaviour with *flipped*
labels (the generator tries to make free running look teacher forced).

Gating (as in Professor Forcing), separately for each discriminator and on the current batch:
its generator term enters the loss only when its accuracy is above ``accuracy_gate`` (default
0.75; a discriminator near chance carries no useful signal), and it is only updated while its
accuracy is below ``update_gate`` (default 0.99; a discriminator that wins outright would give
vanishing gradients).

Gradients are kept apart both ways: the discriminators are trained on *detached* rollouts
(their update cannot move the generator), and the generator term calls the discriminators with
*detached copies* of their parameters (:func:`torch.func.functional_call`), so it gives them no
gradient whatever the caller back-propagates into.

:class:`MemoryForcing` is a regulariser for :func:`pgtm.inference.train.train` (see
:class:`~pgtm.inference.train.Regulariser`): it adds the generator term to the loss each step,
runs its own Adam step for the discriminators and checkpoints their weights, optimiser state
and counters, so that resume stays exact.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from pgtm.checks import number
from pgtm.inference.train import RegulariserLoss

__all__ = [
    "SUMMARIES",
    "DeepSets",
    "MemoryForcing",
    "MemorySummary",
    "Rollout",
    "SequenceDiscriminator",
    "discriminator_accuracy",
    "gate",
    "gram_spectrum",
    "rollout",
]

#: Allowed ``summary`` choices of :class:`MemorySummary`.
SUMMARIES = ("spectrum", "deepsets", "both")


# ----------------------------------------------------------------------------------------------
# Rollouts


class Rollout(NamedTuple):
    """One run of a GTM's deterministic path.

    :ivar hidden: ``[B, T, H]`` controller outputs :math:`h_t`.
    :ivar memory: ``[B, T, N, W]`` memory matrix after the write of step ``t``, or ``None`` for
        a memory without one (VRNN).
    :ivar latents: ``[B, T, Z]`` the latents drawn (by ``rsample``).
    :ivar mask: ``[B, T]`` bool, True where the step exists.
    """

    hidden: torch.Tensor
    memory: torch.Tensor | None
    latents: torch.Tensor
    mask: torch.Tensor


def rollout(
    gtm: nn.Module,
    x: torch.Tensor,
    c: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    *,
    teacher_forced: bool,
) -> Rollout:
    r"""Run ``gtm``'s deterministic path over a batch, differentiably.

    One :meth:`~pgtm.models.gtm.GTM.unroll` (a random memory starts from its posterior given
    the frames, or from its prior). Latents are drawn with ``rsample`` from the posterior
    (``teacher_forced=True``, the frames ``x`` drive the dynamics as in the guide) or from the
    prior (``teacher_forced=False``, free running: only the shape of ``x`` and the context
    ``c``, an external input, are used). Wrap the call in :func:`torch.no_grad` when no
    gradient is needed.

    :param gtm: a :class:`~pgtm.models.gtm.GTM`.
    :param x: frames ``[B, T, *frame_shape]``.
    :param c: context ``[B, T, action_size]`` or ``None``.
    :param mask: ``[B, T]`` bool or ``None`` (all steps).
    :param teacher_forced: posterior (True) or prior (False) latents.
    :returns: a :class:`Rollout`; the hidden state is the :math:`h_t` part of the step's
        context :math:`[\Psi_{t-1}, h_t]`.
    :raises ValueError: bad inputs (see ``gtm.check_inputs``) or a distribution without
        ``rsample``.
    """
    x, c, mask = gtm.check_inputs(x, c, mask)
    batch, length = x.shape[:2]
    path = gtm.unroll(length, batch, features=gtm.encoder(x) if teacher_forced else None,
                      observed_steps=length if teacher_forced else 0, c=c, mask=mask,
                      reparameterised=True, keep_memories=True, device=x.device, dtype=x.dtype)
    return Rollout(path.contexts[..., gtm.memory.read_size:], path.memories, path.latents, mask)


# ----------------------------------------------------------------------------------------------
# Slot-order-invariant memory summaries


def gram_spectrum(memory: torch.Tensor) -> torch.Tensor:
    r"""Sorted eigenvalues of the Gram matrix of a memory, compressed by ``log1p``.

    :math:`M M^\top` and :math:`M^\top M` share their non-zero eigenvalues (the squared singular
    values of :math:`M`); the smaller of the two is decomposed (``torch.linalg.eigvalsh``, in
    ascending order). A permutation of the slots (rows) :math:`P M` gives
    :math:`P M M^\top P^\top`, similar to :math:`M M^\top`, and leaves :math:`M^\top M`
    unchanged: the spectrum does not depend on slot order. Eigenvalue gradients
    (:math:`v_i v_i^\top`) stay finite even for repeated eigenvalues.

    The decomposition runs in float64: the float32 LAPACK eigensolver returned NaN for a
    rank-one memory a DNC wrote in its first step (every row a multiple of the same word), which
    stopped a training run; the Gram matrix of any float32 memory is well inside float64's
    normal range.

    :param memory: ``[*batch, N, W]``.
    :returns: ``[*batch, min(N, W)]`` in ``memory``'s dtype, ``log1p`` of the eigenvalues
        (clamped at 0 against round-off).
    """
    if memory.dim() < 2:
        raise ValueError(f"memory must have shape [*batch, N, W], got {list(memory.shape)}")
    n, w = memory.shape[-2:]
    wide = memory.double()
    transposed = wide.transpose(-1, -2)
    gram = wide @ transposed if n <= w else transposed @ wide
    return torch.log1p(torch.linalg.eigvalsh(gram).clamp_min(0.0)).to(memory.dtype)


class DeepSets(nn.Module):
    r"""A set encoder over the rows of a memory: :math:`\sum_i \phi(m_i)` with an MLP
    :math:`\phi` (Zaheer et al., 2017). Sum pooling makes it invariant to the slot order.

    :param word_size: :math:`W`.
    :param output_size: size of the pooled code.
    :param hidden_size: width of :math:`\phi`.
    """

    def __init__(self, word_size: int, output_size: int = 32, hidden_size: int = 64):
        super().__init__()
        self.output_size = output_size
        self.phi = nn.Sequential(
            nn.Linear(word_size, hidden_size), nn.ReLU(), nn.Linear(hidden_size, output_size)
        )

    def forward(self, memory: torch.Tensor) -> torch.Tensor:
        """``[*batch, N, W] -> [*batch, output_size]``."""
        return self.phi(memory).sum(-2)


class MemorySummary(nn.Module):
    """Per-step, slot-order-invariant features of a memory matrix.

    :param num_slots: :math:`N`.
    :param word_size: :math:`W`.
    :param summary: ``"spectrum"`` (:func:`gram_spectrum`, no parameters), ``"deepsets"``
        (:class:`DeepSets`) or ``"both"`` (concatenated).
    :param deepsets_size: output size of the DeepSets encoder.
    """

    def __init__(self, num_slots: int, word_size: int, summary: str = "both",
                 deepsets_size: int = 32):
        super().__init__()
        if summary not in SUMMARIES:
            raise ValueError(f"summary must be one of {SUMMARIES}, got {summary!r}")
        self.summary = summary
        self.spectrum = summary in ("spectrum", "both")
        self.deepsets = (
            DeepSets(word_size, deepsets_size) if summary in ("deepsets", "both") else None
        )
        self.output_size = (min(num_slots, word_size) if self.spectrum else 0) + (
            deepsets_size if self.deepsets is not None else 0
        )

    def forward(self, memory: torch.Tensor) -> torch.Tensor:
        """``[*batch, N, W] -> [*batch, output_size]``."""
        parts = []
        if self.spectrum:
            parts.append(gram_spectrum(memory))
        if self.deepsets is not None:
            parts.append(self.deepsets(memory))
        return torch.cat(parts, -1)


# ----------------------------------------------------------------------------------------------
# Discriminators


class SequenceDiscriminator(nn.Module):
    """A GRU over a sequence of per-step features and a linear read-out: one logit per sequence
    (positive: teacher forced).

    :param input_size: size of the per-step features (after ``features``).
    :param hidden_size: GRU size.
    :param features: optional per-step feature map applied first (e.g. :class:`MemorySummary`),
        ``[B, T, *step_shape] -> [B, T, input_size]``.
    """

    def __init__(self, input_size: int, hidden_size: int = 128, features: nn.Module | None = None):
        super().__init__()
        self.features = features
        self.gru = nn.GRU(input_size, hidden_size, batch_first=True)
        self.out = nn.Linear(hidden_size, 1)

    def forward(self, sequence: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """:param sequence: ``[B, T, ...]``.
        :param mask: ``[B, T]`` bool (steps past a sequence's end are False) or ``None``.
        :returns: logits ``[B]`` read at each sequence's last existing step."""
        inputs = sequence if self.features is None else self.features(sequence)
        outputs, _ = self.gru(inputs)  # [B, T, hidden]
        if mask is None:
            last = outputs[:, -1]
        else:
            index = (mask.long().sum(1) - 1).clamp_min(0)
            last = outputs[torch.arange(outputs.shape[0], device=outputs.device), index]
        return self.out(last).squeeze(-1)


def discriminator_accuracy(teacher_logits: torch.Tensor, free_logits: torch.Tensor) -> float:
    """Fraction of the ``2B`` sequences classified right (teacher forced: logit > 0)."""
    right = (teacher_logits > 0).sum() + (free_logits <= 0).sum()
    return float(right) / (teacher_logits.numel() + free_logits.numel())


def gate(accuracy: float, accuracy_gate: float, update_gate: float) -> tuple[bool, bool]:
    """Professor Forcing's gating of one discriminator on the current batch.

    :returns: ``(use_generator_term, update_discriminator)``: the generator term counts only
        when ``accuracy > accuracy_gate``; the discriminator is updated only when
        ``accuracy < update_gate``.
    """
    return accuracy > accuracy_gate, accuracy < update_gate


# ----------------------------------------------------------------------------------------------
# The regulariser


class MemoryForcing:
    r"""Memory Forcing as a regulariser of :func:`~pgtm.inference.train.train`.

    Each step (:meth:`loss`): a teacher-forced rollout (no gradient) and a free-running rollout
    (with gradient) of the batch; each discriminator scores both; per discriminator, its
    accuracy on this batch gates (:func:`gate`) whether

    * its generator term :math:`\lambda \sum_b \mathrm{BCE}(D(\text{free}_b), 1)` (summed over
      sequences, like the negative ELBO) enters the generator's loss, and
    * its own loss :math:`\tfrac12[\mathrm{BCE}(D(\text{tf}), 1) + \mathrm{BCE}(D(\text{free}),
      0)]` (means over the batch, on detached rollouts) is returned for an update.

    :meth:`step` then takes one Adam step of the discriminators.

    :param gtm: the GTM to be trained (sizes the discriminators).
    :param weight: :math:`\lambda >= 0`.
    :param accuracy_gate: generator term only above this accuracy, in [0, 1] (default 0.75).
    :param update_gate: discriminator update only below this accuracy, in [0, 1] (default 0.99).
    :param learning_rate: Adam learning rate of the discriminators.
    :param hidden_size: GRU size of the discriminators.
    :param summary: memory summary, one of :data:`SUMMARIES`.
    :param deepsets_size: DeepSets code size (``summary`` ``"deepsets"``/``"both"``).
    :param memory_discriminator: add :math:`D_m` (a memory without a matrix, e.g. the VRNN,
        never has one).
    """

    PREFIX = "mf_"

    def __init__(
        self,
        gtm: nn.Module,
        *,
        weight: float = 1.0,
        accuracy_gate: float = 0.75,
        update_gate: float = 0.99,
        learning_rate: float = 1e-3,
        hidden_size: int = 128,
        summary: str = "both",
        deepsets_size: int = 32,
        memory_discriminator: bool = True,
    ):
        self.config = {
            "weight": number("weight", weight, 0),
            "accuracy_gate": number("accuracy_gate", accuracy_gate, 0, 1),
            "update_gate": number("update_gate", update_gate, 0, 1),
            "learning_rate": number("learning_rate", learning_rate, 0, low_open=True),
            "hidden_size": int(hidden_size),
            "summary": summary,
            "deepsets_size": int(deepsets_size),
            "memory_discriminator": bool(memory_discriminator),
        }
        param = next(gtm.parameters())
        discriminators = {
            "hidden": SequenceDiscriminator(gtm.controller.output_size, hidden_size),
        }
        probe = gtm.memory.memory_matrix(gtm.memory.initial_state((1,), param.device, param.dtype))
        if memory_discriminator and probe is not None:
            num_slots, word_size = probe.shape[-2:]
            features = MemorySummary(num_slots, word_size, summary, deepsets_size)
            discriminators["memory"] = SequenceDiscriminator(
                features.output_size, hidden_size, features
            )
        self.discriminators = nn.ModuleDict(discriminators).to(param.device)
        self.optimizer = torch.optim.Adam(self.discriminators.parameters(), lr=learning_rate)
        #: per discriminator: steps with the generator term on, discriminator updates
        self.counts = torch.zeros(len(discriminators), 2, dtype=torch.int64)

    # ------------------------------------------------------------------ regulariser protocol
    def parameters(self) -> Iterator[nn.Parameter]:
        """The discriminators' parameters (optimised by :meth:`step` only)."""
        return self.discriminators.parameters()

    def to(self, device) -> MemoryForcing:
        self.discriminators.to(device)
        return self

    def loss(self, gtm: nn.Module, batch: Any, step: int) -> RegulariserLoss:
        """The generator term and the discriminators' loss on ``batch`` (see the class doc).

        :param gtm: the GTM being trained.
        :param batch: a :class:`~pgtm.tasks.SequenceBatch` (``x``, ``c``, ``mask``).
        :param step: the 1-based training step (unused).
        :returns: :class:`~pgtm.inference.train.RegulariserLoss` whose ``generator`` is ``None``
            when no discriminator passes its accuracy gate and ``own`` is ``None`` when none may
            be updated; ``metrics`` per discriminator ``d``: ``mf_<d>_accuracy``,
            ``mf_<d>_d_loss``, ``mf_<d>_g_loss`` (unweighted, per sequence), ``mf_<d>_g_on``
            and ``mf_<d>_d_on`` (0/1), and ``mf_term`` (the weighted term added).
        """
        with torch.no_grad():
            teacher = rollout(gtm, batch.x, batch.c, batch.mask, teacher_forced=True)
        free = rollout(gtm, batch.x, batch.c, batch.mask, teacher_forced=False)
        mask = free.mask
        generator_terms, own_terms, metrics = [], [], {}
        for i, (name, disc) in enumerate(self.discriminators.items()):
            seq_tf, seq_free = _view(teacher, name), _view(free, name)
            logits_tf = disc(seq_tf, mask)
            logits_free = disc(seq_free.detach(), mask)
            accuracy = discriminator_accuracy(logits_tf.detach(), logits_free.detach())
            use_term, update = gate(
                accuracy, self.config["accuracy_gate"], self.config["update_gate"]
            )
            own = 0.5 * (
                F.binary_cross_entropy_with_logits(logits_tf, torch.ones_like(logits_tf))
                + F.binary_cross_entropy_with_logits(logits_free, torch.zeros_like(logits_free))
            )
            # flipped label, through detached discriminator parameters: no gradient reaches D
            frozen = {k: v.detach() for k, v in disc.named_parameters()}
            fooled = functional_call(disc, frozen, (seq_free, mask))
            generator = F.softplus(-fooled).sum()  # = sum_b BCE(D(free_b), 1)
            if use_term:
                generator_terms.append(generator)
            if update:
                own_terms.append(own)
            self.counts[i, 0] += int(use_term)
            self.counts[i, 1] += int(update)
            p = f"{self.PREFIX}{name}_"
            metrics.update({
                p + "accuracy": accuracy,
                p + "d_loss": float(own.detach()),
                p + "g_loss": float(generator.detach()) / logits_tf.numel(),
                p + "g_on": float(use_term),
                p + "d_on": float(update),
            })
        term = None
        if generator_terms:
            term = self.config["weight"] * torch.stack(generator_terms).sum()
        metrics[self.PREFIX + "term"] = 0.0 if term is None else float(term.detach())
        own_loss = torch.stack(own_terms).sum() if own_terms else None
        return RegulariserLoss(term, own_loss, metrics)

    def step(self) -> None:
        """One Adam step of the discriminators with the gradients of the last ``own`` loss
        (a discriminator without gradient, gated off, is left alone), then clear them."""
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict[str, Any]:
        """Discriminator weights, Adam state, counters and config: plain tensors, numbers and
        strings (``torch.load(..., weights_only=True)`` loads them)."""
        return {
            "discriminators": self.discriminators.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "counts": self.counts.clone(),
            "config": dict(self.config),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Inverse of :meth:`state_dict` (a changed config is applied with a warning: the
        continuation is then not exact)."""
        changed = [k for k, v in state["config"].items() if self.config.get(k) != v]
        if changed:
            warnings.warn(
                f"resuming Memory Forcing with changed settings {changed}; the continuation is "
                "not identical to an uninterrupted run",
                stacklevel=2,
            )
        self.discriminators.load_state_dict(state["discriminators"])
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:
            group["lr"] = self.config["learning_rate"]
        self.counts.copy_(state["counts"])


def _view(run: Rollout, name: str) -> torch.Tensor:
    return run.hidden if name == "hidden" else run.memory
