"""Generic SVI training loop with exact resume, KL annealing, logging and divergence checks.

:func:`train` optimises any :class:`torch.nn.Module` ``gtm`` exposing the Pyro programs
``gtm.model(x, c=None, mask=None)`` and ``gtm.guide(x, c=None, mask=None)`` on any task object
with ``task.sample(batch_size, split, generator)`` returning a ``SequenceBatch`` (see
``docs/CONVENTIONS.md``).

Design notes
------------
* **Parameter registration.** The loop registers the module itself: it wraps ``model`` and
  ``guide`` in programs that call ``pyro.module("gtm", gtm)`` first, so a module need not do so
  (doing it as well, under the same name ``"gtm"``, is harmless: duplicate *param* sites are
  allowed in a Pyro trace). Before training, stale ``"gtm$$$..."`` entries left in the global
  param store by an earlier module are deleted and the store is made to hold *this* module's
  ``Parameter`` objects (same identity). Otherwise ``pyro.module`` would hand the optimiser
  the stale tensors and the module would silently never be trained.
  Parameters created with ``pyro.param`` outside the module are optimised but not checkpointed
  (a warning says so): all state that must survive a resume belongs in ``gtm``.
* **KL annealing.** :class:`LatentScale` is a Pyro ``Messenger`` that multiplies the ``scale``
  of every *latent* sample site (not observed, name not starting with ``penalty``) by ``beta``.
  It wraps both model and guide, so in the ELBO ``log p(z) - log q(z)`` (or the analytic KL of
  ``TraceMeanField_ELBO``) is multiplied by ``beta`` while ``log p(x | z)`` and ``penalty*``
  factors are not: ``loss = -recon - penalty + beta * KL``. ``beta`` warms up linearly (see
  :func:`kl_beta`). The logged loss is this annealed objective.
* **Exact resume.** Every source of randomness is checkpointed (global torch/CUDA/python/numpy
  RNG states, the batch generator), as are the module, the optimiser state and the loss
  history. Evaluation runs with forked RNG states so that *when* one evaluates cannot change
  the training trajectory.
* **Divergence.** The step is done by hand (as :meth:`pyro.infer.SVI.step` does) so the loss
  and gradients can be checked *before* the optimiser update: on a non-finite loss, a NaN
  gradient, or (with distribution validation on) torch's "found invalid values" ``ValueError``
  for a NaN/inf distribution parameter, :class:`TrainingDiverged` is raised, no checkpoint is
  written (the last good one is left untouched) and the in-memory module keeps its last good
  parameters.
* **Regularisers.** ``train(..., regulariser=r)`` trains an extra objective alongside the
  module (e.g. :class:`~pgtm.inference.memory_forcing.MemoryForcing`'s discriminators); ``r``
  follows :class:`Regulariser`. Each step, after the ELBO's gradients, ``r.loss(gtm, batch,
  step)`` returns a :class:`RegulariserLoss`: its ``generator`` term is added to the loss and
  back-propagated into the module's parameters *only* (``backward(inputs=...)``), its ``own``
  loss into ``r.parameters()`` only; the divergence checks cover both (non-finite values, NaN
  gradients) before anything is updated. After the module's optimiser step ``r.step()`` updates
  ``r``'s own parameters. ``r.state_dict()`` is saved in the checkpoint (key ``"regulariser"``)
  and restored on resume, so resume stays exact. The logged ``loss`` stays the (annealed)
  negative ELBO; ``r``'s metrics (window means) get their own columns.
* **Pyro's checks once per shape.** Pyro validates every step by default (``pyro.infer`` and
  ``pyro.poutine`` validation: each site's shape against its plates, NaN/inf warnings on every
  ``log_prob_sum``), a fixed cost of several milliseconds a step that re-checks a program whose
  structure does not change between steps. The loop runs these checks on the first step of every
  new batch shape ``(B, T)`` and skips them afterwards (``check_every_step=True`` keeps them on);
  torch's distribution validation, which the divergence check relies on, stays on throughout.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import math
import os
import random
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
import pyro
import pyro.optim
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.util import zero_grads
from pyro.params.param_store import param_with_module_name
from pyro.poutine.messenger import Messenger
from tqdm.auto import tqdm

from .checkpoint import (
    CHECKPOINT_NAME,
    FORMAT_VERSION,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    temp_sibling,
)
from .fivo import FIVO
from .lifecycle import RunLock, StopOnSignal, TrainingInterrupted

__all__ = [
    "ELBOS",
    "LatentScale",
    "MODULE_NAME",
    "Regulariser",
    "RegulariserLoss",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "TrainingInterrupted",
    "kl_beta",
    "register_module",
    "train",
]

#: Name under which ``gtm`` is registered in the Pyro param store (``"gtm$$$<param>"``).
MODULE_NAME = "gtm"
#: Allowed values of :attr:`TrainConfig.elbo`.
ELBOS = ("trace", "meanfield", "fivo")
#: Config fields that shape the optimisation trajectory; changing them between a checkpoint
#: and its resume makes the continuation inexact, hence a warning.
_TRAJECTORY_FIELDS = (
    "batch_size",
    "learning_rate",
    "clip_norm",
    "lr_decay",
    "elbo",
    "num_particles",
    "kl_anneal_steps",
    "kl_anneal_start",
    "seed",
)
_OPTIM_FIELDS = ("learning_rate", "clip_norm", "lr_decay")
#: Tail of torch's distribution-validation error for NaN/inf parameters.
_INVALID_VALUES = "but found invalid values"


class TrainingDiverged(RuntimeError):
    """Raised when a training step produces a non-finite loss or a NaN gradient.

    :ivar step: the (1-based) step that diverged.
    :ivar loss: its loss value.
    :ivar checkpoint_path: the last good checkpoint (untouched), or ``None`` if none was written.
    :ivar checkpoint_step: the step stored in that checkpoint, or ``None``.
    """

    def __init__(
        self,
        step: int,
        loss: float,
        checkpoint_path: Path | None,
        checkpoint_step: int | None,
        reason: str = "non-finite loss",
    ) -> None:
        self.step = step
        self.loss = loss
        self.checkpoint_path = checkpoint_path
        self.checkpoint_step = checkpoint_step
        if checkpoint_path is None:
            where = "no checkpoint has been written"
        else:
            where = f"last good checkpoint: {checkpoint_path} (step {checkpoint_step})"
        super().__init__(f"training diverged at step {step}: {reason}, loss = {loss!r}; {where}")


# ----------------------------------------------------------------------------------------------
# Configuration


def _check_int(name: str, value: Any, low: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        extra = " or None" if allow_none else ""
        raise ValueError(f"{name} must be an integer >= {low}{extra}, got {value!r}")


def _check_float(
    name: str, value: Any, low: float, high: float, low_open: bool, high_open: bool = False
) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (
            value < high if high_open else value <= high
        )
    if not ok:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise ValueError(f"{name} must be a number in {lo}{low}, {high}{hi}, got {value!r}")


@dataclasses.dataclass
class TrainConfig:
    """Hyper-parameters and bookkeeping of a training run.

    :param steps: total number of optimisation steps (a resumed run continues up to this).
        Integer >= 1.
    :param batch_size: sequences per step, integer >= 1.
    :param learning_rate: ClippedAdam learning rate, > 0.
    :param clip_norm: ClippedAdam ``clip_norm`` (element-wise gradient clamp), > 0.
    :param lr_decay: ClippedAdam ``lrd``: the learning rate is multiplied by it at every step,
        in (0, 1]; 1 means no decay.
    :param elbo: ``"trace"`` (:class:`~pyro.infer.Trace_ELBO`), ``"meanfield"``
        (:class:`~pyro.infer.TraceMeanField_ELBO`, analytic KL where available), both with
        ``max_plate_nesting=2``, or ``"fivo"`` (:class:`~pgtm.inference.fivo.FIVO`, the particle
        filter's bound; ``gtm`` must then be a GTM).
    :param num_particles: particles per step, >= 1: the ELBO's (vectorised at dim -3 when > 1)
        or the FIVO particle filter's.
    :param kl_anneal_steps: length of the linear KL warm-up; 0 disables annealing. >= 0.
    :param kl_anneal_start: ``beta`` at step 1 of the warm-up, in [0, 1].
    :param device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    :param seed: seeds the batch generator and (through a derived seed) the global RNGs. >= 0.
    :param eval_every: call ``evaluate_fn`` every this many steps (and at the last step);
        ``None`` disables evaluation. >= 1 or None.
    :param checkpoint_every: write a checkpoint every this many steps (one is always written at
        the last step); ``None`` means only at the end. >= 1 or None.
    :param log_every: write a CSV row (mean loss since the previous row) every this many steps;
        rows are also written at evaluation and checkpoint steps and at the end. >= 1.
    :param out_dir: directory for ``checkpoint.pt``, ``log.csv`` and ``tensorboard/``; ``None``
        disables all disk output (and therefore resume).
    :param progress: show a tqdm progress bar (only on a TTY).
    :param tensorboard: also log to TensorBoard when :mod:`torch.utils.tensorboard` imports.
    :param check_every_step: run Pyro's own checks (see :func:`without_pyro_checks`) on every
        step, not only on the first step of each batch shape.
    :raises ValueError: naming the field and its allowed range, for any bad value.
    """

    steps: int = 1000
    batch_size: int = 16
    learning_rate: float = 1e-3
    clip_norm: float = 10.0
    lr_decay: float = 1.0
    elbo: str = "trace"
    num_particles: int = 1
    kl_anneal_steps: int = 0
    kl_anneal_start: float = 0.0
    device: str = "cpu"
    seed: int = 0
    eval_every: int | None = None
    checkpoint_every: int | None = 1000
    log_every: int = 1
    out_dir: str | os.PathLike | None = None
    progress: bool = True
    tensorboard: bool = True
    check_every_step: bool = False

    def __post_init__(self) -> None:
        _check_int("steps", self.steps, 1)
        _check_int("batch_size", self.batch_size, 1)
        _check_float("learning_rate", self.learning_rate, 0.0, math.inf, low_open=True,
                     high_open=True)
        _check_float("clip_norm", self.clip_norm, 0.0, math.inf, low_open=True, high_open=True)
        _check_float("lr_decay", self.lr_decay, 0.0, 1.0, low_open=True)
        if self.elbo not in ELBOS:
            raise ValueError(f"elbo must be one of {ELBOS}, got {self.elbo!r}")
        _check_int("num_particles", self.num_particles, 1)
        _check_int("kl_anneal_steps", self.kl_anneal_steps, 0)
        _check_float("kl_anneal_start", self.kl_anneal_start, 0.0, 1.0, low_open=False)
        dev = self.device
        ok_dev = isinstance(dev, str) and (
            dev in ("cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())
        )
        if not ok_dev:
            raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {dev!r}")
        _check_int("seed", self.seed, 0)
        _check_int("eval_every", self.eval_every, 1, allow_none=True)
        _check_int("checkpoint_every", self.checkpoint_every, 1, allow_none=True)
        _check_int("log_every", self.log_every, 1)
        if self.out_dir is not None and not isinstance(self.out_dir, (str, os.PathLike)):
            raise ValueError(f"out_dir must be a path or None, got {self.out_dir!r}")

    def to_dict(self) -> dict[str, Any]:
        """Primitive-only dict (``out_dir`` as ``str``), safe for ``weights_only`` checkpoints."""
        d = dataclasses.asdict(self)
        if d["out_dir"] is not None:
            d["out_dir"] = os.fspath(d["out_dir"])
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Rebuild a config from :meth:`to_dict` output; unknown keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns.

    :ivar step: the last completed step.
    :ivar losses: loss of every step ``1..step`` (history before a resume comes from the
        checkpoint).
    :ivar seconds: wall seconds spent in this call.
    :ivar checkpoint_path: the final checkpoint, or ``None`` when ``out_dir`` is ``None``.
    :ivar start_step: the step this call started from (0 for a fresh run).
    :ivar evals: ``{step: metrics}`` of the evaluations made in this call.
    """

    step: int
    losses: list[float]
    seconds: float
    checkpoint_path: Path | None
    start_step: int = 0
    evals: dict[int, dict[str, float]] = dataclasses.field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# Regularisers


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
# CSV log


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return repr(v)  # shortest string that round-trips
    return str(v)


class _CsvLog:
    """Append-only CSV with a growable header (evaluation metric names are not known upfront).

    ``keep_rows`` (on resume) truncates the file to the rows the checkpoint accounts for, so rows
    written after the checkpoint by an interrupted run are not duplicated.
    """

    BASE = ("step", "loss", "beta", "seconds")

    def __init__(self, path: Path, keep_rows: int | None) -> None:
        self.path = path
        self.header = list(self.BASE)
        rows: list[list[str]] = []
        if keep_rows is not None and path.exists():
            with open(path, newline="") as f:
                existing = list(csv.reader(f))
            if existing:
                self.header = existing[0]
                rows = existing[1 : 1 + keep_rows]
        self.rows = len(rows)
        self._rewrite(rows)
        self._f = open(path, "a", newline="")
        self._w = csv.writer(self._f)

    def _rewrite(self, rows: list[list[str]]) -> None:
        # Rewrite atomically: a crash mid-rewrite must not lose the log.
        tmp = temp_sibling(self.path)
        try:
            with open(tmp, "x", newline="") as f:
                w = csv.writer(f)
                w.writerow(self.header)
                for r in rows:
                    w.writerow(r + [""] * (len(self.header) - len(r)))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def write(self, row: Mapping[str, Any]) -> None:
        new = [k for k in row if k not in self.header]
        if new:
            self._f.close()
            with open(self.path, newline="") as f:
                rows = list(csv.reader(f))[1:]
            self.header += new
            self._rewrite(rows)
            self._f = open(self.path, "a", newline="")
            self._w = csv.writer(self._f)
        self._w.writerow([_fmt(row[k]) if k in row else "" for k in self.header])
        self.rows += 1

    def sync(self) -> int:
        """Flush to disk; returns the number of data rows (recorded in checkpoints)."""
        self._f.flush()
        os.fsync(self._f.fileno())
        return self.rows

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


def _open_tensorboard(out_dir: Path, purge_step: int | None) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    # purge_step drops events an interrupted run wrote after the checkpoint.
    return SummaryWriter(str(out_dir / "tensorboard"), purge_step=purge_step)


# ----------------------------------------------------------------------------------------------
# Helpers


def _resolve_device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={name!r} was requested but CUDA is not available "
                "(torch.cuda.is_available() is False); use device='cpu'"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={name!r}: only {torch.cuda.device_count()} CUDA device(s) present"
            )
    return device


def _seed_globals(seed: int) -> None:
    # The batch generator gets ``seed`` itself; the global RNGs (Pyro's sampling noise) get a
    # derived seed so the two streams are not the identical MT19937 sequence.
    derived = int(torch.randint(2**62, (1,), generator=torch.Generator().manual_seed(seed)))
    torch.manual_seed(derived)
    random.seed(derived)
    np.random.seed(derived % 2**32)  # noqa: NPY002 (legacy global state on purpose)


def _batch_to(batch: Any, device: torch.device) -> Any:
    non_blocking = device.type == "cuda"

    def mv(v: Any) -> Any:
        return v.to(device, non_blocking=non_blocking) if torch.is_tensor(v) else v

    if hasattr(batch, "_replace") and hasattr(batch, "_fields"):  # NamedTuple (SequenceBatch)
        return batch._replace(**{f: mv(getattr(batch, f)) for f in batch._fields})
    if dataclasses.is_dataclass(batch):
        return dataclasses.replace(
            batch, **{f.name: mv(getattr(batch, f.name)) for f in dataclasses.fields(batch)}
        )
    raise TypeError(f"task.sample returned {type(batch).__name__}, expected a SequenceBatch")


def _to_number(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float, np.number)):
        return float(v)
    if torch.is_tensor(v) and v.numel() == 1:
        return float(v.detach().cpu())
    return None


def _evaluate(
    evaluate_fn: Callable[[torch.nn.Module, int], Mapping[str, Any]],
    gtm: torch.nn.Module,
    step: int,
    device: torch.device,
) -> dict[str, float]:
    # Fork every RNG so evaluation (which may sample) never perturbs the training trajectory:
    # a run evaluated at step k and one that was not stay bit-identical.
    py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002
    cuda_devices = [device.index or 0] if device.type == "cuda" else []
    was_training = gtm.training
    # eval mode too: batch norm would otherwise normalise by the evaluation batch and fold its
    # statistics into the running ones, changing the training trajectory
    gtm.eval()
    try:
        with torch.random.fork_rng(devices=cuda_devices):
            metrics = evaluate_fn(gtm, step)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)  # noqa: NPY002
        gtm.train(was_training)
        # Evaluation code may have called backward(); keep its gradients out of the next step.
        for p in gtm.parameters():
            p.grad = None
    if metrics is None:
        return {}
    if not isinstance(metrics, Mapping):
        raise TypeError(f"evaluate_fn must return a dict of numbers, got {type(metrics).__name__}")
    out: dict[str, float] = {}
    for k, v in metrics.items():
        num = _to_number(v)
        if num is None:
            warnings.warn(f"evaluate_fn metric {k!r} is not a number; not logged", stacklevel=3)
            continue
        out[str(k)] = num
    return out


def _override_optim_hparams(
    state: dict[str, Any], config: TrainConfig, step: int
) -> dict[str, Any]:
    # ClippedAdam's param_groups (lr, clip_norm, lrd) are restored from the checkpoint and
    # would silently override the new config; apply the new values instead, with the lr as if
    # the new schedule had run from step 0.
    lr = config.learning_rate * config.lr_decay**step
    for per_param in state.values():
        for group in per_param.get("param_groups", []):
            group["lr"] = lr
            group["clip_norm"] = config.clip_norm
            group["lrd"] = config.lr_decay
    return state


@contextlib.contextmanager
def without_pyro_checks():
    """Turn Pyro's own checks (``pyro.infer`` and ``pyro.poutine`` validation: site shapes
    against plates, NaN/inf warnings on every ``log_prob_sum``) off inside the block, leaving
    torch's distribution validation as it is; the previous settings come back after."""
    infer_was = pyro.infer.is_validation_enabled()
    poutine_was = pyro.poutine.is_validation_enabled()
    pyro.infer.enable_validation(False)
    pyro.poutine.enable_validation(False)
    try:
        yield
    finally:
        pyro.infer.enable_validation(infer_was)
        pyro.poutine.enable_validation(poutine_was)


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


# ----------------------------------------------------------------------------------------------
# The loop


def train(
    gtm: torch.nn.Module,
    task: Any,
    config: TrainConfig,
    *,
    evaluate_fn: Callable[[torch.nn.Module, int], Mapping[str, Any]] | None = None,
    resume: bool = True,
    regulariser: Regulariser | None = None,
) -> TrainResult:
    """Train ``gtm`` with SVI (ClippedAdam) on batches from ``task``.

    Each step draws ``task.sample(config.batch_size, "train", generator)`` from a dedicated
    CPU :class:`torch.Generator` seeded with ``config.seed``, moves it to ``config.device`` and
    takes one gradient step on the (annealed) negative ELBO of
    ``gtm.model(x, c=c, mask=mask)`` / ``gtm.guide(x, c=c, mask=mask)``.

    Outputs in ``config.out_dir`` (when not ``None``): ``checkpoint.pt`` (atomic; every
    ``checkpoint_every`` steps and at the end), ``log.csv`` (columns ``step, loss, beta,
    seconds`` then evaluation metrics; ``loss`` is the mean since the previous row, ``seconds``
    the cumulative training wall time) and ``tensorboard/`` if TensorBoard is installed.

    :param gtm: module with ``model`` and ``guide`` Pyro programs; moved to ``config.device``
        and put in train mode. It is registered in the param store as ``"gtm"`` (stale
        ``"gtm$$$*"`` entries are replaced).
    :param task: object with ``sample(batch_size, split, generator) -> SequenceBatch``.
    :param config: the run's :class:`TrainConfig`.
    :param evaluate_fn: ``evaluate_fn(gtm, step) -> dict`` of numbers, called every
        ``config.eval_every`` steps and at the last step, with ``gtm`` in eval mode and under
        forked RNG states (so it does not change the training trajectory); its numbers go to
        the CSV and TensorBoard.
    :param resume: continue from ``out_dir/checkpoint.pt`` if it exists (exactly: the result is
        bit-identical to an uninterrupted run with the same config). With ``False`` an existing
        checkpoint and log are overwritten.
    :param regulariser: optional :class:`Regulariser` trained alongside (its state is
        checkpointed and restored with the rest).
    :returns: a :class:`TrainResult`.
    :raises ValueError: for a CUDA device when CUDA is unavailable.
    :raises TrainingDiverged: on a non-finite loss or a NaN gradient; the last good checkpoint
        is left untouched and named in the message.
    :raises TrainingInterrupted: after a SIGINT or SIGTERM (in the main thread): the step under
        way is finished and checkpointed first (the log gains a row at that step); rerunning
        resumes exactly. A second signal exits at once.
    :raises ValueError: if another process is training into ``out_dir`` (its lock file
        ``.lock`` names it).
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    for attr in ("model", "guide"):
        if not callable(getattr(gtm, attr, None)):
            raise TypeError(f"gtm must have a callable {attr}(x, c=None, mask=None)")
    if not callable(getattr(task, "sample", None)):
        raise TypeError("task must have sample(batch_size, split, generator)")

    with RunLock(config.out_dir) if config.out_dir is not None else contextlib.nullcontext():
        return _train(gtm, task, config, evaluate_fn, resume, regulariser)


def _train(gtm, task, config, evaluate_fn, resume, regulariser) -> TrainResult:
    """:func:`train` once the run folder is locked."""
    t_call = time.perf_counter()
    device = _resolve_device(config.device)
    gtm.to(device)
    gtm.train()
    if regulariser is not None:
        regulariser.to(device)

    out_dir = Path(config.out_dir) if config.out_dir is not None else None
    ckpt_path = out_dir / CHECKPOINT_NAME if out_dir is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)

    ckpt = None
    if resume and ckpt_path is not None and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)

    generator = torch.Generator(device="cpu").manual_seed(config.seed)
    _seed_globals(config.seed)

    optim = pyro.optim.ClippedAdam(
        {"lr": config.learning_rate, "clip_norm": config.clip_norm, "lrd": config.lr_decay}
    )
    start_step, losses, seconds_before, csv_rows = 0, [], 0.0, None
    last_good: tuple[Path, int] | None = None
    if ckpt is not None:
        old = ckpt["config"]
        changed = [f for f in _TRAJECTORY_FIELDS if old.get(f) != getattr(config, f)]
        if changed:
            warnings.warn(
                f"resuming {ckpt_path} with changed config fields {changed}; the continuation "
                "is not identical to an uninterrupted run",
                stacklevel=2,
            )
        saved_threads = ckpt.get("threads")
        if saved_threads is not None and saved_threads != torch.get_num_threads():
            warnings.warn(
                f"resuming {ckpt_path}, written with {saved_threads} torch threads, with "
                f"{torch.get_num_threads()}: floating-point sums are ordered differently, so "
                "the continuation is not bit-identical to an uninterrupted run (use --threads "
                f"{saved_threads} for that)",
                stacklevel=2,
            )
        start_step = int(ckpt["step"])
        # In-place copy: keeps the module's Parameter objects (and thus their identity).
        gtm.load_state_dict(ckpt["module"])
        optim_state = ckpt["optim"]
        if any(old.get(f) != getattr(config, f) for f in _OPTIM_FIELDS):
            optim_state = _override_optim_hparams(optim_state, config, start_step)
        # ClippedAdam creates one torch optimiser per parameter lazily; set_state queues the
        # states by parameter name and they are loaded when each optimiser is created.
        optim.set_state(optim_state)
        generator.set_state(ckpt["batch_generator"].to("cpu", torch.uint8))
        losses = [float(v) for v in ckpt["losses"].tolist()]
        seconds_before = float(ckpt["seconds"])
        csv_rows = int(ckpt["csv_rows"])
        last_good = (ckpt_path, start_step)
        saved = ckpt.get("regulariser")
        if regulariser is not None and saved is not None:
            regulariser.load_state_dict(saved)
        elif (regulariser is None) != (saved is None):
            warnings.warn(
                f"resuming {ckpt_path}: the checkpoint "
                + ("has no regulariser state but a regulariser was given (it starts afresh)"
                   if saved is None else "holds a regulariser state but none was given")
                + "; the continuation is not identical to an uninterrupted run",
                stacklevel=2,
            )
    register_module(gtm)

    if config.elbo == "fivo":
        elbo = FIVO(gtm, config.num_particles, module_name=MODULE_NAME)
    else:
        elbo_cls = Trace_ELBO if config.elbo == "trace" else TraceMeanField_ELBO
        elbo = elbo_cls(
            num_particles=config.num_particles,
            vectorize_particles=config.num_particles > 1,
            max_plate_nesting=2,
        )
    scaler = LatentScale(1.0)

    def model(x: torch.Tensor, c: torch.Tensor | None = None,
              mask: torch.Tensor | None = None) -> Any:
        pyro.module(MODULE_NAME, gtm)
        with scaler:
            return gtm.model(x, c=c, mask=mask)

    def guide(x: torch.Tensor, c: torch.Tensor | None = None,
              mask: torch.Tensor | None = None) -> Any:
        pyro.module(MODULE_NAME, gtm)
        with scaler:
            return gtm.guide(x, c=c, mask=mask)

    log = None
    tb = None
    if out_dir is not None:
        log = _CsvLog(out_dir / "log.csv", keep_rows=csv_rows)
        if config.tensorboard:
            tb = _open_tensorboard(out_dir, purge_step=start_step + 1 if ckpt else None)

    if ckpt is not None:
        # Last: nothing above may draw from the global generators after they are restored.
        restore_rng_state(ckpt["rng"], device)

    evals: dict[int, dict[str, float]] = {}
    pbar = tqdm(
        total=config.steps,
        initial=min(start_step, config.steps),
        desc="train",
        dynamic_ncols=True,
        # None lets tqdm disable itself when stderr is not a TTY.
        disable=None if config.progress and sys.stderr.isatty() else True,
    )
    t_run = time.perf_counter()
    window: list[float] = []
    reg_window: dict[str, list[float]] = {}
    reg_params = [] if regulariser is None else list(regulariser.parameters())
    warned_foreign = False
    module_param_ids = {id(p) for p in gtm.parameters()}
    checked_shapes: set[tuple[int, ...]] = set()
    step = start_step
    stop = StopOnSignal()
    try:
        stop.__enter__()
        for step in range(start_step + 1, config.steps + 1):
            beta = kl_beta(step, config.kl_anneal_steps, config.kl_anneal_start)
            scaler.beta = beta
            if isinstance(elbo, FIVO):
                elbo.latent_scale = beta
            batch = _batch_to(task.sample(config.batch_size, "train", generator), device)

            # Same as pyro.infer.SVI.step, but the loss/gradients are checked before updating.
            shape = tuple(batch.x.shape[:2])
            check = config.check_every_step or shape not in checked_shapes
            try:
                checks = contextlib.nullcontext() if check else without_pyro_checks()
                with checks, pyro.poutine.trace(param_only=True) as capture:
                    loss = elbo.loss_and_grads(
                        model, guide, batch.x, c=batch.c, mask=batch.mask
                    )
                checked_shapes.add(shape)
                reg_loss = None if regulariser is None else regulariser.loss(gtm, batch, step)
            except ValueError as e:
                # With distribution validation on (Pyro's default), NaN/inf parameters surface
                # as this ValueError before any loss exists: that is divergence too.
                if _INVALID_VALUES not in str(e):
                    raise
                zero_grads(gtm.parameters())
                _clear_grads(reg_params)
                ck, ck_step = last_good if last_good else (None, None)
                first_line = str(e).splitlines()[0]
                raise TrainingDiverged(
                    step, math.nan, ck, ck_step, f"invalid distribution parameter ({first_line})"
                ) from e
            params = list(
                {site["value"].unconstrained() for site in capture.trace.nodes.values()}
            )
            loss = float(loss)
            total, own = loss, 0.0
            if reg_loss is not None:
                # each term into its own parameters only: the regulariser's parameters get no
                # gradient from the module's loss, and the module none from the regulariser's
                term = reg_loss.generator
                if term is not None and term.requires_grad:
                    total += float(term.detach())
                    torch.autograd.backward(term, inputs=[p for p in params if p.requires_grad])
                if reg_loss.own is not None and reg_loss.own.requires_grad:
                    own = float(reg_loss.own.detach())
                    torch.autograd.backward(reg_loss.own, inputs=reg_params)
            reason = None
            if not math.isfinite(total):
                reason = "non-finite loss" if not math.isfinite(loss) else (
                    "non-finite regulariser term")
            elif not math.isfinite(own):
                reason = "non-finite regulariser loss"
            else:
                bad = _first_nan_grad(params)
                if bad is not None:
                    name = pyro.get_param_store().param_name(bad)
                    reason = f"NaN gradient of parameter {name!r}"
                elif _first_nan_grad(reg_params) is not None:
                    reason = "NaN gradient of a regulariser parameter"
            if reason is not None:
                zero_grads(params)
                _clear_grads(reg_params)
                ck, ck_step = last_good if last_good else (None, None)
                raise TrainingDiverged(step, total, ck, ck_step, reason)
            if not warned_foreign and any(id(p) not in module_param_ids for p in params):
                warned_foreign = True
                warnings.warn(
                    "some optimised parameters do not belong to gtm (pyro.param outside the "
                    "module); they are trained but not checkpointed, so resume is not exact",
                    stacklevel=2,
                )
            optim(params)
            zero_grads(params)
            if regulariser is not None:
                regulariser.step()
                for k, v in reg_loss.metrics.items():
                    reg_window.setdefault(str(k), []).append(float(v))

            losses.append(loss)
            window.append(loss)
            pbar.update(1)
            pbar.set_postfix(loss=f"{loss:.4g}", beta=f"{beta:.3g}", refresh=False)

            is_last = step == config.steps
            do_eval = evaluate_fn is not None and config.eval_every is not None and (
                step % config.eval_every == 0 or is_last
            )
            # read once: a signal arriving later in this step is acted on at the next one
            interrupted = stop.signal_number is not None
            do_ckpt = ckpt_path is not None and (
                is_last
                or interrupted
                or (config.checkpoint_every is not None and step % config.checkpoint_every == 0)
            )
            metrics: dict[str, float] = {}
            if do_eval:
                metrics = _evaluate(evaluate_fn, gtm, step, device)
                evals[step] = metrics
            # Rows at checkpoint steps keep the loss windows aligned across resumes.
            if window and (step % config.log_every == 0 or do_eval or do_ckpt or is_last):
                seconds = seconds_before + (time.perf_counter() - t_run)
                row: dict[str, Any] = {
                    "step": step,
                    "loss": float(np.mean(window)),
                    "beta": beta,
                    "seconds": round(seconds, 3),
                }
                for k, v in reg_window.items():
                    row[k if k not in _CsvLog.BASE else f"reg_{k}"] = float(np.mean(v))
                for k, v in metrics.items():
                    row[k if k not in _CsvLog.BASE else f"eval_{k}"] = v
                if log is not None:
                    log.write(row)
                if tb is not None:
                    tb.add_scalar("train/loss", row["loss"], step)
                    tb.add_scalar("train/beta", beta, step)
                    for k, v in reg_window.items():
                        tb.add_scalar(f"train/{k}", float(np.mean(v)), step)
                    for k, v in metrics.items():
                        tb.add_scalar(f"eval/{k}", v, step)
                window = []
                reg_window = {}
            if do_ckpt:
                state = {
                    "format_version": FORMAT_VERSION,
                    "step": step,
                    "module": gtm.state_dict(),
                    "optim": optim.get_state(),
                    "rng": capture_rng_state(device),
                    "batch_generator": generator.get_state(),
                    "config": config.to_dict(),
                    "csv_rows": log.sync() if log is not None else 0,
                    "losses": torch.tensor(losses, dtype=torch.float64),
                    "seconds": seconds_before + (time.perf_counter() - t_run),
                    "regulariser": None if regulariser is None else regulariser.state_dict(),
                    "threads": torch.get_num_threads(),
                }
                save_checkpoint(state, ckpt_path)
                last_good = (ckpt_path, step)
                if tb is not None:
                    tb.flush()
            if interrupted:
                raise TrainingInterrupted(step, stop.signal_number, ckpt_path)
    finally:
        stop.__exit__(None, None, None)
        pbar.close()
        if log is not None:
            log.close()
        if tb is not None:
            tb.close()

    final_step = max(step, start_step)
    return TrainResult(
        step=final_step,
        losses=losses,
        seconds=time.perf_counter() - t_call,
        checkpoint_path=ckpt_path if (ckpt_path is not None and ckpt_path.exists()) else None,
        start_step=start_step,
        evals=evals,
    )
