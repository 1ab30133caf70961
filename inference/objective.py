"""The training objective as a torch module: Pyro's :class:`~pyro.infer.elbo.ELBOModule` of a
GTM's model and guide, so that a torch optimiser over ``gtm.parameters()`` trains it and
:class:`~torch.nn.parallel.DistributedDataParallel` can wrap it.

``objective(x, c=c, mask=mask)`` returns the differentiable (KL-annealed) negative ELBO summed
over the batch: ``Trace_ELBO`` / ``TraceMeanField_ELBO`` (``max_plate_nesting=2``, particles
vectorised at dim -3), or FIVO's. The parameters are the GTM's own ``nn.Parameter`` objects:
the loop reads nothing from Pyro's global param store.
"""

from __future__ import annotations

from typing import Any

import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.elbo import ELBOModule
from torch import nn

from .fivo import FIVO
from .guarded_step import LatentScale

__all__ = ["Program", "training_objective"]


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


def training_objective(gtm: nn.Module, elbo: str, num_particles: int
                       ) -> tuple[ELBOModule, LatentScale]:
    """The objective module of ``gtm`` and its KL-annealing messenger (set ``scaler.beta``).

    :param elbo: ``"trace"``, ``"meanfield"`` or ``"fivo"`` (then ``gtm`` must be a GTM; the
        annealing factor is the FIVO object's ``latent_scale``, set from ``scaler.beta`` by
        :func:`set_beta`).
    :param num_particles: particles per sequence.
    """
    scaler = LatentScale(1.0)
    if elbo == "fivo":
        estimator = FIVO(gtm, num_particles)
    else:
        estimator = (Trace_ELBO if elbo == "trace" else TraceMeanField_ELBO)(
            num_particles=num_particles, vectorize_particles=num_particles > 1,
            max_plate_nesting=2,
        )
    return ELBOModule(Program(gtm, "model", scaler), Program(gtm, "guide", scaler),
                      estimator), scaler


def set_beta(objective: ELBOModule, scaler: LatentScale, beta: float) -> None:
    """Set the KL-annealing factor of ``objective`` for the next step."""
    scaler.beta = beta
    if isinstance(objective.elbo, FIVO):
        objective.elbo.latent_scale = beta
