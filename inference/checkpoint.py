"""Atomic, ``weights_only``-loadable training checkpoints.

A checkpoint is a plain nested ``dict`` of tensors, numbers, strings, lists, tuples and ``None``
so that it loads with ``torch.load(path, weights_only=True)`` (no pickled Python objects; loading
a checkpoint therefore never executes code). Everything needed to continue a run *exactly* is in
it; :func:`pgtm.inference.train.train` builds and consumes the dictionary, this module only knows
how to write it safely, read it back, and (de)serialise the random-number-generator states.

Layout (``FORMAT_VERSION == 2``):

* ``format_version``: int.
* ``step``: int, number of completed optimisation steps.
* ``module``: ``gtm.state_dict()``.
* ``optim``: the ``state_dict()`` of the run's ``ClippedAdam`` over the module's parameters
  (format 1: ``pyro.optim.PyroOptim.get_state()``, per-parameter-name state dicts).
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
* ``lr_scale``, ``rollbacks`` (optional): the learning-rate factor of the rollbacks so far and
  their records (see :class:`~pgtm.inference.train_config.TrainConfig`'s ``on_divergence``).
* ``ranks`` (data-parallel runs only): every rank's ``{"rng", "batch_generator"}``, in rank
  order (the top-level ones are rank 0's); a resume needs as many processes.
"""

from __future__ import annotations

import os
import pickle
import random
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pgtm.io import atomic_write, remove_stale_temp_files, temp_sibling

__all__ = [
    "CHECKPOINT_NAME",
    "CheckpointRing",
    "FORMAT_VERSION",
    "REQUIRED_KEYS",
    "capture_rng_state",
    "check_module_state",
    "load_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
    "temp_sibling",
]

#: File name of the (single, latest) checkpoint inside ``out_dir``.
CHECKPOINT_NAME = "checkpoint.pt"
#: Folder (inside ``out_dir``) of the older checkpoints a :class:`CheckpointRing` keeps.
OLDER_CHECKPOINTS = "checkpoints"
#: Bumped whenever the layout changes incompatibly (2: ``optim`` is one torch optimiser's
#: ``state_dict``; format-1 checkpoints, with Pyro's per-parameter optimisers, still load).
FORMAT_VERSION = 2
#: Versions :func:`load_checkpoint` reads.
READABLE_VERSIONS = (1, 2)
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
    with atomic_write(path, binary=True) as f:
        try:
            torch.save(dict(state), f)
        except RuntimeError as e:  # torch's writer reports a failed write (a full disk) so
            raise OSError(f"checkpoint: writing {path} failed ({str(e).splitlines()[0]}); "
                          "is the disk full? The previous checkpoint is intact") from e
    _fsync_dir(path.parent)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(..., weights_only=True)`` and check its layout.

    :param path: checkpoint file.
    :param map_location: passed to :func:`torch.load`. The default ``"cpu"`` is deliberate: the
        RNG states must be CPU tensors, and ``load_state_dict`` of modules/optimisers moves the
        rest to the parameters' device anyway.
    :returns: the checkpoint dictionary.
    :raises ValueError: one line, if the file is not a checkpoint of a supported format version:
        empty or truncated, holding pickled objects, or with a step that disagrees with its
        loss history.
    """
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"checkpoint: {path} holds Python objects that a weights-only load refuses (it was "
            "not written by pgtm, and loading it otherwise could run code); not loaded"
        ) from e
    except (RuntimeError, EOFError, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(
            f"checkpoint: {path} is not a readable checkpoint (empty, truncated or not written "
            f"by pgtm: {type(e).__name__})"
        ) from e
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint: {path} does not contain a checkpoint dictionary")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise ValueError(f"checkpoint: {path} lacks keys {missing}")
    if state["format_version"] not in READABLE_VERSIONS:
        raise ValueError(
            f"checkpoint: {path} has format_version {state['format_version']!r}, "
            f"expected one of {READABLE_VERSIONS}"
        )
    step, losses = state["step"], state["losses"]
    if not (isinstance(step, int) and torch.is_tensor(losses) and losses.dim() == 1
            and step == losses.numel()):
        raise ValueError(
            f"checkpoint: {path} is inconsistent: step {step!r} must be an integer >= 0 equal to "
            f"the number of recorded losses ({losses.numel() if torch.is_tensor(losses) else '?'})"
        )
    return state


def check_module_state(module: torch.nn.Module, state: Mapping[str, Any], path) -> None:
    """Check that ``state`` (a checkpoint's ``"module"``) fits ``module`` before loading it.

    :raises ValueError: one line naming the first differing tensor and how many differ, e.g.
        when a run folder holds another model's checkpoint.
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    reshaped = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if not (missing or unexpected or reshaped):
        return
    if reshaped:
        k = reshaped[0]
        first = (f"{k} has shape {list(state[k].shape)} there and {list(own[k].shape)} in the "
                 "model built now")
    elif missing:
        first = f"it lacks {missing[0]}"
    else:
        first = f"it has {unexpected[0]}, which the model built now lacks"
    raise ValueError(
        f"checkpoint: {path} holds another model ({first}; {len(reshaped)} tensors differ in "
        f"shape, {len(missing)} missing, {len(unexpected)} unexpected): build the model with "
        "the options it was trained with, or use another output folder"
    )


class CheckpointRing:
    """The newest ``keep`` checkpoints of a run: ``out_dir/checkpoint.pt`` (the newest, the one a
    resume reads) and the ones before it as ``out_dir/checkpoints/step-<N>.pt``.

    Writing a new checkpoint first hard-links (or copies) the current ``checkpoint.pt`` to its
    step's name, then replaces ``checkpoint.pt`` atomically, then deletes the oldest beyond
    ``keep``; a crash at any moment leaves a valid ``checkpoint.pt``.

    :param out_dir: the run folder.
    :param keep: checkpoints to keep, >= 1.
    """

    def __init__(self, out_dir: str | os.PathLike, keep: int) -> None:
        self.path = Path(out_dir) / CHECKPOINT_NAME
        self.older = Path(out_dir) / OLDER_CHECKPOINTS
        self.keep = keep
        if self.older.is_dir():
            remove_stale_temp_files(self.older)

    def older_paths(self) -> list[Path]:
        """The kept older checkpoints, newest first."""
        if not self.older.is_dir():
            return []
        found = [p for p in self.older.glob("step-*.pt") if p.stem[5:].isdigit()]
        return sorted(found, key=lambda p: int(p.stem[5:]), reverse=True)

    def save(self, state: Mapping[str, Any], previous_step: int | None) -> Path:
        """Write ``state`` as the newest checkpoint; ``previous_step`` is the step of the
        current ``checkpoint.pt`` (``None`` when there is none), which becomes an older one."""
        if self.keep > 1 and previous_step is not None and self.path.is_file():
            self.older.mkdir(exist_ok=True)
            _link_or_copy(self.path, self.older / f"step-{previous_step:08d}.pt")
        save_checkpoint(state, self.path)
        for stale in self.older_paths()[max(self.keep - 1, 0):]:
            stale.unlink()
        return self.path

    def discard_newest(self) -> bool:
        """Replace ``checkpoint.pt`` by the newest older checkpoint (atomically); ``False`` when
        there is no older one (``checkpoint.pt`` stays)."""
        older = self.older_paths()
        if not older:
            return False
        os.replace(older[0], self.path)
        _fsync_dir(self.path.parent)
        return True

    def clear(self) -> None:
        """Delete every checkpoint of the run (a fresh start with ``resume=False``)."""
        for path in [self.path, *self.older_paths()]:
            path.unlink(missing_ok=True)


def _link_or_copy(source: Path, target: Path) -> None:
    tmp = temp_sibling(target)
    try:
        try:
            os.link(source, tmp)
        except OSError:  # a filesystem without hard links
            shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


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
