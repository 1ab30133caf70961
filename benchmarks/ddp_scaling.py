"""Data-parallel scaling on one machine: training samples per second of the quick start with
one process (one thread) against ``--nproc-per-node 2`` (torchrun, gloo, one thread per rank,
each rank half the batch), at the same global batch.

The two are interleaved ``--repeats`` times; the training seconds come from each run's
``log.csv`` (start-up and the final evaluation excluded). The machine must be otherwise idle.
Writes ``<out>/scaling.json`` and ``<out>/scaling.md``::

    python benchmarks/ddp_scaling.py --steps 200 --repeats 2 --out results/ddp_scaling
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

QUICK_START = ["perfect-recall", "--network", "mlp", "--eval-every", "1000000",
               "--checkpoint-every", "1000000", "--eval-sequences", "2", "--iwae-particles", "2",
               "--no-progress", "--threads", "1"]


def samples_per_second(out: Path, steps: int, batch_size: int, processes: int) -> float:
    command = [sys.executable, "-m", "pgtm", "train", *QUICK_START, "--steps", str(steps),
               "--batch-size", str(batch_size), "--nproc-per-node", str(processes),
               "--out", str(out), "--restart"]
    subprocess.run(command, check=True, capture_output=True,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    with open(out / "log.csv") as log:
        rows = list(csv.DictReader(log))
    return int(rows[-1]["step"]) * batch_size / float(rows[-1]["seconds"])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for batch_size in args.batch_sizes:
            measured: dict[int, list[float]] = {1: [], 2: []}
            for repeat in range(args.repeats):
                for processes in (1, 2):
                    out = Path(tmp) / f"b{batch_size}-p{processes}-r{repeat}"
                    measured[processes].append(
                        samples_per_second(out, args.steps, batch_size, processes))
                    print(f"B={batch_size} processes={processes} repeat {repeat}: "
                          f"{measured[processes][-1]:.1f} samples/s", flush=True)
            one, two = (statistics.median(measured[p]) for p in (1, 2))
            rows.append({"batch_size": batch_size, "one_process": one, "two_processes": two,
                         "speed_up": two / one, "runs": measured})
    results = {"steps": args.steps, "repeats": args.repeats, "cores": os.cpu_count(),
               "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scaling.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = ["# Data-parallel scaling (quick start, perfect recall, MLP nets, T = 15)", "",
             f"{args.steps} steps per run, median of {args.repeats} interleaved runs, "
             f"{os.cpu_count()} cores, one thread per process, global batch as listed.", "",
             "| global batch | 1 process (samples/s) | 2 processes (samples/s) | speed-up |",
             "|---:|---:|---:|---:|"]
    lines += [f"| {r['batch_size']} | {r['one_process']:.1f} | {r['two_processes']:.1f} | "
              f"{r['speed_up']:.2f}× |" for r in rows]
    (args.out / "scaling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
