"""What keeps a run folder safe around the training loop: stopping on SIGINT/SIGTERM at the end
of a step (so the loop can checkpoint first), and one writer per run folder.

- :class:`StopOnSignal` replaces the SIGINT and SIGTERM handlers while the loop runs: the first
  signal only records itself (the loop finishes its step, writes a checkpoint and raises
  :class:`TrainingInterrupted`); a second one exits at once with status ``128 + signal``.
  Outside the main thread, where Python cannot install handlers, it does nothing.
- :class:`RunLock` holds an exclusive ``fcntl.flock`` on ``<out_dir>/.lock`` (which records the
  holder's PID): a second process that trains into the same folder is refused with a one-line
  ``ValueError`` naming the holder. The lock is re-entrant within a process, so the experiment
  runner and the loop it calls can both hold it; the kernel drops it when the process dies.
  Taking it removes the temporary files of atomic writes that a killed writer left behind.
"""

from __future__ import annotations

import fcntl
import os
import signal
import threading
from pathlib import Path

from pgtm.io import remove_stale_temp_files

__all__ = ["LOCK_NAME", "RunLock", "StopOnSignal", "TrainingInterrupted"]

#: Lock file inside a run folder.
LOCK_NAME = ".lock"
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(Exception):
    """Raised by the loop after a SIGINT/SIGTERM, once the step is done and checkpointed.

    :ivar step: the last completed step.
    :ivar signal_number: the signal received.
    :ivar checkpoint_path: the checkpoint written at ``step`` (``None`` without ``out_dir``).
    :ivar exit_status: ``128 + signal_number`` (130 for SIGINT, 143 for SIGTERM).
    """

    def __init__(self, step: int, signal_number: int, checkpoint_path: Path | None) -> None:
        self.step = step
        self.signal_number = signal_number
        self.checkpoint_path = checkpoint_path
        self.exit_status = 128 + signal_number
        name = signal.Signals(signal_number).name
        if checkpoint_path is None:
            saved = "no output folder, nothing saved"
        else:
            saved = (f"checkpoint written to {checkpoint_path}; rerun the same command to "
                     "resume")
        super().__init__(f"interrupted by {name} at step {step}; {saved}")


class StopOnSignal:
    """Context manager: :attr:`signal_number` becomes the first SIGINT/SIGTERM received."""

    def __init__(self) -> None:
        self.signal_number: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signal_number, frame) -> None:
        if self.signal_number is not None:
            os._exit(128 + signal_number)  # the second signal: stop now, the user insists
        self.signal_number = signal_number

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


_held: dict[Path, list] = {}  # resolved folder -> [open lock file, depth]


class RunLock:
    """Context manager holding the exclusive lock of run folder ``out_dir`` (created if needed).

    :raises ValueError: if another process holds it.
    """

    def __init__(self, out_dir) -> None:
        self.folder = Path(out_dir).resolve()

    def __enter__(self) -> RunLock:
        if self.folder in _held:
            _held[self.folder][1] += 1
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        handle = open(self.folder / LOCK_NAME, "a+")  # noqa: SIM115 (held until __exit__)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise ValueError(
                f"out_dir {self.folder} is in use by process {holder} (another pgtm train); "
                "wait for it to finish or choose another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        _held[self.folder] = [handle, 1]
        remove_stale_temp_files(self.folder)  # the only writer now: no temp file is live
        return self

    def __exit__(self, *exc) -> None:
        entry = _held[self.folder]
        entry[1] -= 1
        if entry[1] == 0:
            del _held[self.folder]
            entry[0].close()  # closing the file releases the flock
