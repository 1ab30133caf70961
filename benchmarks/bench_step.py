#!/usr/bin/env python
r"""Benchmark the SVI step of every GTM against a hand-written PyTorch floor.

Usage::

    python benchmarks/bench_step.py [--quick] [--threads N] [--device cpu|cuda] [--out results]

writes ``<out>/benchmark.json``, ``<out>/benchmark.md`` and ``<out>/benchmark_scaling.png``.

What is timed (one *step* = forward + backward + ClippedAdam update, as ``SVI.step``):

* ``pyro``: ``SVI(gtm.model, gtm.guide, pyro.optim.ClippedAdam, Trace_ELBO(max_plate_nesting=2))``
  stepped as ``pgtm train`` steps it once a batch shape has been checked: Pyro's own per-site
  checks and the distributions' argument validation off (``pyro_checked``: both on every step,
  Pyro's default);
* ``floor``: :func:`floor.floor_step` -- the same modules scored by hand
  (``benchmarks/floor.py``), with the torch optimiser Pyro's ``ClippedAdam`` wraps
  (``pyro.optim.clipped_adam.ClippedAdam``, one instance for all parameters), same lr / clip;
* ``pyro_noreuse``: ``pyro`` with ``gtm.reuse_path = False`` (the model recomputes the path).

Pyro and the floor act on two copies of the same initial module and run in the same process,
*interleaved* (the order rotates every repetition), after warm-up; the tables give medians,
the ratio of the medians and the median of the per-repetition (paired) ratios with a bootstrap
95% interval. Wall-clock and process CPU time are both recorded: other jobs on a shared machine
inflate the first, much less the second. Peak memory: on CPU the bytes of the distinct
storages autograd saves for backward during one step (parameters excluded; measured with
``torch.autograd.graph.saved_tensors_hooks`` in a separate, untimed step), on CUDA
``torch.cuda.max_memory_allocated`` over a step, above what was allocated before it.

Sections: the target setting (B=32, T=20, default sizes, 28x28 Bernoulli frames), scaling in T,
in B and in the DNC's N (interleaved across the sizes too, exponents fitted per repetition),
variants (``JitTrace_ELBO`` compile / steady state / new length,
``TraceMeanField_ELBO``, vectorised-particle evaluation with
:func:`pgtm.inference.evaluate.log_weights`), an overhead decomposition, and a CUDA batch sweep
(skipped without a GPU), and the CPU allocator (glibc defaults vs ``MALLOC_TUNED``, in fresh
processes).
"""


from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from pgtm.cli.allocator import keep_freed_memory

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_harness import (  # noqa: E402
    FULL,
    GC,
    MODELS,
    QUICK,
    RATIO_TARGET,
    SIZES,
    SMOKE,
    TARGET,
    TINY,
    environment,
    frame_shape,
    log,
)
from step_overhead import (  # noqa: E402
    bench_cuda,
    bench_malloc,
    bench_overhead,
    malloc_probe,
)
from step_report import (  # noqa: E402
    markdown,
    plot,
)
from step_sections import (  # noqa: E402
    bench_jit,
    bench_meanfield,
    bench_particles,
    bench_scaling,
    bench_target,
)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="reduced grid (~2-3 minutes)")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny networks, minimal grid: checks the code paths"
    )
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--out", default="results", help="output folder (results)")
    parser.add_argument(
        "--sections",
        default="target,scaling,variants,overhead,malloc,cuda",
        help="comma-separated subset of target,scaling,variants (= jit,meanfield,particles),"
        "overhead,malloc,cuda",
    )
    parser.add_argument("--malloc-probe", help=argparse.SUPPRESS)
    parser.add_argument("--mallopt", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="keep glibc's default malloc settings (by default the benchmark tunes them as the "
        "pgtm commands do, pgtm.cli.allocator)",
    )
    parser.add_argument(
        "--update",
        action="store_true",
        help="re-run --sections into the existing <out>/benchmark.json (recorded under "
        "'reruns')",
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="re-write benchmark.md / .png (and the summary) from <out>/benchmark.json",
    )
    args = parser.parse_args(argv)
    if args.render_only:
        return write_outputs(json.loads((Path(args.out) / "benchmark.json").read_text()),
                             Path(args.out))
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    torch.set_num_threads(args.threads)
    if args.malloc_probe:
        if args.mallopt:
            keep_freed_memory()
        if args.smoke:
            SIZES.update(TINY)
        print(json.dumps(_json_ready(malloc_probe(args.malloc_probe))))
        return {}
    res_malloc = "glibc defaults"
    if not args.default_malloc:
        # as the pgtm commands run (pgtm.cli.allocator); the malloc section compares both
        res_malloc = "pgtm.cli.allocator.keep_freed_memory()" if keep_freed_memory() else (
            "glibc defaults (tuning unavailable)")
    GC.install()
    warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit.trace")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch.cuda.is_available() is False")
    device = torch.device(args.device)
    sections = set(args.sections.split(","))
    cfg = dict(SMOKE if args.smoke else QUICK if args.quick else FULL)
    cfg["models"] = [m for m in MODELS if m in args.models.split(",")]
    if not cfg["models"]:
        parser.error(f"--models must name some of {MODELS}")
    SIZES.clear()
    if args.smoke:
        SIZES.update(TINY)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    previous = None
    if args.update:
        previous = json.loads((out_dir / "benchmark.json").read_text())
    res: dict = {
        "command": "python benchmarks/bench_step.py " + " ".join(sys.argv[1:] if argv is None
                                                                 else argv),
        "quick": args.quick,
        "smoke": args.smoke,
        "sizes": {k: list(v) if isinstance(v, tuple) else v for k, v in SIZES.items()},
        "environment": {**environment(device), "malloc": res_malloc},
        "load": {"start": os.getloadavg()[0], "start_5min": os.getloadavg()[1]},
        "setting": {**TARGET, "frame_shape": list(frame_shape()), "ratio_target": RATIO_TARGET},
    }
    if previous is not None:
        # re-run some sections into an earlier run's results, and say so
        rerun = {
            "sections": sorted(sections),
            "command": res["command"],
            "environment": res["environment"],
            "load": res["load"],
        }
        res = previous
        res.setdefault("reruns", []).append(rerun)
    log(f"environment: {res['environment']}")
    if "target" in sections:
        res["target"] = bench_target(cfg, device)
    if "scaling" in sections:
        res["scaling"] = bench_scaling(cfg, device)
    if sections & {"variants", "jit", "meanfield", "particles"}:
        res["variants"] = dict(res.get("variants", {}))
        for name, fn in (("jit", bench_jit), ("meanfield", bench_meanfield),
                         ("particles", bench_particles)):
            if {"variants", name} & sections:
                res["variants"][name] = fn(cfg, device)
    if "overhead" in sections:
        res["overhead"] = bench_overhead(cfg, device)
    if "malloc" in sections:
        res["malloc"] = bench_malloc(cfg, device)
    if "cuda" in sections:
        cuda = torch.device("cuda") if torch.cuda.is_available() else device
        res["cuda"] = bench_cuda(cfg, cuda)
    if previous is None:
        res["load"]["end"] = os.getloadavg()[0]
        res["load"]["end_5min"] = os.getloadavg()[1]
        res["seconds"] = time.perf_counter() - t0
    else:
        res["reruns"][-1]["load"]["end"] = os.getloadavg()[0]
        res["reruns"][-1]["seconds"] = time.perf_counter() - t0

    write_outputs(res, out_dir)
    log(f"done in {(time.perf_counter() - t0) / 60:.1f} min; wrote {out_dir}/benchmark.json")
    return res


def write_outputs(res: dict, out_dir: Path) -> dict:
    """``benchmark.json`` (with a ``summary``: per model ``pyro_ms``, ``floor_ms``, ``ratio``
    at the target setting), ``benchmark.md`` and ``benchmark_scaling.png``."""
    res["summary"] = {
        m: {k: r[k] for k in ("pyro_ms", "floor_ms", "ratio", "ratio_mean", "meets_target")}
        for m, r in res.get("target", {}).items()
    }
    (out_dir / "benchmark.json").write_text(json.dumps(_json_ready(res), indent=2) + "\n")
    if "target" in res:
        (out_dir / "benchmark.md").write_text(markdown(res))
    if "scaling" in res:
        plot(res, out_dir / "benchmark_scaling.png")
    return res


def _json_ready(v):
    if isinstance(v, dict):
        return {str(k): _json_ready(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_ready(x) for x in v]
    if isinstance(v, (np.floating, np.integer)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


if __name__ == "__main__":
    main()
