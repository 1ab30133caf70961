"""The benchmark's overhead decomposition, the garbage collector and allocator probes, and the
CUDA batch sweep."""

from __future__ import annotations

import cProfile
import gc
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyro
import pyro.poutine as poutine
import torch
from pyro.optim.clipped_adam import ClippedAdam as TorchClippedAdam

sys.path.insert(0, str(Path(__file__).resolve().parent))
from floor import floor_step  # noqa: E402
from step_harness import (  # noqa: E402
    CLIP_NORM,
    FIXED_SLOTS,
    GC,
    LEARNING_RATE,
    SIZES,
    TARGET,
    TINY,
    Pair,
    frame_shape,
    interleaved,
    log,
    peak_rss_mb,
    random_frames,
    summarise,
    sync,
)

# ----------------------------------------------------------------------------------------------
# overhead decomposition


def _feature_slicing(length: int, how: str, device) -> None:
    """The guide's use of the encoder features ``[B, T, F]``: one slice per step
    (``features[:, t : t + 1]``, whose backward materialises a zero ``[B, T, F]`` gradient per
    step: O(T²) in all) or one ``split`` (O(T)); forward + backward."""
    features = torch.randn(TARGET["batch"], length, 256, device=device, requires_grad=True)
    w = torch.randn(256, device=device)
    if how == "slice":
        parts = [features[:, t : t + 1] for t in range(length)]
    else:
        parts = features.split(1, dim=1)
    sum((p * w).sum() for p in parts).backward()
    sync(device)


def micro(fn: Callable[[], object], n: int) -> float:
    """Median microseconds of ``fn()`` over ``n`` calls (in 5 batches)."""
    per = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        per.append((time.perf_counter() - t0) / n)
    return 1e6 * statistics.median(per)


def bench_overhead(cfg, device) -> dict:
    """Where the Pyro step spends time that the floor does not."""
    out: dict = {"components_us": {}, "tiny": {}}
    probe = "dnc" if "dnc" in cfg["models"] else cfg["models"][0]
    out["probe_model"] = probe
    B, T = TARGET["batch"], TARGET["length"]
    x = random_frames(B, T, frame_shape(), device)
    pair = Pair(probe, T, device)
    gtm = pair.gtm
    pair.pyro(x)  # registers the parameters, creates the per-parameter optimisers

    def register():
        with poutine.trace(param_only=True):
            pyro.module("gtm", gtm)

    params = list(gtm.parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    single = TorchClippedAdam(params, lr=LEARNING_RATE, clip_norm=CLIP_NORM)
    single.step()  # creates its state
    out["components_us"] = {
        "check_inputs": micro(lambda: gtm.check_inputs(x), 100),
        "bool(torch.isfinite(x).all()) (the check's former finiteness test)": micro(
            lambda: bool(torch.isfinite(x).all()), 100
        ),
        "pyro.module": micro(register, 50),
        "pyro ClippedAdam (one torch optimiser per parameter)": micro(
            lambda: pair.pyro_optim(params), 20
        ),
        "torch ClippedAdam (one optimiser)": micro(single.step, 20),
        "num_parameter_tensors": len(params),
    }
    for p in params:
        p.grad = None
    for length in (TARGET["length"], 200):
        for how in ("slice", "split"):
            out["components_us"][f"features per-step {how}, backward, T={length}"] = micro(
                lambda n=length, h=how: _feature_slicing(n, h, device), 3
            )
    log(f"overhead components: {out['components_us']}")

    # end-to-end: Pyro (as is / validation off) vs the floor, tiny networks
    xt = random_frames(8, T, TINY["frame_shape"], device)
    for memory in cfg["models"]:
        pair = Pair(memory, T, device, **TINY)

        def novalid(p=pair):
            with pyro.validation_enabled(False):
                return p.pyro_checked(xt)

        def no_pyro_checks(p=pair):
            return p.pyro(xt)

        def floor_novalid(p=pair):
            with pyro.validation_enabled(False):
                return p.floor(xt)

        times = interleaved(
            {
                "pyro": lambda p=pair: p.pyro_checked(xt),
                "floor": lambda p=pair: p.floor(xt),
                "floor_checked": lambda p=pair: floor_step(
                    p.twin, p.optimizer, xt, check_inputs=True
                ),
                "pyro_novalidation": novalid,
                "pyro_no_pyro_checks": no_pyro_checks,
                "floor_novalidation": floor_novalid,
            },
            cfg["tiny_reps"],
            3,
            device,
        )
        row = summarise(times, "pyro", "floor")
        row["ratio_novalidation"] = row["pyro_novalidation_ms"] / row["floor_novalidation_ms"]
        row["ratio_no_pyro_checks"] = row["pyro_no_pyro_checks_ms"] / row["floor_ms"]
        out["tiny"][memory] = row
        log(
            f"tiny {memory}: pyro {row['pyro_ms']:.2f} floor {row['floor_ms']:.2f} "
            f"ratio {row['ratio']:.3f}; no validation {row['ratio_novalidation']:.3f}"
        )

    # the garbage collector: Pyro and the floor run alone (not interleaved, so that each pays
    # for its own allocations), then Pyro again after gc.freeze()
    out["gc"] = {}
    for label, sizes, xg in (("tiny", TINY, xt), ("target", {}, x)):
        pair = Pair(probe, T, device, **sizes)
        n = cfg["gc_steps"][label]
        for _ in range(2):
            pair.pyro(xg)
            pair.floor(xg)
        row = {
            "model": probe,
            "pyro": gc_run(lambda p=pair, xg=xg: p.pyro(xg), n),
            "floor": gc_run(lambda p=pair, xg=xg: p.floor(xg), n),
        }
        gc.collect()
        gc.freeze()
        try:
            row["pyro_after_gc_freeze"] = gc_run(lambda p=pair, xg=xg: p.pyro(xg), n)
        finally:
            gc.unfreeze()
        out["gc"][label] = row
        log(
            f"gc {label}: pyro {row['pyro']['gc_ms_per_step']:.2f} ms/step "
            f"({row['pyro']['full_collections_per_step']:.3f} full), floor "
            f"{row['floor']['gc_ms_per_step']:.2f}, pyro after freeze "
            f"{row['pyro_after_gc_freeze']['gc_ms_per_step']:.2f}"
        )

    # a cProfile of the Pyro step at the target setting: Pyro's own functions
    pair = Pair(probe, T, device)
    for _ in range(2):
        pair.pyro(x)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(3):
        pair.pyro(x)
    prof.disable()
    out["profile"] = _pyro_share(prof, 3)
    return out


def gc_run(step: Callable[[], object], n: int) -> dict:
    """``n`` back-to-back steps: wall and garbage-collector milliseconds per step, collections
    per step by generation, and the number of objects the collector tracks."""
    collections0, seconds0 = list(GC.collections), GC.seconds
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    wall = time.perf_counter() - t0
    per_gen = [(c - c0) / n for c, c0 in zip(GC.collections, collections0, strict=True)]
    return {
        "steps": n,
        "ms_per_step": 1e3 * wall / n,
        "gc_ms_per_step": 1e3 * (GC.seconds - seconds0) / n,
        "collections_per_step": per_gen,
        "full_collections_per_step": per_gen[2],
        "tracked_objects": len(gc.get_objects()),
    }


def _pyro_share(prof: cProfile.Profile, steps: int) -> dict:
    """Milliseconds per step spent in Pyro's own Python code (tottime of functions in
    ``pyro/``, excluding the torch optimiser Pyro wraps) and the top such functions."""
    stats = pstats.Stats(prof, stream=io.StringIO())
    rows = []
    total = 0.0
    for (filename, _line, name), (_, _, tottime, _, _) in stats.stats.items():
        total += tottime
        if f"{os.sep}pyro{os.sep}" in filename and "clipped_adam" not in filename:
            rows.append((tottime, f"{Path(filename).parent.name}/{Path(filename).name}:{name}"))
    rows.sort(reverse=True)
    return {
        "step_ms": 1e3 * total / steps,
        "pyro_python_ms": 1e3 * sum(t for t, _ in rows) / steps,
        "top": [{"function": n, "ms_per_step": 1e3 * t / steps} for t, n in rows[:8]],
    }


#: glibc malloc settings that keep freed memory in the process: no mmap for large blocks (so
#: no fresh, kernel-zeroed pages at every step) and no trimming of the heap
MALLOC_TUNED = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**36)}


def malloc_probe(spec: str) -> dict:
    """Run in a subprocess: ``spec = "model:T:steps"``; Pyro and floor steps at B=32."""
    memory, length, steps = spec.split(":")
    device = torch.device("cpu")
    options = {"num_slots": FIXED_SLOTS} if memory in ("ntm", "lru", "dnc") else {}
    pair = Pair(memory, int(length), device, **options)
    x = random_frames(TARGET["batch"], int(length), frame_shape(), device)
    times = interleaved(
        {"pyro": lambda: pair.pyro(x), "floor": lambda: pair.floor(x)}, int(steps), 1, device
    )
    row = summarise(times, "pyro", "floor")
    row["peak_rss_mb"] = peak_rss_mb()
    return row


def bench_malloc(cfg, device) -> dict:
    """The same steps in fresh processes with glibc's default allocator settings and with
    :data:`MALLOC_TUNED` (the variables must be set before the process starts)."""
    if device.type != "cpu":
        return {"skipped": "CPU allocator only"}
    probe = "dnc" if "dnc" in cfg["models"] else cfg["models"][0]
    out: dict = {"model": probe, "tuned_env": MALLOC_TUNED, "rows": []}
    base_env = {k: v for k, v in os.environ.items() if k not in MALLOC_TUNED}
    for length in cfg["malloc_lengths"]:
        row: dict = {"length": length}
        for label, extra, flags in (("default", {}, []), ("tuned", MALLOC_TUNED, []),
                                    ("mallopt", {}, ["--mallopt"])):
            cmd = [
                sys.executable, str(Path(__file__).resolve()), "--threads",
                str(torch.get_num_threads()), "--malloc-probe",
                f"{probe}:{length}:{cfg['malloc_steps']}", *flags,
            ]
            if SIZES:
                cmd.append("--smoke")
            proc = subprocess.run(
                cmd, env={**base_env, **extra}, capture_output=True, text=True, check=True
            )
            row[label] = json.loads(proc.stdout.strip().splitlines()[-1])
        for who in ("pyro", "floor"):
            row[f"{who}_speedup"] = row["default"][f"{who}_ms"] / row["tuned"][f"{who}_ms"]
            row[f"{who}_speedup_mallopt"] = (
                row["default"][f"{who}_ms"] / row["mallopt"][f"{who}_ms"]
            )
        out["rows"].append(row)
        d, t = row["default"], row["tuned"]
        log(
            f"malloc {probe} T={length}: floor {d['floor_ms']:.0f} -> {t['floor_ms']:.0f} ms "
            f"(sys {d['floor_sys_ms']:.0f} -> {t['floor_sys_ms']:.0f} ms, page faults "
            f"{d['floor_minflt']:.0f} -> {t['floor_minflt']:.0f}), pyro {d['pyro_ms']:.0f} -> "
            f"{t['pyro_ms']:.0f} ms"
        )
    return out


def bench_cuda(cfg, device) -> dict:
    """Time per step and frames per second for B = 64 ... 1024 (T=20) on the GPU."""
    if device.type != "cuda":
        return {"skipped": "no CUDA device (torch.cuda.is_available() is False)"}
    T = TARGET["length"]
    out = {"device": torch.cuda.get_device_name(device)}
    for memory in cfg["models"]:
        rows = []
        for B in cfg["cuda_batches"]:
            pair = Pair(memory, T, device)
            x = random_frames(B, T, frame_shape(), device)
            times = interleaved(
                {"pyro": lambda p=pair, x=x: p.pyro(x), "floor": lambda p=pair, x=x: p.floor(x)},
                5,
                2,
                device,
            )
            row = {"batch": B, **summarise(times, "pyro", "floor")}
            row["pyro_fps"] = B * T / (row["pyro_ms"] / 1e3)
            row["floor_fps"] = B * T / (row["floor_ms"] / 1e3)
            row["memory"] = pair.memory(x)
            rows.append(row)
            log(f"cuda {memory} B={B}: pyro {row['pyro_ms']:.1f} ms, {row['pyro_fps']:.0f} fps")
        out[memory] = rows
    return out
