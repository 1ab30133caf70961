"""The GTMM recall tasks (Gemici et al., 2017, Appendix D): perfect, similarity-cued and
dynamic-dependency recall, parity and one-shot recall."""

from __future__ import annotations

import torch

from pgtm.data import binarize_frames, omniglot_by_character
from pgtm.tasks.base import RecallTask, assemble_recall_batch


class PerfectRecallTask(RecallTask):
    """Perfect recall: ``l`` random digits, then the first ``k`` of them again (``T = l + k``).

    Recall step ``j`` (time ``l + j``) repeats pre-recall step ``j``: ``addresses = j``.
    """

    name = "perfect-recall"

    def _sample(self, batch_size, split, generator):
        l, k = self.prerecall_length, self.recall_length
        x, y = self._draw_items(batch_size, l, split, generator)
        return assemble_recall_batch(x, y, torch.arange(k).expand(batch_size, k))


class SimilarityCuedTask(RecallTask):
    """Similarity-cued recall: a contiguous span of ``k`` pre-recall items is repeated.

    The span starts at ``s`` drawn uniformly from ``[0, l - k]`` per sequence; recall step ``j``
    repeats pre-recall step ``s + j`` (``addresses = s + j``).
    """

    name = "similarity-cued"

    def _sample(self, batch_size, split, generator):
        l, k = self.prerecall_length, self.recall_length
        x, y = self._draw_items(batch_size, l, split, generator)
        start = torch.randint(l - k + 1, (batch_size, 1), generator=generator)
        return assemble_recall_batch(x, y, start + torch.arange(k))


class DynamicDependencyTask(RecallTask):
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
        return assemble_recall_batch(x, y, addr)


class ParityTask(RecallTask):
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
        return assemble_recall_batch(x, y, addr, rec_x=rec, rec_labels=parity)


class OneShotTask(RecallTask):
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
        return assemble_recall_batch(x[:, :l], y[:, :l], addr, rec_x=x[:, l:], rec_labels=y[:, l:])

