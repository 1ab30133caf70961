"""Sequence tasks of the GTMM paper (Gemici et al., 2017) and the Memory Forcing benchmarks.

Every task is an object with

- ``name``, ``frame_shape`` (``(1, 28, 28)`` for image tasks, ``(1, 1, W)`` for vector tasks),
  ``context_size`` (``A``; 0 when there is no context), ``length`` (``T``);
- ``sample(batch_size, split, generator) -> SequenceBatch``.

The :class:`torch.Generator` passed to :meth:`Task.sample` is the *only* source of randomness
(image choice, walks, dynamic binarisation), so equal generator states give identical batches.
``split="train"`` draws images only from the training pool and ``split="test"`` only from the test
pool (MNIST train/test; Omniglot background/evaluation alphabets), which are disjoint.  Sampling is
vectorised over the batch: it indexes a preloaded ``[N, 1, 28, 28]`` tensor.  Returned tensors live
on the CPU; move them with ``batch.x.to(device)``.

Binarisation (``binarize``): ``"dynamic"`` (default) draws a fresh Bernoulli sample of every *item*
per batch, ``"fixed"`` uses one sample per image drawn at load time, ``"none"`` keeps grey levels.
Recall steps that repeat an item repeat *its binarised frame* (so a recall frame equals its
addressed frame pixel for pixel in every mode, ``one-shot`` included); new drawings
(``one-shot-generalisation``, ``parity``, ``cumulative-parity``) are binarised independently.

Pre-recall length ``l`` = ``prerecall_length``, recall length ``k`` = ``recall_length``.  Create
tasks with :func:`make_task`; ``TASK_NAMES`` lists them.  See each class for its exact rule.
The modules: :mod:`~pgtm.tasks.base` (batch, interface, pools), :mod:`~pgtm.tasks.recall` (the
GTMM recall tasks), :mod:`~pgtm.tasks.benchmarks` (navigation, copy, sequential MNIST).
"""

from __future__ import annotations

import os
from typing import Any

from pgtm.tasks.base import SequenceBatch, Task
from pgtm.tasks.benchmarks import ACTIONS, CopyTask, NavigationTask, SequentialMNISTTask
from pgtm.tasks.recall import (
    CumulativeParityTask,
    DynamicDependencyTask,
    OneShotGeneralisationTask,
    OneShotTask,
    ParityTask,
    PerfectRecallTask,
    SimilarityCuedTask,
    cumulative_parity_digits,
    parity_digits,
)
from pgtm.tasks.rotating_room import RotatingRoomTask

__all__ = [
    "ACTIONS",
    "TASKS",
    "TASK_NAMES",
    "CopyTask",
    "CumulativeParityTask",
    "DynamicDependencyTask",
    "NavigationTask",
    "OneShotGeneralisationTask",
    "OneShotTask",
    "ParityTask",
    "PerfectRecallTask",
    "RotatingRoomTask",
    "SequenceBatch",
    "SequentialMNISTTask",
    "SimilarityCuedTask",
    "Task",
    "cumulative_parity_digits",
    "make_task",
    "parity_digits",
    "task_class",
]

#: the registry: a new task is a :class:`Task` subclass and one line here
TASKS: dict[str, type[Task]] = {
    "perfect-recall": PerfectRecallTask,
    "parity": ParityTask,
    "cumulative-parity": CumulativeParityTask,
    "one-shot": OneShotTask,
    "one-shot-generalisation": OneShotGeneralisationTask,
    "dynamic-dependency": DynamicDependencyTask,
    "similarity-cued": SimilarityCuedTask,
    "navigation": NavigationTask,
    "copy": CopyTask,
    "sequential-mnist": SequentialMNISTTask,
    "rotating-room": RotatingRoomTask,
}
TASK_NAMES: tuple[str, ...] = tuple(TASKS)


def task_class(name: str) -> type[Task]:
    """The class of the task called ``name`` (its ``options`` are what :func:`make_task`
    accepts, with their defaults).

    :raises ValueError: for an unknown name.
    """
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; expected one of: {', '.join(TASK_NAMES)}")
    return TASKS[name]


def make_task(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    binarize: str = "dynamic",
    **options: Any,
) -> Task:
    """Create a task by name.

    :param name: one of :data:`TASK_NAMES`.
    :param data_dir: data folder (default ``$PGTM_DATA_DIR``, else the bundled MNIST subset for
        MNIST tasks); see :func:`pgtm.data.load_images`.
    :param download: download missing data through torchvision.
    :param binarize: ``"dynamic"`` (default), ``"fixed"`` or ``"none"``.
    :param options: task options (``None`` values mean "default"): ``prerecall_length`` (``l``),
        ``recall_length`` (``k``), ``dataset`` (``"mnist"``/``"binarized-mnist"``), ``seed`` (of
        fixed binarisation), ``grid_size``/``length`` (navigation), ``width`` (copy),
        ``period``/``image_size``/``speed_jitter`` (rotating-room); each task's
        ``options`` attribute lists what it accepts.
    :raises ValueError: unknown task or option, or an option out of range.
    """
    cls = task_class(name)
    options = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(options) - set(cls.options))
    if unknown:
        raise ValueError(
            f"task {name!r} has no option {unknown[0]!r}; allowed: {', '.join(cls.options)}"
        )
    return cls(data_dir=data_dir, download=download, binarize=binarize, **options)
