"""Image data sets (MNIST, Larochelle's binarised MNIST, Omniglot) behind one interface.

Everything goes through :func:`load_images`, which returns an :class:`ImageSet` of float32 images
``[N, 1, 28, 28]`` in ``[0, 1]`` (ink = 1).  Where the files come from, in order:

1. the folder given as ``data_dir`` (``--data-dir`` on the command line), else the folder named by
   the environment variable ``PGTM_DATA_DIR``; inside it each data set is accepted in its usual
   sub-folder *or* with the folder being the data set's folder itself:

   - ``mnist``: ``<dir>/MNIST/raw/``, ``<dir>/raw/`` or ``<dir>/`` holding the four idx files
     (``train-images-idx3-ubyte`` ... , optionally ``.gz``) -- the torchvision layout;
   - ``binarized-mnist``: ``<dir>/binarized_mnist/`` or ``<dir>/`` holding
     ``binarized_mnist_larochelle.npz`` (keys ``train``/``valid``/``test``, ``[n, 784]`` 0/1) or the
     original ``binarized_mnist_{train,valid,test}.amat`` files;
   - ``omniglot``: ``<dir>/omniglot/`` or ``<dir>/`` holding ``omniglot_105_uint8.npz`` (keys
     ``background``/``evaluation`` of shape ``[characters, 20, 105, 105]``, 1 = background), or
     torchvision's download layout ``<dir>/omniglot-py/images_{background,evaluation}/``;

2. a download, only if ``download=True`` (torchvision, into that folder, or into
   ``$XDG_CACHE_HOME/pgtm`` / ``~/.cache/pgtm`` when no folder is given); binarised MNIST cannot be
   downloaded and must be provided;
3. for ``mnist`` only: the small subset bundled with the package (5,000 training and 1,000 test
   digits), with a warning saying so.

If nothing is found a single :class:`FileNotFoundError` names every place looked at and how to fix
it.  Decoded arrays are cached in memory (:func:`functools.lru_cache`), so repeated loads only pay
for the float conversion.

Binarisation (``binarize``):

- ``"none"``: grey levels in ``[0, 1]``;
- ``"fixed"``: one Bernoulli sample per image, drawn once at load time from ``seed``;
- ``"dynamic"``: :func:`load_images` returns the grey levels (the Bernoulli probabilities); a fresh
  sample is drawn at batch time with the caller's generator via :func:`binarize_frames`
  (this is what :mod:`pgtm.tasks` does).

Labels: MNIST digit labels; Omniglot *global character ids* (background characters ``0..963``,
evaluation characters ``964..1622``), with the images ordered character by character (all
drawings of a character are consecutive), so :func:`omniglot_by_character` can regroup them.
Binarised MNIST has labels only where the bundled file ``_data/binarized_mnist_labels.npz``
(recovered and verified pixel by pixel against MNIST by
``examples/data/make_binarized_mnist_labels.py``) matches the loaded arrays by checksum;
otherwise ``labels`` is ``None``.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .checks import one_of
from .data_files import (
    BIN_NPZ,
    BINARIZED_SPLITS,
    ENV_VAR,
    IMAGE_SIZE,
    PKG_DATA,
    cached_binarized,
    cached_mnist,
    cached_omniglot,
    cached_subset,
    data_root,
    download_root,
    downscale_images,
    find_binarized_mnist_file,
    find_mnist_dir,
    find_omniglot,
    mnist_dirs,
    not_found,
    to_float,
)

__all__ = [
    "BINARIZE_MODES",
    "DATASET_NAMES",
    "ENV_VAR",
    "SPLITS",
    "ImageSet",
    "binarize_frames",
    "bundled_subset_path",
    "downscale_images",
    "load_images",
    "omniglot_by_character",
]

log = logging.getLogger(__name__)

DATASET_NAMES = ("mnist", "binarized-mnist", "omniglot")
SPLITS = {
    "mnist": ("train", "test"),
    "binarized-mnist": BINARIZED_SPLITS,
    "omniglot": ("train", "test"),
}
BINARIZE_MODES = ("none", "fixed", "dynamic")

_SUBSET_FILE = "mnist_subset.npz"


class ImageSet(NamedTuple):
    """A set of images.

    :ivar images: float32 ``[N, 1, 28, 28]`` in ``[0, 1]``, ink = 1.
    :ivar labels: long ``[N]`` (digit label or global Omniglot character id) or ``None``.
    :ivar name: data set name (one of :data:`DATASET_NAMES`).
    :ivar source: human-readable description of where the images came from.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    name: str
    source: str


# ----------------------------------------------------------------------------------------------
# argument checks


def _check_images(x: torch.Tensor, argument: str = "x") -> None:
    """Images must be a float tensor ``[..., C, H, W]`` with values in ``[0, 1]``."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{argument} must be a torch.Tensor of shape [..., C, H, W]")
    if x.dim() < 3:
        raise ValueError(
            f"{argument} must have shape [..., C, H, W] (at least 3 dims); got {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise ValueError(f"{argument} must be a floating-point tensor in [0, 1]; got {x.dtype}")


# ----------------------------------------------------------------------------------------------
# public helpers


def binarize_frames(
    x: torch.Tensor, mode: str, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Binarise frames at batch time.

    :param x: float frames ``[..., C, H, W]`` with values in ``[0, 1]`` (Bernoulli means).
    :param mode: ``"dynamic"`` draws a fresh Bernoulli sample using ``generator`` (which must live
        on ``x``'s device; ``None`` uses torch's default generator); ``"fixed"`` and ``"none"``
        return ``x`` unchanged (fixed binarisation already happened at load time).
    :param generator: the random source for ``"dynamic"``.
    :returns: tensor of the same shape and dtype as ``x``.
    """
    one_of("binarize", mode, BINARIZE_MODES)
    _check_images(x)
    if mode != "dynamic":
        return x
    if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise ValueError("x must hold values in [0, 1] for dynamic binarisation")
    return torch.bernoulli(x, generator=generator)


def omniglot_by_character(images: ImageSet | torch.Tensor, labels: torch.Tensor | None = None):
    """Regroup Omniglot drawings by character.

    :param images: an Omniglot :class:`ImageSet`, or images ``[N, 1, 28, 28]`` (then ``labels``).
    :param labels: long ``[N]`` character ids, ordered character by character.
    :returns: ``(drawings [C, S, 1, 28, 28], char_ids [C])`` with ``S`` drawings per character.
    """
    if isinstance(images, ImageSet):
        images, labels = images.images, images.labels
    if labels is None:
        raise ValueError("labels (character ids) are required to group Omniglot drawings")
    if images.dim() != 4 or tuple(images.shape[1:]) != (1, IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"images must have shape [N, 1, 28, 28]; got {tuple(images.shape)}")
    if labels.shape != images.shape[:1]:
        raise ValueError(f"labels must have shape [N={images.shape[0]}]; got {tuple(labels.shape)}")
    change = torch.ones(len(labels), dtype=torch.bool)
    change[1:] = labels[1:] != labels[:-1]
    starts = torch.nonzero(change).flatten()
    n_chars = len(starts)
    if n_chars == 0 or len(labels) % n_chars:
        raise ValueError("every character must have the same number of consecutive drawings")
    per = len(labels) // n_chars
    grouped = labels.view(n_chars, per)
    if not bool((grouped == grouped[:, :1]).all()):
        raise ValueError("drawings must be ordered character by character (equal counts)")
    return images.view(n_chars, per, *images.shape[1:]), grouped[:, 0].clone()


def bundled_subset_path() -> Path:
    """Path of the MNIST subset shipped in the package (``pgtm/_data/mnist_subset.npz``)."""
    return PKG_DATA / _SUBSET_FILE


def load_images(
    name: str,
    split: str,
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    binarize: str = "none",
    seed: int = 0,
) -> ImageSet:
    """Load one split of an image data set.

    :param name: ``"mnist"``, ``"binarized-mnist"`` or ``"omniglot"``.
    :param split: ``"train"``/``"test"`` (and ``"valid"`` for ``binarized-mnist``); for Omniglot
        ``"train"`` = background alphabets, ``"test"`` = evaluation alphabets.
    :param data_dir: folder holding the data (see the module docstring for the accepted layouts);
        default: ``$PGTM_DATA_DIR``.
    :param download: download through torchvision if the files are not found (MNIST, Omniglot).
    :param binarize: ``"none"``, ``"fixed"`` (Bernoulli sample seeded by ``seed``, drawn here) or
        ``"dynamic"`` (grey levels returned; binarise per batch with :func:`binarize_frames`).
    :param seed: seed of the fixed binarisation.
    :returns: :class:`ImageSet` with ``images`` float32 ``[N, 1, 28, 28]`` in ``[0, 1]``.
    :raises ValueError: unknown name, split or binarisation mode.
    :raises FileNotFoundError: no data found (the message lists every place looked at).
    """
    one_of("name", name, DATASET_NAMES)
    one_of("split", split, SPLITS[name])
    one_of("binarize", binarize, BINARIZE_MODES)
    if not isinstance(seed, int):
        raise ValueError(f"seed must be an int; got {seed!r}")
    root, root_desc = data_root(data_dir)
    looked: list[str] = []
    images: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    source = ""

    def from_root(r: Path, how: str) -> bool:
        nonlocal images, labels, source
        if name == "mnist":
            if find_mnist_dir(r, split) is None:
                looked.extend(str(d) for d in mnist_dirs(r))
                return False
            arr, lab, where = cached_mnist(str(r.resolve()), split)
            images, labels = to_float(arr, 255.0), torch.from_numpy(lab.astype(np.int64))
        elif name == "binarized-mnist":
            f = find_binarized_mnist_file(r)
            if f is None:
                looked.extend(str(d) for d in (r / "binarized_mnist", r))
                return False
            arr, lab = cached_binarized(str(f.resolve()), split)
            images = to_float(arr, 1.0)
            labels = None if lab is None else torch.from_numpy(lab.astype(np.int64))
            where = str(f)
        else:
            f = find_omniglot(r, split)
            if f is None:
                looked.extend(str(d) for d in (r / "omniglot", r, r / "omniglot-py"))
                return False
            arr, lab = cached_omniglot(str(f.resolve()), split)
            images, labels = to_float(arr, 255.0), torch.from_numpy(lab)
            where = str(f)
        source = f"{how}:{where}"
        return True

    found = root is not None and from_root(root, "files")
    if not found and download:
        if name == "binarized-mnist":
            raise FileNotFoundError(
                f"binarized-mnist cannot be downloaded; provide {BIN_NPZ} (or the "
                f"binarized_mnist_*.amat files) via --data-dir DIR or {ENV_VAR} ({root_desc})"
            )
        target = download_root(root)
        try:
            download(name, split, target)
        except Exception as e:  # network errors, corrupt archives, ...
            reason = " ".join(str(e).split())
            raise FileNotFoundError(
                f"download of {name} into {target} failed ({reason}); fix: provide the files via "
                f"--data-dir DIR or {ENV_VAR}"
            ) from e
        found = from_root(target, "download")
    if not found and name == "mnist" and root is None:
        subset = bundled_subset_path()
        if subset.is_file():
            arr, lab = cached_subset(str(subset), split)
            images, labels = to_float(arr, 255.0), torch.from_numpy(lab.astype(np.int64))
            source = f"bundled:{subset} ({len(arr)} {split} digits)"
            found = True
            msg = (
                f"full MNIST not found ({root_desc}); using the bundled subset of {len(arr)} "
                f"{split} digits. Pass --data-dir/set {ENV_VAR} (or --download) for the full set."
            )
            warnings.warn(msg, stacklevel=2)
        else:
            looked.append(str(subset))
    if not found or images is None:
        raise not_found(name, split, looked, root_desc)
    log.info("loaded %s %s (%d images) from %s", name, split, len(images), source)
    if binarize == "fixed":
        g = torch.Generator().manual_seed(seed)
        images = torch.bernoulli(images, generator=g)
    return ImageSet(images=images, labels=labels, name=name, source=source)
