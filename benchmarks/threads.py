"""Training speed of the quick start against the torch thread count, idle and beside a busy
process: the measurement behind ``pgtm.cli.DEFAULT_THREADS``.

For each condition (``idle``: nothing else running, which the caller must ensure; ``busy``: a
second 1-thread ``pgtm train`` started by this script runs throughout), the README's quick-start
training (``pgtm train perfect-recall --network mlp``) runs ``--steps`` steps with ``--threads 1``
and with torch's own default (one thread per core), interleaved ``--repeats`` times. The training
seconds come from each run's ``log.csv`` (start-up and the final evaluation excluded). Writes
``<out>/threads.json`` and ``<out>/threads.md``::

    python benchmarks/threads.py --steps 100 --repeats 2 --out results/threads
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
import time
from pathlib import Path

QUICK_START = ["perfect-recall", "--network", "mlp", "--eval-every", "1000000",
               "--checkpoint-every", "1000000", "--eval-sequences", "2", "--iwae-particles", "2",
               "--no-progress"]


def pgtm_train(out: Path, steps: int, threads: int) -> list[str]:
    return [sys.executable, "-m", "pgtm", "train", *QUICK_START, "--steps", str(steps),
            "--threads", str(threads), "--out", str(out), "--restart"]


def train_ms_per_step(out: Path, steps: int, threads: int) -> float:
    subprocess.run(pgtm_train(out, steps, threads), check=True, capture_output=True)
    with open(out / "log.csv") as log:
        rows = list(csv.DictReader(log))
    return 1000 * float(rows[-1]["seconds"]) / int(rows[-1]["step"])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--conditions", nargs="+", default=["idle", "busy"],
                        choices=["idle", "busy"])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    counts = sorted({1, cores})
    results = {"cores": cores, "steps": args.steps, "repeats": args.repeats, "conditions": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for condition in args.conditions:
            neighbour = None
            if condition == "busy":
                neighbour = subprocess.Popen(pgtm_train(Path(tmp) / "busy", 10**7, 1),
                                             stdout=subprocess.DEVNULL,
                                             stderr=subprocess.DEVNULL)
                time.sleep(15)  # past its start-up: stepping
            try:
                times = {n: [] for n in counts}
                for repeat in range(args.repeats):
                    for n in counts:
                        ms = train_ms_per_step(Path(tmp) / f"{condition}-{n}", args.steps, n)
                        times[n].append(ms)
                        print(f"{condition}, {n} thread(s), repeat {repeat}: {ms:.1f} ms/step",
                              flush=True)
            finally:
                if neighbour is not None:
                    neighbour.kill()
                    neighbour.wait()
            medians = {n: statistics.median(v) for n, v in times.items()}
            results["conditions"][condition] = {
                "ms_per_step": {str(n): v for n, v in times.items()},
                "median_ms_per_step": {str(n): v for n, v in medians.items()},
                "ratio_to_one_thread": {str(n): medians[n] / medians[1] for n in counts},
            }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "threads.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [f"Quick-start training step (Introspective GTM, MLP nets, B=32, T=15), "
             f"{args.steps} steps, median of {args.repeats}, {cores} cores; idle: nothing else "
             "running, busy: beside one other 1-thread `pgtm train`. Command: `python "
             "benchmarks/threads.py --out results/threads`.", "",
             "| condition | threads | ms/step | vs 1 thread |", "|---|---:|---:|---:|"]
    for condition, row in results["conditions"].items():
        for n in counts:
            lines.append(f"| {condition} | {n} | {row['median_ms_per_step'][str(n)]:.1f} | "
                         f"{row['ratio_to_one_thread'][str(n)]:.2f}x |")
    (args.out / "threads.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
