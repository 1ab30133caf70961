"""Train and evaluate several GTMs on one task at the same budget; write the comparison.

Writes ``<out>/<model>/`` (checkpoint, log, pictures, results.json) for every model, then, over
every model found in ``<out>`` (so separate processes, e.g. one per core, can share it),
``<out>/summary.json`` (model -> recall_kl, prerecall_kl, elbo, iwae, iwae_k, steps, seconds,
parameters), ``<out>/summary.md`` and ``<out>/kl_per_step.png``.

The perfect-recall experiment of docs/results/perfect_recall.md::

    python examples/studies/compare_models.py perfect-recall --models vrnn introspective \\
        --network mlp --steps 6000 --threads 1 --out results/perfect_recall \\
        --data-dir ../shared/data

Re-running continues each model from its checkpoint (``--steps`` is the total).
``--parameter-budget 1860000`` matches the models' sizes as the paper does.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pgtm.cli import add_optimisation_options, add_threads_option, set_threads
from pgtm.cli.allocator import keep_freed_memory
from pgtm.experiment import run_experiment, write_summary
from pgtm.inference.train import TrainConfig
from pgtm.models import MEMORIES
from pgtm.tasks import make_task


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task")
    parser.add_argument("--models", nargs="+", default=["vrnn", "introspective"],
                        choices=sorted(MEMORIES))
    parser.add_argument("--out", required=True)
    add_optimisation_options(parser, default_steps=3000)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--eval-sequences", type=int, default=128)
    parser.add_argument("--iwae-particles", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    add_threads_option(parser)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--network", default="auto", choices=("auto", "conv", "mlp", "inception"),
                        help="encoder/decoder (auto: conv for image frames, else mlp)")
    parser.add_argument("--parameter-budget", type=int, default=None, metavar="N",
                        help="match every model at N parameters (within 2%%) by choosing its "
                        "controller size; the paper's models have about 1860000")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("-l", "--prerecall-length", type=int, default=None)
    parser.add_argument("-k", "--recall-length", type=int, default=None)
    args = parser.parse_args(argv)
    model_options = {"network": args.network}
    if args.parameter_budget is not None:
        model_options["parameter_budget"] = args.parameter_budget
    keep_freed_memory()
    set_threads(args.threads)
    task = make_task(args.task, data_dir=args.data_dir, prerecall_length=args.prerecall_length,
                     recall_length=args.recall_length)
    for memory in args.models:
        config = TrainConfig(
            steps=args.steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
            kl_anneal_steps=args.kl_anneal_steps, eval_every=args.eval_every,
            checkpoint_every=args.eval_every, log_every=50,
            seed=args.seed, device=args.device, out_dir=f"{args.out}/{memory}",
        )
        summary = run_experiment(
            memory, task, config, eval_sequences=args.eval_sequences,
            iwae_particles=args.iwae_particles, model_options=model_options,
            data_dir=args.data_dir,
        )
        print(memory, {k: summary[k] for k in ("recall_kl", "prerecall_kl", "iwae")})
    # every model run so far into --out (several processes may share it, one model each)
    summaries = {
        memory: json.loads(path.read_text())
        for memory in MEMORIES
        if (path := Path(args.out) / memory / "results.json").is_file()
    }
    write_summary(summaries, args.out, task.name)
    print(open(f"{args.out}/summary.md").read())


if __name__ == "__main__":
    main()
