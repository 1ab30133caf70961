"""The training step of this checkout against another version of pgtm, in one process.

On a machine whose speed drifts (a shared virtual machine: large matmuls at 73-98 GFLOP/s from
one second to the next here), two versions timed in two processes differ by the drift as much as
by the code. This script loads the other version's ``pgtm`` (installed into a folder of its own)
and its ``benchmarks/matmul_floor.py`` next to this checkout's, builds both steps (``pgtm
train``'s step: the objective module, backward, the optimiser) from the same seed and times them
interleaved, repetition by repetition, with each one's matrix products back to back::

    git worktree add /tmp/base f997c5e
    pip install --no-deps --target /tmp/base-site /tmp/base
    python benchmarks/versus.py --base-site /tmp/base-site --base-benchmarks /tmp/base/benchmarks \\
        --out results/step_versus

Writes ``<out>/summary.{json,md}``: per model and setting the median step of each version, the
speed-up (base / this) and each step's ratio to its own products.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def _load(site: Path | None, benchmarks: Path):
    """``matmul_floor`` of one version: ``site`` (``None``: this checkout's installation)."""
    for name in [n for n in sys.modules if n.split(".")[0] in ("pgtm", "matmul_floor", "floor")]:
        del sys.modules[name]
    extra = [str(p) for p in (site, benchmarks) if p is not None]
    sys.path[:0] = extra
    try:
        import matmul_floor

        import pgtm
    finally:
        for path in extra:
            sys.path.remove(path)
    where = Path(pgtm.__file__).resolve()
    if site is not None and Path(site).resolve() not in where.parents:
        raise SystemExit(f"--base-site: pgtm was imported from {where}, not from {site}")
    return matmul_floor


def build(version, model: str, setting: str):
    """One version's step and its matrix products (built while that version is the one
    imported: a version may import its own modules lazily)."""
    config = version.SETTINGS[setting]
    step = version.Step(model, config["length"], config["network"], config["batch"])
    return step, version.product_calls(step.products())


def compare(this, built: dict, repeats: int) -> dict:
    """Interleaved medians of ``built = {"base": (step, products), "this": ...}``."""
    steps = {name: step for name, (step, _) in built.items()}
    products = {name: calls for name, (_, calls) in built.items()}
    calls = {name: step.pyro for name, step in steps.items()}
    calls.update({f"{name}_products": lambda p=p: this.all_products(p)
                  for name, p in products.items()})
    medians = this.interleaved(calls, repeats)
    row = {f"{name}_ms": 1e3 * medians[name] for name in calls}
    row["speed_up"] = medians["base"] / medians["this"]
    for name in steps:
        row[f"{name}_ratio"] = medians[name] / medians[f"{name}_products"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-site", type=Path, required=True,
                        help="folder holding the other version's pgtm package")
    parser.add_argument("--base-benchmarks", type=Path, required=True,
                        help="the other version's benchmarks/ folder")
    parser.add_argument("--models", nargs="+", default=["vrnn", "introspective", "ntm", "lru",
                                                         "dnc"])
    parser.add_argument("--settings", nargs="+", default=["readme", "target"])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started, load_before = time.strftime("%Y-%m-%dT%H:%M:%S"), os.getloadavg()[0]
    keys = [(setting, model) for setting in args.settings for model in args.models]
    base = _load(args.base_site, args.base_benchmarks)
    built = {key: {"base": build(base, key[1], key[0])} for key in keys}
    this = _load(None, HERE)
    for setting, model in keys:
        built[(setting, model)]["this"] = build(this, model, setting)
    from pgtm.cli.allocator import keep_freed_memory

    keep_freed_memory()
    rows = {}
    for setting, model in keys:
        row = rows[f"{setting}/{model}"] = compare(this, built.pop((setting, model)),
                                                   args.repeats)
        print(f"{setting} {model}: base {row['base_ms']:.1f} ms, this {row['this_ms']:.1f} ms, "
              f"{row['speed_up']:.2f}x", flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True,
                            text=True, cwd=HERE).stdout.strip()
    summary = {"started": started, "commit": commit, "base_site": str(args.base_site),
               "load_average": [load_before, os.getloadavg()[0]], "torch": torch.__version__,
               "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [
        "# The training step: this version against a base, in one process", "",
        f"Command: `python benchmarks/versus.py --base-site {args.base_site} --base-benchmarks "
        f"{args.base_benchmarks} --out {args.out}`  ",
        f"{started}; this: commit `{commit}`; torch {torch.__version__}; one thread; load "
        f"average {load_before:.2f} at start, {os.getloadavg()[0]:.2f} at end. Medians of "
        f"{args.repeats} interleaved repetitions; *products*: the step's matrix products back "
        "to back (at the conv setting the convolutions are not among them).", "",
        "| setting | model | base ms | this ms | speed-up | base / its products | "
        "this / its products |", "|---|---|---:|---:|---:|---:|---:|"]
    for key, row in rows.items():
        setting, model = key.split("/")
        lines.append(f"| {setting} | {model} | {row['base_ms']:.1f} | {row['this_ms']:.1f} | "
                     f"{row['speed_up']:.2f}x | {row['base_ratio']:.2f} | "
                     f"{row['this_ratio']:.2f} |")
    (args.out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
