"""Atomic, ``weights_only``-loadable training checkpoints.

A checkpoint is a plain nested ``dict`` of tensors, numbers, strings, lists, tuples and ``None``
so that it loads with ``torch.load(path, weights_only=True)`` (no pickled Python objects; loading
a checkpoint therefore never executes code). Everything needed to continue a run *exactly* is in
it; :func:`pgtm.inference.train.train` builds and consumes the dictionary, this module only knows
how to write it safely, read it back, and (de)serialise the random-number-generator states.

Layout (``FORMAT_VERSION == 1``):

* ``format_version``: int.
* ``step``: int, number of completed optimisation steps.
* ``module``: ``gtm.state_dict()``.
* ``optim``: ``pyro.optim.PyroOptim.get_state()`` (per-parameter-name ClippedAdam state dicts).
* ``rng``: see :func:`capture_rng_state`.
* ``batch_generator``: ``torch.Generator.get_state()`` of the batch generator (uint8 tensor).
* ``config``: the :class:`~pgtm.inference.train.TrainConfig` as a dict of primitives.
* ``csv_rows``: number of data rows of the CSV log that belong to steps ``<= step``.
* ``losses``: float64 tensor ``[step]``, the loss of every step so far.
* ``seconds``: float, cumulative training wall time up to ``step``.
* ``regulariser`` (optional; absent in older checkpoints): ``None`` or the
  :class:`~pgtm.inference.train.Regulariser`'s ``state_dict()`` (e.g. Memory Forcing's
  discriminator weights, their optimiser state and counters).
* ``threads`` (optional; absent in older checkpoints): ``torch.get_num_threads()`` of the writer
  (results depend on it in the last bits, so a resume with another count warns).
"""

from __future__ import annotations

import os
import random
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pgtm.io import temp_sibling

__all__ = [
    "CHECKPOINT_NAME",
    "FORMAT_VERSION",
    "REQUIRED_KEYS",
    "capture_rng_state",
    "load_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
    "temp_sibling",
]

#: File name of the (single, latest) checkpoint inside ``out_dir``.
CHECKPOINT_NAME = "checkpoint.pt"
#: Bumped whenever the layout changes incompatibly.
FORMAT_VERSION = 1
#: Keys every checkpoint must have.
REQUIRED_KEYS = (
    "format_version",
    "step",
    "module",
    "optim",
    "rng",
    "batch_generator",
    "config",
    "csv_rows",
    "losses",
    "seconds",
)


def _fsync_dir(directory: Path) -> None:
    """Persist a rename by fsync-ing its directory (POSIX); a no-op where unsupported."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        # Some platforms/filesystems (Windows, some network mounts) refuse directory fsync.
        pass
    finally:
        os.close(fd)


def save_checkpoint(state: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` atomically.

    The data go to a temporary file in the *same* directory (so that :func:`os.replace` is a
    rename within one filesystem, hence atomic), which is flushed and fsync-ed before it replaces
    ``path``. A crash at any moment leaves either the old or the new checkpoint, never a torn one.

    :param state: checkpoint dictionary (see the module docstring).
    :param path: destination file; its parent directory is created if needed.
    :returns: ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_name = temp_sibling(path)
    try:
        with open(tmp_name, "xb") as f:
            torch.save(dict(state), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        # Never leave half-written temporaries behind (also on KeyboardInterrupt).
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(..., weights_only=True)`` and check its layout.

    :param path: checkpoint file.
    :param map_location: passed to :func:`torch.load`. The default ``"cpu"`` is deliberate: the
        RNG states must be CPU tensors, and ``load_state_dict`` of modules/optimisers moves the
        rest to the parameters' device anyway.
    :returns: the checkpoint dictionary.
    :raises ValueError: if the file is not a checkpoint of a supported format version.
    """
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"path: {path} does not contain a checkpoint dictionary")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise ValueError(f"path: checkpoint {path} lacks keys {missing}")
    if state["format_version"] != FORMAT_VERSION:
        raise ValueError(
            f"path: checkpoint {path} has format_version {state['format_version']!r}, "
            f"expected {FORMAT_VERSION}"
        )
    return state


# ----------------------------------------------------------------------------------------------
# RNG states. Python's and NumPy's states are tuples holding big ints / arrays, which
# weights_only loading rejects, so they are encoded as int64 tensors. The *legacy* global NumPy
# state is what user code calling np.random.* draws from, hence the NPY002 exemptions.


def _encode_python_random(state: tuple) -> dict[str, Any]:
    version, internal, gauss_next = state
    # MT19937 words are < 2**32, so int64 holds them exactly.
    return {
        "version": int(version),
        "internal": torch.tensor(internal, dtype=torch.int64),
        "gauss_next": None if gauss_next is None else float(gauss_next),
    }


def _decode_python_random(enc: Mapping[str, Any]) -> tuple:
    internal = tuple(int(v) for v in enc["internal"].tolist())
    return (int(enc["version"]), internal, enc["gauss_next"])


def _encode_numpy_random(state: tuple) -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = state
    return {
        "name": str(name),
        "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }


def _decode_numpy_random(enc: Mapping[str, Any]) -> tuple:
    keys = enc["keys"].numpy().astype(np.uint32)
    return (enc["name"], keys, enc["pos"], enc["has_gauss"], enc["cached_gaussian"])


def capture_rng_state(device: torch.device | str | None = None) -> dict[str, Any]:
    """Snapshot every global random-number generator a training step may draw from.

    Pyro samples from torch's global generator; numpy and python ``random`` are included
    because user code (tasks, networks) may use them and :func:`pyro.set_rng_seed` seeds them.

    :param device: the training device; CUDA generator states are captured only when it is a
        CUDA device (CUDA may be absent or uninitialised otherwise).
    :returns: ``{"torch": uint8 tensor, "cuda": list of uint8 tensors or None,
        "python": dict, "numpy": dict}``.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    cuda = None
    if device.type == "cuda":
        cuda = [s.clone() for s in torch.cuda.get_rng_state_all()]
    return {
        "torch": torch.get_rng_state().clone(),
        "cuda": cuda,
        "python": _encode_python_random(random.getstate()),
        "numpy": _encode_numpy_random(np.random.get_state()),  # noqa: NPY002
    }


def restore_rng_state(state: Mapping[str, Any], device: torch.device | str | None = None) -> None:
    """Inverse of :func:`capture_rng_state`.

    :param state: as returned by :func:`capture_rng_state` (possibly after a save/load cycle).
    :param device: the training device; CUDA states are restored only for a CUDA device.
    A CUDA run continuing a checkpoint written on CPU keeps its CUDA generators as they are
    (with a warning): such a run cannot be an exact continuation anyway.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    torch.set_rng_state(state["torch"].to("cpu", torch.uint8))
    if device.type == "cuda":
        if state.get("cuda") is None:
            warnings.warn(
                "checkpoint has no CUDA RNG state (it was written by a CPU run); the CUDA "
                "generators are left as they are, so this is not an exact continuation",
                stacklevel=2,
            )
        else:
            saved = [s.to("cpu", torch.uint8) for s in state["cuda"]]
            for i in range(min(len(saved), torch.cuda.device_count())):
                torch.cuda.set_rng_state(saved[i], i)
    random.setstate(_decode_python_random(state["python"]))
    np.random.set_state(_decode_numpy_random(state["numpy"]))  # noqa: NPY002
