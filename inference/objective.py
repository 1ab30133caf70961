"""The training objective as a torch module: Pyro's :class:`~pyro.infer.elbo.ELBOModule` of a
GTM's model and guide, so that a torch optimiser over ``gtm.parameters()`` trains it and
:class:`~torch.nn.parallel.DistributedDataParallel` can wrap it.

``objective(x, c=c, mask=mask)`` returns the differentiable (KL-annealed) negative ELBO summed
over the batch: ``Trace_ELBO`` / ``TraceMeanField_ELBO`` (``max_plate_nesting=2``, particles
vectorised at dim -3), or FIVO's. The parameters are the GTM's own ``nn.Parameter`` objects:
the loop reads nothing from Pyro's global param store.

:class:`CompiledObjective` is the same ``Trace_ELBO`` objective trained through the GTM's ELBO
written out in torch (:mod:`~pgtm.inference.direct_elbo`) and compiled whole by
``torch.compile``: forward and backward of a step fused into one graph each, which a CPU runs
1.3-1.8x faster than the eager step (``benchmarks/compiled_step.py``), after a compilation of
about a minute or two, again for every new batch shape or sequence length (opt-in: ``pgtm train
--compile``).
"""

from __future__ import annotations

import math
from typing import Any

import pyro
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.elbo import ELBOModule
from torch import nn

from pgtm.models.gtm import GTM

from .direct_elbo import direct_elbo_loss, unsupported
from .fivo import FIVO
from .guarded_step import LatentScale, without_pyro_checks

__all__ = ["CompiledObjective", "Program", "set_beta", "training_objective"]

#: how far the written-out loss may be from Pyro's on the first batch (float32 sums in
#: another order differ by ~1e-7 relative; a left-out site moves the loss by far more)
SAME_LOSS_RTOL = 1e-5


class Program(nn.Module):
    """One Pyro program of ``gtm`` (``"model"`` or ``"guide"``) as a module, run under the KL
    annealing messenger ``scaler`` (shared by model and guide)."""

    def __init__(self, gtm: nn.Module, program: str, scaler: LatentScale) -> None:
        super().__init__()
        self.gtm = gtm
        self.program = program
        self.scaler = scaler

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> Any:
        with self.scaler:
            return getattr(self.gtm, self.program)(x, c=c, mask=mask)


class CompiledObjective(nn.Module):
    """Pyro's single-particle ``Trace_ELBO`` objective of a GTM, computed by the written-out ELBO
    (:func:`~pgtm.inference.direct_elbo.direct_elbo_loss`, per-step weight gradients) compiled
    whole (``torch.compile(fullgraph=True, dynamic=False)``; inductor draws its noise from
    torch's generator, so a step draws what the eager one would).

    Every step's loss and gradients come from the compiled graph, so that where the checks fall
    (a run's, and a resumed run's, first step of a batch shape) cannot change the trajectory.
    The first call, and every call while Pyro's distribution validation is on (the checked
    steps of :func:`~pgtm.inference.guarded_step.guarded_step`), also run the Pyro objective
    forward under the same draws, without gradients, for its checks; the first compares its
    loss with the written-out one and raises ``ValueError`` if the two differ, e.g. for a model
    or guide edited beyond the GTM's parts (the written-out ELBO runs the parts, not the
    programs).

    :param objective: the ``Trace_ELBO`` :class:`~pyro.infer.elbo.ELBOModule` of ``gtm``.
    :param gtm: a :class:`~pgtm.models.gtm.GTM` that :func:`~pgtm.inference.direct_elbo.unsupported`
        accepts.
    :param scaler: the KL-annealing messenger of ``objective`` (its ``beta`` is read per call).
    """

    def __init__(self, objective: ELBOModule, gtm: GTM, scaler: LatentScale) -> None:
        super().__init__()
        self.objective = objective
        self.gtm = gtm
        self.scaler = scaler
        self.compared = False
        self.compiled_loss = torch.compile(self._loss, fullgraph=True, dynamic=False,
                                           options={"fallback_random": True})

    def _loss(self, x, c, mask, beta):
        return direct_elbo_loss(self.gtm, x, c, mask, beta=beta, unrolled=False)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        if not self.compared or pyro.distributions.is_validation_enabled():
            self._check(x, c, mask)
        with without_pyro_checks():  # checks are Python branches on values: no graph
            try:
                return self.compiled_loss(x, c, mask, x.new_tensor(self.scaler.beta))
            except RuntimeError as err:
                from torch._dynamo.exc import BackendCompilerFailed  # torch.compile's own

                if not isinstance(err, BackendCompilerFailed):
                    raise
                raise RuntimeError(
                    f"compile: torch.compile could not build this model's step "
                    f"({type(err).__name__}); rerun to try again (what compiled is cached), or "
                    "train without --compile") from err

    def _check(self, x, c, mask) -> None:
        """Pyro's checks of the programs on this batch (the Pyro objective's forward, its draws
        undone) and, on the first call, the written-out loss against Pyro's."""
        pyro_loss = _undrawn(x.device, lambda: self.objective(x, c=c, mask=mask))
        if self.compared:
            return
        direct = _undrawn(x.device, lambda: direct_elbo_loss(self.gtm, x, c, mask,
                                                             beta=self.scaler.beta))
        if not math.isclose(direct, pyro_loss, rel_tol=SAME_LOSS_RTOL):
            raise ValueError(
                f"compile: on the first batch the model's Pyro programs give a loss of "
                f"{pyro_loss:.7g} and the GTM's written-out ELBO {direct:.7g} under the same "
                "draws (a model or guide edited beyond its parts?); train without --compile")
        self.compared = True


def _undrawn(device: torch.device, loss) -> float:
    """``loss()`` without gradients, the generators' states restored after it."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
            torch.no_grad():
        return float(loss())


def training_objective(gtm: nn.Module, elbo: str, num_particles: int, compiled: bool = False
                       ) -> tuple[nn.Module, LatentScale]:
    """The objective module of ``gtm`` and its KL-annealing messenger (set ``scaler.beta``).

    :param elbo: ``"trace"``, ``"meanfield"`` or ``"fivo"`` (then ``gtm`` must be a GTM; the
        annealing factor is the FIVO object's ``latent_scale``, set from ``scaler.beta`` by
        :func:`set_beta`).
    :param num_particles: particles per sequence.
    :param compiled: the :class:`CompiledObjective` of the ``Trace_ELBO`` objective (one
        particle, a GTM that :func:`~pgtm.inference.direct_elbo.unsupported` accepts).
    :raises ValueError: for ``compiled`` with anything else.
    """
    if compiled:
        why = compile_unsupported(gtm, elbo, num_particles)
        if why is not None:
            raise ValueError(f"compile: {why}")
    scaler = LatentScale(1.0)
    if elbo == "fivo":
        estimator = FIVO(gtm, num_particles)
    else:
        estimator = (Trace_ELBO if elbo == "trace" else TraceMeanField_ELBO)(
            num_particles=num_particles, vectorize_particles=num_particles > 1,
            max_plate_nesting=2,
        )
    objective = ELBOModule(Program(gtm, "model", scaler), Program(gtm, "guide", scaler),
                           estimator)
    return (CompiledObjective(objective, gtm, scaler) if compiled else objective), scaler


def compile_unsupported(gtm: nn.Module, elbo: str, num_particles: int) -> str | None:
    """Why :class:`CompiledObjective` cannot train ``gtm`` with this ELBO, or ``None``."""
    why = elbo_not_compiled(elbo, num_particles)
    if why is not None:
        return why
    if not isinstance(gtm, GTM):
        return f"the compiled objective needs a GTM, got {type(gtm).__name__}"
    return unsupported(gtm)


def elbo_not_compiled(elbo: str, num_particles: int) -> str | None:
    """Why :class:`CompiledObjective` cannot compute this ELBO (it is the single-particle trace
    ELBO), or ``None``."""
    if elbo != "trace" or num_particles != 1:
        return (f"needs elbo='trace' with num_particles=1, got elbo={elbo!r} with "
                f"num_particles={num_particles}")
    return None


def set_beta(objective: nn.Module, scaler: LatentScale, beta: float) -> None:
    """Set the KL-annealing factor of ``objective`` for the next step."""
    scaler.beta = beta
    if isinstance(getattr(objective, "elbo", None), FIVO):
        objective.elbo.latent_scale = beta
