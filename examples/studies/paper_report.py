"""Summarise the paper-experiment runs of ``paper_experiments.sh``: per experiment and model, the
recall-phase KL per step and the per-frame bounds at the last evaluation, mean ± sd over seeds,
and the learning curves (held-out recall KL against training steps).

Reads ``RUNS/EXPERIMENT/MODEL/seedS/`` (``log.csv``, ``results.json``, ``rollbacks.json``);
a run without ``results.json`` (still training) contributes its last periodic evaluation. With
``--variants runs/paper-variants`` the runs of ``paper_experiments.sh ... -- OPTIONS``
(``VARIANTS/VARIANT/EXPERIMENT/MODEL/seedS/``) join as rows ``MODEL [VARIANT]``, drawn dashed.
Writes ``OUT/summary.json``, ``OUT/summary.md`` and ``OUT/learning_curves.png``::

    python examples/studies/paper_report.py runs/paper --variants runs/paper-variants \
        --out results/paper_experiments
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pgtm.io import save_json, write_text_atomically  # noqa: E402

MODELS = ("vrnn", "vrnn-x", "introspective", "ntm", "lru", "dnc")
#: The paper's last-frame KL (nats) against training iterations, read from the middle panels of
#: its figures as reproduced in psygrammer/DeepCognition (part1/deepmind/gtmm/figures, cap15.png
#: ... cap28.png; docs/results/paper_experiments.md says how): per experiment and model, the
#: value at 10^5 iterations, at the end (10^6; 5*10^5 for perfect recall l=20/50, 3.5*10^5 for
#: parity l=20/50), the reading uncertainty, and the iteration at which the curve turns down
#: below the VRNN's (memory in use). The paper's VRNN feeds x_{t-1} to its controller (its
#: Fig. 1a): our ``vrnn-x``; our ``vrnn`` is the memory-less GTMM (Fig. 1c). At 10^4 iterations,
#: our round-1 budget, the curves are 2 pixels from the axis: no value can be read there.
_PARITY = {model: (14.5, 14.0, 1.0, "none (the curves coincide)") for model in MODELS}
PAPER = {
    "perfect-recall-l10": {
        "vrnn": (20.7, 7.8, 1.0, "— (slow decline from 1.5e5)"),
        "introspective": (0.2, 0.0, 0.3, "from the start"),
        "ntm": (6.0, 0.5, 1.0, "5e4"),
        "lru": (14.5, 4.5, 2.0, "6-7e4"),
        "dnc": (2.0, 1.5, 1.0, "4-5e4"),
    },
    "perfect-recall-l20": {
        "vrnn": (21.5, 19.3, 1.0, "—"),
        "introspective": (0.3, 0.0, 0.3, "from the start"),
        "ntm": (9.5, 4.5, 1.0, "5-6e4"),
        "lru": (21.3, 16.4, 1.0, "2.5-3e5"),
        "dnc": (11.6, 3.7, 1.0, "6-7e4"),
    },
    "perfect-recall-l50": {
        "vrnn": (22.0, 22.0, 1.0, "—"),
        "introspective": (2.6, 2.2, 1.0, "from the start"),
        "ntm": (22.0, 10.5, 1.0, "1.3-1.5e5"),
        "lru": (21.6, 21.4, 1.0, "none"),
        "dnc": (21.8, 16.5, 1.0, "2.5-3e5"),
    },
    "parity-l10": {model: (14.5, 13.8, 1.0, "none (the curves coincide)") for model in MODELS},
    "parity-l20": _PARITY,
    "parity-l50": _PARITY,
    "one-shot": {
        "vrnn": (25.0, 27.0, 1.5, "—"),
        "introspective": (0.6, 0.0, 1.0, "from the start"),
        "ntm": (13.7, 8.5, 2.0, "7e4"),
        "lru": (27.6, 17.0, 2.0, "4e5"),
        "dnc": (4.1, 1.0, 1.0, "7-8e4"),
    },
    "dynamic-dependency": {
        "vrnn": (18.8, 13.8, 1.0, "—"),
        "introspective": (13.0, 0.7, 1.0, "6e4"),
        "ntm": (7.8, 1.5, 1.0, "5.5-6e4"),
        "lru": (17.8, 4.5, 1.5, "4-5e5"),
        "dnc": (12.8, 0.5, 1.0, "7e4"),
    },
    "similarity-cued": {
        "vrnn": (21.9, 21.5, 1.0, "—"),
        "introspective": (21.2, 20.0, 1.0, "not clearly"),
        "ntm": (22.0, 20.2, 1.0, "not clearly"),
        "lru": (21.4, 14.0, 1.5, "3.5-4e5"),
        "dnc": (21.6, 1.0, 1.0, "1.5e5"),
    },
    "navigation": {
        "vrnn": (18.2, 14.0, 1.5, "—"),
        "introspective": (16.1, 10.7, 1.0, "0.8-1e5"),
        "ntm": (19.1, 14.2, 1.0, "none"),
        "lru": (18.9, 8.0, 1.0, "1.5-2e5"),
        "dnc": (17.5, 4.8, 1.0, "1e5"),
    },
    # DeepMind Lab frames, 64x64: not the procedural room's nats (a stand-in); the order is
    "rotating-room": {
        "vrnn": (6.4, 3.9, 1.0, "— (DeepMind Lab frames)"),
        "introspective": (4.4, 2.7, 1.0, "5-8e4 (DeepMind Lab frames)"),
        "ntm": (6.2, 5.3, 1.0, "not clearly (DeepMind Lab frames)"),
        "lru": (5.9, 4.4, 1.0, "not clearly (DeepMind Lab frames)"),
        "dnc": (3.5, 2.0, 1.0, "3e4 (DeepMind Lab frames)"),
    },
}
for _readings in PAPER.values():
    _readings.setdefault("vrnn-x", _readings["vrnn"])


def curve(run: Path) -> list[tuple[int, float]]:
    """``(step, recall_kl)`` of every periodic evaluation in ``run/log.csv`` (none yet: [])."""
    if not (run / "log.csv").is_file():
        return []
    with open(run / "log.csv") as f:
        return [(int(row["step"]), float(row["recall_kl"])) for row in csv.DictReader(f)
                if row.get("recall_kl")]


#: what a run's summary keeps of each final evaluation (``results_step{STEPS}.json``)
RESULT_KEYS = ("steps", "recall_kl", "recall_kl_median", "last_frame_kl", "prerecall_kl",
               "elbo_per_frame", "iwae_per_frame", "iwae_per_sequence", "iwae_k", "parameters",
               "compiled")
#: the statistics over seeds, per budget
STATISTICS = ("recall_kl", "recall_kl_median", "last_frame_kl", "prerecall_kl",
              "elbo_per_frame", "iwae_per_frame")


def final_evaluations(run: Path) -> list[dict]:
    """The final evaluations of a run, one per budget it finished (``results_step*.json``, or
    ``results.json`` alone from runs of before those files), by steps."""
    by_steps = {}
    for path in [*run.glob("results_step*.json"), run / "results.json"]:
        if path.is_file():
            r = json.loads(path.read_text())
            r["last_frame_kl"] = r["kl"][-1]
            # the training call that ended at this budget ran `pgtm train --compile`
            r["compiled"] = bool(r.get("config", {}).get("compile", False))
            # None: a key that runs of older code did not write (the median recall KL)
            by_steps[r["steps"]] = {key: r.get(key) for key in RESULT_KEYS}
    return [by_steps[steps] for steps in sorted(by_steps)]


def run_summary(run: Path) -> dict | None:
    points = curve(run)
    if not points:
        return None
    divergences = run / "rollbacks.json"
    divergences = json.loads(divergences.read_text()) if divergences.is_file() else {}
    evaluations = final_evaluations(run)
    return {
        "seed": run.name,
        "last_eval_step": points[-1][0],
        "recall_kl_last_eval": points[-1][1],
        "rollbacks": len(divergences.get("rollbacks", [])),
        # the step whose divergence stopped the run (it is not training), or None
        "stopped_at": divergences.get("stopped", {}).get("diverged_at"),
        # finished: no periodic evaluation after the last final one (a run training has one)
        "finished": bool(evaluations) and evaluations[-1]["steps"] >= points[-1][0],
        "results": evaluations,
        "curve": points,
    }


def _with_results(summary: dict) -> dict:
    """A run of an earlier ``summary.json``: one written before ``results`` lists the final
    evaluations held a finished run's numbers at the top level."""
    if "results" in summary:
        return summary
    flat = {key: summary[key] for key in RESULT_KEYS if key in summary}
    rest = {key: value for key, value in summary.items() if key not in RESULT_KEYS}
    return {**rest, "results": [flat] if summary["finished"] else []}


def mean_sd(values: list[float | None]) -> dict | None:
    """Mean ± sd of the values that are there (``None``: none is)."""
    values = [value for value in values if value is not None]
    if not values:
        return None
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1
            else None, "n": len(values)}


def model_of(row_name: str) -> str:
    """The model of a row: ``"dnc [min-scale-0.01]"`` -> ``"dnc"``."""
    return row_name.split(" [")[0]


def row_order(row_name: str) -> tuple:
    return MODELS.index(model_of(row_name)), row_name


def collect(runs: Path, previous: dict | None = None, variants: Path | None = None) -> dict:
    """Per experiment and row (a model, or ``MODEL [VARIANT]``), the summaries of its runs (one
    per seed) and their statistics.

    :param variants: the folder of variant runs, ``VARIANT/EXPERIMENT/MODEL/seedS``.
    :param previous: an earlier ``summary.json``: its runs whose folders are not under ``runs``
        (e.g. lost with a machine) are kept, marked ``"from_summary": true``; a run folder that
        is there replaces its earlier summary.
    """
    found: dict[str, dict[str, dict[str, dict]]] = {}
    variant_folders = sorted(p for p in variants.iterdir() if p.is_dir()) if variants else []
    roots = [(runs, "")] + [(variant, f" [{variant.name}]") for variant in variant_folders]
    for root, suffix in roots:
        for experiment in sorted(p for p in root.iterdir() if p.is_dir()):
            for model in MODELS:
                for seed in sorted((experiment / model).glob("seed*")):
                    summary = run_summary(seed)
                    if summary is not None:
                        found.setdefault(experiment.name, {}).setdefault(
                            model + suffix, {})[seed.name] = summary
    for experiment, rows in (previous or {}).items():
        for model, row in rows.items():
            for summary in row["runs"]:
                seeds = found.setdefault(experiment, {}).setdefault(model, {})
                if summary["seed"] not in seeds:
                    seeds[summary["seed"]] = {**_with_results(summary), "from_summary": True}
    table = {}
    for experiment in sorted(found):
        for model in sorted(found[experiment], key=row_order):
            by_seed = found[experiment][model]
            summaries = [by_seed[seed] for seed in sorted(by_seed)]
            budgets: dict[int, list[tuple[dict, bool]]] = {}
            for summary in summaries:
                for evaluation in summary["results"]:
                    budgets.setdefault(evaluation["steps"], []).append(
                        (evaluation, summary.get("from_summary", False)))
            # per budget (steps, a string in JSON), mean ± sd over the seeds that reached it
            table.setdefault(experiment, {})[model] = {"runs": summaries, "budgets": {
                steps: {**{key: mean_sd([e.get(key) for e, _ in budgets[steps]])
                           for key in STATISTICS},
                        "kept_from_summary": sum(kept for _, kept in budgets[steps]),
                        "compiled": sum(bool(e.get("compiled")) for e, _ in budgets[steps])}
                for steps in sorted(budgets)}}
    return table


def cell(stat: dict | None, digits: int = 2) -> str:
    if stat is None:
        return "—"
    sd = "" if stat["sd"] is None else f" ± {stat['sd']:.{digits}f}"
    return f"{stat['mean']:.{digits}f}{sd} (n={stat['n']})"


def markdown(table: dict, command: str) -> str:
    lines = ["# The paper's experiments: our runs", "", f"`{command}`", "",
             "Per experiment and model: at the end of the run (held-out sequences, the final "
             "evaluation of `pgtm train`), the recall-phase KL per step (its mean over the "
             "sequences, and its median over the sequences of each run: one sequence's sharp, "
             "wrong prior moves the mean, not the median; runs of older code did not record "
             "it), the last frame's KL "
             "and the pre-recall KL per step (nats), the ELBO and the IWAE per frame (nats), "
             "mean ± sd over the finished seeds (n); steps trained; rollbacks after a loss "
             "explosion. Runs still training, or stopped by a loss explosion past their last "
             "rollback (said so), show their last periodic evaluation's recall KL. "
             "*Paper*: its last-frame KL at 10^5 and 10^6 iterations and the iteration where "
             "its curve turns down below the VRNN's, read from its figures (± the reading "
             "uncertainty; at 10^4 iterations its curves cannot be read). One line per budget "
             "the seeds finished (a run continued to a larger budget counts in each). † after "
             "a step count: some of its runs' folders are gone, their results kept from the "
             "earlier summary (no curve in the figure if it predates the curves). ᶜ after a "
             "step count: some of its runs trained their last stretch to it through the "
             "compiled objective (`pgtm train --compile`: the same trace ELBO; its rounding "
             "differs from the eager step's).", ""]
    for experiment, rows in table.items():
        lines += [f"## {experiment}", "",
                  "| model | steps | recall KL | recall KL, median sequence | last-frame KL | "
                  "pre-recall KL | ELBO / frame | IWAE / frame | rollbacks | unfinished runs "
                  "(step: recall KL) | paper: last-frame KL at 1e5 / 1e6 | paper: memory in "
                  "use from |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|"]
        for model, row in rows.items():
            pending = ", ".join(f"{s['seed']} {s['last_eval_step']}: {s['recall_kl_last_eval']:.2f}"
                                + (f" (stopped: diverged at {s['stopped_at']})"
                                   if s.get("stopped_at") else "")
                                for s in row["runs"] if not s["finished"]) or "—"
            rollbacks = sum(s["rollbacks"] for s in row["runs"])
            paper = PAPER.get(experiment, {}).get(model_of(model))
            paper_cells = ("— | —" if paper is None else
                           f"{paper[0]:.1f} / {paper[1]:.1f} ± {paper[2]:.1f} | {paper[3]}")
            # one line per budget the seeds finished (a run continued past 10^4 is in both)
            for steps, stats in (row["budgets"] or {"—": None}).items():
                cells = ([cell(stats[key], 1 if key.endswith("per_frame") else 2)
                          for key in STATISTICS] if stats else ["—"] * len(STATISTICS))
                marks = ("†" if stats and stats["kept_from_summary"] else "") + (
                    "ᶜ" if stats and stats["compiled"] else "")
                lines.append(f"| {model} | {steps}{marks} | "
                             + " | ".join(cells)
                             + f" | {rollbacks} | {pending} | {paper_cells} |")
        lines.append("")
    return "\n".join(lines + depth_table(table))


#: the curve of a run longer than this many steps is read at every multiple of it
DEPTH_STRIDE = 10**4


def depth_table(table: dict) -> list[str]:
    """Markdown lines: every run trained past ``2 * DEPTH_STRIDE`` steps, its periodic recall
    KL at each multiple of :data:`DEPTH_STRIDE` and its final evaluations at ``2 *
    DEPTH_STRIDE`` steps or more (``[]`` when there is no such run)."""
    runs = [(experiment, model, run) for experiment, rows in table.items()
            for model, row in rows.items() for run in row["runs"]
            if run.get("curve") and run["curve"][-1][0] >= 2 * DEPTH_STRIDE]
    if not runs:
        return []
    longest = max(run["curve"][-1][0] for _, _, run in runs)
    marks = range(2 * DEPTH_STRIDE, longest + 1, DEPTH_STRIDE)
    lines = ["## Depth runs", "",
             f"Runs trained past {2 * DEPTH_STRIDE:,} steps: the held-out recall KL per step of "
             f"the periodic evaluation at every {DEPTH_STRIDE:,} steps (— where the run has "
             "none), and its final evaluations from that budget on.", "",
             "| experiment | model | seed | " + " | ".join(f"{m:,}" for m in marks)
             + " | final evaluations (steps: recall KL) |",
             "|---|---|---|" + "---:|" * len(marks) + "---|"]
    for experiment, model, run in runs:
        at = dict(run["curve"])  # step -> recall KL
        cells = [f"{at[m]:.2f}" if m in at else "—" for m in marks]
        finals = ", ".join(f"{r['steps']:,}: {r['recall_kl']:.2f}" for r in run["results"]
                           if r["steps"] >= 2 * DEPTH_STRIDE) or "—"
        lines.append(f"| {experiment} | {model} | {run['seed']} | " + " | ".join(cells)
                     + f" | {finals} |")
    return [*lines, ""]


def plot(table: dict, path: Path) -> None:
    experiments = list(table)
    columns = min(4, len(experiments))
    rows = -(-len(experiments) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 4 * rows), squeeze=False)
    for ax in axes.flat[len(experiments):]:
        ax.set_visible(False)
    for ax, experiment in zip(axes.flat, experiments, strict=False):
        for model, row in table[experiment].items():
            curves = [run["curve"] for run in row["runs"] if run.get("curve")]
            for i, points in enumerate(curves):
                steps, kl = zip(*points, strict=True)
                ax.plot(steps, kl, color=f"C{MODELS.index(model_of(model))}", lw=1.2,
                        alpha=0.8, ls="--" if model != model_of(model) else "-",
                        label=model if i == 0 else None)
        if not ax.lines:
            ax.text(0.5, 0.5, "no curve (run folders gone)", ha="center", va="center",
                    transform=ax.transAxes, color="0.4")
        longest = max((line.get_xdata()[-1] for line in ax.lines), default=0)
        log_steps = longest > 3 * DEPTH_STRIDE  # depth runs beside 10^4-step ones: both readable
        if log_steps:
            ax.set_xscale("log")
        ax.set_xlabel("training steps (batch 32)" + (", log scale" if log_steps else ""))
        ax.set_ylabel("held-out recall-phase KL per step (nats)")
        ax.set_title(experiment)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8, framealpha=0.5)  # the curves show through
    fig.suptitle("Learning curves of the paper's experiments (parameter-matched models, 1.86 M; "
                 "one line per seed; vrnn-x: the VRNN fed the previous frame; dashed: a "
                 "variant, its options in brackets)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="the runs folder (runs/paper)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--previous", type=Path, default=None,
                        help="an earlier summary.json whose runs are kept where their folders "
                        "are not under RUNS (default: OUT/summary.json if it exists)")
    parser.add_argument("--variants", type=Path, default=None,
                        help="the folder of variant runs (runs/paper-variants), rows "
                        "'MODEL [VARIANT]'")
    args = parser.parse_args(argv)
    if not args.runs.is_dir():
        parser.error(f"runs: expected a folder of run folders, got {args.runs}")
    previous_path = args.previous or args.out / "summary.json"
    if args.previous is not None and not previous_path.is_file():
        parser.error(f"--previous: expected an earlier summary.json, got {previous_path}")
    previous = json.loads(previous_path.read_text()) if previous_path.is_file() else None
    if args.variants is not None and not args.variants.is_dir():
        parser.error(f"--variants: expected a folder of variant runs, got {args.variants}")
    table = collect(args.runs, previous, args.variants)
    if not table:
        parser.error(f"no runs with evaluations under {args.runs}")
    args.out.mkdir(parents=True, exist_ok=True)
    variants = "" if args.variants is None else f" --variants {args.variants}"
    command = f"python examples/studies/paper_report.py {args.runs}{variants} --out {args.out}"
    save_json(table, args.out / "summary.json")
    write_text_atomically(args.out / "summary.md", markdown(table, command))
    plot(table, args.out / "learning_curves.png")
    print(f"wrote {args.out}/summary.json, summary.md, learning_curves.png")
    return table


if __name__ == "__main__":
    main()
