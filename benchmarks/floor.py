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

__all__ = ["floor_step", "optimizer_step"]


def optimizer_step(loss, optimizer) -> float:
    """One optimisation step as ``pyro.infer.SVI.step`` takes it: ``loss()`` with the
    distributions' argument validation off (as a hand-written loop has it, and as ``pgtm
    train`` steps after a batch shape's first), backward, optimiser step, gradients cleared,
    the loss returned as a Python float (a host synchronisation, as in Pyro)."""
    with without_pyro_checks():
        value = loss()
    value.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return value.item()


def floor_step(gtm, optimizer, x, c=None, mask=None, *, check_inputs: bool = False) -> float:
    """One :func:`optimizer_step` on the floor loss.

    :param optimizer: a ``torch.optim.Optimizer`` over ``gtm.parameters()`` (e.g.
        :class:`pyro.optim.clipped_adam.ClippedAdam`, the optimiser Pyro's ``ClippedAdam``
        wraps).
    :returns: the loss.
    """
    return optimizer_step(
        lambda: direct_elbo_loss(gtm, x, c, mask, check_inputs=check_inputs), optimizer)
