"""The benchmark's timed sections: the target setting, scaling in T, B and N, and the variants
(``JitTrace_ELBO``, ``TraceMeanField_ELBO``, vectorised particles)."""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

import numpy as np
import pyro
import torch
from pyro.infer import SVI, JitTrace_ELBO, TraceMeanField_ELBO

from pgtm.inference.evaluate import log_weights
from pgtm.models import count_parameters

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_harness import (  # noqa: E402
    FIXED_SLOTS,
    RATIO_TARGET,
    TARGET,
    UPPER_FROM,
    Pair,
    frame_shape,
    growth_exponent,
    interleaved,
    log,
    median_ms,
    peak_rss_mb,
    random_frames,
    reset_peak_rss,
    step_memory_mb,
    summarise,
    sync,
    time_call,
)
from step_report import fmt  # noqa: E402

# ----------------------------------------------------------------------------------------------
# sections


def bench_target(cfg, device) -> dict:
    """Pyro vs floor vs Pyro without path reuse at B=32, T=20, default sizes."""
    B, T = TARGET["batch"], TARGET["length"]
    x = random_frames(B, T, frame_shape(), device)
    out = {}
    for memory in cfg["models"]:
        load0 = os.getloadavg()[0]
        pair = Pair(memory, T, device)
        memory_mb = pair.memory(x)  # also the first warm-up step of both
        times = interleaved(
            {
                "pyro": lambda p=pair: p.pyro(x),
                "floor": lambda p=pair: p.floor(x),
                "pyro_noreuse": lambda p=pair: p.pyro_noreuse(x),
                "pyro_checked": lambda p=pair: p.pyro_checked(x),
            },
            cfg["target_reps"],
            cfg["target_warmup"] - 1,
            device,
        )
        row = summarise(times, "pyro", "floor")
        row["noreuse_over_pyro"] = row["pyro_noreuse_ms"] / row["pyro_ms"]
        row["checked_ratio"] = row["pyro_checked_ms"] / row["floor_ms"]
        row["memory"] = memory_mb
        row["parameters"] = count_parameters(pair.gtm)
        row["load"] = [load0, os.getloadavg()[0]]
        row["meets_target"] = row["ratio"] <= RATIO_TARGET
        out[memory] = row
        log(
            f"target {memory}: pyro {row['pyro_ms']:.1f} ms, floor {row['floor_ms']:.1f} ms, "
            f"ratio {row['ratio']:.3f} (paired {row['ratio_paired']['median']:.3f}), "
            f"no reuse {row['pyro_noreuse_ms']:.1f} ms"
        )
    return out


def bench_sweep(cfg, device, memory: str, settings: list[dict], reps: int) -> dict:
    """Pyro vs floor over ``settings`` (each with ``batch``, ``length`` and build options),
    *interleaved across the settings*: every repetition runs every setting once (rotating
    order), so a change in the load of the machine hits all sizes alike and the growth
    exponent is fitted per repetition (paired), like the ratios.

    Each setting has its own module; Pyro's global param store is cleared before each Pyro
    step so that ``pyro.module("gtm", ...)`` registers the module being timed (a few
    microseconds per parameter, negligible next to these steps)."""
    pairs = []
    for s in settings:
        options = {k: v for k, v in s.items() if k not in ("batch", "length")}
        pair = Pair(memory, s["length"], device, **options)
        x = random_frames(s["batch"], s["length"], frame_shape(), device)

        def pyro_step(p=pair, x=x):
            pyro.clear_param_store()
            return p.pyro(x)

        pairs.append((s, options, pair, x, pyro_step))
    memories = []
    for _, _, pair, x, pyro_step in pairs:  # the warm-up steps, with the memory probe
        memories.append(
            {
                "pyro": step_memory_mb(pyro_step, pair.gtm, device),
                "floor": step_memory_mb(lambda p=pair, x=x: p.floor(x), pair.twin, device),
            }
        )
    fns = {}
    for i, (_, _, pair, x, pyro_step) in enumerate(pairs):
        fns[f"pyro@{i}"] = pyro_step
        fns[f"floor@{i}"] = lambda p=pair, x=x: p.floor(x)
    times = interleaved(fns, reps, 0, device)
    rows = []
    for i, (s, options, _, _, _) in enumerate(pairs):
        sub = {"pyro": times[f"pyro@{i}"], "floor": times[f"floor@{i}"]}
        row = {"batch": s["batch"], "length": s["length"], **options}
        row.update(summarise(sub, "pyro", "floor"))
        row["memory"] = memories[i]
        rows.append(row)
        log(
            f"sweep {memory} B={s['batch']} T={s['length']} {options or ''}: pyro "
            f"{row['pyro_ms']:.1f} ms (CPU {row['pyro_cpu_ms']:.1f}), floor "
            f"{row['floor_ms']:.1f} ms, saved {row['memory']['pyro']['saved_mb']:.0f} MB"
        )
    return {"rows": rows, "times": times}


def _fits(sweep: dict, key: str) -> dict:
    """Growth exponents ``a`` (time ∝ key^a): from the medians, per repetition (median of the
    per-repetition slopes with a bootstrap 95% interval), on CPU time, over key ≥ 50 only,
    and of the saved bytes."""
    rows, times = sweep["rows"], sweep["times"]
    xs = [r[key] for r in rows]
    fit = {
        "pyro": growth_exponent(xs, [r["pyro_ms"] for r in rows]),
        "floor": growth_exponent(xs, [r["floor_ms"] for r in rows]),
        "pyro_cpu": growth_exponent(xs, [r["pyro_cpu_ms"] for r in rows]),
        "floor_cpu": growth_exponent(xs, [r["floor_cpu_ms"] for r in rows]),
        "memory": growth_exponent(xs, [r["memory"]["pyro"]["saved_mb"] for r in rows]),
    }
    upper = [i for i, r in enumerate(rows) if r[key] >= UPPER_FROM]
    ranges = {"": list(range(len(rows)))}
    if len(upper) >= 2:
        fit["upper_from"] = UPPER_FROM
        ranges["_upper"] = upper
    for suffix, idx in ranges.items():
        ux = [rows[i][key] for i in idx]
        for who in ("pyro", "floor"):
            for clock in ("wall", "cpu", "user"):
                samples = [times[f"{who}@{i}"][clock] for i in idx]
                per_rep = [
                    growth_exponent(ux, [t[k] for t in samples]) for k in range(len(samples[0]))
                ]
                fit[f"{who}_{clock}_per_rep{suffix}"] = _median_ci(per_rep)
    return fit


def _median_ci(values: list[float | None], seed: int = 0) -> dict:
    v = np.asarray([x for x in values if x is not None], float)
    if v.size == 0:
        return {"median": None, "ci95": [None, None]}
    boots = np.median(np.random.default_rng(seed).choice(v, size=(2000, v.size)), axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"median": float(np.median(v)), "ci95": [float(lo), float(hi)]}


def _sweep_result(sweep: dict, key: str) -> dict:
    return {"rows": sweep["rows"], "exponent": _fits(sweep, key)}


def bench_scaling(cfg, device) -> dict:
    """Time and memory per step as T grows (B=32), as B grows (T=20), and the DNC's N."""
    B, T = TARGET["batch"], TARGET["length"]
    reps = cfg["sweep_reps"]
    out: dict = {"length": {}, "batch": {}, "slots": {}}
    for memory in cfg["models"]:
        fixed = {"num_slots": FIXED_SLOTS} if memory in ("ntm", "lru", "dnc") else {}
        grid = [{"batch": B, "length": L, **fixed} for L in cfg["lengths"]]
        sweep = bench_sweep(cfg, device, memory, grid, reps)
        out["length"][memory] = _sweep_result(sweep, "length")
        grid = [{"batch": b, "length": T} for b in cfg["batches"]]
        sweep = bench_sweep(cfg, device, memory, grid, reps)
        out["batch"][memory] = _sweep_result(sweep, "batch")
    if "dnc" in cfg["models"]:
        grid = [{"batch": B, "length": T, "num_slots": n} for n in cfg["slots"]]
        out["slots"]["dnc"] = _sweep_result(
            bench_sweep(cfg, device, "dnc", grid, reps), "num_slots"
        )
    return out


def bench_jit(cfg, device) -> dict:
    """``JitTrace_ELBO``: compile time, steady state, and what a new sequence length does."""
    B, T = TARGET["batch"], TARGET["length"]
    T2 = T // 2
    x, x2 = random_frames(B, T, frame_shape(), device), random_frames(B, T2, frame_shape(), device)
    out = {}
    for memory in [m for m in cfg["jit_models"] if m in cfg["models"]]:
        elbo = JitTrace_ELBO(max_plate_nesting=2, ignore_jit_warnings=True)
        pair = Pair(memory, T, device, elbo=elbo)
        first = [time_call(lambda p=pair: p.pyro(x), device)["wall"] for _ in range(3)]
        times = interleaved(
            {"jit": lambda p=pair: p.pyro(x), "floor": lambda p=pair: p.floor(x)},
            cfg["jit_reps"],
            1,
            device,
        )
        row = summarise(times, "jit", "floor")
        steady = row["jit_ms"]
        row["first_calls_ms"] = [1e3 * t for t in first]
        row["compile_ms"] = sum(1e3 * t - steady for t in first)
        # the same JitTrace_ELBO on a new length: Pyro keys its compiled traces on the
        # non-tensor arguments only, so the trace for T is reused, not recompiled
        try:
            pair.pyro(x2)
            row["same_elbo_new_length"] = "ran (no recompile)"
        except Exception as e:  # noqa: BLE001 -- record whatever the stale trace raises
            last = str(e).strip().splitlines()[-1][:160]
            name = type(e).__name__
            row["same_elbo_new_length"] = last if last.startswith(name) else f"{name}: {last}"
        pair.gtm._guide_path = None
        # a fresh JitTrace_ELBO for the new length (same module and optimiser): recompiles
        elbo2 = JitTrace_ELBO(max_plate_nesting=2, ignore_jit_warnings=True)
        svi2 = SVI(pair.gtm.model, pair.gtm.guide, pair.pyro_optim, elbo2)
        first2 = [time_call(lambda s=svi2: s.step(x2), device)["wall"] for _ in range(3)]
        steady2 = interleaved({"jit": lambda s=svi2: s.step(x2)}, 3, 0, device)["jit"]["wall"]
        row["new_length"] = T2
        row["new_length_first_calls_ms"] = [1e3 * t for t in first2]
        row["new_length_steady_ms"] = median_ms(steady2)
        row["recompile_ms"] = sum(1e3 * t - row["new_length_steady_ms"] for t in first2)
        out[memory] = row
        log(
            f"jit {memory}: compile {row['compile_ms']:.0f} ms, steady {steady:.1f} ms "
            f"(floor {row['floor_ms']:.1f}), T={T2}: {row['same_elbo_new_length']}, "
            f"recompile {row['recompile_ms']:.0f} ms"
        )
    return out


def bench_meanfield(cfg, device) -> dict:
    B, T = TARGET["batch"], TARGET["length"]
    x = random_frames(B, T, frame_shape(), device)
    out = {}
    for memory in cfg["models"]:
        pair = Pair(memory, T, device, elbo=TraceMeanField_ELBO(max_plate_nesting=2))
        times = interleaved(
            {"meanfield": lambda p=pair: p.pyro(x), "floor": lambda p=pair: p.floor(x)},
            cfg["meanfield_reps"],
            1,
            device,
        )
        out[memory] = summarise(times, "meanfield", "floor")
        log(f"meanfield {memory}: {out[memory]['meanfield_ms']:.1f} ms, "
            f"ratio {out[memory]['ratio']:.3f}")
    return out


def bench_particles(cfg, device) -> dict:
    """Vectorised-particle evaluation (``log_weights``, no gradients) for K particles."""
    B, T = TARGET["batch"], TARGET["length"]
    x = random_frames(B, T, frame_shape(), device)
    out = {}
    for memory in [m for m in cfg["particle_models"] if m in cfg["models"]]:
        pair = Pair(memory, T, device)
        gtm = pair.gtm
        rows = []
        for K in cfg["particles"]:
            def run(K=K, gtm=gtm):
                with torch.no_grad():
                    return log_weights(gtm.model, gtm.guide, x, num_particles=K)

            reps = 3 if K <= 10 else 1
            gc.collect()
            rss0 = peak_rss_mb() if reset_peak_rss() else None
            times = interleaved({"eval": run}, reps, 1 if K <= 10 else 0, device)
            ms = median_ms(times["eval"]["wall"])
            row = {"particles": K, "ms": ms, "ms_per_particle": ms / K, "reps": reps}
            if device.type == "cuda":
                sync(device)
                torch.cuda.reset_peak_memory_stats(device)
                before = torch.cuda.memory_allocated(device)
                run()
                row["cuda_peak_mb"] = (torch.cuda.max_memory_allocated(device) - before) / 2**20
            elif rss0 is not None:
                row["peak_rss_increase_mb"] = peak_rss_mb() - rss0
            rows.append(row)
            log(
                f"particles {memory} K={K}: {ms:.1f} ms ({ms / K:.2f} ms/particle), peak "
                f"memory +{fmt(row.get('peak_rss_increase_mb', row.get('cuda_peak_mb')), 0)} MB"
            )
        base = rows[0]["ms_per_particle"]
        for row in rows:
            row["per_particle_vs_k1"] = row["ms_per_particle"] / base
        out[memory] = rows
    return out
