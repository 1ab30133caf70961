"""Training speed against the torch thread count, idle and beside a busy process: the
measurement behind ``pgtm.cli.DEFAULT_THREADS``, and how to lay runs out on a machine's cores.

For each condition (``idle``: nothing else running, which the caller must ensure; ``busy``: a
second 1-thread run of the same training, started by this script, steps throughout), the
training ``pgtm train TRAIN_OPTIONS`` (default: the README's quick start) runs ``--steps`` steps
with ``--threads 1`` and with one thread per core, interleaved ``--repeats`` times. A step's time
is the steady state: the seconds of ``log.csv`` from its first row to its last, over the steps
between them (start-up, Pyro's checked first step, a ``--compile`` run's compilation and the
final evaluation excluded). Writes ``<out>/threads.json`` and ``<out>/threads.md``::

    python benchmarks/threads.py --steps 100 --repeats 2 --out results/threads
    python benchmarks/threads.py --train "perfect-recall -l 10 -k 5 --network mlp --model ntm \\
        --parameter-budget 1860000 --min-scale 0.01 --compile" --steps 400 --repeats 1 \\
        --out results/threads_depth_ntm
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUICK_START = "perfect-recall --network mlp"
MEASUREMENT = ["--eval-every", "1000000", "--checkpoint-every", "1000000", "--eval-sequences",
               "2", "--iwae-particles", "2", "--no-progress"]
LOG_ROWS = 8  # rows of log.csv per measured run: the first is start-up, the rest steady state


def pgtm_train(train: list[str], out: Path, steps: int, threads: int,
               log_every: int) -> list[str]:
    return [sys.executable, "-m", "pgtm", "train", *train, *MEASUREMENT, "--steps", str(steps),
            "--log-every", str(log_every), "--threads", str(threads), "--out", str(out),
            "--restart"]


def log_rows(out: Path) -> list[dict]:
    try:
        with open(out / "log.csv") as log:
            return list(csv.DictReader(log))
    except FileNotFoundError:
        return []


def steady_ms_per_step(out: Path) -> float:
    rows = log_rows(out)
    first, last = rows[0], rows[-1]
    return (1000 * (float(last["seconds"]) - float(first["seconds"]))
            / (int(last["step"]) - int(first["step"])))


def wait_until_stepping(neighbour: subprocess.Popen, out: Path) -> None:
    """Wait for the busy neighbour's first log row (past its start-up and any compilation)."""
    while not log_rows(out):
        if neighbour.poll() is not None:
            raise SystemExit(f"the busy neighbour stopped (exit {neighbour.returncode}) "
                             "before its first log row")
        time.sleep(2)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", default=QUICK_START,
                        help=f"the options of pgtm train (default: {QUICK_START!r})")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--conditions", nargs="+", default=["idle", "busy"],
                        choices=["idle", "busy"])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.steps < 2 * LOG_ROWS:
        parser.error(f"--steps: expected at least {2 * LOG_ROWS}, got {args.steps}")
    train = shlex.split(args.train)
    log_every = args.steps // LOG_ROWS
    cores = os.cpu_count() or 1
    counts = sorted({1, cores})
    results = {"train": args.train, "cores": cores, "steps": args.steps,
               "repeats": args.repeats, "load_at_start": os.getloadavg()[0], "conditions": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for condition in args.conditions:
            neighbour = None
            if condition == "busy":
                neighbour_out = Path(tmp) / "busy"
                neighbour = subprocess.Popen(
                    pgtm_train(train, neighbour_out, 10**7, 1, log_every),
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                if neighbour is not None:
                    wait_until_stepping(neighbour, neighbour_out)
                times = {n: [] for n in counts}
                for repeat in range(args.repeats):
                    for n in counts:
                        out = Path(tmp) / f"{condition}-{n}"
                        subprocess.run(pgtm_train(train, out, args.steps, n, log_every),
                                       check=True, capture_output=True)
                        ms = steady_ms_per_step(out)
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
    command = "python benchmarks/threads.py " + shlex.join(argv if argv is not None
                                                           else sys.argv[1:])
    lines = [f"Training step of `pgtm train {args.train}`, steady state over {args.steps} steps, "
             f"median of {args.repeats}, {cores} cores (load {results['load_at_start']:.2f} at "
             "start); idle: nothing else running, busy: beside one other 1-thread run of the "
             f"same training. Command: `{command}`.", "",
             "| condition | threads | ms/step | vs 1 thread |", "|---|---:|---:|---:|"]
    for condition, row in results["conditions"].items():
        for n in counts:
            lines.append(f"| {condition} | {n} | {row['median_ms_per_step'][str(n)]:.1f} | "
                         f"{row['ratio_to_one_thread'][str(n)]:.2f}x |")
    (args.out / "threads.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
