"""The Memory Forcing benchmarks: navigation in a grid of digits, copy, sequential MNIST."""

from __future__ import annotations

import torch

from pgtm.checks import integer, one_of
from pgtm.data import BINARIZE_MODES
from pgtm.tasks.base import ImageTask, SequenceBatch, Task, gather_steps

#: Navigation actions, in one-hot order: index 0 = stay, 1 = up (row - 1), 2 = down (row + 1),
#: 3 = left (column - 1), 4 = right (column + 1).
ACTIONS = ("stay", "up", "down", "left", "right")
_MOVES = torch.tensor([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]])


class NavigationTask(ImageTask):
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
        self.grid_size = integer("grid_size", grid_size, 2)
        self.length = integer("length", length, 1)
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
        x = gather_steps(cell_x, cell)
        labels = gather_steps(cell_labels, cell)
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
        one_of("binarize", binarize, BINARIZE_MODES)
        self.prerecall_length = integer("prerecall_length", prerecall_length, 1)
        k = self.prerecall_length if recall_length is None else recall_length
        self.recall_length = integer("recall_length", k, 1, self.prerecall_length,
                                     high_name="prerecall_length")
        self.width = integer("width", width, 1)
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


class SequentialMNISTTask(ImageTask):
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

