r"""The speed floor of the training step: one optimisation step on the GTM's ELBO written out in
torch without Pyro (:func:`pgtm.inference.direct_elbo.direct_elbo_loss`: the *same* modules in
the same order as Pyro's ``Trace_ELBO`` runs ``gtm.guide`` and then ``gtm.model``, with no trace,
messengers, plates or per-site checks; under the same seed its loss and gradients equal Pyro's,
``tests/test_direct_elbo.py``). The Pyro step is benchmarked against it
(``benchmarks/bench_step.py``, ``benchmarks/matmul_floor.py``).
"""

from __future__ import annotations

from pgtm.inference.direct_elbo import direct_elbo_loss
from pgtm.inference.guarded_step import without_pyro_checks

__all__ = ["floor_step"]


def floor_step(gtm, optimizer, x, c=None, mask=None, *, check_inputs: bool = False) -> float:
    """One optimisation step on the floor loss, mirroring ``pyro.infer.SVI.step``: loss,
    backward, optimiser step, gradients cleared, loss returned as a Python float (a host
    synchronisation, as in Pyro). The distributions' argument validation is off, as a
    hand-written loop would have it (and as ``pgtm train`` steps after a batch shape's first).

    :param optimizer: a ``torch.optim.Optimizer`` over ``gtm.parameters()`` (e.g.
        :class:`pyro.optim.clipped_adam.ClippedAdam`, the optimiser Pyro's ``ClippedAdam``
        wraps).
    :returns: the loss.
    """
    with without_pyro_checks():
        loss = direct_elbo_loss(gtm, x, c, mask, check_inputs=check_inputs)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()
