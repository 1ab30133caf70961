"""The GTMM recall tasks (Gemici et al., 2017, Appendix D, Algorithms 1-4): perfect,
similarity-cued and dynamic-dependency recall, parity and one-shot recall; and two variants that
are not the paper's, cumulative parity and one-shot generalisation."""

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
    """Similarity-cued recall (Alg. 4; paper: ``l = 20``, ``k = 5``): a contiguous span of ``k``
    pre-recall items is repeated.

    The paper draws the span's first item ``r ~ U[1, l - k]`` in its 1-based indexing, i.e. the
    span is items ``r .. r + k - 1`` and never includes the last pre-recall item (``r + k - 1 <=
    l - 1``).  Here, 0-based, the start ``s = r - 1`` is drawn uniformly from ``[0, l - k - 1]``
    (``l - k`` values) per sequence; recall step ``j`` repeats pre-recall step ``s + j``
    (``addresses = s + j``).  Hence ``k <= l - 1``.
    """

    name = "similarity-cued"
    default_l = 20
    options = {"prerecall_length": 20, "recall_length": 5, "dataset": "mnist", "seed": 0}

    def min_l(self) -> int:
        return 2

    def max_recall_length(self) -> tuple[int, str]:
        return self.prerecall_length - 1, "prerecall_length - 1"

    def _sample(self, batch_size, split, generator):
        l, k = self.prerecall_length, self.recall_length
        x, y = self._draw_items(batch_size, l, split, generator)
        start = torch.randint(l - k, (batch_size, 1), generator=generator)
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


def parity_digits(labels: torch.Tensor) -> torch.Tensor:
    """The paper's parity rule (Alg. 2): the digit of recall step ``j`` is the parity of the
    label of pre-recall step ``j`` alone, 1 for even and 0 for odd.

    Fig. 5's example: labels 7, 8, 9, 0, 8 give the recall digits 0, 1, 0, 1, 1 (``k`` bits to
    store).

    :param labels: long ``[..., k]``, labels of the first ``k`` pre-recall digits.
    :returns: long ``[..., k]``, the recall digits (0 or 1).
    """
    return (labels % 2 == 0).long()


def cumulative_parity_digits(labels: torch.Tensor) -> torch.Tensor:
    """The cumulative variant: the digit of recall step ``j`` is ``(label_0 + ... + label_j) mod
    2``, the parity of the running label sum, 1 for odd (e.g. 7, 8, 9, 0, 8 -> 1, 1, 0, 0, 0).

    :param labels: long ``[..., k]``, labels of the first ``k`` pre-recall digits.
    :returns: long ``[..., k]``, the recall digits (0 or 1).
    """
    return labels.cumsum(-1) % 2


class ParityTask(RecallTask):
    """Parity (Alg. 2; paper: ``k = 5`` with ``l = 10, 20, 50``): after ``l`` digits, ``k`` images
    of the digit 0 or 1.

    Rule (:func:`parity_digits`): recall step ``j`` (``0 <= j < k``) shows a random image of the
    digit 1 if the label of pre-recall step ``j`` is even, of 0 if it is odd.  The recall images
    are new drawings (from the same split's pool), so ``addresses`` is -1 everywhere; ``labels``
    of the recall steps are the recall digits.  Needs labels.
    """

    name = "parity"
    needs_labels = True
    #: pre-recall labels ``[B, k]`` -> recall digits ``[B, k]``
    recall_digits = staticmethod(parity_digits)

    def _load_pools(self, *args) -> None:
        super()._load_pools(*args)
        self._by_digit = {
            s: [torch.nonzero(p.labels == d).flatten() for d in (0, 1)]
            for s, p in self.pools.items()
        }
        for s, (zeros, ones) in self._by_digit.items():
            if len(zeros) == 0 or len(ones) == 0:
                raise ValueError(f"{self.name} needs images of 0 and 1 in the {s!r} pool")

    def _sample(self, batch_size, split, generator):
        l, k = self.prerecall_length, self.recall_length
        x, y = self._draw_items(batch_size, l, split, generator)
        digits = self.recall_digits(y[:, :k])
        zeros, ones = self._by_digit[split]
        i0 = zeros[torch.randint(len(zeros), (batch_size, k), generator=generator)]
        i1 = ones[torch.randint(len(ones), (batch_size, k), generator=generator)]
        idx = torch.where(digits == 1, i1, i0)
        rec = self._frames(split, idx, generator)
        addr = torch.full((batch_size, k), -1, dtype=torch.long)
        return assemble_recall_batch(x, y, addr, rec_x=rec, rec_labels=digits)


class CumulativeParityTask(ParityTask):
    """Cumulative parity (not a task of the paper): like :class:`ParityTask`, but recall step
    ``j`` shows the digit :func:`cumulative_parity_digits` gives, the parity of the sum of the
    labels of pre-recall steps ``0..j`` (1 = odd), so every recall digit depends on all earlier
    ones.  Needs labels.
    """

    name = "cumulative-parity"
    recall_digits = staticmethod(cumulative_parity_digits)


class _OmniglotRecallTask(RecallTask):
    """``l`` drawings of ``l`` *distinct* Omniglot characters, then ``k`` recall steps.

    Train batches use the background characters, test batches the evaluation characters
    (disjoint alphabets); ``labels`` = global character id.
    """

    dataset_names = ("omniglot",)

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

    def _draw_characters(self, batch_size, split, generator):
        """``l`` distinct characters per sequence and a random drawing (drawer) of each:
        ``(characters long [B, l], drawers long [B, l])``, indices into ``self.characters``."""
        n_chars, per = self.characters[split][0].shape[:2]
        chars = torch.rand(batch_size, n_chars, generator=generator).argsort(1)
        drawers = torch.randint(per, (batch_size, self.prerecall_length), generator=generator)
        return chars[:, : self.prerecall_length], drawers


class OneShotTask(_OmniglotRecallTask):
    """One-shot recall (Alg. 1, as perfect recall; paper: ``l = 20``, ``k = 5``) on Omniglot.

    Each sequence shows ``l`` drawings of ``l`` distinct characters (the held-out evaluation
    characters at test), then the first ``k`` of them again: recall step ``j`` repeats pre-recall
    step ``j`` (``addresses = j``), the *same drawing* and the same binarised frame, pixel for
    pixel.  Train batches use the background characters.
    """

    name = "one-shot"
    default_l = 20
    options = {"prerecall_length": 20, "recall_length": 5, "seed": 0}

    def _sample(self, batch_size, split, generator):
        k = self.recall_length
        drawings, char_ids = self.characters[split]
        chars, drawers = self._draw_characters(batch_size, split, generator)
        x = binarize_frames(drawings[chars, drawers], self.binarize, generator)
        return assemble_recall_batch(x, char_ids[chars], torch.arange(k).expand(batch_size, k))


class OneShotGeneralisationTask(_OmniglotRecallTask):
    """One-shot generalisation on Omniglot (not a task of the paper; default ``l = 10``,
    ``k = 5``).

    Each sequence shows ``l`` drawings of ``l`` distinct characters, then ``k`` steps showing a
    *different* drawing (another of the 20 drawers) of the first ``k`` characters, so memory can
    say which character comes but not its strokes.  Recall step ``j`` has ``addresses = j`` (the
    pre-recall step holding the same character).  All drawings are binarised independently.
    """

    name = "one-shot-generalisation"
    options = {"prerecall_length": 10, "recall_length": 5, "seed": 0}

    def _sample(self, batch_size, split, generator):
        l, k = self.prerecall_length, self.recall_length
        drawings, char_ids = self.characters[split]
        per = drawings.shape[1]
        chars, first = self._draw_characters(batch_size, split, generator)
        shift = torch.randint(1, per, (batch_size, k), generator=generator)
        second = (first[:, :k] + shift) % per
        c_all = torch.cat([chars, chars[:, :k]], 1)
        d_all = torch.cat([first, second], 1)
        x = binarize_frames(drawings[c_all, d_all], self.binarize, generator)
        y = char_ids[c_all]
        addr = torch.arange(k).expand(batch_size, k)
        return assemble_recall_batch(x[:, :l], y[:, :l], addr, rec_x=x[:, l:], rec_labels=y[:, l:])
