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
(recovered and verified pixel by pixel against MNIST by ``examples/make_binarized_mnist_labels.py``)
matches the loaded arrays by checksum; otherwise ``labels`` is ``None``.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

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

ENV_VAR = "PGTM_DATA_DIR"
DATASET_NAMES = ("mnist", "binarized-mnist", "omniglot")
SPLITS = {
    "mnist": ("train", "test"),
    "binarized-mnist": ("train", "valid", "test"),
    "omniglot": ("train", "test"),
}
BINARIZE_MODES = ("none", "fixed", "dynamic")
IMAGE_SIZE = 28

_PKG_DATA = Path(__file__).resolve().parent / "_data"
_SUBSET_FILE = "mnist_subset.npz"
_BIN_LABELS_FILE = "binarized_mnist_labels.npz"
_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_BIN_NPZ = "binarized_mnist_larochelle.npz"
_OMNI_NPZ = "omniglot_105_uint8.npz"
_OMNI_SETS = {"train": "background", "test": "evaluation"}
_N_BACKGROUND_CHARS = 964


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


def _check_choice(argument: str, value: object, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(
            f"{argument} must be one of {', '.join(repr(a) for a in allowed)}; got {value!r}"
        )


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
    _check_choice("binarize", mode, BINARIZE_MODES)
    _check_images(x)
    if mode != "dynamic":
        return x
    if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise ValueError("x must hold values in [0, 1] for dynamic binarisation")
    return torch.bernoulli(x, generator=generator)


def downscale_images(images: torch.Tensor, size: int = IMAGE_SIZE) -> torch.Tensor:
    """Downscale square images with antialiasing (bilinear, ``antialias=True``).

    :param images: float ``[N, 1, H, W]`` in ``[0, 1]``.
    :param size: output side length.
    :returns: float ``[N, 1, size, size]`` clamped to ``[0, 1]``.
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 1:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images)
        raise ValueError(f"images must have shape [N, 1, H, W]; got {shape}")
    if not images.is_floating_point():
        raise ValueError(f"images must be a floating-point tensor in [0, 1]; got {images.dtype}")
    if size < 1:
        raise ValueError(f"size must be >= 1; got {size}")
    out = F.interpolate(
        images, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    return out.clamp_(0.0, 1.0)


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
    return _PKG_DATA / _SUBSET_FILE


# ----------------------------------------------------------------------------------------------
# file finding and decoding


def _data_root(data_dir: str | os.PathLike | None) -> tuple[Path | None, str]:
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser(), f"data_dir={data_dir}"
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser(), f"{ENV_VAR}={env}"
    return None, f"no data_dir given and {ENV_VAR} not set"


def _download_root(root: Path | None) -> Path:
    if root is not None:
        return root
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "pgtm"


def _existing(path: Path) -> Path | None:
    if path.is_file():
        return path
    gz = path.with_name(path.name + ".gz")
    return gz if gz.is_file() else None


def _mnist_dirs(root: Path) -> list[Path]:
    return [root / "MNIST" / "raw", root / "raw", root]


def _find_mnist_dir(root: Path, split: str) -> Path | None:
    for d in _mnist_dirs(root):
        if all(_existing(d / f) for f in _MNIST_FILES[split]):
            return d
    return None


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an idx file of unsigned bytes")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} but holds {arr.size} values")
    return arr.reshape(dims).copy()


def _read_mnist_arrays(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [N, 28, 28], labels uint8 [N])`` from the idx files under ``root``."""
    d = _find_mnist_dir(root, split)
    if d is None:
        raise FileNotFoundError(f"no MNIST {split} idx files under {root}")
    img_file, lab_file = (_existing(d / f) for f in _MNIST_FILES[split])
    images, labels = _read_idx(img_file), _read_idx(lab_file)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != images.shape[:1]:
        raise ValueError(f"{d}: unexpected MNIST shapes {images.shape} / {labels.shape}")
    return images, labels


def _find_binarized_mnist_file(root: Path) -> Path | None:
    for d in (root / "binarized_mnist", root):
        if (d / _BIN_NPZ).is_file():
            return d / _BIN_NPZ
        if all((d / f"binarized_mnist_{s}.amat").is_file() for s in SPLITS["binarized-mnist"]):
            return d
    return None


def _find_omniglot(root: Path, split: str) -> Path | None:
    for d in (root / "omniglot", root):
        if (d / _OMNI_NPZ).is_file():
            return d / _OMNI_NPZ
    for d in (root / "omniglot-py", root):
        if (d / f"images_{_OMNI_SETS[split]}").is_dir():
            return d / f"images_{_OMNI_SETS[split]}"
    return None


@functools.lru_cache(maxsize=16)
def _cached_mnist(root: str, split: str) -> tuple[np.ndarray, np.ndarray, str]:
    images, labels = _read_mnist_arrays(Path(root), split)
    return images, labels, str(_find_mnist_dir(Path(root), split))


@functools.lru_cache(maxsize=4)
def _cached_subset(path: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path) as f:
        return f[f"{split}_images"], f[f"{split}_labels"]


@functools.lru_cache(maxsize=8)
def _cached_binarized(path: str, split: str) -> tuple[np.ndarray, np.ndarray | None]:
    p = Path(path)
    if p.is_dir():
        arr = np.loadtxt(p / f"binarized_mnist_{split}.amat", dtype=np.uint8)
    else:
        with np.load(p) as f:
            arr = f[split]
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    if arr.ndim != 2 or arr.shape[1] != 784 or arr.max(initial=0) > 1:
        raise ValueError(f"{path}: binarized MNIST {split} must be 0/1 of shape [n, 784]")
    labels = None
    lab_file = _PKG_DATA / _BIN_LABELS_FILE
    if lab_file.is_file():
        with np.load(lab_file) as f:
            if str(f[f"{split}_sha256"]) == hashlib.sha256(arr.tobytes()).hexdigest():
                labels = f[f"{split}_labels"]
    return arr.reshape(-1, 28, 28), labels


def _omniglot_pngs(folder: Path) -> tuple[np.ndarray, int]:
    """Read torchvision's Omniglot PNG tree: ``(uint8 [C, S, 105, 105] 1 = background, C)``."""
    from PIL import Image

    chars = sorted(c for a in sorted(folder.iterdir()) if a.is_dir() for c in sorted(a.iterdir()))
    out = []
    for c in chars:
        files = sorted(c.glob("*.png"))
        out.append(np.stack([(np.asarray(Image.open(f).convert("L")) > 127) for f in files]))
    per = min(len(o) for o in out)
    return np.stack([o[:per] for o in out]).astype(np.uint8), len(chars)


@functools.lru_cache(maxsize=4)
def _cached_omniglot(path: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Omniglot ``split`` as ``(uint8 [N, 28, 28] ink-grey levels 0..255, labels int64 [N])``."""
    p = Path(path)
    offset = 0
    if p.is_dir():
        raw, _ = _omniglot_pngs(p)
        if split == "test":  # global ids continue after the background characters
            bg = p.parent / "images_background"
            offset = (
                sum(1 for a in bg.iterdir() if a.is_dir() for c in a.iterdir() if c.is_dir())
                if bg.is_dir()
                else _N_BACKGROUND_CHARS
            )
    else:
        with np.load(p) as f:
            raw = f[_OMNI_SETS[split]]
            if split == "test":
                offset = f["background"].shape[0]
    if raw.ndim != 4:
        raise ValueError(f"{path}: Omniglot array must be [characters, drawings, H, W]")
    n_chars, per = raw.shape[:2]
    ink = 1.0 - torch.from_numpy(raw.reshape(-1, 1, *raw.shape[2:])).float()
    small = torch.cat([downscale_images(chunk) for chunk in ink.split(4096)])
    images = (small[:, 0] * 255.0).round_().to(torch.uint8).numpy()
    labels = np.repeat(np.arange(offset, offset + n_chars, dtype=np.int64), per)
    return images, labels


def _download(name: str, split: str, root: Path) -> Path:
    import torchvision

    log.info("downloading %s (%s) into %s", name, split, root)
    root.mkdir(parents=True, exist_ok=True)
    if name == "mnist":
        torchvision.datasets.MNIST(str(root), train=(split == "train"), download=True)
    else:
        torchvision.datasets.Omniglot(str(root), background=(split == "train"), download=True)
    return root


def _to_float(images: np.ndarray, scale: float) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32)
    return x.div_(scale).unsqueeze(1) if scale != 1.0 else x.unsqueeze(1)


def _not_found(name: str, split: str, looked: list[str], root_desc: str) -> FileNotFoundError:
    fix = (
        "fix: pass --data-dir DIR (data_dir=...) or set PGTM_DATA_DIR to a folder holding the files"
    )
    if name == "binarized-mnist":
        fix += f" ({_BIN_NPZ} or the binarized_mnist_*.amat files; it cannot be downloaded)"
    else:
        fix += ", or use --download (download=True)"
    where = "; ".join(looked) if looked else "nowhere"
    return FileNotFoundError(
        f"no {name} '{split}' data found ({root_desc}); looked in: {where}; {fix}"
    )


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
    _check_choice("name", name, DATASET_NAMES)
    _check_choice("split", split, SPLITS[name])
    _check_choice("binarize", binarize, BINARIZE_MODES)
    if not isinstance(seed, int):
        raise ValueError(f"seed must be an int; got {seed!r}")
    root, root_desc = _data_root(data_dir)
    looked: list[str] = []
    images: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    source = ""

    def from_root(r: Path, how: str) -> bool:
        nonlocal images, labels, source
        if name == "mnist":
            if _find_mnist_dir(r, split) is None:
                looked.extend(str(d) for d in _mnist_dirs(r))
                return False
            arr, lab, where = _cached_mnist(str(r.resolve()), split)
            images, labels = _to_float(arr, 255.0), torch.from_numpy(lab.astype(np.int64))
        elif name == "binarized-mnist":
            f = _find_binarized_mnist_file(r)
            if f is None:
                looked.extend(str(d) for d in (r / "binarized_mnist", r))
                return False
            arr, lab = _cached_binarized(str(f.resolve()), split)
            images = _to_float(arr, 1.0)
            labels = None if lab is None else torch.from_numpy(lab.astype(np.int64))
            where = str(f)
        else:
            f = _find_omniglot(r, split)
            if f is None:
                looked.extend(str(d) for d in (r / "omniglot", r, r / "omniglot-py"))
                return False
            arr, lab = _cached_omniglot(str(f.resolve()), split)
            images, labels = _to_float(arr, 255.0), torch.from_numpy(lab)
            where = str(f)
        source = f"{how}:{where}"
        return True

    found = root is not None and from_root(root, "files")
    if not found and download:
        if name == "binarized-mnist":
            raise FileNotFoundError(
                f"binarized-mnist cannot be downloaded; provide {_BIN_NPZ} (or the "
                f"binarized_mnist_*.amat files) via --data-dir DIR or {ENV_VAR} ({root_desc})"
            )
        target = _download_root(root)
        try:
            _download(name, split, target)
        except Exception as e:  # network errors, corrupt archives, ...
            reason = " ".join(str(e).split())
            raise FileNotFoundError(
                f"download of {name} into {target} failed ({reason}); fix: provide the files via "
                f"--data-dir DIR or {ENV_VAR}"
            ) from e
        found = from_root(target, "download")
    if not found and name == "mnist":
        subset = bundled_subset_path()
        if subset.is_file():
            arr, lab = _cached_subset(str(subset), split)
            images, labels = _to_float(arr, 255.0), torch.from_numpy(lab.astype(np.int64))
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
        raise _not_found(name, split, looked, root_desc)
    log.info("loaded %s %s (%d images) from %s", name, split, len(images), source)
    if binarize == "fixed":
        g = torch.Generator().manual_seed(seed)
        images = torch.bernoulli(images, generator=g)
    return ImageSet(images=images, labels=labels, name=name, source=source)
