"""Create the MNIST subset bundled with the package (``pgtm/_data/mnist_subset.npz``).

Draws 5,000 digits from the MNIST training set and 1,000 from the MNIST test set (uniformly at
random without replacement, seed 0, kept in their original order) and stores them with
``np.savez_compressed`` as ``train_images`` (uint8 ``[5000, 28, 28]``), ``train_labels`` (uint8),
``train_index`` (row in MNIST train), and the same three ``test_*`` arrays.

Usage::

    python examples/data/make_mnist_subset.py --data-dir /path/to/data   # or PGTM_DATA_DIR
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from pgtm.data import ENV_VAR, bundled_subset_path
from pgtm.data_files import read_mnist_arrays

MAX_BYTES = 2 * 1024 * 1024


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get(ENV_VAR))
    parser.add_argument("--n-train", type=int, default=5000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=bundled_subset_path())
    args = parser.parse_args(argv)
    if not args.data_dir:
        parser.error(f"--data-dir (or {ENV_VAR}) is required")
    rng = np.random.default_rng(args.seed)
    arrays: dict[str, np.ndarray] = {}
    for split, n in (("train", args.n_train), ("test", args.n_test)):
        images, labels = read_mnist_arrays(Path(args.data_dir), split)
        index = np.sort(rng.choice(len(images), size=n, replace=False))
        arrays[f"{split}_images"] = images[index]
        arrays[f"{split}_labels"] = labels[index]
        arrays[f"{split}_index"] = index.astype(np.int32)
        print(f"{split}: {n} digits, label counts {np.bincount(labels[index], minlength=10)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    size = args.out.stat().st_size
    print(f"wrote {args.out} ({size} bytes)")
    if size > MAX_BYTES:
        raise SystemExit(f"{args.out} is {size} bytes, above the {MAX_BYTES}-byte budget")


if __name__ == "__main__":
    main()
