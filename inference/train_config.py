"""The configuration of a training run (:class:`TrainConfig`), what a run returns
(:class:`TrainResult`) and how it fails (:class:`TrainingDiverged`)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pgtm.checks import integer, number, one_of

from .diagnose import describe_terms
from .objective import elbo_not_compiled

__all__ = ["DIVERGENCE_ACTIONS", "ELBOS", "TrainConfig", "TrainResult", "TrainingDiverged"]

#: Allowed values of :attr:`TrainConfig.elbo`.
ELBOS = ("trace", "meanfield", "fivo")
#: Allowed values of :attr:`TrainConfig.on_divergence`.
DIVERGENCE_ACTIONS = ("stop", "rollback")
#: Config fields that shape the optimisation trajectory; changing them between a checkpoint
#: and its resume makes the continuation inexact, hence a warning.
TRAJECTORY_FIELDS = (
    "batch_size",
    "learning_rate",
    "clip_norm",
    "lr_decay",
    "elbo",
    "num_particles",
    "kl_anneal_steps",
    "kl_anneal_start",
    "seed",
    "compile",
)
#: The fields ClippedAdam keeps in its own state (overridden on resume when they change).
OPTIM_FIELDS = ("learning_rate", "clip_norm", "lr_decay")


class TrainingDiverged(RuntimeError):
    """Raised when a training step produces a non-finite loss or a NaN gradient.

    :ivar step: the (1-based) step that diverged.
    :ivar loss: its loss value.
    :ivar checkpoint_path: the last good checkpoint (untouched), or ``None`` if none was written.
    :ivar checkpoint_step: the step stored in that checkpoint, or ``None``.
    :ivar reason: what was wrong (non-finite loss, NaN gradient, loss explosion, ...).
    :ivar rollbacks: rollbacks made before giving up (``on_divergence="rollback"``).
    :ivar terms: :func:`~pgtm.inference.diagnose.loss_terms` of the diverged step's batch, or
        ``None``.
    """

    def __init__(
        self,
        step: int,
        loss: float,
        checkpoint_path: Path | None,
        checkpoint_step: int | None,
        reason: str = "non-finite loss",
        rollbacks: int = 0,
        terms: dict | None = None,
    ) -> None:
        self.step = step
        self.loss = loss
        self.checkpoint_path = checkpoint_path
        self.checkpoint_step = checkpoint_step
        self.reason = reason
        self.rollbacks = rollbacks
        self.terms = terms
        if checkpoint_path is None:
            where = "no checkpoint has been written"
        else:
            where = f"last good checkpoint: {checkpoint_path} (step {checkpoint_step})"
        after = f" after {rollbacks} rollback(s)" if rollbacks else ""
        split = "" if terms is None else f" ({describe_terms(terms)})"
        super().__init__(
            f"training diverged at step {step}{after}: {reason}, loss = {loss!r}{split}; {where}"
        )


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
    :param check_every_step: run Pyro's own checks (see
        :func:`~pgtm.inference.guarded_step.without_pyro_checks`) on every step, not only on the
        first step of each batch shape.
    :param keep_checkpoints: how many checkpoints to keep, >= 1: ``checkpoint.pt`` (the newest)
        and the ``keep_checkpoints - 1`` before it as ``checkpoints/step-<N>.pt``.
    :param max_loss_ratio: the loss-explosion guard: a step whose loss exceeds the median of the
        last 100 steps' losses by more than ``max_loss_ratio`` times that median's magnitude
        (at least 1) is treated as divergence, once 20 steps have been seen. ``None`` turns the
        guard off; otherwise > 1. The default (100) only fires on a blow-up: a finite loss of
        1e28 is not a good step.
    :param on_divergence: ``"stop"`` (raise :class:`TrainingDiverged`, naming the last good
        checkpoint) or ``"rollback"``: reload the newest kept checkpoint (the one before it on
        a second consecutive rollback, and so on), multiply the learning rate by
        ``rollback_lr_factor`` and continue; deterministic, since the checkpoint holds every RNG
        state. Each rollback is a warning and a row of ``rollbacks.csv``; the learning-rate
        factor and the rollbacks so far are checkpointed.
    :param rollback_lr_factor: learning-rate multiplier per rollback, in (0, 1).
    :param max_rollbacks: rollbacks allowed in one run before divergence stops it, >= 1.
    :param compile: train through :class:`~pgtm.inference.objective.CompiledObjective` (the
        GTM's ELBO written out and compiled whole; ``elbo="trace"`` with one particle only).
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
    keep_checkpoints: int = 2
    max_loss_ratio: float | None = 100.0
    on_divergence: str = "stop"
    rollback_lr_factor: float = 0.5
    max_rollbacks: int = 3
    compile: bool = False

    def __post_init__(self) -> None:
        # the checked values are stored back as plain int / float: a NumPy number would not
        # survive a weights_only checkpoint (see to_dict)
        self.steps = integer("steps", self.steps, 1)
        self.batch_size = integer("batch_size", self.batch_size, 1)
        self.learning_rate = number("learning_rate", self.learning_rate, 0, low_open=True)
        self.clip_norm = number("clip_norm", self.clip_norm, 0, low_open=True)
        self.lr_decay = number("lr_decay", self.lr_decay, 0, 1, low_open=True)
        one_of("elbo", self.elbo, ELBOS)
        self.num_particles = integer("num_particles", self.num_particles, 1)
        self.kl_anneal_steps = integer("kl_anneal_steps", self.kl_anneal_steps, 0)
        self.kl_anneal_start = number("kl_anneal_start", self.kl_anneal_start, 0, 1)
        dev = self.device
        ok_dev = isinstance(dev, str) and (
            dev in ("cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())
        )
        if not ok_dev:
            raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {dev!r}")
        self.seed = integer("seed", self.seed, 0)
        self.eval_every = integer("eval_every", self.eval_every, 1, allow_none=True)
        self.checkpoint_every = integer("checkpoint_every", self.checkpoint_every, 1,
                                        allow_none=True)
        self.log_every = integer("log_every", self.log_every, 1)
        if self.out_dir is not None and not isinstance(self.out_dir, (str, os.PathLike)):
            raise ValueError(f"out_dir must be a path or None, got {self.out_dir!r}")
        self.keep_checkpoints = integer("keep_checkpoints", self.keep_checkpoints, 1)
        self.max_loss_ratio = number("max_loss_ratio", self.max_loss_ratio, 1, low_open=True,
                                     allow_none=True)
        one_of("on_divergence", self.on_divergence, DIVERGENCE_ACTIONS)
        self.rollback_lr_factor = number("rollback_lr_factor", self.rollback_lr_factor, 0, 1,
                                         low_open=True, high_open=True)
        self.max_rollbacks = integer("max_rollbacks", self.max_rollbacks, 1)
        if not isinstance(self.compile, bool):
            raise ValueError(f"compile must be True or False, got {self.compile!r}")
        why = elbo_not_compiled(self.elbo, self.num_particles) if self.compile else None
        if why is not None:
            raise ValueError(f"compile {why}")

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
