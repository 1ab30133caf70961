"""The sparsity dynamics of the Introspective GTM's read heads, for four weightings.

A published replication of the Introspective GTM reported that read weights stay diffuse for a
long time, then turn one-hot with all but one gated head switched off; that an l1/2 sparsity
penalty made things worse; that unnormalised weights with a ``b (sum w - 1)^2`` penalty train
about as well as normalised softplus; and (the GTMM paper) that softmax converges more slowly.
This script trains perfect recall (l=10, k=5) with each weighting for several seeds at the same
budget and reports, per variant:

* steps to memory use: the first periodic evaluation (32 held-out sequences, one particle) whose
  recall-phase KL is below ``--threshold`` nats while the pre-recall KL is at least
  ``--min-prerecall-kl`` (early in training every KL is small because the latents carry nothing
  yet; with the pre-recall frames encoded, a small recall KL means they are recalled from
  memory); ``None``: not within the budget,
* the final recall-phase KL and IWAE bound (``--eval-sequences`` sequences, K particles),
* the final entropy of the most-used head's read weights and its hit rate (the fraction of
  recall steps where it attends the slot of the recalled latent).

Each run writes its usual folder (``read_heads.jsonl``/``read_heads.png`` hold the per-head
entropy, max weight, gate and slot heat maps over training); the comparison goes to
``<out>/summary.{json,md}`` and ``<out>/dynamics.png``. Runs resume from their checkpoints and
separate processes can share ``--out`` (e.g. one per core, split by ``--seeds``)::

    python examples/studies/sparsity_study.py --seeds 0 1 2 --steps 2000 \\
        --out results/sparsity_study --data-dir ../shared/data --threads 1

``--variants softplus-orthogonal`` adds the orthogonal-initialisation comparison (softplus
weights, orthogonal recurrent matrix of the controller) at the same budget.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from pgtm.cli import add_threads_option, set_threads
from pgtm.cli.allocator import keep_freed_memory
from pgtm.experiment import run_experiment
from pgtm.inference.read_heads import ReadHeadLog
from pgtm.inference.train import TrainConfig
from pgtm.plotting import _prepare, plt
from pgtm.tasks import make_task

#: model options of each variant (``--sparsity-alpha`` sets the l1/2 weight)
VARIANTS = {
    "softplus": {"weighting": "softplus"},
    "softmax": {"weighting": "softmax"},
    "unnormalised": {"weighting": "unnormalised"},
    "softplus-sparse": {"weighting": "softplus", "sparsity": None},
    "softplus-orthogonal": {"weighting": "softplus", "orthogonal_init": True},
}
DEFAULT_VARIANTS = ["softplus", "softmax", "unnormalised", "softplus-sparse"]


def read_log(run: Path) -> list[dict]:
    """Rows of ``log.csv`` that carry an evaluation, as dicts of floats."""
    lines = (run / "log.csv").read_text().splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, line.split(","), strict=True)) for line in lines[1:]]
    return [{k: float(v) for k, v in row.items() if v != ""} for row in rows
            if row.get("recall_kl", "") != ""]


def steps_to_memory_use(evaluations: list[dict], threshold: float,
                        min_prerecall_kl: float) -> int | None:
    """The first evaluated step whose recall-phase KL is below ``threshold`` while its
    pre-recall KL is at least ``min_prerecall_kl``."""
    return next((int(e["step"]) for e in evaluations
                 if e["recall_kl"] < threshold and e["prerecall_kl"] >= min_prerecall_kl), None)


def most_used_head(record: dict) -> int:
    """The head with the largest gated maximum weight in one ``read_heads.jsonl`` record."""
    gated = [g * w for g, w in zip(record["gate"], record["max_weight"], strict=True)]
    return gated.index(max(gated))


def run_summary(run: Path, threshold: float, min_prerecall_kl: float) -> dict:
    results = json.loads((run / "results.json").read_text())
    heads = ReadHeadLog(run).read()[-1]
    best = most_used_head(heads)
    return {
        "steps_to_memory_use": steps_to_memory_use(read_log(run), threshold, min_prerecall_kl),
        "recall_kl": results["recall_kl"],
        "prerecall_kl": results["prerecall_kl"],
        "iwae": results["iwae"],
        "steps": results["steps"],
        "seconds": results["seconds"],
        "best_head_entropy": heads["entropy"][best],
        "best_head_gate": heads["gate"][best],
        "hit_rate": heads["best_hit_rate"],
        "open_heads": sum(g > 0.5 for g in heads["gate"]),
    }


def _mean_sd(values: list[float]) -> list[float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return [None, None]
    return [statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0]


def summarise(out: Path, threshold: float, min_prerecall_kl: float) -> dict:
    """Collect every finished run under ``out`` into ``summary.json``/``summary.md`` and
    draw ``dynamics.png``."""
    table = {}
    for variant in VARIANTS:
        runs = sorted(p.parent for p in (out / variant).glob("seed*/results.json"))
        if not runs:
            continue
        per_seed = {run.name: run_summary(run, threshold, min_prerecall_kl) for run in runs}
        reached = [s["steps_to_memory_use"] for s in per_seed.values()]
        table[variant] = {
            "seeds": len(runs),
            "reached_memory_use": sum(r is not None for r in reached),
            "steps_to_memory_use": reached,
            **{key: _mean_sd([s[key] for s in per_seed.values()]) for key in (
                "recall_kl", "prerecall_kl", "iwae", "best_head_entropy", "hit_rate",
                "open_heads")},
            "per_seed": per_seed,
        }
    (out / "summary.json").write_text(json.dumps(
        {"threshold_nats": threshold, "min_prerecall_kl_nats": min_prerecall_kl,
         "variants": table}, indent=1))
    lines = [
        f"| variant | seeds | reached KL < {threshold:g} | steps to memory use | recall KL "
        "| pre-recall KL | IWAE | best-head entropy | hit rate | open heads |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(pair, digits=2):
        return "n/a" if pair[0] is None else f"{pair[0]:.{digits}f} ± {pair[1]:.{digits}f}"

    for variant, row in table.items():
        steps = ", ".join("—" if s is None else str(s) for s in row["steps_to_memory_use"])
        lines.append(
            f"| {variant} | {row['seeds']} | {row['reached_memory_use']}/{row['seeds']} "
            f"| {steps} | {cell(row['recall_kl'])} | {cell(row['prerecall_kl'])} "
            f"| {cell(row['iwae'], 1)} | {cell(row['best_head_entropy'])} "
            f"| {cell(row['hit_rate'])} | {cell(row['open_heads'], 1)} |"
        )
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    plot_dynamics(out, list(table))
    return table


def plot_dynamics(out: Path, variants: list[str]) -> None:
    """Recall KL, best-head entropy and hit rate over training, one colour per variant."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), layout="constrained")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for colour, variant in zip(colours, variants, strict=False):
        for i, run in enumerate(sorted((out / variant).glob("seed*/results.json"))):
            run = run.parent
            label = variant if i == 0 else None
            evaluations = read_log(run)
            axes[0].plot([e["step"] for e in evaluations], [e["recall_kl"] for e in evaluations],
                         color=colour, label=label, alpha=0.8)
            heads = ReadHeadLog(run).read()
            steps = [r["step"] for r in heads]
            axes[1].plot(steps, [r["entropy"][most_used_head(r)] for r in heads], color=colour,
                         label=label, alpha=0.8)
            axes[2].plot(steps, [r["best_hit_rate"] for r in heads], color=colour, label=label,
                         alpha=0.8)
    for ax, title in zip(axes, ("recall-phase KL (nats)", "entropy of the most-used head (nats)",
                                "hit rate of the most-used head"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[0].legend()
    fig.savefig(_prepare(out / "dynamics.png"), dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", default="results/sparsity_study")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--eval-sequences", type=int, default=64)
    parser.add_argument("--iwae-particles", type=int, default=100)
    parser.add_argument("--sparsity-alpha", type=float, default=0.1,
                        help="alpha of the l1/2 penalty of softplus-sparse")
    parser.add_argument("--threshold", type=float, default=3.0,
                        help="recall-phase KL (nats) below which the memory counts as used")
    parser.add_argument("--min-prerecall-kl", type=float, default=10.0,
                        help="pre-recall KL (nats) the model must have reached to count")
    parser.add_argument("--network", default="mlp", choices=("conv", "mlp"))
    add_threads_option(parser)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--summarise-only", action="store_true")
    args = parser.parse_args(argv)
    keep_freed_memory()
    set_threads(args.threads)
    out = Path(args.out)
    if not args.summarise_only:
        task = make_task("perfect-recall", data_dir=args.data_dir, prerecall_length=10,
                         recall_length=5)
        for seed in args.seeds:
            for variant in args.variants:
                options = {"network": args.network, **VARIANTS[variant]}
                if "sparsity" in options:
                    options["sparsity"] = args.sparsity_alpha
                config = TrainConfig(
                    steps=args.steps, batch_size=32, learning_rate=1e-3, seed=seed,
                    eval_every=args.eval_every, checkpoint_every=500, log_every=50,
                    device=args.device, out_dir=str(out / variant / f"seed{seed}"),
                    progress=False,
                )
                result = run_experiment(
                    "introspective", task, config, eval_sequences=args.eval_sequences,
                    iwae_particles=args.iwae_particles, model_options=options,
                    data_dir=args.data_dir,
                )
                print(variant, seed, {k: round(result[k], 2) for k in ("recall_kl", "iwae")},
                      flush=True)
    summarise(out, args.threshold, args.min_prerecall_kl)
    print((out / "summary.md").read_text())


if __name__ == "__main__":
    main()
