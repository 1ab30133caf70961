"""``pgtm train``: train a GTM on a task (in one process, or data-parallel under torchrun),
then evaluate it."""

from __future__ import annotations

import argparse
import json
import sys

from .options import (
    add_assignments_option,
    add_data_options,
    add_optimisation_options,
    add_task_options,
    add_threads_option,
    assignments,
    check_output_folder,
    device,
    integer,
    non_empty_path,
    number,
    set_threads,
    task_from_args,
)

__all__ = ["memory_forcing_from_args", "model_options_from_args", "register"]


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    from pgtm.models import LIKELIHOODS, MEMORIES, NETWORKS, POSTERIORS, PRIORS

    group = parser.add_argument_group("model")
    group.add_argument("--model", default="introspective", choices=sorted(MEMORIES),
                       help="memory of the GTM (vrnn: none)")
    group.add_argument("--prior", default="learned-gaussian", choices=sorted(PRIORS),
                       help="prior p(z_t | context)")
    group.add_argument("--posterior", default="gaussian", choices=sorted(POSTERIORS),
                       help="posterior q(z_t | context, x_t)")
    group.add_argument("--likelihood", default=None, choices=sorted(LIKELIHOODS),
                       help="p(x_t | z_t, context); default: bernoulli for binarised frames, "
                       "else continuous-bernoulli")
    group.add_argument("--latent-size", type=integer(1), default=32, help="size of z_t")
    group.add_argument("--controller-size", type=integer(1), default=None,
                       help="the controller's LSTM size (default 256)")
    group.add_argument("--parameter-budget", type=integer(1), default=None, metavar="N",
                       help="choose the controller size so that the model has N parameters "
                       "within 2%% (the paper matches every model at about 1860000); run.json "
                       "records the size chosen. Excludes --controller-size")
    group.add_argument("--network", default="auto", choices=("auto", *NETWORKS),
                       help="frame encoder/decoder: auto (conv for image frames, mlp for vector "
                       "frames), conv, mlp or inception (inception-like blocks with batch norm)")
    group.add_argument("--num-heads", type=integer(1), default=None,
                       help="memory read heads, for a memory that has them (introspective, ntm, "
                       "lru, dnc; default 5)")
    group.add_argument("--weighting", default=None,
                       choices=("softplus", "softmax", "unnormalised"),
                       help="introspective read weights (default softplus)")
    group.add_argument("--sparsity", type=number(0), default=None,
                       help="introspective l1/2 penalty alpha >= 0 (default 0)")
    _add_memory_specific_options(group)
    add_assignments_option(group, "--memory-option",
                           "memory (e.g. word_size=16 for dnc; any argument of its constructor)")
    group.add_argument("--orthogonal-init", action="store_true",
                       help="orthogonal initialisation of the controller's recurrent matrix")
    group.add_argument("--frame-feedback", action="store_true",
                       help="feed the previous frame's encoder features to the controller "
                       "(with --model vrnn: the paper's VRNN, its Fig. 1a); default: the "
                       "controller sees latents and memory reads only, as the paper's GTMMs")
    group.add_argument("--min-scale", type=number(0, low_open=True), default=None,
                       help="floor added to the Gaussian prior's and posterior's scales, > 0 "
                       "(default 1e-3); a larger one bounds the KL when a prior's scale "
                       "collapses")


#: memory options with a flag of their own (``--num-heads`` ...), for any memory that takes them
_SHARED_MEMORY_OPTIONS = ("num_heads", "weighting", "sparsity")
#: command-line flag -> (model, option of its memory, type, help)
_MEMORY_SPECIFIC_OPTIONS = {
    "--fast-size": ("fast-weights", "size", integer(1),
                    "fast-weights hidden/read size (default 160)"),
    "--fast-decay": (
        "fast-weights", "decay", number(0, 1), "fast-weights decay lambda in [0, 1] (default 0.9)"
    ),
    "--fast-learning-rate": (
        "fast-weights", "fast_learning_rate", number(0, low_open=True),
        "fast-weights learning rate eta > 0 (default 0.5)",
    ),
    "--inner-steps": (
        "fast-weights", "inner_steps", integer(1),
        "fast-weights inner-loop steps S >= 1 (default 1)",
    ),
    "--kanerva-slots": ("kanerva", "num_slots", integer(1),
                        "kanerva memory slots K (default 32)"),
    "--kanerva-code-size": (
        "kanerva", "code_size", integer(1), "kanerva code/read size C (default 160)"
    ),
    "--kanerva-address-regulariser": (
        "kanerva", "address_regulariser", number(0, low_open=True),
        "kanerva least-squares address ridge lambda > 0 (default 1)",
    ),
    "--kanerva-write-noise": (
        "kanerva", "write_noise", number(0, low_open=True),
        "kanerva write-noise variance sigma^2 > 0 (default 1)",
    ),
    "--dnc-read-strength-init": (
        "dnc", "read_strength_init", number(1, low_open=True),
        "dnc read key strength beta > 1 at initialisation (default about 1.7)",
    ),
    "--dnc-content-mode-init": (
        "dnc", "content_mode_init", number(0, 1, low_open=True, high_open=True),
        "dnc probability of the content read mode at initialisation, in (0, 1) "
        "(default about 1/3)",
    ),
    "--dnc-time-stamp-size": (
        "dnc", "time_stamp_size", integer(0),
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
    from pgtm.models.build import DEFAULT_CONTROLLER_SIZE

    options = {
        "prior": args.prior,
        "posterior": args.posterior,
        "latent_size": args.latent_size,
        "network": args.network,
        "orthogonal_init": args.orthogonal_init,
    }
    if args.frame_feedback:  # only when asked, so that earlier runs resume with the same options
        options["frame_feedback"] = True
    if args.min_scale is not None:
        options["min_scale"] = args.min_scale
    if args.parameter_budget is None:
        size = args.controller_size
        options["controller_size"] = DEFAULT_CONTROLLER_SIZE if size is None else size
    elif args.controller_size is not None:
        raise ValueError("--parameter-budget chooses the controller size: give it or "
                         "--controller-size, not both")
    elif args.parameter_budget < 1:
        raise ValueError(f"--parameter-budget must be an integer >= 1, got {args.parameter_budget}")
    else:
        options["parameter_budget"] = args.parameter_budget
    if args.likelihood is not None:
        options["likelihood"] = args.likelihood
    from pgtm.models.build import memory_options

    accepted = memory_options(args.model)
    for name in _SHARED_MEMORY_OPTIONS:
        value = getattr(args, name)
        if value is not None:
            if name not in accepted:
                raise ValueError(f"--{name.replace('_', '-')} does not apply to --model "
                                 f"{args.model} (its memory options: "
                                 f"{', '.join(accepted) or 'none'})")
            options[name] = value
    _memory_specific_options_from_args(args, options)
    for name, value in assignments("--memory-option", args.memory_option, accepted).items():
        if name in options:
            raise ValueError(f"--memory-option {name} is also set by its own flag; give one")
        options[name] = value
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
    group.add_argument("--mf-weight", type=number(0), default=None,
                       help="weight of the adversarial generator term (default 1)")
    group.add_argument("--mf-accuracy-gate", type=number(0, 1), default=None,
                       help="the generator term counts only when a discriminator's batch "
                       "accuracy is above this (default 0.75)")
    group.add_argument("--mf-update-gate", type=number(0, 1), default=None,
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
    import os

    if args.nproc_per_node > 1 and "LOCAL_RANK" not in os.environ:
        return _launch_with_torchrun(args.nproc_per_node, args.argv)
    from pgtm.inference.distributed import init_from_environment

    where = init_from_environment(args.device)
    try:
        return _train_here(args, where)
    finally:
        if where.world > 1:
            import torch.distributed

            torch.distributed.destroy_process_group()


def _launch_with_torchrun(processes: int, argv: list[str]) -> int:
    """``pgtm train --nproc-per-node N ...`` = ``torchrun --standalone --nproc-per-node N -m
    pgtm train ...``; SIGINT/SIGTERM are passed on, so the ranks checkpoint and stop."""
    import os
    import signal
    import subprocess

    rest, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc-per-node":
            skip = True
        elif not arg.startswith("--nproc-per-node="):
            rest.append(arg)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={processes}", "-m", "pgtm", *rest]
    # the ranks run `python -m pgtm` in this folder: in a source checkout the folder pgtm/ would
    # shadow the installed package (which has pgtm.models), so keep the folder off sys.path
    child = subprocess.Popen(command, env={**os.environ, "PYTHONSAFEPATH": "1"})
    previous = {s: signal.signal(s, lambda number, _: child.send_signal(number))
                for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return child.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _train_here(args, where) -> int:
    """``pgtm train`` in this process (one rank of a data-parallel run, or the only one)."""
    import os

    from pgtm.experiment import completed_results, run_experiment
    from pgtm.inference.lifecycle import TrainingInterrupted
    from pgtm.inference.train import TrainConfig, TrainingDiverged

    set_threads(args.threads)
    if where.world > 1 and args.device == "cuda":
        args.device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    if where.world > 1 and args.memory_forcing:
        raise ValueError("--memory-forcing trains one process only: its discriminators are not "
                         "data-parallel; drop --nproc-per-node or torchrun")
    task = task_from_args(args)
    options = model_options_from_args(args)
    config = TrainConfig(
        steps=args.steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
        clip_norm=args.clip_norm, elbo=args.elbo, kl_anneal_steps=args.kl_anneal_steps,
        num_particles=_train_particles(args),
        device=args.device, seed=args.seed, eval_every=args.eval_every,
        checkpoint_every=args.checkpoint_every, log_every=args.log_every, out_dir=args.out,
        progress=not args.no_progress, keep_checkpoints=args.keep_checkpoints,
        on_divergence=args.on_divergence, rollback_lr_factor=args.rollback_lr_factor,
        max_rollbacks=args.max_rollbacks, max_loss_ratio=args.max_loss_ratio,
        compile=args.compile,
    )
    check_output_folder(args.out)
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
        if where.main:
            print(f"pgtm: {stopped}", file=sys.stderr)
        return stopped.exit_status
    except TrainingDiverged as diverged:
        if where.main:
            print(f"pgtm: error: {diverged}", file=sys.stderr)
        return 1
    if where.main:
        _print_summary(summary, args.out)
    return 0


def _train_particles(args) -> int:
    if args.train_particles is None:
        return 4 if args.elbo == "fivo" else 1
    return args.train_particles


def _print_summary(summary: dict, out: str) -> None:
    keys = ("recall_kl", "prerecall_kl", "elbo", "iwae", "iwae_k", "steps", "seconds",
            "parameters", "khat_max")
    print(json.dumps({k: summary.get(k) for k in keys}, indent=1))
    print(f"results, checkpoint and pictures in {out}/")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train a GTM on a task with SVI, then evaluate it (ELBO, IWAE, KL)")
    add_task_options(parser)
    add_data_options(parser)
    _add_model_options(parser)
    group = parser.add_argument_group("training")
    group.add_argument("--out", required=True, type=non_empty_path, metavar="DIR",
                       help="run folder: checkpoint, log, results, pictures")
    add_optimisation_options(group, default_steps=1000)
    group.add_argument("--clip-norm", type=number(0, low_open=True), default=10.0,
                       help="ClippedAdam's element-wise gradient clamp")
    group.add_argument("--elbo", default="trace", choices=("trace", "meanfield", "fivo"),
                       help="objective: trace (Trace_ELBO), meanfield (TraceMeanField_ELBO) or "
                       "fivo (the particle filter's bound)")
    group.add_argument("--train-particles", type=integer(1), default=None, metavar="K",
                       help="particles of the objective per sequence (default 1; 4 for fivo)")
    group.add_argument("--compile", action="store_true",
                       help="train through the GTM's ELBO written out and compiled whole by "
                       "torch.compile (trace ELBO, one particle): faster steps (1.3-1.8x on a "
                       "CPU) after a compilation of up to a few minutes")
    group.add_argument("--device", type=device, default="cpu", help="cpu, cuda or cuda:N")
    add_threads_option(group)
    group.add_argument("--nproc-per-node", type=integer(1), default=1, metavar="N",
                       help="data-parallel training in N processes on this machine (torchrun; "
                       "gloo on the CPU, NCCL on GPUs): each draws batch-size/N sequences")
    group.add_argument("--seed", type=integer(0), default=0,
                       help="seeds the batches, the initial weights and Pyro's sampling")
    group.add_argument("--eval-every", type=integer(1), default=250,
                       help="steps between held-out evaluations (1 sample each)")
    group.add_argument("--checkpoint-every", type=integer(1), default=250,
                       help="steps between checkpoints")
    group.add_argument("--log-every", type=integer(1), default=10,
                       help="steps per log.csv row; its loss column is the mean negative ELBO "
                       "summed over the batch, in nats")
    group.add_argument("--eval-sequences", type=integer(1), default=64,
                       help="held-out sequences of the final evaluation")
    group.add_argument("--iwae-particles", type=integer(1), default=100,
                       help="K of the final importance-weighted bound")
    group.add_argument("--restart", action="store_true",
                       help="start afresh instead of resuming from DIR/checkpoint.pt")
    group.add_argument("--no-progress", action="store_true", help="no progress bar")
    safety = parser.add_argument_group("checkpoints and divergence")
    safety.add_argument("--keep-checkpoints", type=integer(1), default=2,
                        help="checkpoints kept: DIR/checkpoint.pt and the ones before it in "
                        "DIR/checkpoints/")
    safety.add_argument("--on-divergence", default="stop", choices=("stop", "rollback"),
                        help="on a non-finite or exploding loss: stop, naming the last good "
                        "checkpoint, or roll back to it with a lower learning rate")
    safety.add_argument("--rollback-lr-factor", type=number(0, 1, low_open=True,
                                                            high_open=True),
                        default=0.5, help="learning-rate multiplier per rollback")
    safety.add_argument("--max-rollbacks", type=integer(1), default=3,
                        help="rollbacks allowed before divergence stops the run")
    safety.add_argument("--max-loss-ratio", type=number(1, low_open=True, off=True),
                        default=100.0,
                        help="a step whose loss exceeds the median of the last 100 by more than "
                        "this times its magnitude has diverged; off disables the guard")
    _add_memory_forcing_options(parser)
    memory_options = {name: flag for flag, (_, name, _, _) in _MEMORY_SPECIFIC_OPTIONS.items()}
    forcing_options = {name: flag for flag, name in _MEMORY_FORCING_OPTIONS.items()}
    parser.set_defaults(func=_cmd_train, option_names={**memory_options, **forcing_options})
