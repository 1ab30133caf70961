"""One guarded SVI step: the loss and gradients of model/guide (and of a regulariser) are
computed and checked *before* any parameter changes, and KL annealing, Pyro registration and
Pyro's per-shape checks that the step relies on.

* **Divergence.** The step is done by hand (as :meth:`pyro.infer.SVI.step` does): on a
  non-finite loss, a NaN gradient, torch's "found invalid values" ``ValueError`` for a NaN/inf
  distribution parameter (in a checked step, see below), or a loss explosion
  (:func:`loss_explosion`), :class:`StepDiverged` is raised with the gradients cleared, so the
  module keeps its last good parameters.
* **Regularisers.** ``r`` follows :class:`Regulariser` (e.g.
  :class:`~pgtm.inference.memory_forcing.MemoryForcing`'s discriminators). After the ELBO's
  gradients, ``r.loss(gtm, batch, step)`` returns a :class:`RegulariserLoss`: its ``generator``
  term is added to the loss and back-propagated into the module's parameters *only*
  (``backward(inputs=...)``), its ``own`` loss into ``r.parameters()`` only; the checks cover
  both before anything is updated.
* **KL annealing.** :class:`LatentScale` multiplies the ``scale`` of every *latent* sample site
  (not observed, name not starting with ``penalty``) by ``beta`` in model and guide, so
  ``loss = -recon - penalty + beta * KL`` (see :func:`kl_beta`).
* **Pyro's checks once per shape.** Pyro validates every step by default (site shapes against
  plates, NaN/inf warnings on every ``log_prob_sum``, every distribution's arguments), a fixed
  cost of 5-10% of a step for a program whose structure does not change;
  :func:`without_pyro_checks` turns them off for the steps after the first of each batch shape.
  A NaN/inf parameter in such a step gives a non-finite loss, which is divergence too.
"""

from __future__ import annotations

import contextlib
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import pyro
import torch
from pyro.params.param_store import param_with_module_name
from pyro.poutine.messenger import Messenger

__all__ = [
    "MODULE_NAME",
    "LatentScale",
    "Regulariser",
    "RegulariserLoss",
    "StepDiverged",
    "StepResult",
    "guarded_step",
    "kl_beta",
    "loss_explosion",
    "register_module",
    "without_pyro_checks",
]

#: Name under which ``gtm`` is registered in the Pyro param store (``"gtm$$$<param>"``).
MODULE_NAME = "gtm"
#: Tail of torch's distribution-validation error for NaN/inf parameters.
_INVALID_VALUES = "but found invalid values"
#: The loss-explosion guard compares with the median of this many previous steps ...
EXPLOSION_WINDOW = 100
#: ... once it has seen at least this many.
EXPLOSION_WARMUP = 20


class StepDiverged(Exception):
    """A step whose loss or gradients are unusable; nothing was updated.

    :ivar reason: what was wrong, in words.
    :ivar loss: the step's loss (``nan`` when none was computed).
    """

    def __init__(self, reason: str, loss: float) -> None:
        super().__init__(reason)
        self.reason = reason
        self.loss = loss


class RegulariserLoss(NamedTuple):
    """What :meth:`Regulariser.loss` returns for one step.

    :ivar generator: 0-dim term added to the module's loss (back-propagated into the module's
        parameters only), or ``None``.
    :ivar own: 0-dim loss of the regulariser's own parameters (back-propagated into them only),
        or ``None`` (no update this step).
    :ivar metrics: numbers to log (window means go to ``log.csv`` and TensorBoard).
    """

    generator: torch.Tensor | None
    own: torch.Tensor | None
    metrics: Mapping[str, float]


class Regulariser(Protocol):
    """An extra objective trained alongside the module by :func:`train` (see the module
    docstring), e.g. :class:`~pgtm.inference.memory_forcing.MemoryForcing`."""

    def parameters(self) -> Any:
        """Its own parameters (iterable of tensors), updated by :meth:`step` only."""

    def to(self, device: torch.device) -> Any:
        """Move its parameters to the training device."""

    def loss(self, gtm: torch.nn.Module, batch: Any, step: int) -> RegulariserLoss:
        """The step's terms; may sample from torch's global generator (checkpointed)."""

    def step(self) -> None:
        """Its optimiser step with the gradients of ``own``; clears them."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly; ``weights_only``-loadable."""

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""


# ----------------------------------------------------------------------------------------------
# KL annealing


def kl_beta(step: int, anneal_steps: int, start: float = 0.0) -> float:
    """Linear KL warm-up factor for a 1-based ``step``.

    ``beta = start`` at step 1, rising linearly to 1 at step ``anneal_steps + 1`` and staying
    there; ``anneal_steps == 0`` gives 1 throughout.

    :param step: 1-based optimisation step.
    :param anneal_steps: warm-up length (>= 0).
    :param start: initial factor in [0, 1].
    :returns: ``beta`` in [start, 1].
    """
    if anneal_steps <= 0:
        return 1.0
    frac = min(1.0, max(0, step - 1) / anneal_steps)
    return start + (1.0 - start) * frac


class LatentScale(Messenger):
    """Multiply the ``scale`` of latent sample sites by ``beta`` (KL annealing).

    Applied to *both* model and guide so that every latent ``log p(z) - log q(z)`` term (and the
    analytic KL of :class:`~pyro.infer.TraceMeanField_ELBO`, which uses the guide site's scale)
    is weighted by ``beta``. Observed sites (e.g. ``"x"``) and factors named ``penalty*`` (which
    are observed ``Unit`` sites anyway) are left alone. Unlike :class:`pyro.poutine.scale`, 0 is
    an allowed factor, and ``beta`` may be changed between calls (one instance per run).

    :param beta: the factor, >= 0.
    """

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        self.beta = float(beta)

    def _process_message(self, msg: Any) -> None:
        if (
            msg["type"] == "sample"
            and not msg["is_observed"]
            and not str(msg["name"]).startswith("penalty")
            and self.beta != 1.0
        ):
            msg["scale"] = self.beta * msg["scale"]


# ----------------------------------------------------------------------------------------------
# Parameter registration


def register_module(module: torch.nn.Module, name: str = MODULE_NAME) -> None:
    """Make the global Pyro param store hold exactly ``module``'s parameters under ``name``.

    Entries ``"<name>$$$*"`` that are not ``module``'s own ``Parameter`` objects (left by an
    earlier module, or after loading a checkpoint into a fresh module) are deleted first:
    ``pyro.module`` would otherwise return the stale store tensors, the optimiser would update
    those, and ``module`` would never change.

    :param module: the module to register.
    :param name: its name in the param store.
    """
    store = pyro.get_param_store()
    own = {param_with_module_name(name, n): p for n, p in module.named_parameters()}
    prefix = param_with_module_name(name, "")
    for key in [k for k in store.keys() if k.startswith(prefix)]:
        if own.get(key) is not store._params[key]:
            del store[key]
    pyro.module(name, module)


# ----------------------------------------------------------------------------------------------
# The step


@contextlib.contextmanager
def without_pyro_checks():
    """Turn Pyro's checks off inside the block: ``pyro.infer`` and ``pyro.poutine`` validation
    (site shapes against plates, NaN/inf warnings on every ``log_prob_sum``) and the
    distributions' argument validation (every parameter and value against its constraint, a
    host synchronisation each); the previous settings come back after."""
    modules = (pyro.infer, pyro.poutine, pyro.distributions)
    were = [module.is_validation_enabled() for module in modules]
    for module in modules:
        module.enable_validation(False)
    try:
        yield
    finally:
        for module, was in zip(modules, were, strict=True):
            module.enable_validation(was)


def loss_explosion(loss: float, previous: Sequence[float], max_ratio: float | None) -> str | None:
    """Why ``loss`` is an explosion relative to the ``previous`` steps' losses, or ``None``.

    With ``m`` the median of the last :data:`EXPLOSION_WINDOW` previous losses, ``loss`` explodes
    when ``loss - m > max_ratio * max(|m|, 1)``; the guard waits for :data:`EXPLOSION_WARMUP`
    previous steps and is off when ``max_ratio`` is ``None``. Only upward jumps count: a loss
    that falls fast is learning.

    :param loss: this step's loss.
    :param previous: the losses of the steps before it (the run's history).
    :param max_ratio: the allowed jump in units of the median's magnitude.
    """
    if max_ratio is None or len(previous) < EXPLOSION_WARMUP:
        return None
    median = statistics.median(previous[-EXPLOSION_WINDOW:])
    if loss - median > max_ratio * max(abs(median), 1.0):
        return (f"loss explosion (more than max_loss_ratio = {max_ratio:g} times the median "
                f"{median:.6g} of the last {min(len(previous), EXPLOSION_WINDOW)} steps)")
    return None


def _clear_grads(params: list[torch.Tensor]) -> None:
    # None rather than zeros: an optimiser skips a parameter without a gradient
    for p in params:
        p.grad = None


def _first_nan_grad(params: list[torch.Tensor]) -> torch.Tensor | None:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return None
    # One device sync for all parameters; only on failure look up which one.
    if not bool(torch.stack([g.isnan().any() for g in grads]).any()):
        return None
    return next(p for p in params if p.grad is not None and bool(p.grad.isnan().any()))


class StepResult(NamedTuple):
    """The checked outcome of :func:`guarded_step`, ready for the optimiser.

    :ivar loss: the (annealed) negative ELBO of the whole batch (all ranks' shares).
    :ivar regulariser: the regulariser's :class:`RegulariserLoss`, or ``None``.
    """

    loss: float
    regulariser: RegulariserLoss | None


def guarded_step(
    objective: Callable[..., torch.Tensor],
    batch: Any,
    *,
    step: int,
    gtm: torch.nn.Module,
    params: list[torch.Tensor],
    regulariser: Regulariser | None,
    regulariser_params: list[torch.Tensor],
    previous_losses: Sequence[float],
    max_loss_ratio: float | None,
    pyro_checks: bool,
    loss_scale: float = 1.0,
    total: Callable[[float], float] = float,
) -> StepResult:
    """Loss and gradients of one step, checked before any update.

    :param objective: ``objective(x, c=, mask=)`` -> differentiable 0-dim loss (the
        :func:`~pgtm.inference.objective.training_objective` module, or its DDP wrapper).
    :param batch: a ``SequenceBatch`` on the training device.
    :param step: the 1-based step (passed to the regulariser).
    :param params: ``gtm``'s trainable parameters (what the optimiser updates).
    :param previous_losses: the losses of the steps so far (for :func:`loss_explosion`).
    :param pyro_checks: run Pyro's own checks this step (and check that every ``pyro.param``
        the programs use is a parameter of ``gtm``).
    :param loss_scale: the loss is multiplied by this before ``backward`` (the number of ranks,
        whose gradients data-parallel training averages).
    :param total: this process's loss -> the whole batch's (a sum over ranks).
    :raises StepDiverged: with every gradient cleared, when the step is unusable.
    :raises ValueError: when the programs use parameters that ``gtm`` does not own.
    """
    try:
        checks = contextlib.nullcontext() if pyro_checks else without_pyro_checks()
        capture = pyro.poutine.trace(param_only=True) if pyro_checks else contextlib.nullcontext()
        with checks, capture as tracer:
            loss = objective(batch.x, c=batch.c, mask=batch.mask)
        (loss * loss_scale if loss_scale != 1.0 else loss).backward()
        reg_loss = None if regulariser is None else regulariser.loss(gtm, batch, step)
    except ValueError as e:
        # With distribution validation on (Pyro's default), NaN/inf parameters surface as this
        # ValueError before any loss exists: that is divergence too.
        if _INVALID_VALUES not in str(e):
            raise
        _clear_grads(params)
        _clear_grads(regulariser_params)
        first_line = str(e).splitlines()[0]
        raise StepDiverged(f"invalid distribution parameter ({first_line})", math.nan) from e
    if pyro_checks:
        _check_own_parameters(tracer.trace, params)
    loss = total(float(loss.detach()))
    total_loss, own = loss, 0.0
    if reg_loss is not None:
        # each term into its own parameters only: the regulariser's parameters get no gradient
        # from the module's loss, and the module none from the regulariser's
        term = reg_loss.generator
        if term is not None and term.requires_grad:
            total_loss += float(term.detach())
            torch.autograd.backward(term, inputs=params)
        if reg_loss.own is not None and reg_loss.own.requires_grad:
            own = float(reg_loss.own.detach())
            torch.autograd.backward(reg_loss.own, inputs=regulariser_params)
    reason = None
    if not math.isfinite(total_loss):
        reason = "non-finite loss" if not math.isfinite(loss) else "non-finite regulariser term"
    elif not math.isfinite(own):
        reason = "non-finite regulariser loss"
    else:
        bad = _first_nan_grad(params)
        if bad is not None:
            name = next(n for n, p in gtm.named_parameters() if p is bad)
            reason = f"NaN gradient of parameter {name!r}"
        elif _first_nan_grad(regulariser_params) is not None:
            reason = "NaN gradient of a regulariser parameter"
        else:
            reason = loss_explosion(loss, previous_losses, max_loss_ratio)
    if reason is not None:
        _clear_grads(params)
        _clear_grads(regulariser_params)
        raise StepDiverged(reason, total_loss)
    return StepResult(loss, reg_loss)


def _check_own_parameters(trace: Any, params: list[torch.Tensor]) -> None:
    own = {id(p) for p in params}
    for name, site in trace.nodes.items():
        if site["type"] == "param" and id(site["value"].unconstrained()) not in own:
            raise ValueError(
                f"gtm: its programs use the parameter {name!r}, which is not an nn.Parameter of "
                "the module (pyro.param outside it, or a stale param store entry); the optimiser "
                "trains the module's own parameters only, so make it one of them"
            )
