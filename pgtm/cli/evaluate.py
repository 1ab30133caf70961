"""``pgtm evaluate``: ELBO, IWAE and SMC bounds of a trained run at one or more K."""

from __future__ import annotations

import json

from .options import (
    add_run_options,
    check_output_file,
    integer,
    non_empty_path,
    number,
    set_threads,
)


def _cmd_evaluate(args) -> int:
    from pathlib import Path

    from pgtm.experiment import (
        bound_sweep_of_gtm,
        elbo_outliers_of_gtm,
        load_run,
        test_batch,
    )
    from pgtm.inference.evaluate import save_json
    from pgtm.plotting import plot_bounds_vs_particles

    if args.outliers and args.bound == "smc":
        raise ValueError("--outliers needs the IWAE pass: use --bound iwae or both")
    if args.out is not None:
        check_output_file(args.out, ("json",))
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
        keys = ("elbo_mean", "iwae_mean", "recall_kl", "recall_kl_median", "prerecall_kl",
                "kl_mean", "nll_mean", "penalty", "khat_max", "khat_reading")
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


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="ELBO, IWAE and SMC bounds at one or more K, per sequence and per frame, per-step "
        "KL and PSIS k-hat of a trained run")
    add_run_options(parser)
    parser.add_argument("--particles", type=integer(1), nargs="+", default=[1000], metavar="K",
                        help="particle counts, e.g. 1 10 100 1000 (default 1000)")
    parser.add_argument("--bound", default="iwae", choices=("iwae", "smc", "both"),
                        help="iwae (with the ELBO, per-step KL and PSIS; default), smc (the "
                        "particle filter's bound) or both")
    parser.add_argument("--resampling", default="systematic",
                        choices=("systematic", "multinomial"), help="SMC resampling scheme")
    parser.add_argument("--ess-threshold", type=number(0, 1), default=0.5,
                        help="SMC resamples when ESS <= this * K (0: never, 1: every step; "
                        "default 0.5)")
    parser.add_argument("--chunk-size", type=integer(1), default=100,
                        help="particles per vectorised pass (bounds the memory used)")
    parser.add_argument("--sequences", type=integer(1), default=64, help="held-out sequences")
    parser.add_argument("--out", default=None, type=non_empty_path, metavar="FILE.json",
                        help="default: RUN_DIR/evaluation_k<K...>.json")
    parser.add_argument("--outliers", type=integer(0), default=0, metavar="N",
                        help="also show the samples behind the N lowest per-sequence ELBOs")
    parser.set_defaults(func=_cmd_evaluate)
