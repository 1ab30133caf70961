"""``pgtm train``, ``pgtm evaluate`` and ``pgtm sample`` (registered in :mod:`pgtm.cli`)."""

from __future__ import annotations

import argparse
import json
import sys

from pgtm.cli import (
    add_data_options,
    add_optimisation_options,
    add_task_options,
    add_threads_option,
    set_threads,
    task_from_args,
)


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    from pgtm.models import LIKELIHOODS, MEMORIES, NETWORKS, POSTERIORS, PRIORS

    group = parser.add_argument_group("model")
    group.add_argument("--model", default="introspective", choices=sorted(MEMORIES),
                       help="memory of the GTM (vrnn = none); default introspective")
    group.add_argument("--prior", default="learned-gaussian", choices=sorted(PRIORS))
    group.add_argument("--posterior", default="gaussian", choices=sorted(POSTERIORS))
    group.add_argument("--likelihood", default=None, choices=sorted(LIKELIHOODS),
                       help="default: bernoulli for binarised frames, else continuous-bernoulli")
    group.add_argument("--latent-size", type=int, default=32)
    group.add_argument("--controller-size", type=int, default=256)
    group.add_argument("--network", default="auto", choices=("auto", *NETWORKS),
                       help="encoder/decoder: auto (default: conv for image frames, else mlp), "
                       "conv, mlp or inception (inception-like blocks with batch norm)")
    group.add_argument("--num-heads", type=int, default=None, help="memory read heads")
    group.add_argument("--weighting", default=None,
                       choices=("softplus", "softmax", "unnormalised"),
                       help="introspective read weights (default softplus)")
    group.add_argument("--sparsity", type=float, default=None,
                       help="introspective l1/2 penalty alpha (default 0)")
    _add_memory_specific_options(group)
    group.add_argument("--orthogonal-init", action="store_true",
                       help="orthogonal initialisation of the controller's recurrent matrix")


#: command-line flag -> (model, option of its memory, type, help)
_MEMORY_SPECIFIC_OPTIONS = {
    "--fast-size": ("fast-weights", "size", int, "fast-weights hidden/read size (default 160)"),
    "--fast-decay": (
        "fast-weights", "decay", float, "fast-weights decay lambda in [0, 1] (default 0.9)"
    ),
    "--fast-learning-rate": (
        "fast-weights", "fast_learning_rate", float,
        "fast-weights learning rate eta > 0 (default 0.5)",
    ),
    "--inner-steps": (
        "fast-weights", "inner_steps", int, "fast-weights inner-loop steps S >= 1 (default 1)"
    ),
    "--kanerva-slots": ("kanerva", "num_slots", int, "kanerva memory slots K (default 32)"),
    "--kanerva-code-size": (
        "kanerva", "code_size", int, "kanerva code/read size C (default 160)"
    ),
    "--kanerva-address-regulariser": (
        "kanerva", "address_regulariser", float,
        "kanerva least-squares address ridge lambda > 0 (default 1)",
    ),
    "--kanerva-write-noise": (
        "kanerva", "write_noise", float, "kanerva write-noise variance sigma^2 > 0 (default 1)"
    ),
    "--dnc-read-strength-init": (
        "dnc", "read_strength_init", float,
        "dnc read key strength beta > 1 at initialisation (default about 1.7)",
    ),
    "--dnc-content-mode-init": (
        "dnc", "content_mode_init", float,
        "dnc probability of the content read mode at initialisation, in (0, 1) "
        "(default about 1/3)",
    ),
    "--dnc-time-stamp-size": (
        "dnc", "time_stamp_size", int,
        "dnc time-stamp size D (even, < word size): the last D numbers of each word stamp the "
        "step that wrote it (default 0: none)",
    ),
}


def _add_memory_specific_options(group) -> None:
    for flag, (_, _, kind, text) in _MEMORY_SPECIFIC_OPTIONS.items():
        group.add_argument(flag, type=kind, default=None, help=text)


def _memory_specific_options_from_args(args, options: dict) -> None:
    for flag, (model, name, _, _) in _MEMORY_SPECIFIC_OPTIONS.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"), None)
        if value is not None:
            if args.model != model:
                raise ValueError(f"{flag} applies to --model {model} only")
            options[name] = value


def model_options_from_args(args) -> dict:
    options = {
        "prior": args.prior,
        "posterior": args.posterior,
        "latent_size": args.latent_size,
        "controller_size": args.controller_size,
        "network": args.network,
        "orthogonal_init": args.orthogonal_init,
    }
    if args.likelihood is not None:
        options["likelihood"] = args.likelihood
    if args.num_heads is not None:
        if args.model == "fast-weights":
            raise ValueError("--num-heads does not apply to --model fast-weights (it has no "
                             "read heads; its read size is --fast-size)")
        if args.model == "kanerva":
            raise ValueError("--num-heads does not apply to --model kanerva (it has one read; "
                             "its read size is --kanerva-code-size)")
        options["num_heads"] = args.num_heads
    for name in ("weighting", "sparsity"):
        if getattr(args, name) is not None:
            if args.model != "introspective":
                raise ValueError(f"--{name} applies to --model introspective only")
            options[name] = getattr(args, name)
    _memory_specific_options_from_args(args, options)
    return options


# ---------------------------------------------------------------------- Memory Forcing (train)


#: command-line flag -> option of :class:`~pgtm.inference.memory_forcing.MemoryForcing`
_MEMORY_FORCING_OPTIONS = {
    "--mf-weight": "weight",
    "--mf-accuracy-gate": "accuracy_gate",
    "--mf-update-gate": "update_gate",
}


def _add_memory_forcing_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "memory forcing", "adversarial training of teacher-forced vs free-running dynamics "
        "(pgtm.inference.memory_forcing)")
    group.add_argument("--memory-forcing", action="store_true",
                       help="train with Memory Forcing: discriminators on the controller's "
                       "hidden states and on the memory")
    group.add_argument("--mf-weight", type=float, default=None,
                       help="weight of the adversarial generator term (default 1)")
    group.add_argument("--mf-accuracy-gate", type=float, default=None,
                       help="the generator term counts only when a discriminator's batch "
                       "accuracy is above this (default 0.75)")
    group.add_argument("--mf-update-gate", type=float, default=None,
                       help="a discriminator is updated only while its batch accuracy is below "
                       "this (default 0.99)")


def memory_forcing_from_args(args) -> dict | None:
    """Options of :class:`~pgtm.inference.memory_forcing.MemoryForcing` (the flags given), or
    ``None`` without ``--memory-forcing``."""
    given = {name: getattr(args, flag.lstrip("-").replace("-", "_"))
             for flag, name in _MEMORY_FORCING_OPTIONS.items()}
    if not args.memory_forcing:
        flags = [flag for flag, name in _MEMORY_FORCING_OPTIONS.items() if given[name] is not None]
        if flags:
            raise ValueError(f"{flags[0]} applies with --memory-forcing only")
        return None
    return {name: value for name, value in given.items() if value is not None}


def _cmd_train(args) -> int:
    from pgtm.inference.experiment import completed_results, run_experiment
    from pgtm.inference.lifecycle import TrainingInterrupted
    from pgtm.inference.train import TrainConfig, TrainingDiverged

    set_threads(args.threads)
    task = task_from_args(args)
    options = model_options_from_args(args)
    config = TrainConfig(
        steps=args.steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
        clip_norm=args.clip_norm, elbo=args.elbo, kl_anneal_steps=args.kl_anneal_steps,
        num_particles=_train_particles(args),
        device=args.device, seed=args.seed, eval_every=args.eval_every,
        checkpoint_every=args.checkpoint_every, log_every=args.log_every, out_dir=args.out,
        progress=not args.no_progress,
    )
    finished = None if args.restart else completed_results(args.out, config.steps)
    if finished is not None:
        print(f"pgtm: {args.out} is complete at step {finished['steps']}: nothing to train "
              f"(pgtm evaluate {args.out} re-evaluates it; --restart trains afresh)",
              file=sys.stderr)
        _print_summary(finished, args.out)
        return 0
    try:
        summary = run_experiment(
            args.model, task, config, eval_sequences=args.eval_sequences,
            iwae_particles=args.iwae_particles, model_options=options, resume=not args.restart,
            data_dir=args.data_dir, memory_forcing=memory_forcing_from_args(args),
        )
    except TrainingInterrupted as stopped:
        print(f"pgtm: {stopped}", file=sys.stderr)
        return stopped.exit_status
    except TrainingDiverged as diverged:
        print(f"pgtm: error: {diverged}", file=sys.stderr)
        return 1
    _print_summary(summary, args.out)
    return 0


def _train_particles(args) -> int:
    if args.train_particles is None:
        return 4 if args.elbo == "fivo" else 1
    if args.train_particles < 1:
        raise ValueError(f"--train-particles must be >= 1, got {args.train_particles}")
    return args.train_particles


def _print_summary(summary: dict, out: str) -> None:
    keys = ("recall_kl", "prerecall_kl", "elbo", "iwae", "iwae_k", "steps", "seconds",
            "parameters", "khat_max")
    print(json.dumps({k: summary.get(k) for k in keys}, indent=1))
    print(f"results, checkpoint and pictures in {out}/")


def _register_train(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train a GTM on a task with SVI, then evaluate it (ELBO, IWAE, KL)")
    add_task_options(parser)
    add_data_options(parser)
    _add_model_options(parser)
    group = parser.add_argument_group("training")
    group.add_argument("--out", required=True, metavar="DIR",
                       help="run folder: checkpoint, log, results, pictures")
    add_optimisation_options(group, default_steps=1000)
    group.add_argument("--clip-norm", type=float, default=10.0)
    group.add_argument("--elbo", default="trace", choices=("trace", "meanfield", "fivo"),
                       help="objective: trace (Trace_ELBO, default), meanfield "
                       "(TraceMeanField_ELBO) or fivo (the particle filter's bound)")
    group.add_argument("--train-particles", type=int, default=None, metavar="K",
                       help="particles of the objective per sequence (default 1; 4 for fivo)")
    group.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    add_threads_option(group)
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--eval-every", type=int, default=250)
    group.add_argument("--checkpoint-every", type=int, default=250)
    group.add_argument("--log-every", type=int, default=10)
    group.add_argument("--eval-sequences", type=int, default=64,
                       help="held-out sequences of the final evaluation")
    group.add_argument("--iwae-particles", type=int, default=100)
    group.add_argument("--restart", action="store_true",
                       help="start afresh instead of resuming from DIR/checkpoint.pt")
    group.add_argument("--no-progress", action="store_true")
    _add_memory_forcing_options(parser)
    parser.set_defaults(func=_cmd_train)


def _cmd_evaluate(args) -> int:
    from pathlib import Path

    from pgtm.inference.evaluate import save_json
    from pgtm.inference.experiment import (
        bound_sweep_of_gtm,
        elbo_outliers_of_gtm,
        load_run,
        test_batch,
    )
    from pgtm.plotting import plot_bounds_vs_particles

    if any(k < 1 for k in args.particles):
        raise ValueError(f"--particles must be integers >= 1, got {args.particles}")
    if not 0.0 <= args.ess_threshold <= 1.0:
        raise ValueError(f"--ess-threshold must be in [0, 1], got {args.ess_threshold}")
    if args.outliers < 0:
        raise ValueError(f"--outliers must be >= 0, got {args.outliers}")
    if args.outliers and args.bound == "smc":
        raise ValueError("--outliers needs the IWAE pass: use --bound iwae or both")
    set_threads(args.threads)
    gtm, task = load_run(args.run, device=args.device, data_dir=args.data_dir)
    batch = test_batch(task, args.sequences)
    particles = sorted(set(args.particles))
    sweep = bound_sweep_of_gtm(
        gtm, batch, seed=args.seed, particles=particles, bound=args.bound,
        chunk_size=args.chunk_size, resampling=args.resampling, ess_threshold=args.ess_threshold,
    )
    results = {**sweep.pop("evaluation", {}), "bounds": sweep}
    out = args.out or f"{args.run}/evaluation_k{'-'.join(map(str, particles))}.json"
    save_json(results, out)
    if "elbo_mean" in results:
        keys = ("elbo_mean", "iwae_mean", "recall_kl", "prerecall_kl", "kl_mean", "nll_mean",
                "penalty", "khat_max", "khat_reading")
        print(json.dumps({k: results.get(k) for k in keys}, indent=1))
    _print_bounds(sweep)
    print(f"per-sequence, per-frame and per-step results in {out}")
    if len(particles) > 1:
        picture = plot_bounds_vs_particles(
            str(Path(out).with_suffix(".png")), {Path(args.run).name: sweep},
            f"{Path(args.run).name}: bounds against K ({sweep['num_sequences']} held-out "
            "sequences)")
        print(f"wrote {picture}")
    if args.outliers:
        outliers = elbo_outliers_of_gtm(gtm, batch, particles[-1], chunk_size=args.chunk_size,
                                        seed=args.seed, num_sequences=args.outliers)
        _print_outliers(outliers)
    return 0


def _print_bounds(sweep: dict) -> None:
    """One line per K: each bound per frame (and per sequence), SMC's ESS and resampling."""
    if "elbo" in sweep:
        elbo = sweep["elbo"]
        print(f"ELBO: {elbo['per_frame_mean']:.4f} nats/frame ({elbo['mean']:.2f} per sequence)")
    for k in sweep["particles"]:
        line = [f"K={k}:"]
        for bound in ("iwae", "smc"):
            if bound in sweep:
                entry = sweep[bound][str(k)]
                line.append(f"{bound.upper()} {entry['per_frame_mean']:.4f}/frame "
                            f"({entry['mean']:.2f}/seq)")
        if "smc" in sweep:
            entry = sweep["smc"][str(k)]
            line.append(f"SMC min mean ESS {min(entry['ess']):.1f}, resampled after "
                        f"{100 * entry['resampling_rate']:.0f}% of steps")
        print("  ".join(line))


def _print_outliers(outliers: list[dict]) -> None:
    print("lowest-ELBO sequences: their lowest-weight sample and its steps of largest KL")
    for o in outliers:
        print(f"sequence {o['sequence']}: ELBO {o['elbo']:.6g}, sample {o['particle']} "
              f"log w {o['log_w']:.6g}")
        for s in o["steps"]:
            where = "" if s["dimension"] is None else (
                f"; dim {s['dimension']}: z {s['z']:.3g}, posterior {s['posterior_loc']:.3g} "
                f"± {s['posterior_scale']:.3g}, prior {s['prior_loc']:.3g} "
                f"± {s['prior_scale']:.3g} ({s['prior_z_score']:.3g} prior sd away)")
            print(f"  step {s['step']}: log q - log p {s['kl']:.4g}{where}")


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    """The trained run to load, and where."""
    parser.add_argument("run", metavar="RUN_DIR", help="folder written by pgtm train")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", default=None, help="override the run's data folder")
    add_threads_option(parser)


def _register_evaluate(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="ELBO, IWAE and SMC bounds at one or more K, per sequence and per frame, per-step "
        "KL and PSIS k-hat of a trained run")
    _add_run_options(parser)
    parser.add_argument("--particles", type=int, nargs="+", default=[1000], metavar="K",
                        help="particle counts, e.g. 1 10 100 1000 (default 1000)")
    parser.add_argument("--bound", default="iwae", choices=("iwae", "smc", "both"),
                        help="iwae (with the ELBO, per-step KL and PSIS; default), smc (the "
                        "particle filter's bound) or both")
    parser.add_argument("--resampling", default="systematic",
                        choices=("systematic", "multinomial"), help="SMC resampling scheme")
    parser.add_argument("--ess-threshold", type=float, default=0.5,
                        help="SMC resamples when ESS <= this * K (0: never, 1: every step; "
                        "default 0.5)")
    parser.add_argument("--chunk-size", type=int, default=100)
    parser.add_argument("--sequences", type=int, default=64, help="held-out sequences")
    parser.add_argument("--out", default=None, metavar="FILE.json")
    parser.add_argument("--outliers", type=int, default=0, metavar="N",
                        help="also show the samples behind the N lowest per-sequence ELBOs")
    parser.set_defaults(func=_cmd_evaluate)


def _cmd_sample(args) -> int:
    import torch

    from pgtm.inference.experiment import load_run, test_batch
    from pgtm.plotting import plot_read_weights, save_sequences

    set_threads(args.threads)
    gtm, task = load_run(args.run, device=args.device, data_dir=args.data_dir)
    if not 0 <= args.observe <= task.length:
        raise ValueError(f"--observe must be in [0, {task.length}], got {args.observe}")
    torch.manual_seed(args.seed)
    batch = test_batch(task, args.num, seed=args.seed)
    device = next(gtm.parameters()).device
    c = None if batch.c is None else batch.c.to(device)
    out = gtm.generate(task.length, x=batch.x.to(device), c=c, observed_steps=args.observe)
    highlight = torch.arange(task.length) >= args.observe
    rows = [batch.x, out.frames] if args.observe else [out.frames]
    save_sequences(args.out, rows, highlight)
    print(f"wrote {args.out}: " + ("data rows, then " if args.observe else "")
          + f"samples (first {args.observe} frames observed, the rest generated, in red)")
    if out.weights is not None:
        heat_map = args.out.rsplit(".", 1)[0] + "_read_weights.png"
        gates = None if out.gates is None else out.gates[0]
        plot_read_weights(heat_map, out.weights[0], gates, title="read weights, sequence 0")
        print(f"wrote {heat_map}")
    return 0


def _register_sample(subparsers) -> None:
    parser = subparsers.add_parser(
        "sample", help="generate sequences from a trained run (optionally observing a prefix)")
    _add_run_options(parser)
    parser.add_argument("--out", required=True, metavar="FILE.png")
    parser.add_argument("--observe", type=int, default=0,
                        help="observe the first N frames of held-out sequences, generate the rest")
    parser.add_argument("--num", type=int, default=8, help="number of sequences")
    parser.set_defaults(func=_cmd_sample)


REGISTER = {"train": _register_train, "evaluate": _register_evaluate, "sample": _register_sample}
