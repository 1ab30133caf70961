"""What every task shares: :class:`SequenceBatch`, the :class:`Task` interface, the image pools
and the batch assembly (see :mod:`pgtm.tasks` for the conventions)."""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import torch

from pgtm.checks import integer, one_of
from pgtm.data import BINARIZE_MODES, ImageSet, binarize_frames, load_images

SPLITS = ("train", "test")
MNIST_DATASETS = ("mnist", "binarized-mnist")


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
# batch assembly


def gather_steps(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x [B, L, ...]`` gathered along dim 1 by ``index [B, K]`` -> ``[B, K, ...]``."""
    b = torch.arange(x.shape[0]).unsqueeze(1)
    return x[b, index]


def assemble_recall_batch(
    pre_x: torch.Tensor,
    pre_labels: torch.Tensor,
    addresses: torch.Tensor,
    rec_x: torch.Tensor | None = None,
    rec_labels: torch.Tensor | None = None,
) -> SequenceBatch:
    """Build a pre-recall + recall batch; recall frames default to the addressed pre-recall frames.

    :param pre_x: ``[B, l, *frame]``; :param pre_labels: ``[B, l]``;
    :param addresses: ``[B, k]`` addressed pre-recall steps (-1 where a recall step repeats none).
    :param rec_x: ``[B, k, *frame]`` recall frames that are new drawings (with ``rec_labels``
        ``[B, k]``); ``None``: the addressed pre-recall frames and labels.
    """
    bsz, l = pre_labels.shape
    k = addresses.shape[1]
    if rec_x is None:
        rec_x = gather_steps(pre_x, addresses)
        rec_labels = gather_steps(pre_labels, addresses)
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
    #: options accepted by :func:`~pgtm.tasks.make_task` for this task, with defaults.
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
        integer("batch_size", batch_size, 1)
        one_of("split", split, SPLITS)
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


class ImageTask(Task):
    """A task drawing images from a train and a test pool (:class:`~pgtm.data.ImageSet`)."""

    dataset_names: tuple[str, ...] = MNIST_DATASETS
    needs_labels = False

    def _load_pools(self, dataset: str, data_dir, download: bool, binarize: str, seed: int) -> None:
        self.dataset = one_of("dataset", dataset, self.dataset_names)
        self.binarize = one_of("binarize", binarize, BINARIZE_MODES)
        self.seed = integer("seed", seed, 0)
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


class RecallTask(ImageTask):
    """A GTMM recall task: ``l`` pre-recall items, then ``k`` recall steps (``T = l + k``)."""

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
        self.prerecall_length = integer("prerecall_length", l, self.min_l())
        most, most_name = self.max_recall_length()
        self.recall_length = integer("recall_length", k, 1, most, high_name=most_name)
        self.length = self.prerecall_length + self.recall_length
        self._load_pools(dataset, data_dir, download, binarize, seed)

    def min_l(self) -> int:
        """The smallest ``l`` the task's rule allows."""
        return 1

    def max_recall_length(self) -> tuple[int, str]:
        """The largest ``k`` the rule allows, and how error messages name it."""
        return self.prerecall_length, "prerecall_length"

    options = {"prerecall_length": 10, "recall_length": 5, "dataset": "mnist", "seed": 0}
