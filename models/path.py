"""The deterministic path of a GTM between steps, and the guide's path as the model replays it
(see :mod:`pgtm.models.gtm`, "One deterministic path per step")."""

from __future__ import annotations

from typing import NamedTuple

import torch


class PathState(NamedTuple):
    """Recurrent state between steps: controller and memory state, last read, last latent and,
    with frame feedback, the last frame's encoder features (``None`` without)."""

    controller: tuple
    memory: tuple
    read: torch.Tensor
    latent: torch.Tensor
    frame: torch.Tensor | None = None


class PathStep(NamedTuple):
    """The deterministic path of one step.

    :ivar context: ``[*batch, context_size]``, :math:`[\\Psi_{t-1}, h_t]`.
    :ivar state: the state after the memory write (its ``latent`` is still :math:`z_{t-1}`).
    :ivar weights: read weights ``[*batch, R, N]`` or ``None``.
    :ivar gates: read gates ``[*batch, R]`` or ``None``.
    :ivar penalty: ``[*batch]`` or ``None``.
    """

    context: torch.Tensor
    state: PathState
    weights: torch.Tensor | None
    gates: torch.Tensor | None
    penalty: torch.Tensor | None


class GuidePath:
    """The guide's deterministic path, kept for the model's replay of the same latents."""

    def __init__(self, inputs, checked):
        self.inputs = inputs
        self.checked = checked
        self.steps: list[PathStep] = []
        self.latents: list[torch.Tensor] = []
        self.memory_latents: tuple[torch.Tensor, ...] = ()
        self.features: tuple[torch.Tensor, ...] | None = None  # T x [B, 1, F], for feedback

    def matches(self, x, c, mask) -> bool:
        return all(a is b for a, b in zip(self.inputs, (x, c, mask), strict=True))


class FollowedPath:
    """The guide's path as the model replays it: the model takes the guide's step ``t`` while
    every latent it has seen is the very tensor the guide sampled (an identity test, so the
    reuse is exact); from the first other latent on, it computes its own path."""

    def __init__(self, path: GuidePath | None) -> None:
        self.path = path
        #: the guide's encoder features of the frames, kept for frame feedback
        self.features = None if path is None else path.features
        self._priors: list | None = None

    @property
    def checked_inputs(self) -> tuple | None:
        """The guide's validated ``(x, c, mask)``, or ``None`` when not following it."""
        return None if self.path is None else self.path.checked

    def start(self, memory_latents: tuple) -> None:
        """Stop following unless the memory hook's latents are the guide's."""
        if self.path is not None and not same_latents(memory_latents, self.path.memory_latents):
            self.path = None

    def step(self, t: int, state: PathState) -> PathStep | None:
        """The guide's step ``t`` if the model still follows it, else ``None``."""
        if self.path is not None and (t == 0 or state.latent is self.path.latents[t - 1]):
            return self.path.steps[t]
        self.path = None
        return None

    def prior(self, t: int, prior) -> torch.distributions.Distribution:
        """The prior of the guide's step ``t`` (just returned by :meth:`step`): at the first
        call, ``prior.over_steps`` runs once on the contexts of all the guide's steps, so the
        prior network sees every step in one batch instead of one call per step."""
        if self._priors is None:
            self._priors = prior.over_steps([step.context for step in self.path.steps])
        return self._priors[t]


def same_latents(latents: tuple, guide_latents: tuple) -> bool:
    """Whether the model's memory latents are the very tensors the guide sampled."""
    return len(latents) == len(guide_latents) and all(
        a is b for a, b in zip(latents, guide_latents, strict=True)
    )
