"""The state a training run carries from step to step, to and from a checkpoint.

:class:`TrainingState` is everything beyond the module's weights that a run needs to continue
*exactly*: the step, the batch generator, the optimiser, the loss history, the training time,
the log rows written, and what rollbacks did to the learning rate. The global RNG states are
captured when the checkpoint is written and restored (last) by the loop.
"""

from __future__ import annotations

import dataclasses
import random
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pyro.params.param_store import param_with_module_name

from .checkpoint import FORMAT_VERSION, capture_rng_state, check_module_state
from .clipped_adam import MultiTensorClippedAdam
from .guarded_step import MODULE_NAME
from .train_config import OPTIM_FIELDS, TRAJECTORY_FIELDS, TrainConfig

__all__ = ["TrainingState", "check_world_size", "clipped_adam", "rank_entry", "seed_globals",
           "warn_about_resume"]


def seed_globals(seed: int) -> None:
    """Seed torch's, Python's and NumPy's global generators from ``seed``.

    The batch generator gets ``seed`` itself; the global RNGs (Pyro's sampling noise) get a
    derived seed so the two streams are not the identical MT19937 sequence.
    """
    derived = int(torch.randint(2**62, (1,), generator=torch.Generator().manual_seed(seed)))
    torch.manual_seed(derived)
    random.seed(derived)
    np.random.seed(derived % 2**32)  # noqa: NPY002 (legacy global state on purpose)


def clipped_adam(gtm: torch.nn.Module, config: TrainConfig,
                 lr_scale: float = 1.0) -> MultiTensorClippedAdam:
    """Pyro's ClippedAdam (its multi-tensor form) over every trainable parameter of ``gtm``."""
    return MultiTensorClippedAdam([p for p in gtm.parameters() if p.requires_grad],
                                  lr=config.learning_rate * lr_scale, clip_norm=config.clip_norm,
                                  lrd=config.lr_decay)


def _with_hparams(state: dict[str, Any], config: TrainConfig, step: int,
                  lr_scale: float) -> dict[str, Any]:
    # ClippedAdam's param_groups (lr, clip_norm, lrd) are restored from the checkpoint and
    # would silently override the config; apply the config's values instead, with the lr as if
    # its schedule had run from step 0 (times the rollbacks' factor).
    lr = config.learning_rate * lr_scale * config.lr_decay**step
    for group in state["param_groups"]:
        group["lr"] = lr
        group["clip_norm"] = config.clip_norm
        group["lrd"] = config.lr_decay
    return state


def _from_pyro_optim(state: Mapping[str, Any], gtm: torch.nn.Module) -> dict[str, Any]:
    """A format-1 checkpoint's optimiser (Pyro's ``PyroOptim``: one ClippedAdam per parameter,
    keyed ``"gtm$$$<name>"``) as the state of one ClippedAdam over ``gtm``'s parameters."""
    names = [n for n, p in gtm.named_parameters() if p.requires_grad]
    per_param = {n: state.get(param_with_module_name(MODULE_NAME, n)) for n in names}
    group = next(s for s in per_param.values() if s is not None)["param_groups"][0]
    return {
        "state": {i: per_param[n]["state"][0] for i, n in enumerate(names)
                  if per_param[n] is not None and 0 in per_param[n]["state"]},
        "param_groups": [{**group, "params": list(range(len(names)))}],
    }


@dataclasses.dataclass
class TrainingState:
    """A run's progress (see the module docstring).

    :ivar step: completed steps.
    :ivar generator: the CPU batch generator.
    :ivar optim: Pyro's ClippedAdam (multi-tensor), a torch optimiser over the module's parameters.
    :ivar losses: the loss of every step so far.
    :ivar seconds: training wall time before this call.
    :ivar csv_rows: rows of ``log.csv`` that belong to ``step`` (``None``: a fresh log).
    :ivar lr_scale: product of the rollbacks' learning-rate factors (1 without rollbacks).
    :ivar rollbacks: one record per rollback so far (see :meth:`rolled_back`).
    """

    step: int
    generator: torch.Generator
    optim: MultiTensorClippedAdam
    losses: list[float]
    seconds: float
    csv_rows: int | None
    lr_scale: float = 1.0
    rollbacks: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @classmethod
    def fresh(cls, config: TrainConfig, gtm: torch.nn.Module, seed: int) -> TrainingState:
        """Step 0 of a new run; seeds the batch generator and the global generators with
        ``seed`` (``config.seed``, or a rank's seed in data-parallel training)."""
        generator = torch.Generator(device="cpu").manual_seed(seed)
        seed_globals(seed)
        return cls(0, generator, clipped_adam(gtm, config), [], 0.0, None)

    @classmethod
    def from_checkpoint(
        cls,
        ckpt: Mapping[str, Any],
        config: TrainConfig,
        gtm: torch.nn.Module,
        regulariser: Any,
        path: Path,
        lr_scale: float | None = None,
        rollbacks: list[dict[str, Any]] | None = None,
        rank: int = 0,
    ) -> TrainingState:
        """Load ``ckpt`` into ``gtm`` (and ``regulariser``) and return the state it holds.

        :param lr_scale: override the checkpoint's learning-rate factor (a rollback).
        :param rollbacks: override the checkpoint's rollback records (a rollback).
        :param rank: the process's rank (its own batch generator is restored).
        :raises ValueError: if ``ckpt`` holds another model's weights.
        """
        check_module_state(gtm, ckpt["module"], path)
        step = int(ckpt["step"])
        saved_scale = float(ckpt.get("lr_scale", 1.0))
        scale = saved_scale if lr_scale is None else lr_scale
        # In-place copy: keeps the module's Parameter objects (and thus their identity).
        gtm.load_state_dict(ckpt["module"])
        optim_state = ckpt["optim"]
        if ckpt["format_version"] == 1:
            optim_state = _from_pyro_optim(optim_state, gtm)
        old = ckpt["config"]
        if scale != saved_scale or any(old.get(f) != getattr(config, f) for f in OPTIM_FIELDS):
            optim_state = _with_hparams(optim_state, config, step, scale)
        optim = clipped_adam(gtm, config, scale)
        optim.load_state_dict(optim_state)
        generator = torch.Generator(device="cpu")
        generator.set_state(rank_entry(ckpt, rank)["batch_generator"].to("cpu", torch.uint8))
        saved_reg = ckpt.get("regulariser")
        if regulariser is not None and saved_reg is not None:
            regulariser.load_state_dict(saved_reg)
        return cls(
            step=step,
            generator=generator,
            optim=optim,
            losses=[float(v) for v in ckpt["losses"].tolist()],
            seconds=float(ckpt["seconds"]),
            csv_rows=int(ckpt["csv_rows"]),
            lr_scale=scale,
            rollbacks=list(ckpt.get("rollbacks", [])) if rollbacks is None else rollbacks,
        )

    def rank_state(self, device: torch.device) -> dict[str, Any]:
        """This process's generators (each rank's are in a data-parallel checkpoint)."""
        return {"rng": capture_rng_state(device), "batch_generator": self.generator.get_state()}

    def checkpoint(self, gtm: torch.nn.Module, regulariser: Any, config: TrainConfig,
                   csv_rows: int, seconds: float, rank_states: list[dict[str, Any]]
                   ) -> dict[str, Any]:
        """The checkpoint dictionary at :attr:`step` (``weights_only``-loadable); the top-level
        ``rng``/``batch_generator`` are rank 0's; a data-parallel run adds ``ranks``, every
        rank's."""
        return {
            "format_version": FORMAT_VERSION,
            "step": self.step,
            "module": gtm.state_dict(),
            "optim": self.optim.state_dict(),
            **rank_states[0],
            **({"ranks": rank_states} if len(rank_states) > 1 else {}),
            "config": config.to_dict(),
            "csv_rows": csv_rows,
            "losses": torch.tensor(self.losses, dtype=torch.float64),
            "seconds": seconds,
            "regulariser": None if regulariser is None else regulariser.state_dict(),
            "threads": torch.get_num_threads(),
            "lr_scale": self.lr_scale,
            "rollbacks": self.rollbacks,
        }

    def rolled_back(self, at_step: int, reason: str, to_step: int, factor: float,
                    terms: dict | None = None) -> tuple[float, list[dict[str, Any]]]:
        """The learning-rate factor and rollback records after one more rollback; ``terms``
        (:func:`~pgtm.inference.diagnose.loss_terms` of the diverged batch) join the record."""
        scale = self.lr_scale * factor
        record = {"diverged_at": at_step, "reason": reason, "resumed_from": to_step,
                  "lr_scale": scale, **({} if terms is None else {"terms": terms})}
        return scale, [*self.rollbacks, record]


def rank_entry(ckpt: Mapping[str, Any], rank: int) -> Mapping[str, Any]:
    """The generator states of ``rank`` in ``ckpt`` (``rng``, ``batch_generator``)."""
    return ckpt["ranks"][rank] if "ranks" in ckpt else ckpt


def check_world_size(ckpt: Mapping[str, Any], world: int, path: Path) -> None:
    """A checkpoint resumes with as many processes as wrote it."""
    written = len(ckpt.get("ranks", [None]))
    if written != world:
        raise ValueError(
            f"checkpoint: {path} was written by {written} process(es); resume it with "
            f"{written} (--nproc-per-node {written}), or it is not an exact continuation"
        )


def warn_about_resume(ckpt: Mapping[str, Any], config: TrainConfig, path: Path,
                      regulariser: Any) -> None:
    """Warn when resuming ``ckpt`` with this ``config`` cannot continue it exactly."""
    old = ckpt["config"]
    changed = [f for f in TRAJECTORY_FIELDS if old.get(f) != getattr(config, f)]
    if changed:
        warnings.warn(
            f"resuming {path} with changed config fields {changed}; the continuation is not "
            "identical to an uninterrupted run",
            stacklevel=3,
        )
    saved_threads = ckpt.get("threads")
    if saved_threads is not None and saved_threads != torch.get_num_threads():
        warnings.warn(
            f"resuming {path}, written with {saved_threads} torch threads, with "
            f"{torch.get_num_threads()}: floating-point sums are ordered differently, so the "
            f"continuation is not bit-identical to an uninterrupted run (use --threads "
            f"{saved_threads} for that)",
            stacklevel=3,
        )
    saved = ckpt.get("regulariser")
    if (regulariser is None) != (saved is None):
        warnings.warn(
            f"resuming {path}: the checkpoint "
            + ("has no regulariser state but a regulariser was given (it starts afresh)"
               if saved is None else "holds a regulariser state but none was given")
            + "; the continuation is not identical to an uninterrupted run",
            stacklevel=3,
        )
