"""Recover the MNIST labels of the Larochelle binarised MNIST rows and store them in the package.

The fixed binarisation of Larochelle & Murray is a Bernoulli sample of the MNIST intensities, but
its rows are shuffled (train/valid: a permutation of the 60,000 MNIST training digits; test: the
MNIST test digits stably sorted by label) and the published files carry no labels.  This script
matches every binarised row to MNIST and *verifies* the label: a possible source row has no zero
pixel under a 1 of the binarised row (the binarisation was drawn from intensities ``v / 256``, so
zero pixels are always 0), and the posterior probability of the label over all possible source
rows must exceed ``1 - 1e-4``.  Only then it writes ``pgtm/_data/binarized_mnist_labels.npz`` with,
per split, ``<split>_labels`` (uint8), ``<split>_mnist_index`` (most likely source row in the MNIST
split) and ``<split>_sha256`` (of the uint8 binarised array, so the loader attaches the labels only
to the exact same file).

Usage::

    python examples/data/make_binarized_mnist_labels.py --data-dir /path/to/data

It takes a few minutes on two CPU cores.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
import torch

from pgtm.data_files import find_binarized_mnist_file, read_mnist_arrays

OUT = Path(__file__).resolve().parents[2] / "pgtm" / "_data" / "binarized_mnist_labels.npz"


def match(
    binary: np.ndarray, ref: np.ndarray, ref_labels: np.ndarray, chunk: int = 2000
) -> np.ndarray:
    """Index into ``ref`` of the best-matching MNIST row for every binarised row (verified).

    The source data of the binarisation was ``mnist.pkl.gz`` (intensities ``v / 256``), so a
    pixel of intensity 255 is 1 only with probability 255/256; a pixel of intensity 0 is always 0.
    Every MNIST row with no zero pixel under a 1 of the binarised row is a possible source,
    weighted by its Bernoulli likelihood (uniform prior over rows).  The label is accepted when its
    posterior probability exceeds ``1 - 1e-4``.  (The source *row* is not always identifiable:
    many ones are near-duplicates of each other; their label is.)
    """
    p = torch.from_numpy(ref).float().div(256).clamp(1e-4, 1 - 1e-4)
    lp, l1p = p.log().T.contiguous(), (1 - p).log().T.contiguous()
    zero = torch.from_numpy(ref == 0).float().T.contiguous()
    labels = torch.from_numpy(ref_labels.astype(np.int64))
    out = np.empty(len(binary), dtype=np.int64)
    for s in range(0, len(binary), chunk):
        x = torch.from_numpy(binary[s : s + chunk]).float()
        ll = x @ lp + (1 - x) @ l1p
        ll[(x @ zero) > 0] = -float("inf")  # a 1 on a zero pixel: impossible source
        best = ll.argmax(1)
        best_ll = ll.gather(1, best[:, None])
        if not bool(torch.isfinite(best_ll).all()):
            raise RuntimeError(f"rows {s}..{s + chunk}: some row has no consistent source")
        per_label = torch.stack(
            [torch.logsumexp(ll[:, labels == k], 1) for k in range(10)], 1
        ).log_softmax(1)
        if bool((per_label.gather(1, labels[best][:, None]) < -1e-4).any()):
            raise RuntimeError(f"rows {s}..{s + chunk}: ambiguous label for some row")
        out[s : s + chunk] = best.numpy()
        print(f"  matched {min(s + chunk, len(binary))}/{len(binary)}", flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir)
    train_x, train_y = read_mnist_arrays(data_dir, "train")
    test_x, test_y = read_mnist_arrays(data_dir, "test")
    bfile = find_binarized_mnist_file(data_dir)
    if bfile is None:
        raise SystemExit(f"no binarized MNIST npz under {data_dir}")
    b = np.load(bfile)
    result: dict[str, np.ndarray] = {}
    for split, ref_x, ref_y in [
        ("train", train_x, train_y),
        ("valid", train_x, train_y),
        ("test", test_x, test_y),
    ]:
        arr = np.ascontiguousarray(b[split], dtype=np.uint8)
        print(f"{split}: {arr.shape}", flush=True)
        index = match(arr, ref_x.reshape(len(ref_x), -1), ref_y)
        print(f"  {len(index) - len(np.unique(index))} rows share their MAP source with another")
        result[f"{split}_labels"] = ref_y[index].astype(np.uint8)
        result[f"{split}_mnist_index"] = index.astype(np.int32)
        result[f"{split}_sha256"] = np.array(hashlib.sha256(arr.tobytes()).hexdigest())
    np.savez_compressed(OUT, **result)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
