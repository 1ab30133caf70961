"""ELBO, IWAE and SMC bounds of trained runs against the number of particles K, per frame.

For every run folder given (written by ``pgtm train``), the bounds of the same held-out
sequences at every K (``pgtm.inference.bounds.bound_sweep``, seed 0), then, in ``--out``:
``summary.json`` (run -> task, model, steps, parameters and, per bound and K, the per-frame and
per-sequence means, SMC's ESS and resampling rate, PSIS k-hat of the IWAE weights),
``summary.md`` (the table) and ``bounds_vs_particles_<task>.png`` (one figure per task). Each
run's sweep is kept in ``--out/runs/<task>/<model>.json`` (not tracked by git) and reused when
the run, ``--particles`` and ``--sequences`` are unchanged, so runs can be added one at a time.

The study of ``docs/results/bounds_vs_particles.md``::

    python examples/studies/bounds_study.py runs/bounds/perfect-recall/vrnn \\
        runs/bounds/perfect-recall/introspective runs/bounds/dynamic-dependency/vrnn \\
        runs/bounds/dynamic-dependency/dnc --particles 1 10 100 1000 --sequences 32 \\
        --threads 1 --out results/bounds_vs_particles
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from pgtm.cli import add_threads_option, set_threads
from pgtm.experiment import bound_sweep_of_gtm, load_run, test_batch
from pgtm.inference.checkpoint import load_checkpoint
from pgtm.io import save_json
from pgtm.models import count_parameters
from pgtm.plotting import plot_bounds_vs_particles


def summarise(run: Path, gtm, sweep: dict) -> dict:
    spec = json.loads((run / "run.json").read_text())
    report = sweep.pop("evaluation")
    finite = [k for k in report["khat"] if k is not None and math.isfinite(k)]
    return {
        "task": spec["task"]["name"],
        "model": spec["model"],
        "network": spec["model_options"].get("network"),
        "steps": int(load_checkpoint(run / "checkpoint.pt")["step"]),
        "parameters": count_parameters(gtm),
        "khat_mean": sum(finite) / len(finite) if finite else None,
        "khat_reading": report["khat_reading"],
        "sweep": sweep,
    }


def table(summary: dict) -> str:
    lines = ["| task | model | steps | parameters | K | ELBO / frame | IWAE / frame | "
             "SMC / frame | SMC − IWAE / sequence | SMC resampling rate |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in summary.values():
        sweep = row["sweep"]
        for k in sweep["particles"]:
            iwae, smc = sweep["iwae"][str(k)], sweep["smc"][str(k)]
            lines.append(
                f"| {row['task']} | {row['model']} | {row['steps']} | {row['parameters']:,} "
                f"| {k} | {sweep['elbo']['per_frame_mean']:.3f} | {iwae['per_frame_mean']:.3f} "
                f"| {smc['per_frame_mean']:.3f} | {smc['mean'] - iwae['mean']:+.2f} "
                f"| {smc['resampling_rate']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    parser.add_argument("--particles", type=int, nargs="+", default=[1, 10, 100, 1000])
    parser.add_argument("--sequences", type=int, default=32, help="held-out sequences per run")
    add_threads_option(parser)
    parser.add_argument("--data-dir", default=None, help="override the runs' data folder")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    set_threads(args.threads)

    summary = {}
    for run in args.runs:
        label = f"{run.parent.name}/{run.name}"
        cached = args.out / "runs" / f"{label}.json"
        setting = {"particles": sorted(set(args.particles)), "sequences": args.sequences,
                   "steps": int(load_checkpoint(run / "checkpoint.pt")["step"])}
        if cached.is_file() and json.loads(cached.read_text())["setting"] == setting:
            summary[label] = json.loads(cached.read_text())["summary"]
            print(f"{label}: reused {cached}")
            continue
        gtm, task = load_run(run, data_dir=args.data_dir)
        sweep = bound_sweep_of_gtm(gtm, test_batch(task, args.sequences),
                                   particles=args.particles, bound="both")
        summary[label] = summarise(run, gtm, sweep)
        save_json({"setting": setting, "summary": summary[label]}, cached)
        print(f"{label}: " + ", ".join(
            f"K={k} IWAE {sweep['iwae'][str(k)]['per_frame_mean']:.3f} "
            f"SMC {sweep['smc'][str(k)]['per_frame_mean']:.3f}" for k in sweep["particles"]),
            flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    save_json(summary, args.out / "summary.json")
    (args.out / "summary.md").write_text(
        f"Bounds of log p(x) in nats per frame ({args.sequences} held-out sequences per run, "
        "seed 0; IWAE and SMC at K are means over K_max / K independent estimates).\n\n"
        + table(summary))
    for task in sorted({row["task"] for row in summary.values()}):
        rows = {row["model"]: row["sweep"] for row in summary.values() if row["task"] == task}
        steps = sorted({row["steps"] for row in summary.values() if row["task"] == task})
        picture = plot_bounds_vs_particles(
            args.out / f"bounds_vs_particles_{task}.png", rows,
            f"{task}: bounds against K ({args.sequences} held-out sequences, "
            f"{'/'.join(map(str, steps))} training steps)")
        print(f"wrote {picture}")
    print(f"wrote {args.out / 'summary.json'} and {args.out / 'summary.md'}")


if __name__ == "__main__":
    main()
