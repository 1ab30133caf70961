"""What a training run writes as it goes: ``log.csv`` (one row per logging period) and, when
TensorBoard imports, ``tensorboard/``; both can be rewound to a checkpoint (on resume and on a
rollback) so that no row is lost or duplicated.

The ``loss`` column is the mean, over the steps since the previous row, of the step loss: the
(KL-annealed) negative ELBO **summed over the batch's sequences**, in nats;
``loss_per_sequence`` is the same divided by the batch size (nats per sequence).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pgtm.io import atomic_write

__all__ = ["CsvLog", "TrainLog", "open_tensorboard"]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return repr(v)  # shortest string that round-trips
    return str(v)


class CsvLog:
    """Append-only CSV with a growable header (evaluation metric names are not known upfront).

    ``keep_rows`` (on resume) truncates the file to the rows the checkpoint accounts for, so rows
    written after the checkpoint by an interrupted run are not duplicated.
    """

    BASE = ("step", "loss", "loss_per_sequence", "beta", "seconds")

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
        with atomic_write(self.path, newline="") as f:
            w = csv.writer(f)
            w.writerow(self.header)
            for r in rows:
                w.writerow(r + [""] * (len(self.header) - len(r)))

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
        # visible at once to whoever follows the run (``tail -f``, the report), not only at the
        # next checkpoint, which is all that ``sync`` (and exact resume) needs
        self._f.flush()
        self.rows += 1

    def sync(self) -> int:
        """Flush to disk; returns the number of data rows (recorded in checkpoints)."""
        self._f.flush()
        os.fsync(self._f.fileno())
        return self.rows

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


def open_tensorboard(out_dir: Path, purge_step: int | None) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    # purge_step drops events an interrupted run wrote after the checkpoint.
    return SummaryWriter(str(out_dir / "tensorboard"), purge_step=purge_step)


class TrainLog:
    """Windows of step losses and regulariser metrics, written as rows to ``log.csv`` and
    TensorBoard (either may be absent: ``out_dir=None`` logs nothing).

    :param out_dir: the run folder, or ``None``.
    :param tensorboard: also write TensorBoard events.
    :param keep_rows: rows of an existing ``log.csv`` that belong to the checkpoint resumed from
        (``None``: a fresh log).
    :param start_step: the step resumed from (TensorBoard events after it are purged).
    :param batch_size: sequences per step (for ``loss_per_sequence``).
    """

    def __init__(self, out_dir: Path | None, tensorboard: bool, keep_rows: int | None,
                 start_step: int, batch_size: int) -> None:
        self.out_dir = out_dir
        self.batch_size = batch_size
        self.tensorboard = tensorboard
        self.csv: CsvLog | None = None
        self.tb: Any = None
        self.rewind(keep_rows, start_step)

    def rewind(self, keep_rows: int | None, step: int) -> None:
        """Forget everything after a checkpoint: its ``keep_rows`` rows and ``step``."""
        self.close()
        self.window: list[float] = []
        self.reg_window: dict[str, list[float]] = {}
        if self.out_dir is None:
            return
        self.csv = CsvLog(self.out_dir / "log.csv", keep_rows=keep_rows)
        if self.tensorboard:
            purge = None if keep_rows is None else step + 1
            self.tb = open_tensorboard(self.out_dir, purge_step=purge)

    def add(self, loss: float, reg_metrics: Mapping[str, float] | None) -> None:
        """Record one step's loss and regulariser metrics."""
        self.window.append(loss)
        for k, v in (reg_metrics or {}).items():
            self.reg_window.setdefault(str(k), []).append(float(v))

    def write_row(self, step: int, beta: float, seconds: float,
                  metrics: Mapping[str, float]) -> None:
        """A row of the window means since the previous row (and evaluation ``metrics``)."""
        if not self.window:
            return
        row: dict[str, Any] = {
            "step": step,
            "loss": float(np.mean(self.window)),
            "loss_per_sequence": float(np.mean(self.window)) / self.batch_size,
            "beta": beta,
            "seconds": round(seconds, 3),
        }
        reg = {k: float(np.mean(v)) for k, v in self.reg_window.items()}
        for k, v in reg.items():
            row[k if k not in CsvLog.BASE else f"reg_{k}"] = v
        for k, v in metrics.items():
            row[k if k not in CsvLog.BASE else f"eval_{k}"] = v
        if self.csv is not None:
            self.csv.write(row)
        if self.tb is not None:
            self.tb.add_scalar("train/loss", row["loss"], step)
            self.tb.add_scalar("train/beta", beta, step)
            for k, v in reg.items():
                self.tb.add_scalar(f"train/{k}", v, step)
            for k, v in metrics.items():
                self.tb.add_scalar(f"eval/{k}", v, step)
        self.window = []
        self.reg_window = {}

    def sync(self) -> int:
        """Flush everything; the number of CSV rows (recorded in the checkpoint)."""
        if self.tb is not None:
            self.tb.flush()
        return self.csv.sync() if self.csv is not None else 0

    def close(self) -> None:
        if self.csv is not None:
            self.csv.close()
        if self.tb is not None:
            self.tb.close()
        self.csv = self.tb = None
