r"""The FIVO training objective (Maddison et al., 2017): the negative log of the particle
filter's evidence estimate, :math:`-\sum_b \log \hat p(x_b)` from :func:`~pgtm.inference.smc.smc`.

Gradients flow through the reparameterised samples and the weights; the ancestor indices of
resampling carry none, and their score-function terms are dropped, as Maddison et al. do. With
one particle this is the negative ELBO. The memory's penalties are added to the loss (as the
``pyro.factor`` sites add them to the ELBO), and KL annealing multiplies
:math:`\log p(z) - \log q(z)` in every weight by :attr:`FIVO.latent_scale`.

:class:`FIVO` has the ``loss`` / ``loss_and_grads`` / ``differentiable_loss`` methods of a Pyro
ELBO, so the training loop's ``ELBOModule`` steps it like :class:`~pyro.infer.Trace_ELBO`; it
needs the GTM itself (not only its Pyro programs) because the particle filter runs the GTM's
step function.
"""

from __future__ import annotations

import pyro
import torch

from pgtm.inference.smc import smc

__all__ = ["FIVO"]


class FIVO:
    """FIVO objective of a GTM.

    :param gtm: the :class:`~pgtm.models.GTM` being trained.
    :param num_particles: ``K >= 1`` particles per sequence.
    :param resampling: ``"systematic"`` or ``"multinomial"``.
    :param ess_threshold: resample at ESS ``<= ess_threshold * K`` (FIVO's K/2 by default).
    :param module_name: the name under which the GTM's parameters are registered with Pyro
        (so that a loop capturing ``param`` sites, as ``SVI`` does, finds them).
    """

    def __init__(self, gtm, num_particles: int, *, resampling: str = "systematic",
                 ess_threshold: float = 0.5, module_name: str = "gtm"):
        self.gtm = gtm
        self.num_particles = num_particles
        self.resampling = resampling
        self.ess_threshold = ess_threshold
        self.module_name = module_name
        self.latent_scale = 1.0

    def _loss(self, x, c=None, mask=None) -> torch.Tensor:
        pyro.module(self.module_name, self.gtm)
        result = smc(self.gtm, x, c, mask, self.num_particles, resampling=self.resampling,
                     ess_threshold=self.ess_threshold, latent_scale=self.latent_scale,
                     include_penalty=True)
        return -result.log_evidence.sum()

    def loss(self, model, guide, x, c=None, mask=None) -> float:
        """The loss without gradients (``model`` and ``guide`` are ignored: see above)."""
        with torch.no_grad():
            return float(self._loss(x, c, mask))

    def differentiable_loss(self, model, guide, x, c=None, mask=None) -> torch.Tensor:
        """The loss as a differentiable 0-dim tensor (what Pyro's ``ELBOModule`` calls)."""
        return self._loss(x, c, mask)

    def loss_and_grads(self, model, guide, x, c=None, mask=None) -> float:
        """The loss, with its gradients accumulated into the GTM's parameters."""
        loss = self._loss(x, c, mask)
        loss.backward()
        return float(loss.detach())
