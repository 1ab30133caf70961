"""Files written so that a reader never sees a torn one: PID-stamped temporary siblings renamed
over their target, their clean-up after a killed writer, and strict JSON."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "atomic_write", "remove_stale_temp_files", "save_json", "temp_sibling", "write_text_atomically",
]


def temp_sibling(path: str | os.PathLike) -> Path:
    """A fresh hidden temporary name next to ``path`` (same directory, so same filesystem).

    Unlike :func:`tempfile.mkstemp` (mode 0600), a file created under this name with ``open``
    gets the usual umask-derived permissions, which it keeps after :func:`os.replace`.
    """
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, binary: bool = False, **open_options):
    """Open a :func:`temp_sibling` of ``path`` for writing; when the block ends it is flushed,
    fsync-ed and renamed over ``path``, so a reader (or a crash at any moment) sees the old file
    or the new one, never a torn one. If the block raises (a ``KeyboardInterrupt`` too), the
    temporary file is removed and ``path`` is left as it was.

    :param binary: open in ``"xb"`` mode instead of ``"x"``.
    :param open_options: passed to :func:`open` (e.g. ``newline=""`` for CSV).
    """
    tmp = temp_sibling(path)
    try:
        with open(tmp, "xb" if binary else "x", **open_options) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` with :func:`atomic_write`."""
    with atomic_write(path) as f:
        f.write(text)


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the :func:`temp_sibling` files in ``folder`` whose writing process is gone (left
    by a kill during a write). Call it while holding the folder's run lock.

    :returns: the files removed.
    """
    removed = []
    for candidate in Path(folder).glob(".*.tmp"):
        match = _TEMP_SIBLING.fullmatch(candidate.name)
        if match is None or _process_alive(int(match.group(1))):
            continue
        candidate.unlink(missing_ok=True)
        removed.append(candidate)
    return removed


_TEMP_SIBLING = re.compile(r"\..+\.(\d+)\.[0-9a-f]{32}\.tmp")


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True




def _json_ready(value: Any) -> Any:
    """Recursively convert tensors/arrays to lists and non-finite floats to ``None``."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().tolist()
    elif isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


def save_json(results: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write ``results`` as strict JSON, atomically (temporary file + ``os.replace``).

    Tensors / numpy arrays become lists; ``nan`` and ``inf`` become ``null``. Parent
    directories are created.

    :param results: e.g. the dict returned by :func:`evaluate`.
    :param path: destination file.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    payload = json.dumps(_json_ready(results), indent=2, sort_keys=True, allow_nan=False)
    write_text_atomically(path, payload + "\n")
