"""The SVI training loop: exact resume, KL annealing, logging, divergence checks, rollback.

:func:`train` optimises any :class:`torch.nn.Module` ``gtm`` exposing the Pyro programs
``gtm.model(x, c=None, mask=None)`` and ``gtm.guide(x, c=None, mask=None)`` on any task object
with ``task.sample(batch_size, split, generator)`` returning a ``SequenceBatch`` (see
``docs/CONVENTIONS.md``). Its parts, one job each: :mod:`~pgtm.inference.train_config` (the
config), :mod:`~pgtm.inference.guarded_step` (one checked step, KL annealing, registration),
:mod:`~pgtm.inference.train_log` (``log.csv``/TensorBoard), :mod:`~pgtm.inference.resume` (the
state a checkpoint holds) and :mod:`~pgtm.inference.checkpoint` (atomic files, kept checkpoints).

Design notes
------------
* **The torch-native seam.** The objective is Pyro's ``ELBOModule`` of the GTM's model and
  guide (:func:`~pgtm.inference.objective.training_objective`), a torch module whose parameters
  are the GTM's own; Pyro's ``ClippedAdam`` (a torch optimiser) updates them. The loop reads
  nothing from the global param store (it only makes the store hold the module's own tensors,
  :func:`~pgtm.inference.guarded_step.register_module`, for the programs' ``pyro.module``
  declarations), and a parameter the programs use that the module does not own is an error.
* **Data-parallel.** Under a ``torch.distributed`` process group (``torchrun``; see
  :mod:`~pgtm.inference.distributed`) the objective is wrapped in
  :class:`~torch.nn.parallel.DistributedDataParallel`; each rank trains on its share of the
  batch and rank 0 writes.
* **Exact resume.** Every source of randomness is checkpointed (global torch/CUDA/python/numpy
  RNG states, the batch generator), as are the module, the optimiser state and the loss
  history. Evaluation runs with forked RNG states so that *when* one evaluates cannot change
  the training trajectory.
* **Divergence.** A step whose loss or gradients are unusable (non-finite, NaN gradient, invalid
  distribution parameter, loss explosion) updates nothing. With ``on_divergence="stop"``
  :class:`TrainingDiverged` names the last good checkpoint, left untouched; with ``"rollback"``
  the loop reloads a kept checkpoint, lowers the learning rate and goes on, deterministically
  (the checkpoint holds every RNG state), at most ``max_rollbacks`` times.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import signal
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from pgtm.io import save_json

from .checkpoint import (
    CheckpointRing,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
)
from .diagnose import describe_terms, loss_terms
from .distributed import all_states, any_rank, rank_seed, ranks, sum_over_ranks
from .guarded_step import (
    MODULE_NAME,
    LatentScale,
    Regulariser,
    RegulariserLoss,
    StepDiverged,
    guarded_step,
    kl_beta,
    register_module,
    without_pyro_checks,
)
from .lifecycle import RunLock, StopOnSignal, TrainingInterrupted
from .objective import set_beta, training_objective
from .resume import TrainingState, check_world_size, rank_entry, warn_about_resume
from .train_config import ELBOS, TrainConfig, TrainingDiverged, TrainResult
from .train_log import TrainLog

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
    "without_pyro_checks",
]

#: The rollbacks of a run, rewritten at each one.
ROLLBACKS_NAME = "rollbacks.json"


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

    Each step draws ``task.sample(config.batch_size, "train", generator)`` (in data-parallel
    training each process draws its share, ``batch_size / processes``) from a dedicated
    CPU :class:`torch.Generator` seeded with ``config.seed``, moves it to ``config.device`` and
    takes one gradient step on the (annealed) negative ELBO of
    ``gtm.model(x, c=c, mask=mask)`` / ``gtm.guide(x, c=c, mask=mask)``.

    Outputs in ``config.out_dir`` (when not ``None``): ``checkpoint.pt`` (atomic; every
    ``checkpoint_every`` steps and at the end) and the ``keep_checkpoints - 1`` before it in
    ``checkpoints/``, ``log.csv`` (columns ``step, loss, loss_per_sequence, beta, seconds``
    then evaluation metrics; ``loss`` is the mean since the previous row of the negative ELBO
    summed over the batch, in nats, ``loss_per_sequence`` that divided by the batch size,
    ``seconds`` the cumulative training wall time), ``rollbacks.json`` after a rollback
    (``{"rollbacks": [...]}``, and ``"stopped"``: the divergence that stopped the run, until
    it trains again) and ``tensorboard/`` if TensorBoard is installed.

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
        bit-identical to an uninterrupted run with the same config). With ``False`` existing
        checkpoints and the log are overwritten.
    :param regulariser: optional :class:`Regulariser` trained alongside (its state is
        checkpointed and restored with the rest).
    :returns: a :class:`TrainResult`.
    :raises ValueError: for a CUDA device when CUDA is unavailable; when ``out_dir`` holds
        another model's checkpoint; when another process is training into ``out_dir`` (its lock
        file ``.lock`` names it).
    :raises TrainingDiverged: when a step is unusable and no rollback is allowed (any more); the
        last good checkpoint is left untouched and named in the message.
    :raises TrainingInterrupted: after a SIGINT or SIGTERM (in the main thread): the step under
        way is finished and checkpointed first (the log gains a row at that step); rerunning
        resumes exactly. A second signal exits at once.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    for attr in ("model", "guide"):
        if not callable(getattr(gtm, attr, None)):
            raise TypeError(f"gtm must have a callable {attr}(x, c=None, mask=None)")
    if not callable(getattr(task, "sample", None)):
        raise TypeError("task must have sample(batch_size, split, generator)")

    lock = config.out_dir is not None and ranks().main  # rank 0 writes the run folder
    with RunLock(config.out_dir) if lock else contextlib.nullcontext():
        return _train(gtm, task, config, evaluate_fn, resume, regulariser)


def _split_loss(gtm, batch, draws: dict[str, Any], device) -> dict[str, Any]:
    """:func:`loss_terms` of a diverged step's batch, with the step's own random draws (the
    generators as they were before it, ``draws``; the parameters are unchanged), so that an
    explosion caused by one unlucky sample shows in the terms; or the first line of the error
    when the parameters are no longer valid distribution parameters."""
    restore_rng_state(draws, device)
    try:
        return loss_terms(gtm, batch.x, batch.c, batch.mask)
    except ValueError as error:
        return {"error": str(error).splitlines()[0]}


def _barrier() -> None:
    if ranks().world > 1:
        torch.distributed.barrier()


def _save_divergences(out_dir: Path, rollbacks: list[dict], stopped: dict | None = None) -> None:
    """``rollbacks.json``: the run's rollbacks, and the divergence that stopped it if any."""
    save_json({"rollbacks": rollbacks, **({} if stopped is None else {"stopped": stopped})},
              out_dir / ROLLBACKS_NAME)


def _restart_divergences(out_dir: Path, resume: bool) -> None:
    """A fresh start has no divergences yet; a resumed run trains again, so it is no longer
    stopped (its rollbacks stay)."""
    record = out_dir / ROLLBACKS_NAME
    if not record.is_file():
        return
    if not resume:
        record.unlink()
        return
    kept = json.loads(record.read_text())
    if "stopped" in kept:
        _save_divergences(out_dir, kept["rollbacks"])


def _train(gtm, task, config, evaluate_fn, resume, regulariser) -> TrainResult:
    """:func:`train` once the run folder is locked."""
    t_call = time.perf_counter()
    where = ranks()
    if config.batch_size % where.world:
        raise ValueError(f"batch_size must be divisible by the number of processes "
                         f"({where.world}), got {config.batch_size}")
    device = _resolve_device(config.device)
    gtm.to(device)
    gtm.train()
    if regulariser is not None:
        regulariser.to(device)

    out_dir = Path(config.out_dir) if config.out_dir is not None else None
    ring = None
    if out_dir is not None:
        ring = CheckpointRing(out_dir, config.keep_checkpoints)
        if where.main:
            out_dir.mkdir(parents=True, exist_ok=True)
            if not resume:
                ring.clear()
            _restart_divergences(out_dir, resume)
        _barrier()
    ckpt = load_checkpoint(ring.path) if ring is not None and ring.path.is_file() else None

    state = TrainingState.fresh(config, gtm, rank_seed(config.seed, where.rank))
    if ckpt is not None:
        check_world_size(ckpt, where.world, ring.path)
        if where.main:
            warn_about_resume(ckpt, config, ring.path, regulariser)
        state = TrainingState.from_checkpoint(ckpt, config, gtm, regulariser, ring.path,
                                              rank=where.rank)
    start_step = state.step
    register_module(gtm)  # Pyro's store holds gtm's own tensors (the programs declare them)
    objective, scaler = training_objective(gtm, config.elbo, config.num_particles,
                                           config.compile)
    step_objective = objective if where.world == 1 else DistributedDataParallel(
        objective, device_ids=None if device.type == "cpu" else [device])

    log = TrainLog(out_dir if where.main else None, config.tensorboard, state.csv_rows,
                   state.step, config.batch_size)
    checkpoint_step = state.step if ckpt is not None else None
    if ckpt is not None:
        # Last: nothing above may draw from the global generators after they are restored.
        restore_rng_state(rank_entry(ckpt, where.rank)["rng"], device)

    rolled_back = False  # a rollback has happened since the last checkpoint was written

    def write_checkpoint(seconds: float) -> None:
        nonlocal checkpoint_step, rolled_back
        rank_states = all_states(state.rank_state(device))
        if where.main:
            ring.save(state.checkpoint(gtm, regulariser, config, log.sync(), seconds,
                                       rank_states), checkpoint_step)
        _barrier()  # every rank may read it from now on (a rollback does)
        checkpoint_step, rolled_back = state.step, False

    if ckpt is None and ring is not None and config.on_divergence == "rollback":
        write_checkpoint(0.0)  # something to roll back to before the first periodic one

    evals: dict[int, dict[str, float]] = {}
    pbar = tqdm(
        total=config.steps,
        initial=min(state.step, config.steps),
        desc="train",
        unit="step",
        dynamic_ncols=True,
        # None lets tqdm disable itself when stderr is not a TTY.
        disable=None if config.progress and where.main and sys.stderr.isatty() else True,
    )
    t_run = time.perf_counter()
    params = [p for p in gtm.parameters() if p.requires_grad]
    reg_params = [] if regulariser is None else list(regulariser.parameters())
    checked_shapes: set[tuple[int, ...]] = set()
    local_batch = config.batch_size // where.world
    stop = StopOnSignal()
    try:
        stop.__enter__()
        while state.step < config.steps:
            step = state.step + 1
            beta = kl_beta(step, config.kl_anneal_steps, config.kl_anneal_start)
            set_beta(objective, scaler, beta)
            batch = _batch_to(task.sample(local_batch, "train", state.generator), device)
            shape = tuple(batch.x.shape[:2])
            draws = capture_rng_state(device)  # to replay this step's draws if it diverges
            try:
                result = guarded_step(
                    step_objective, batch, step=step, gtm=gtm, params=params,
                    regulariser=regulariser,
                    regulariser_params=reg_params, previous_losses=state.losses,
                    max_loss_ratio=config.max_loss_ratio,
                    pyro_checks=config.check_every_step or shape not in checked_shapes,
                    loss_scale=float(where.world), total=sum_over_ranks,
                )
            except StepDiverged as diverged:
                terms = _split_loss(gtm, batch, draws, device)
                can_roll_back = (config.on_divergence == "rollback" and checkpoint_step is not None
                                 and len(state.rollbacks) < config.max_rollbacks)
                if not can_roll_back:
                    path = ring.path if checkpoint_step is not None else None
                    if out_dir is not None and where.main:
                        # the run folder says why the run stopped, not only the error line
                        stopped = {"diverged_at": step, "reason": diverged.reason,
                                   "last_checkpoint": checkpoint_step,
                                   **({} if terms is None else {"terms": terms})}
                        _save_divergences(out_dir, state.rollbacks, stopped)
                    raise TrainingDiverged(step, diverged.loss, path, checkpoint_step,
                                           diverged.reason, len(state.rollbacks),
                                           terms) from None
                # diverged again before a new checkpoint: the one rolled back to is suspect too
                if rolled_back and where.main:
                    ring.discard_newest()
                _barrier()
                ckpt = load_checkpoint(ring.path)
                checkpoint_step, rolled_back = int(ckpt["step"]), True
                scale, records = state.rolled_back(step, diverged.reason, checkpoint_step,
                                                   config.rollback_lr_factor, terms)
                state = TrainingState.from_checkpoint(ckpt, config, gtm, regulariser, ring.path,
                                                      lr_scale=scale, rollbacks=records,
                                                      rank=where.rank)
                log.rewind(state.csv_rows, state.step)
                restore_rng_state(rank_entry(ckpt, where.rank)["rng"], device)
                t_run = time.perf_counter()
                pbar.n = state.step
                if where.main:
                    _save_divergences(out_dir, records)
                    warnings.warn(
                        f"step {step}: {diverged.reason} ({describe_terms(terms)}); rolled "
                        "back to the checkpoint of step "
                        f"{state.step} with the learning rate times {scale:g} (rollback "
                        f"{len(records)} of at most {config.max_rollbacks})",
                        stacklevel=2,
                    )
                continue
            checked_shapes.add(shape)
            state.optim.step()
            state.optim.zero_grad(set_to_none=True)
            if regulariser is not None:
                regulariser.step()
            state.step = step
            state.losses.append(result.loss)
            log.add(result.loss, None if result.regulariser is None
                    else result.regulariser.metrics)
            pbar.update(1)
            pbar.set_postfix_str(f"loss {result.loss / config.batch_size:.5g} nats/sequence, "
                                 f"beta {beta:.3g}", refresh=False)

            is_last = step == config.steps
            do_eval = evaluate_fn is not None and config.eval_every is not None and (
                step % config.eval_every == 0 or is_last
            ) and where.main
            # read once: a signal arriving later in this step is acted on at the next one, and
            # by every rank at this one
            interrupted = any_rank(stop.signal_number is not None)
            do_ckpt = ring is not None and (
                is_last
                or interrupted
                or (config.checkpoint_every is not None and step % config.checkpoint_every == 0)
            )
            metrics = _evaluate(evaluate_fn, gtm, step, device) if do_eval else {}
            if do_eval:
                evals[step] = metrics
            seconds = state.seconds + (time.perf_counter() - t_run)
            # Rows at checkpoint steps keep the loss windows aligned across resumes.
            if step % config.log_every == 0 or do_eval or do_ckpt or is_last:
                log.write_row(step, beta, seconds, metrics)
            if do_ckpt:
                write_checkpoint(seconds)
            if interrupted:
                raise TrainingInterrupted(step, stop.signal_number or signal.SIGTERM,
                                          ring.path if ring else None)
    finally:
        stop.__exit__(None, None, None)
        pbar.close()
        log.close()

    return TrainResult(
        step=state.step,
        losses=state.losses,
        seconds=time.perf_counter() - t_call,
        checkpoint_path=ring.path if (ring is not None and ring.path.is_file()) else None,
        start_step=start_step,
        evals=evals,
    )
