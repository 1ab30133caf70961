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
addressed frame pixel for pixel in every mode); new drawings (``one-shot``, ``parity``) are
binarised independently.

Pre-recall length ``l`` = ``prerecall_length``, recall length ``k`` = ``recall_length``.  Create
tasks with :func:`make_task`; ``TASK_NAMES`` lists them.  See each class for its exact rule.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import torch

from .data import BINARIZE_MODES, ImageSet, binarize_frames, load_images, omniglot_by_character
from .rotating_room import RotatingRoomTask

__all__ = [
    "ACTIONS",
    "TASK_NAMES",
    "CopyTask",
    "DynamicDependencyTask",
    "NavigationTask",
    "OneShotTask",
    "ParityTask",
    "PerfectRecallTask",
    "RotatingRoomTask",
    "SequenceBatch",
    "SequentialMNISTTask",
    "SimilarityCuedTask",
    "Task",
    "make_task",
]

SPLITS = ("train", "test")
MNIST_DATASETS = ("mnist", "binarized-mnist")
#: Navigation actions, in one-hot order: index 0 = stay, 1 = up (row - 1), 2 = down (row + 1),
#: 3 = left (column - 1), 4 = right (column + 1).
ACTIONS = ("stay", "up", "down", "left", "right")
_MOVES = torch.tensor([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]])


class SequenceBatch(NamedTuple):
    """A batch of sequences (see ``docs/CONVENTIONS.md``).

    :ivar x: frames float32 ``[B, T, *frame_shape]`` in ``[0, 1]``.
    :ivar c: context float32 ``[B, T, A]`` (e.g. one-hot actions) or ``None``.
    :ivar mask: bool ``[B, T]``, True where the step exists.
    :ivar recall: bool ``[B, T]``, True on recall-phase steps.
    :ivar labels: long ``[B, T]``, class label of each frame (-1 where none).
    :ivar addresses: long ``[B, T]``, for a recall step the index of the pre-recall step it repeats
        (-1 elsewhere).
    """

    x: torch.Tensor
    c: torch.Tensor | None
    mask: torch.Tensor
    recall: torch.Tensor
    labels: torch.Tensor
    addresses: torch.Tensor


# ----------------------------------------------------------------------------------------------
# helpers


def _int_option(
    name: str, value: Any, lo: int, hi: int | None = None, hi_name: str | None = None
) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer; got {value!r}")
    if value < lo or (hi is not None and value > hi):
        top = f"{hi_name}={hi}" if hi_name else str(hi)
        rng = f"[{lo}, {top}]" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be in {rng}; got {value}")
    return value


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    return value


def _gather_steps(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x [B, L, ...]`` gathered along dim 1 by ``index [B, K]`` -> ``[B, K, ...]``."""
    b = torch.arange(x.shape[0]).unsqueeze(1)
    return x[b, index]


def _assemble(
    pre_x: torch.Tensor,
    pre_labels: torch.Tensor,
    addresses: torch.Tensor,
    rec_x: torch.Tensor | None = None,
    rec_labels: torch.Tensor | None = None,
) -> SequenceBatch:
    """Build a pre-recall + recall batch; recall frames default to the addressed pre-recall frames.

    :param pre_x: ``[B, l, *frame]``; :param pre_labels: ``[B, l]``;
    :param addresses: ``[B, k]`` addressed pre-recall steps (-1 where a recall step repeats none).
    """
    bsz, l = pre_labels.shape
    k = addresses.shape[1]
    if rec_x is None:
        rec_x = _gather_steps(pre_x, addresses)
        rec_labels = _gather_steps(pre_labels, addresses)
    x = torch.cat([pre_x, rec_x], 1)
    labels = torch.cat([pre_labels, rec_labels], 1)
    recall = torch.zeros(bsz, l + k, dtype=torch.bool)
    recall[:, l:] = True
    addr = torch.full((bsz, l + k), -1, dtype=torch.long)
    addr[:, l:] = addresses
    mask = torch.ones(bsz, l + k, dtype=torch.bool)
    return SequenceBatch(x.contiguous(), None, mask, recall, labels, addr)


# ----------------------------------------------------------------------------------------------
# base classes


class Task:
    """Base class. Subclasses set ``name``, ``frame_shape``, ``context_size``, ``length`` and
    implement ``_sample(batch_size, split, generator)``."""

    name: str = ""
    frame_shape: tuple[int, ...] = (1, 28, 28)
    context_size: int = 0
    length: int = 0
    #: options accepted by :func:`make_task` for this task, with defaults.
    options: dict[str, Any] = {}

    def sample(
        self, batch_size: int, split: str = "train", generator: torch.Generator | None = None
    ) -> SequenceBatch:
        """Draw a batch.

        :param batch_size: number of sequences ``B >= 1``.
        :param split: ``"train"`` or ``"test"``.
        :param generator: CPU :class:`torch.Generator`, the only source of randomness
            (``None``: torch's global default generator).
        :returns: :class:`SequenceBatch` with CPU tensors, ``x`` ``[B, T, *frame_shape]``.
        """
        self._check_sample_args(batch_size, split, generator)
        return self._sample(batch_size, split, generator)

    @staticmethod
    def _check_sample_args(batch_size, split, generator) -> None:
        _int_option("batch_size", batch_size, 1)
        _choice("split", split, SPLITS)
        if generator is not None:
            if not isinstance(generator, torch.Generator):
                raise ValueError(f"generator must be a torch.Generator; got {type(generator)}")
            if generator.device.type != "cpu":
                raise ValueError(f"generator must be a CPU torch.Generator; got {generator.device}")

    def _sample(self, batch_size: int, split: str, generator: torch.Generator | None):
        raise NotImplementedError

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.options)
        return f"<{type(self).__name__} {self.name!r} T={self.length} {opts}>"


class _ImageTask(Task):
    """A task drawing images from a train and a test pool (:class:`~pgtm.data.ImageSet`)."""

    dataset_names: tuple[str, ...] = MNIST_DATASETS
    needs_labels = False

    def _load_pools(self, dataset: str, data_dir, download: bool, binarize: str, seed: int) -> None:
        self.dataset = _choice("dataset", dataset, self.dataset_names)
        self.binarize = _choice("binarize", binarize, BINARIZE_MODES)
        self.seed = _int_option("seed", seed, 0)
        self.pools: dict[str, ImageSet] = {}
        for split in SPLITS:
            pool = load_images(
                dataset, split, data_dir=data_dir, download=download, binarize=binarize, seed=seed
            )
            if self.needs_labels and pool.labels is None:
                raise ValueError(
                    f"task {self.name!r} needs digit labels but {dataset!r} ({pool.source}) has "
                    f"none; use dataset='mnist'"
                )
            self.pools[split] = pool

    def _frames(self, split: str, index: torch.Tensor, generator) -> torch.Tensor:
        """Binarised pool images ``[*index.shape, 1, 28, 28]``."""
        return binarize_frames(self.pools[split].images[index], self.binarize, generator)

    def _labels(self, split: str, index: torch.Tensor) -> torch.Tensor:
        labels = self.pools[split].labels
        if labels is None:
            return torch.full(index.shape, -1, dtype=torch.long)
        return labels[index]

    def _draw_items(self, batch_size: int, n: int, split: str, generator):
        """``n`` random pool images per sequence: ``(frames [B, n, 1, 28, 28], labels [B, n])``."""
        idx = torch.randint(len(self.pools[split].images), (batch_size, n), generator=generator)
        return self._frames(split, idx, generator), self._labels(split, idx)


class _RecallTask(_ImageTask):
    default_l = 10
    default_k = 5

    def __init__(
        self,
        *,
        prerecall_length: int | None = None,
        recall_length: int | None = None,
        dataset: str = "mnist",
        seed: int = 0,
        data_dir: str | os.PathLike | None = None,
        download: bool = False,
        binarize: str = "dynamic",
    ) -> None:
        l = self.default_l if prerecall_length is None else prerecall_length
        k = self.default_k if recall_length is None else recall_length
        self.prerecall_length = _int_option("prerecall_length", l, self.min_l())
        self.recall_length = _int_option(
            "recall_length", k, 1, self.prerecall_length, "prerecall_length"
        )
        self.length = self.prerecall_length + self.recall_length
        self._load_pools(dataset, data_dir, download, binarize, seed)

    def min_l(self) -> int:
        return 1

    options = {"prerecall_length": 10, "recall_length": 5, "dataset": "mnist", "seed": 0}


# ----------------------------------------------------------------------------------------------
# GTMM tasks


class PerfectRecallTask(_RecallTask):
    """Perfect recall: ``l`` random digits, then the first ``k`` of them again (``T = l + k``).

    Recall step ``j`` (time ``l + j``) repeats pre-recall step ``j``: ``addresses = j``.
    """

    name = "perfect-recall"

    def _sample(self, batch_size, split, generator):
        l, k = self.prerecall_length, self.recall_length
        x, y = self._draw_items(batch_size, l, split, generator)
        return _assemble(x, y, torch.arange(k).expand(batch_size, k))


class SimilarityCuedTask(_RecallTask):
    """Similarity-cued recall: a contiguous span of ``k`` pre-recall items is repeated.

    The span starts at ``s`` drawn uniformly from ``[0, l - k]`` per sequence; recall step ``j``
    repeats pre-recall step ``s + j`` (``addresses = s + j``).
    """

    name = "similarity-cued"

    def _sample(self, batch_size, split, generator):
        l, k = self.prerecall_length, self.recall_length
        x, y = self._draw_items(batch_size, l, split, generator)
        start = torch.randint(l - k + 1, (batch_size, 1), generator=generator)
        return _assemble(x, y, start + torch.arange(k))


class DynamicDependencyTask(_RecallTask):
    """Dynamic dependency (paper: ``l = 20``, ``k = 5``): the label of a digit is a pointer.

    Recall step 0 repeats the pre-recall item at position ``label(item l-1)``; recall step ``j > 0``
    repeats the pre-recall item at position ``label(recall item j-1)``.  Digit labels are
    ``0..9``, so only pre-recall positions 0..9 are addressable (with ``l > 10`` the later items
    only act as pointers at ``l - 1``); ``l >= 10`` is required.  Needs labels.
    """

    name = "dynamic-dependency"
    default_l = 20
    needs_labels = True
    options = {"prerecall_length": 20, "recall_length": 5, "dataset": "mnist", "seed": 0}

    def min_l(self) -> int:
        return 10

    def _sample(self, batch_size, split, generator):
        l, k = self.prerecall_length, self.recall_length
        x, y = self._draw_items(batch_size, l, split, generator)
        b = torch.arange(batch_size)
        addr = torch.empty(batch_size, k, dtype=torch.long)
        pointer = y[:, l - 1]
        for j in range(k):  # loop over recall steps only; vectorised over the batch
            addr[:, j] = pointer
            pointer = y[b, pointer]
        return _assemble(x, y, addr)


class ParityTask(_RecallTask):
    """Parity: after ``l`` digits, ``k`` images of the digit 0 or 1 (cumulative parity).

    Rule: recall step ``j`` (``0 <= j < k``) shows a random image of the digit
    ``(label_0 + ... + label_j) mod 2``, i.e. the parity of the sum of the labels of pre-recall
    items ``0..j``.  The recall images are new drawings (from the same split's pool), so
    ``addresses`` is -1 everywhere; ``labels`` of the recall steps are the parities.  Needs labels.
    """

    name = "parity"
    needs_labels = True

    def _load_pools(self, *args) -> None:
        super()._load_pools(*args)
        self._by_digit = {
            s: [torch.nonzero(p.labels == d).flatten() for d in (0, 1)]
            for s, p in self.pools.items()
        }
        for s, (zeros, ones) in self._by_digit.items():
            if len(zeros) == 0 or len(ones) == 0:
                raise ValueError(f"parity needs images of 0 and 1 in the {s!r} pool")

    def _sample(self, batch_size, split, generator):
        l, k = self.prerecall_length, self.recall_length
        x, y = self._draw_items(batch_size, l, split, generator)
        parity = y[:, :k].cumsum(1) % 2
        zeros, ones = self._by_digit[split]
        i0 = zeros[torch.randint(len(zeros), (batch_size, k), generator=generator)]
        i1 = ones[torch.randint(len(ones), (batch_size, k), generator=generator)]
        idx = torch.where(parity == 1, i1, i0)
        rec = self._frames(split, idx, generator)
        addr = torch.full((batch_size, k), -1, dtype=torch.long)
        return _assemble(x, y, addr, rec_x=rec, rec_labels=parity)


class OneShotTask(_RecallTask):
    """One-shot generalisation on Omniglot.

    Each sequence shows ``l`` drawings of ``l`` *distinct* characters, then ``k`` steps showing a
    *different* drawing (another of the 20 drawers) of the first ``k`` characters.  Train batches
    use the background characters, test batches the evaluation characters (disjoint alphabets).
    ``labels`` = global character id; recall step ``j`` has ``addresses = j`` (the pre-recall step
    holding the same character).  All drawings are binarised independently.
    """

    name = "one-shot"
    dataset_names = ("omniglot",)
    options = {"prerecall_length": 10, "recall_length": 5, "seed": 0}

    def __init__(self, *, seed: int = 0, data_dir=None, download=False, binarize="dynamic", **kw):
        super().__init__(
            dataset="omniglot",
            seed=seed,
            data_dir=data_dir,
            download=download,
            binarize=binarize,
            **kw,
        )

    def _load_pools(self, *args) -> None:
        super()._load_pools(*args)
        self.characters: dict[str, tuple[torch.Tensor, torch.Tensor]] = {
            s: omniglot_by_character(p) for s, p in self.pools.items()
        }
        for s, (drawings, _) in self.characters.items():
            if drawings.shape[0] < self.prerecall_length:
                raise ValueError(
                    f"prerecall_length must be <= {drawings.shape[0]} (characters in the {s!r} "
                    f"pool); got {self.prerecall_length}"
                )

    def _sample(self, batch_size, split, generator):
        l, k = self.prerecall_length, self.recall_length
        drawings, char_ids = self.characters[split]
        n_chars, per = drawings.shape[:2]
        chars = torch.rand(batch_size, n_chars, generator=generator).argsort(1)[:, :l]
        first = torch.randint(per, (batch_size, l), generator=generator)
        shift = torch.randint(1, per, (batch_size, k), generator=generator)
        second = (first[:, :k] + shift) % per
        c_all = torch.cat([chars, chars[:, :k]], 1)
        d_all = torch.cat([first, second], 1)
        x = binarize_frames(drawings[c_all, d_all], self.binarize, generator)
        y = char_ids[c_all]
        addr = torch.arange(k).expand(batch_size, k)
        return _assemble(x[:, :l], y[:, :l], addr, rec_x=x[:, l:], rec_labels=y[:, l:])


# ----------------------------------------------------------------------------------------------
# Memory Forcing benchmarks


class NavigationTask(_ImageTask):
    """Navigation in a ``G x G`` grid (default 4 x 4) of random digits, ``T = 25`` steps.

    Each sequence gets its own map (``G*G`` random digits) and a random walk starting at a uniform
    cell.  At every step the action is drawn uniformly among the actions that keep the agent
    inside the grid (moves that would leave it are *resampled*, never clipped; ``stay`` is always
    allowed).  ``c[:, t]`` is the one-hot action (order :data:`ACTIONS`) taken to arrive at step
    ``t``; step 0 has ``stay``.  Frame ``t`` is the (binarised once per sequence) digit under the
    agent, so revisits show identical frames.  ``recall`` is True on steps that revisit a cell
    seen before and ``addresses`` is the first earlier step at the same cell.
    :meth:`sample_with_map` also returns the walk and the map (for tests and plots).
    """

    name = "navigation"
    context_size = len(ACTIONS)
    options = {"grid_size": 4, "length": 25, "dataset": "mnist", "seed": 0}

    def __init__(
        self,
        *,
        grid_size: int = 4,
        length: int = 25,
        dataset: str = "mnist",
        seed: int = 0,
        data_dir=None,
        download: bool = False,
        binarize: str = "dynamic",
    ) -> None:
        self.grid_size = _int_option("grid_size", grid_size, 2)
        self.length = _int_option("length", length, 1)
        self._load_pools(dataset, data_dir, download, binarize, seed)

    def walk(self, batch_size: int, generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Random walk: ``(positions long [B, T, 2], actions long [B, T])``."""
        g, T = self.grid_size, self.length
        pos = torch.empty(batch_size, T, 2, dtype=torch.long)
        actions = torch.zeros(batch_size, T, dtype=torch.long)
        start = torch.randint(g * g, (batch_size,), generator=generator)
        pos[:, 0, 0], pos[:, 0, 1] = start // g, start % g
        for t in range(1, T):  # sequential in time, vectorised over the batch
            target = pos[:, t - 1, None, :] + _MOVES  # [B, 5, 2]
            valid = ((target >= 0) & (target < g)).all(-1)
            a = torch.multinomial(valid.float(), 1, generator=generator).squeeze(1)
            actions[:, t] = a
            pos[:, t] = pos[:, t - 1] + _MOVES[a]
        return pos, actions

    def sample_with_map(
        self, batch_size: int, split: str = "train", generator: torch.Generator | None = None
    ) -> tuple[SequenceBatch, torch.Tensor, torch.Tensor]:
        """Like :meth:`sample` (same randomness, same batch) but also return the walk and map.

        :returns: ``(batch, positions long [B, T, 2] (row, column), cells long [B, G*G])`` where
            ``cells[b, row * G + column]`` is the pool index (``self.pools[split]``) of the digit
            in that cell.
        """
        self._check_sample_args(batch_size, split, generator)
        return self._sample_with_map(batch_size, split, generator)

    def _sample(self, batch_size, split, generator):
        return self._sample_with_map(batch_size, split, generator)[0]

    def _sample_with_map(self, batch_size, split, generator):
        g, T = self.grid_size, self.length
        cells = torch.randint(
            len(self.pools[split].images), (batch_size, g * g), generator=generator
        )
        cell_x, cell_labels = self._frames(split, cells, generator), self._labels(split, cells)
        pos, actions = self.walk(batch_size, generator)
        cell = pos[..., 0] * g + pos[..., 1]  # [B, T]
        x = _gather_steps(cell_x, cell)
        labels = _gather_steps(cell_labels, cell)
        same = cell[:, :, None] == cell[:, None, :]  # [B, t, s]
        earlier = torch.ones(T, T, dtype=torch.bool).tril(-1)
        seen = same & earlier
        recall = seen.any(-1)
        first = seen.int().argmax(-1)
        addresses = torch.where(recall, first, torch.full_like(first, -1))
        c = torch.nn.functional.one_hot(actions, len(ACTIONS)).float()
        mask = torch.ones(batch_size, T, dtype=torch.bool)
        batch = SequenceBatch(x.contiguous(), c, mask, recall, labels, addresses)
        return batch, pos, cells


class CopyTask(Task):
    """The NTM copy task with an extra delimiter channel.

    Frames are vectors ``[1, 1, W + 1]``: channels ``0..W-1`` hold bits, channel ``W`` is the
    delimiter flag.  Steps ``0..l-1`` hold random bit vectors (Bernoulli(0.5), delimiter 0), step
    ``l`` is the delimiter (bits 0, flag 1), and steps ``l+1 .. l+k`` repeat the first ``k`` inputs
    (default ``k = l``; delimiter 0).  ``T = l + 1 + k``; ``recall`` marks the copy steps and
    ``addresses`` their source steps; ``labels`` are -1.  The data are already binary, so
    ``binarize``/``data_dir``/``download`` are ignored.
    """

    name = "copy"
    options = {"prerecall_length": 10, "recall_length": None, "width": 8}

    def __init__(
        self,
        *,
        prerecall_length: int = 10,
        recall_length: int | None = None,
        width: int = 8,
        data_dir=None,
        download: bool = False,
        binarize: str = "dynamic",
    ) -> None:
        _choice("binarize", binarize, BINARIZE_MODES)
        self.prerecall_length = _int_option("prerecall_length", prerecall_length, 1)
        k = self.prerecall_length if recall_length is None else recall_length
        self.recall_length = _int_option(
            "recall_length", k, 1, self.prerecall_length, "prerecall_length"
        )
        self.width = _int_option("width", width, 1)
        self.frame_shape = (1, 1, self.width + 1)
        self.length = self.prerecall_length + 1 + self.recall_length

    def _sample(self, batch_size, split, generator):
        l, k, w = self.prerecall_length, self.recall_length, self.width
        bits = torch.randint(0, 2, (batch_size, l, w), generator=generator).float()
        x = torch.zeros(batch_size, self.length, w + 1)
        x[:, :l, :w] = bits
        x[:, l, w] = 1.0
        x[:, l + 1 :, :w] = bits[:, :k]
        recall = torch.zeros(batch_size, self.length, dtype=torch.bool)
        recall[:, l + 1 :] = True
        addresses = torch.full((batch_size, self.length), -1, dtype=torch.long)
        addresses[:, l + 1 :] = torch.arange(k)
        labels = torch.full((batch_size, self.length), -1, dtype=torch.long)
        mask = torch.ones(batch_size, self.length, dtype=torch.bool)
        return SequenceBatch(
            x.view(batch_size, self.length, 1, 1, w + 1), None, mask, recall, labels, addresses
        )


class SequentialMNISTTask(_ImageTask):
    """Sequential MNIST: one digit per sequence, one pixel row per step (``T = 28``).

    Frames ``[1, 1, 28]`` (row ``t`` of the binarised digit); no recall phase (``recall`` all
    False, ``addresses`` -1); ``labels`` = the digit's label at every step (-1 without labels).
    """

    name = "sequential-mnist"
    frame_shape = (1, 1, 28)
    length = 28
    options = {"dataset": "mnist", "seed": 0}

    def __init__(
        self,
        *,
        dataset: str = "mnist",
        seed: int = 0,
        data_dir=None,
        download=False,
        binarize: str = "dynamic",
    ) -> None:
        self._load_pools(dataset, data_dir, download, binarize, seed)

    def _sample(self, batch_size, split, generator):
        x, y = self._draw_items(batch_size, 1, split, generator)  # [B, 1, 1, 28, 28]
        x = x[:, 0, 0].reshape(batch_size, 28, 1, 1, 28)
        labels = y.expand(batch_size, 28).clone()
        false = torch.zeros(batch_size, 28, dtype=torch.bool)
        return SequenceBatch(
            x.contiguous(),
            None,
            ~false,
            false,
            labels,
            torch.full((batch_size, 28), -1, dtype=torch.long),
        )


_TASKS: dict[str, type[Task]] = {
    "perfect-recall": PerfectRecallTask,
    "parity": ParityTask,
    "one-shot": OneShotTask,
    "dynamic-dependency": DynamicDependencyTask,
    "similarity-cued": SimilarityCuedTask,
    "navigation": NavigationTask,
    "copy": CopyTask,
    "sequential-mnist": SequentialMNISTTask,
    "rotating-room": RotatingRoomTask,
}
TASK_NAMES: tuple[str, ...] = tuple(_TASKS)


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
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}; expected one of: {', '.join(TASK_NAMES)}")
    cls = _TASKS[name]
    options = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(options) - set(cls.options))
    if unknown:
        raise ValueError(
            f"task {name!r} has no option {unknown[0]!r}; allowed: {', '.join(cls.options)}"
        )
    return cls(data_dir=data_dir, download=download, binarize=binarize, **options)
