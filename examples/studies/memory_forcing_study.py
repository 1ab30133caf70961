"""Memory Forcing versus plain ELBO training, at the same budget, over several seeds.

For each task (the NTM copy task, sequential MNIST and perfect recall) and each mode (``plain``:
the ELBO alone; ``memory-forcing``: the ELBO plus the adversarial terms of
:mod:`pgtm.inference.memory_forcing`) this trains the same model (the DNC-GTMM by default:
``--model``) with the same number of steps, batch size and learning rate, for every seed, and
reports mean ± sd over the seeds of

* copy: the exact-match rate (the input phase observed, the output phase generated from the
  prior and thresholded at 0.5; :func:`~pgtm.inference.copy_metrics.exact_match`);
* every task: the IWAE bound (``--iwae-particles`` particles) and the ELBO on
  ``--eval-sequences`` held-out sequences, and the recall-phase / pre-recall KL per step
  (sequential MNIST has no recall phase: n/a).

Runs go to ``<out>/<task>/<mode>/seed<k>/`` (the usual run folders: checkpoint, ``log.csv``
with the discriminators' accuracies and losses, ``results.json``, pictures); the comparison to
``<out>/summary.json``, ``<out>/summary.md`` and ``<out>/summary.png``. Runs resume from their
checkpoints (``--steps`` is the total), finished runs are skipped, and separate processes may
share ``--out`` (split the work with ``--tasks``/``--modes``/``--seeds``, e.g. one per core);
each process rewrites the summary from every run finished so far::

    python examples/studies/memory_forcing_study.py --tasks copy --seeds 0 1 2 --steps 1500 \\
        --threads 1 --data-dir ../shared/data --out results/memory_forcing
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
from pathlib import Path

from pgtm.cli import add_optimisation_options, add_threads_option, set_threads
from pgtm.cli.allocator import keep_freed_memory
from pgtm.experiment import run_experiment
from pgtm.inference.evaluate import save_json
from pgtm.inference.train import TrainConfig
from pgtm.io import write_text_atomically
from pgtm.models import MEMORIES
from pgtm.plotting import _prepare, plt
from pgtm.tasks import make_task

TASKS = ("copy", "sequential-mnist", "perfect-recall")
MODES = ("plain", "memory-forcing")
#: the numbers compared, from each run's ``results.json``
METRICS = ("exact_match", "bit_accuracy", "iwae", "elbo", "recall_kl", "prerecall_kl", "seconds")
#: the metric each task is judged by (plotted): (key, label, higher is better)
HEADLINE = {
    "copy": ("exact_match", "exact-match rate", True),
    "sequential-mnist": ("iwae", "IWAE bound (nats)", True),
    "perfect-recall": ("recall_kl", "recall-phase KL (nats/step)", False),
}


def make_study_task(name: str, args):
    if name == "copy":
        return make_task("copy", prerecall_length=args.copy_length, width=args.copy_width)
    if name == "perfect-recall":
        return make_task("perfect-recall", data_dir=args.data_dir,
                         prerecall_length=args.prerecall_length, recall_length=args.recall_length)
    return make_task(name, data_dir=args.data_dir)


def memory_forcing_options(args) -> dict:
    return {"weight": args.mf_weight, "accuracy_gate": args.mf_accuracy_gate,
            "update_gate": args.mf_update_gate}


def finished(run: Path, steps: int) -> bool:
    try:
        return json.loads((run / "results.json").read_text())["steps"] >= steps
    except (OSError, ValueError, KeyError):
        return False


def _number(value):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _mean_sd(values) -> list[float | None]:
    values = [v for v in map(_number, values) if v is not None]
    if not values:
        return [None, None]
    return [statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0]


def read_log(run: Path) -> list[dict]:
    """Rows of ``log.csv`` as dicts of floats (empty cells left out)."""
    with open(run / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in rows]


def summarise(out: Path) -> dict:
    """Collect every finished run under ``out`` into ``summary.json``, ``summary.md`` and
    ``summary.png``."""
    table: dict[str, dict] = {}
    for task in TASKS:
        for mode in MODES:
            runs = sorted(p.parent for p in (out / task / mode).glob("seed*/results.json"))
            if not runs:
                continue
            per_seed = {}
            for run in runs:
                results = json.loads((run / "results.json").read_text())
                per_seed[run.name] = {k: _number(results.get(k)) for k in (*METRICS, "steps")}
            table.setdefault(task, {})[mode] = {
                "seeds": len(runs),
                "steps": sorted({s["steps"] for s in per_seed.values()}),
                **{k: _mean_sd([s[k] for s in per_seed.values()]) for k in METRICS},
                "per_seed": per_seed,
            }
    save_json({"tasks": table}, out / "summary.json")
    lines = [
        "| task | mode | seeds | steps | exact match (copy) | IWAE | ELBO | recall KL "
        "| pre-recall KL | minutes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(pair, digits=2, scale=1.0):
        if pair[0] is None:
            return "n/a"
        return f"{pair[0] * scale:.{digits}f} ± {pair[1] * scale:.{digits}f}"

    for task, modes in table.items():
        for mode, row in modes.items():
            lines.append(
                f"| {task} | {mode} | {row['seeds']} | {', '.join(map(str, row['steps']))} "
                f"| {cell(row['exact_match'], 3)} | {cell(row['iwae'], 1)} "
                f"| {cell(row['elbo'], 1)} | {cell(row['recall_kl'])} "
                f"| {cell(row['prerecall_kl'])} | {cell(row['seconds'], 1, 1 / 60)} |"
            )
    text = "\n".join(lines) + "\n"
    write_text_atomically(out / "summary.md", text)  # processes sharing --out may write at once
    if table:
        plot_summary(out, table)
    return table


def plot_summary(out: Path, table: dict) -> None:
    """Top: each task's headline metric per mode (mean ± sd, dots = seeds). Bottom: the
    discriminators' batch accuracy over training in the memory-forcing runs."""
    tasks = list(table)
    fig, axes = plt.subplots(2, len(tasks), figsize=(5 * len(tasks), 7.5), squeeze=False,
                             layout="constrained")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for column, task in enumerate(tasks):
        key, label, higher = HEADLINE[task]
        ax = axes[0, column]
        for i, mode in enumerate(MODES):
            row = table[task].get(mode)
            if row is None or row[key][0] is None:
                continue
            ax.bar(i, row[key][0], yerr=row[key][1], color=colours[i], alpha=0.6, capsize=6)
            seeds = [s[key] for s in row["per_seed"].values() if s[key] is not None]
            ax.plot([i] * len(seeds), seeds, "o", color="black", markersize=4)
        ax.set_xticks(range(len(MODES)), MODES)
        ax.set_title(f"{task}\n{label}, {'higher' if higher else 'lower'} is better",
                     fontsize=10)
        ax.grid(alpha=0.3, axis="y")
        ax = axes[1, column]
        runs = sorted((out / task / "memory-forcing").glob("seed*/log.csv"))
        for number, run in enumerate(runs):
            rows = read_log(run.parent)
            for j, name in enumerate(("hidden", "memory")):
                points = [(r["step"], r[f"mf_{name}_accuracy"]) for r in rows
                          if f"mf_{name}_accuracy" in r]
                if points:
                    ax.plot(*zip(*points, strict=True), "-o", markersize=2,
                            color=colours[2 + j], alpha=0.7,
                            label=f"D_{name[0]} ({len(runs)} seeds)" if number == 0 else None)
        for level, style in ((0.75, "--"), (0.99, ":")):
            ax.axhline(level, color="grey", linestyle=style, linewidth=1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("training step")
        ax.set_title(f"{task}\ndiscriminator batch accuracy (memory forcing)", fontsize=10)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.savefig(_prepare(out / "summary.png"), dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", default="results/memory_forcing")
    parser.add_argument("--model", default="dnc", choices=sorted(MEMORIES),
                        help="memory of the GTM (default dnc, the DNC-GTMM)")
    add_optimisation_options(parser, default_steps=1500)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--eval-sequences", type=int, default=64)
    parser.add_argument("--iwae-particles", type=int, default=100)
    parser.add_argument("--mf-weight", type=float, default=1.0)
    parser.add_argument("--mf-accuracy-gate", type=float, default=0.75)
    parser.add_argument("--mf-update-gate", type=float, default=0.99)
    parser.add_argument("--latent-size", type=int, default=32)
    parser.add_argument("--controller-size", type=int, default=256)
    parser.add_argument("--network", default="mlp", choices=("auto", "conv", "mlp"))
    parser.add_argument("--num-heads", type=int, default=None,
                        help="read heads of the memory (default: the model's, 5 for the DNC)")
    parser.add_argument("--copy-length", type=int, default=10, help="copy task: l (= k)")
    parser.add_argument("--copy-width", type=int, default=8, help="copy task: bits per frame")
    parser.add_argument("-l", "--prerecall-length", type=int, default=10,
                        help="perfect recall: l")
    parser.add_argument("-k", "--recall-length", type=int, default=5, help="perfect recall: k")
    add_threads_option(parser)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--summarise-only", action="store_true")
    args = parser.parse_args(argv)
    keep_freed_memory()
    set_threads(args.threads)
    out = Path(args.out)
    if not args.summarise_only:
        options = {"network": args.network, "latent_size": args.latent_size,
                   "controller_size": args.controller_size}
        if args.num_heads is not None:
            options["num_heads"] = args.num_heads
        for seed in args.seeds:
            for name in args.tasks:
                task = make_study_task(name, args)
                for mode in args.modes:
                    run = out / name / mode / f"seed{seed}"
                    if finished(run, args.steps):
                        print(name, mode, seed, "finished", flush=True)
                        continue
                    config = TrainConfig(
                        steps=args.steps, batch_size=args.batch_size,
                        learning_rate=args.learning_rate, seed=seed,
                        kl_anneal_steps=args.kl_anneal_steps,
                        eval_every=args.eval_every, checkpoint_every=args.eval_every,
                        log_every=50, device=args.device, out_dir=str(run), progress=False,
                    )
                    result = run_experiment(
                        args.model, task, config, eval_sequences=args.eval_sequences,
                        iwae_particles=args.iwae_particles, model_options=options,
                        data_dir=args.data_dir,
                        memory_forcing=(memory_forcing_options(args)
                                        if mode == "memory-forcing" else None),
                    )
                    keys = ("exact_match", "iwae", "recall_kl")
                    print(name, mode, seed, {k: _number(result[k]) for k in keys}, flush=True)
    summarise(out)
    print((out / "summary.md").read_text())


if __name__ == "__main__":
    main()
