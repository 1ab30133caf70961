"""Finding and decoding the data files on disk (the layouts :func:`pgtm.data.load_images`
accepts), reading them once per process, and torchvision downloads."""

from __future__ import annotations

import functools
import gzip
import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["ENV_VAR", "IMAGE_SIZE", "downscale_images", "find_binarized_mnist_file",
           "read_mnist_arrays"]

log = logging.getLogger("pgtm.data")

#: environment variable naming the data folder when no ``data_dir`` is given
ENV_VAR = "PGTM_DATA_DIR"
IMAGE_SIZE = 28
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
BIN_NPZ = "binarized_mnist_larochelle.npz"
OMNI_NPZ = "omniglot_105_uint8.npz"
OMNI_SETS = {"train": "background", "test": "evaluation"}
N_BACKGROUND_CHARS = 964
#: the least fraction of exact-zero pixels of an MNIST image file (the digits have about 81%)
MNIST_MIN_BACKGROUND = 0.5
PKG_DATA = Path(__file__).resolve().parent / "_data"
BINARIZED_LABELS_FILE = "binarized_mnist_labels.npz"
BINARIZED_SPLITS = ("train", "valid", "test")


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



def data_root(data_dir: str | os.PathLike | None) -> tuple[Path | None, str]:
    """The folder a user named (``data_dir``, else ``$PGTM_DATA_DIR``), which must exist."""
    if data_dir is not None and str(data_dir) != "":
        root, desc, name = Path(data_dir).expanduser(), f"data_dir={data_dir}", "data_dir"
    elif os.environ.get(ENV_VAR):
        root, name = Path(os.environ[ENV_VAR]).expanduser(), ENV_VAR
        desc = f"{ENV_VAR}={os.environ[ENV_VAR]}"
    else:
        return None, f"no data_dir given and {ENV_VAR} not set"
    if not root.is_dir():
        what = "is a file" if root.exists() else "does not exist"
        raise ValueError(f"{name}: {root} {what}; expected a folder holding the data sets")
    return root, desc


def download_root(root: Path | None) -> Path:
    if root is not None:
        return root
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "pgtm"


def existing(path: Path) -> Path | None:
    if path.is_file():
        return path
    gz = path.with_name(path.name + ".gz")
    return gz if gz.is_file() else None


def mnist_dirs(root: Path) -> list[Path]:
    return [root / "MNIST" / "raw", root / "raw", root]


def find_mnist_dir(root: Path, split: str) -> Path | None:
    for d in mnist_dirs(root):
        if all(existing(d / f) for f in MNIST_FILES[split]):
            return d
    return None


def read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as e:  # a corrupt or truncated .gz
        raise ValueError(f"data_dir: {path} cannot be read ({' '.join(str(e).split())})") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"data_dir: {path} is not an idx file of unsigned bytes")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise ValueError(f"data_dir: {path}: header says {dims} but holds {arr.size} values")
    return arr.reshape(dims).copy()


def read_mnist_arrays(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [N, 28, 28], labels uint8 [N])`` from the idx files under ``root``."""
    d = find_mnist_dir(root, split)
    if d is None:
        raise FileNotFoundError(f"no MNIST {split} idx files under {root}")
    img_file, lab_file = (existing(d / f) for f in MNIST_FILES[split])
    images, labels = read_idx(img_file), read_idx(lab_file)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != images.shape[:1]:
        raise ValueError(f"data_dir: {d}: unexpected MNIST shapes {images.shape} / "
                         f"{labels.shape}; expected [N, 28, 28] images and [N] labels")
    background = np.count_nonzero(images == 0) / max(images.size, 1)
    if background < MNIST_MIN_BACKGROUND:  # MNIST digits are ~81% exact-zero background
        raise ValueError(f"data_dir: {img_file} does not hold MNIST digits (only "
                         f"{100 * background:.1f}% background pixels; MNIST has about 81%)")
    if labels.size and int(labels.max()) > 9:
        raise ValueError(f"data_dir: {lab_file}: labels must be digits 0..9, found "
                         f"{int(labels.max())}")
    return images, labels


def find_binarized_mnist_file(root: Path) -> Path | None:
    for d in (root / "binarized_mnist", root):
        if (d / BIN_NPZ).is_file():
            return d / BIN_NPZ
        if all((d / f"binarized_mnist_{s}.amat").is_file() for s in BINARIZED_SPLITS):
            return d
    return None


def find_omniglot(root: Path, split: str) -> Path | None:
    for d in (root / "omniglot", root):
        if (d / OMNI_NPZ).is_file():
            return d / OMNI_NPZ
    for d in (root / "omniglot-py", root):
        if (d / f"images_{OMNI_SETS[split]}").is_dir():
            return d / f"images_{OMNI_SETS[split]}"
    return None


@functools.lru_cache(maxsize=16)
def cached_mnist(root: str, split: str) -> tuple[np.ndarray, np.ndarray, str]:
    images, labels = read_mnist_arrays(Path(root), split)
    return images, labels, str(find_mnist_dir(Path(root), split))


@functools.lru_cache(maxsize=4)
def cached_subset(path: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path) as f:
        return f[f"{split}_images"], f[f"{split}_labels"]


@functools.lru_cache(maxsize=8)
def cached_binarized(path: str, split: str) -> tuple[np.ndarray, np.ndarray | None]:
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
    lab_file = PKG_DATA / BINARIZED_LABELS_FILE
    if lab_file.is_file():
        with np.load(lab_file) as f:
            if str(f[f"{split}_sha256"]) == hashlib.sha256(arr.tobytes()).hexdigest():
                labels = f[f"{split}_labels"]
    return arr.reshape(-1, 28, 28), labels


def omniglot_pngs(folder: Path) -> tuple[np.ndarray, int]:
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
def cached_omniglot(path: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Omniglot ``split`` as ``(uint8 [N, 28, 28] ink-grey levels 0..255, labels int64 [N])``."""
    p = Path(path)
    offset = 0
    if p.is_dir():
        raw, _ = omniglot_pngs(p)
        if split == "test":  # global ids continue after the background characters
            bg = p.parent / "images_background"
            offset = (
                sum(1 for a in bg.iterdir() if a.is_dir() for c in a.iterdir() if c.is_dir())
                if bg.is_dir()
                else N_BACKGROUND_CHARS
            )
    else:
        with np.load(p) as f:
            raw = f[OMNI_SETS[split]]
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


def download(name: str, split: str, root: Path) -> Path:
    import torchvision

    log.info("downloading %s (%s) into %s", name, split, root)
    root.mkdir(parents=True, exist_ok=True)
    if name == "mnist":
        torchvision.datasets.MNIST(str(root), train=(split == "train"), download=True)
    else:
        torchvision.datasets.Omniglot(str(root), background=(split == "train"), download=True)
    return root


def to_float(images: np.ndarray, scale: float) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32)
    return x.div_(scale).unsqueeze(1) if scale != 1.0 else x.unsqueeze(1)


#: the file layouts a data folder may hold, in words (for the not-found message)
LAYOUTS = {
    "mnist": "DIR/MNIST/raw/, DIR/raw/ or DIR/ with train-images-idx3-ubyte, "
    "train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (or .gz)",
    "binarized-mnist": f"DIR/binarized_mnist/{BIN_NPZ} or DIR/{BIN_NPZ} (or the "
    "binarized_mnist_{train,valid,test}.amat files)",
    "omniglot": f"DIR/omniglot/{OMNI_NPZ} or DIR/{OMNI_NPZ} (keys background, evaluation: "
    "[characters, 20, 105, 105] uint8), or torchvision's DIR/omniglot-py/images_background/ "
    "and images_evaluation/ PNG folders",
}


def not_found(name: str, split: str, looked: list[str], root_desc: str) -> FileNotFoundError:
    fix = (
        "fix: pass --data-dir DIR (data_dir=...) or set PGTM_DATA_DIR to a folder holding the files"
    )
    fix += f" laid out as {LAYOUTS[name]}"
    if name == "binarized-mnist":
        fix += " (it cannot be downloaded)"
    else:
        fix += ", or use --download (download=True)"
    where = "; ".join(looked) if looked else "nowhere"
    return FileNotFoundError(
        f"no {name} '{split}' data found ({root_desc}); looked in: {where}; {fix}"
    )
