#!/usr/bin/env python
r"""Benchmark the SVI step of every GTM against a hand-written PyTorch floor.

Usage::

    python benchmarks/bench_step.py [--quick] [--threads N] [--device cpu|cuda] [--out results]

writes ``<out>/benchmark.json``, ``<out>/benchmark.md`` and ``<out>/benchmark_scaling.png``.

What is timed (one *step* = forward + backward + ClippedAdam update, as ``SVI.step``):

* ``pyro``: ``SVI(gtm.model, gtm.guide, pyro.optim.ClippedAdam, Trace_ELBO(max_plate_nesting=2))``
  stepped as ``pgtm train`` steps it once a batch shape has been checked: Pyro's own per-site
  checks off, torch's distribution validation on (``pyro_checked``: Pyro's checks on every step,
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
import contextlib
import copy
import cProfile
import datetime
import gc
import io
import json
import math
import os
import platform
import pstats
import resource
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import SVI, JitTrace_ELBO, Trace_ELBO, TraceMeanField_ELBO
from pyro.optim import ClippedAdam
from pyro.optim.clipped_adam import ClippedAdam as TorchClippedAdam

from pgtm.allocator import keep_freed_memory
from pgtm.inference.evaluate import log_weights
from pgtm.inference.train import without_pyro_checks
from pgtm.models import build_gtm, count_parameters
from pgtm.models.gtm import GTM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from floor import floor_step  # noqa: E402

MODELS = ("vrnn", "introspective", "ntm", "lru", "dnc")
#: TrainConfig defaults
LEARNING_RATE, CLIP_NORM = 1e-3, 10.0
TARGET = {"batch": 32, "length": 20}
RATIO_TARGET = 1.05
#: content-addressed memories get this many slots in the T sweep (build_gtm's default is
#: max(32, T), which would make N grow with T)
FIXED_SLOTS = 32
#: the "upper range" of a sweep, where fixed per-step costs no longer flatten the exponent
UPPER_FROM = 50
#: the "overhead-bound" setting: tiny MLP networks, so per-op work is small and per-site
#: bookkeeping shows (the regime a GPU puts every model in)
TINY = {
    "frame_shape": (1, 1, 16),
    "latent_size": 8,
    "controller_size": 32,
    "feature_size": 32,
    "network": "mlp",
}

FULL = {
    "target_reps": 15,
    "target_warmup": 2,
    "lengths": (10, 20, 50, 100, 200),
    "batches": (8, 32, 128, 256),
    "slots": (16, 32, 64, 128),
    "sweep_reps": 3,
    "jit_models": ("vrnn", "introspective", "dnc"),
    "jit_reps": 6,
    "meanfield_reps": 6,
    "particles": (1, 10, 100),
    "particle_models": ("vrnn", "introspective", "dnc"),
    "tiny_reps": 20,
    "gc_steps": {"tiny": 60, "target": 20},
    "malloc_lengths": (20, 100),
    "malloc_steps": 3,
    "cuda_batches": (64, 128, 256, 512, 1024),
}
#: a seconds-long run of every code path (tiny networks; used by the tests)
SMOKE = {
    "target_reps": 2,
    "target_warmup": 1,
    "lengths": (5, 20),
    "batches": (4, 32),
    "slots": (8, 32),
    "sweep_reps": 2,
    "jit_models": MODELS,
    "jit_reps": 1,
    "meanfield_reps": 1,
    "particles": (1, 3),
    "particle_models": MODELS,
    "tiny_reps": 2,
    "gc_steps": {"tiny": 3, "target": 2},
    "malloc_lengths": (5,),
    "malloc_steps": 1,
    "cuda_batches": (64,),
}
QUICK = {
    "target_reps": 6,
    "target_warmup": 1,
    "lengths": (10, 20, 40),
    "batches": (8, 32),
    "slots": (16, 64),
    "sweep_reps": 2,
    "jit_models": ("vrnn",),
    "jit_reps": 3,
    "meanfield_reps": 3,
    "particles": (1, 10),
    "particle_models": ("vrnn", "dnc"),
    "tiny_reps": 15,
    "gc_steps": {"tiny": 30, "target": 6},
    "malloc_lengths": (20, 50),
    "malloc_steps": 2,
    "cuda_batches": (64, 256, 1024),
}


# ----------------------------------------------------------------------------------------------
# timing and memory primitives


def sync(device: torch.device) -> None:
    """Wait for queued kernels, so that a host timer reads finished work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class GCTimer:
    """Seconds spent in Python's cyclic garbage collector (a ``gc.callbacks`` hook) and the
    number of collections per generation, since the timer was installed."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = [0, 0, 0]
        self._start: float | None = None

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        elif self._start is not None:
            self.seconds += time.perf_counter() - self._start
            self.collections[info["generation"]] += 1
            self._start = None

    def install(self) -> GCTimer:
        if self not in gc.callbacks:
            gc.callbacks.append(self)
        return self


GC = GCTimer()


def time_call(fn: Callable[[], object], device: torch.device) -> dict[str, float]:
    """Seconds of ``fn()``, synchronised with the device on both sides: ``wall``, process
    ``cpu`` (= ``user`` + ``sys``: kernel time, mostly page faults of freshly mapped memory),
    ``gc`` (in Python's garbage collector), and ``minflt`` (minor page faults)."""
    sync(device)
    gc0 = GC.seconds
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    fn()
    sync(device)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "wall": wall,
        "cpu": cpu,
        "user": r1.ru_utime - r0.ru_utime,
        "sys": r1.ru_stime - r0.ru_stime,
        "gc": GC.seconds - gc0,
        "minflt": float(r1.ru_minflt - r0.ru_minflt),
    }


def interleaved(
    fns: dict[str, Callable[[], object]], reps: int, warmup: int, device: torch.device
) -> dict[str, dict[str, list[float]]]:
    """Run every function once per repetition, rotating the order, and keep the timings of
    the repetitions after ``warmup``.

    :returns: ``{name: {"wall": [...], "cpu": [...], ...}}`` (see :func:`time_call`)."""
    names = list(fns)
    out: dict[str, dict[str, list[float]]] = {n: {} for n in names}
    for rep in range(warmup + reps):
        k = rep % len(names)
        for name in names[k:] + names[:k]:
            measured = time_call(fns[name], device)
            if rep >= warmup:
                for key, value in measured.items():
                    out[name].setdefault(key, []).append(value)
    return out


def median_ms(values: list[float]) -> float:
    return 1e3 * statistics.median(values)


def paired_ratio(num: list[float], den: list[float], seed: int = 0) -> dict[str, float]:
    """Median of the per-repetition ratios ``num[i] / den[i]`` with a bootstrap 95% interval
    (the ratio of medians is reported separately)."""
    r = np.asarray(num) / np.asarray(den)
    rng = np.random.default_rng(seed)
    boots = np.median(rng.choice(r, size=(2000, r.size), replace=True), axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"median": float(np.median(r)), "ci95": [float(lo), float(hi)]}


def saved_tensor_bytes(fn: Callable[[], object], module: torch.nn.Module) -> int:
    """Bytes of the distinct storages that autograd saves for backward while ``fn()`` runs,
    excluding ``module``'s parameters: the activation memory a step holds at its peak."""
    exclude = {p.untyped_storage().data_ptr() for p in module.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        try:
            storage = t.untyped_storage()
        except (RuntimeError, NotImplementedError):  # e.g. an opaque (mkldnn) tensor
            return t
        ptr = storage.data_ptr()
        if ptr and ptr not in exclude:
            seen[ptr] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def step_memory_mb(fn: Callable[[], object], module, device: torch.device) -> dict[str, float]:
    """Peak memory of one step: autograd-saved bytes (any device) and, on CUDA, the peak
    allocation above the memory allocated before the step."""
    out = {"saved_mb": saved_tensor_bytes(fn, module) / 2**20}
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        sync(device)
        out["cuda_peak_mb"] = (torch.cuda.max_memory_allocated(device) - before) / 2**20
    return out


def peak_rss_mb() -> float | None:
    """This process's peak resident memory (``VmHWM``), in MiB; ``None`` where unavailable.
    (``ru_maxrss`` is no use here: it survives ``exec``, so a subprocess reports its
    parent's peak.)"""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux ``/proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def growth_exponent(xs, ys) -> float | None:
    """Least-squares slope of ``log y`` on ``log x`` (``y ~ x^a``)."""
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    ok = np.isfinite(ys) & (ys > 0)
    if ok.sum() < 2:
        return None
    return float(np.polyfit(np.log(xs[ok]), np.log(ys[ok]), 1)[0])


# ----------------------------------------------------------------------------------------------
# model pairs


#: build_gtm options used everywhere (``--smoke`` puts the tiny sizes here)
SIZES: dict = {}


def frame_shape() -> tuple[int, ...]:
    return tuple(SIZES.get("frame_shape", (1, 28, 28)))


def random_frames(batch: int, length: int, frame_shape, device, seed: int = 0) -> torch.Tensor:
    """Random binary frames ``[B, T, *frame_shape]`` (fine for timing)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.bernoulli(torch.full((batch, length, *frame_shape), 0.5), generator=generator)
    return x.to(device)


class Pair:
    """A GTM trained by Pyro and an identical copy trained by the floor.

    :param memory: a name in :data:`MODELS`.
    :param length: sequence length passed to ``build_gtm`` (Introspective's buffer size).
    :param elbo: the Pyro ELBO instance.
    :param options: more ``build_gtm`` options.
    """

    def __init__(self, memory: str, length: int, device, elbo=None, gtm_cls=None, **options):
        torch.manual_seed(0)
        gtm = build_gtm(memory, sequence_length=length, **{**SIZES, **options})
        if gtm_cls is not None:  # the same parts in a GTM subclass (the proposed change)
            gtm.__class__ = gtm_cls
        self.gtm = gtm.to(device)
        self.twin = copy.deepcopy(self.gtm)
        self.device = device
        pyro.clear_param_store()  # one Pair at a time owns the name "gtm" in the store
        self.pyro_optim = ClippedAdam({"lr": LEARNING_RATE, "clip_norm": CLIP_NORM})
        self.elbo = elbo if elbo is not None else Trace_ELBO(max_plate_nesting=2)
        self.svi = SVI(self.gtm.model, self.gtm.guide, self.pyro_optim, self.elbo)
        self.optimizer = TorchClippedAdam(
            self.twin.parameters(), lr=LEARNING_RATE, clip_norm=CLIP_NORM
        )

    def pyro(self, x, c=None, mask=None) -> float:
        """``SVI.step`` as ``pgtm train`` runs it after the first step of a batch shape:
        Pyro's own checks off (:func:`~pgtm.inference.train.without_pyro_checks`), torch's
        distribution validation on."""
        with without_pyro_checks():
            return self.svi.step(x, c=c, mask=mask)

    def pyro_checked(self, x, c=None, mask=None) -> float:
        """``SVI.step`` with Pyro's default checks on every step."""
        return self.svi.step(x, c=c, mask=mask)

    def pyro_noreuse(self, x, c=None, mask=None) -> float:
        self.gtm.reuse_path = False
        try:
            return self.pyro(x, c, mask)
        finally:
            self.gtm.reuse_path = True

    def floor(self, x, c=None, mask=None) -> float:
        return floor_step(self.twin, self.optimizer, x, c, mask)

    def memory(self, x) -> dict[str, dict[str, float]]:
        return {
            "pyro": step_memory_mb(lambda: self.pyro(x), self.gtm, self.device),
            "floor": step_memory_mb(lambda: self.floor(x), self.twin, self.device),
        }


def summarise(times: dict[str, dict[str, list[float]]], num: str, den: str) -> dict:
    """Medians and means (ms) of every timed function and the ``num/den`` ratios.

    The median ignores the rare full (generation-2) garbage collections that land in a step;
    the mean, which sets the throughput of a long run, includes them (``*_gc_ms``: mean time
    in the collector per call)."""
    out: dict = {}
    for name, t in times.items():
        out[f"{name}_ms"] = median_ms(t["wall"])
        out[f"{name}_mean_ms"] = 1e3 * statistics.fmean(t["wall"])
        out[f"{name}_cpu_ms"] = median_ms(t["cpu"])
        out[f"{name}_gc_ms"] = 1e3 * statistics.fmean(t["gc"])
        out[f"{name}_user_ms"] = median_ms(t["user"])
        out[f"{name}_sys_ms"] = median_ms(t["sys"])
        out[f"{name}_minflt"] = statistics.median(t["minflt"])
        out[f"{name}_iqr_ms"] = [1e3 * float(np.percentile(t["wall"], q)) for q in (25, 75)]
    out["ratio"] = out[f"{num}_ms"] / out[f"{den}_ms"]
    out["ratio_mean"] = out[f"{num}_mean_ms"] / out[f"{den}_mean_ms"]
    out["ratio_cpu"] = out[f"{num}_cpu_ms"] / out[f"{den}_cpu_ms"]
    out["ratio_paired"] = paired_ratio(times[num]["wall"], times[den]["wall"])
    out["ratio_paired_cpu"] = paired_ratio(times[num]["cpu"], times[den]["cpu"])
    out["reps"] = len(times[num]["wall"])
    return out


def log(msg: str) -> None:
    stamp = datetime.datetime.now().strftime("%H:%M:%S")
    print(f"[{stamp} load {os.getloadavg()[0]:.2f}] {msg}", flush=True)


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
                f"memory +{_fmt(row.get('peak_rss_increase_mb', row.get('cuda_peak_mb')), 0)} MB"
            )
        base = rows[0]["ms_per_particle"]
        for row in rows:
            row["per_particle_vs_k1"] = row["ms_per_particle"] / base
        out[memory] = rows
    return out


# ----------------------------------------------------------------------------------------------
# overhead decomposition and the proposed change


def _no_registration(name, module, update_module_params=False):
    return module


class ProposedGTM(GTM):
    """``GTM`` with the change proposed for ``models/gtm.py``, active while ``proposed`` is
    True (so the current and the proposed code are timed on the same module): when the model
    follows the guide's path (the same ``x``, ``c``, ``mask`` objects, in the same ELBO
    evaluation), it skips its ``pyro.module("gtm", self)`` call, because the guide's call has
    already registered every parameter of the module, the model's included, in the same
    ``SVI.step`` (whose param capture spans guide and model). Measured here by disabling
    ``pyro.module`` for the duration of such a model call; otherwise this is ``GTM``."""

    proposed = False

    def model(self, x, c=None, mask=None):
        path = self._guide_path if self.reuse_path else None
        if not (self.proposed and path is not None and path.matches(x, c, mask)):
            return super().model(x, c, mask)
        register = pyro.module
        pyro.module = _no_registration
        try:
            return super().model(x, c, mask)
        finally:
            pyro.module = register


def _toggled(pair: Pair, proposed: bool, x) -> Callable[[], float]:
    def step():
        pair.gtm.proposed = proposed
        try:
            return pair.pyro_checked(x)
        finally:
            pair.gtm.proposed = False

    return step


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
    out: dict = {"components_us": {}, "tiny": {}, "target_proposed": {}}
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

    # end-to-end: Pyro (as is / validation off / proposed GTM) vs the floor, tiny networks
    xt = random_frames(8, T, TINY["frame_shape"], device)
    for memory in cfg["models"]:
        pair = Pair(memory, T, device, gtm_cls=ProposedGTM, **TINY)

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
                "pyro": _toggled(pair, False, xt),
                "floor": lambda p=pair: p.floor(xt),
                "floor_checked": lambda p=pair: floor_step(
                    p.twin, p.optimizer, xt, check_inputs=True
                ),
                "pyro_novalidation": novalid,
                "pyro_no_pyro_checks": no_pyro_checks,
                "floor_novalidation": floor_novalid,
                "pyro_proposed": _toggled(pair, True, xt),
            },
            cfg["tiny_reps"],
            3,
            device,
        )
        row = summarise(times, "pyro", "floor")
        row["ratio_novalidation"] = row["pyro_novalidation_ms"] / row["floor_novalidation_ms"]
        row["ratio_no_pyro_checks"] = row["pyro_no_pyro_checks_ms"] / row["floor_ms"]
        row["ratio_proposed"] = row["pyro_proposed_ms"] / row["floor_ms"]
        row["proposed_over_pyro"] = paired_ratio(
            times["pyro_proposed"]["wall"], times["pyro"]["wall"]
        )
        out["tiny"][memory] = row
        log(
            f"tiny {memory}: pyro {row['pyro_ms']:.2f} floor {row['floor_ms']:.2f} "
            f"ratio {row['ratio']:.3f}; no validation {row['ratio_novalidation']:.3f}; "
            f"proposed {row['pyro_proposed_ms']:.2f} ms"
        )

    # the proposed change at the target setting (paired against the current GTM)
    for memory in [m for m in ("vrnn", "dnc") if m in cfg["models"]] or cfg["models"][:1]:
        pair = Pair(memory, T, device, gtm_cls=ProposedGTM)
        times = interleaved(
            {"pyro": _toggled(pair, False, x), "pyro_proposed": _toggled(pair, True, x)},
            cfg["target_reps"],
            1,
            device,
        )
        out["target_proposed"][memory] = summarise(times, "pyro_proposed", "pyro")
        log(f"proposed at target {memory}: {out['target_proposed'][memory]['ratio']:.4f}")

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


# ----------------------------------------------------------------------------------------------
# environment and output


def cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def code_state() -> dict:
    """What was benchmarked: the git commit and the hashes of the files under test (the
    working tree may differ from the commit)."""
    import hashlib

    root = Path(__file__).resolve().parent.parent
    out: dict = {}
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=False
        )
        out["git_head"] = head.stdout.strip() or None
    except OSError:
        out["git_head"] = None
    for rel in ("models/gtm.py", "benchmarks/floor.py", "benchmarks/bench_step.py"):
        with contextlib.suppress(OSError):
            out[f"sha256 {rel}"] = hashlib.sha256((root / rel).read_bytes()).hexdigest()[:16]
    return out


def environment(device) -> dict:
    return {
        "code": code_state(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "device": str(device),
        "cuda_available": torch.cuda.is_available(),
        "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_num_threads": torch.get_num_threads(),
        "torch_num_interop_threads": torch.get_num_interop_threads(),
        "pyro_validation": pyro.infer.util.is_validation_enabled(),
    }


def _fmt(v, digits=1):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _ci(stat: dict | None) -> str:
    if not stat or stat.get("median") is None:
        return "–"
    lo, hi = stat["ci95"]
    return f"{stat['median']:.2f} [{lo:.2f}, {hi:.2f}]"


def markdown(res: dict) -> str:
    env = res["environment"]
    lines = [
        "# GTM step benchmark: Pyro `Trace_ELBO` vs a hand-written PyTorch floor",
        "",
        f"Command: `{res['command']}`  ",
        f"{env['date']}; {env['cpu_model']} ({env['cpu_count']} cores), "
        f"torch {env['torch']} with **{env['torch_num_threads']} thread(s)**, pyro "
        f"{env['pyro']}, device `{env['device']}`, malloc: {env.get('malloc', 'glibc defaults')}; "
        f"load average {res['load']['start']:.2f} at "
        f"start, {res['load']['end']:.2f} at end (other jobs were running); total "
        f"{res['seconds'] / 60:.1f} min. Code: commit "
        f"`{str(env.get('code', {}).get('git_head'))[:12]}`, `models/gtm.py` sha256 "
        f"`{env.get('code', {}).get('sha256 models/gtm.py')}` (working tree).",
        *[
            f"\nRe-run later into these results: sections {', '.join(r['sections'])} "
            f"(`{r['command']}`, {r['environment']['date']}, malloc: "
            f"{r['environment'].get('malloc', 'glibc defaults')}, load {r['load']['start']:.2f} → "
            f"{r['load'].get('end', float('nan')):.2f})."
            for r in res.get("reruns", [])
        ],
        "",
        "One step = forward + backward + ClippedAdam update (lr 1e-3, clip 10). Times are "
        "medians of interleaved repetitions after warm-up; *ratio* = median(pyro) / "
        "median(floor); *paired* = median of per-repetition ratios with a bootstrap 95% "
        "interval; *CPU ratio* uses process CPU time (less sensitive to other jobs). "
        "*Saved MB*: storages autograd keeps for backward (parameters excluded).",
        "",
        f"## Target setting: CPU, B={TARGET['batch']}, T={TARGET['length']}, default sizes "
        "(latent 32, LSTM 256, conv nets, 28x28 Bernoulli frames)",
        "",
        "| model | params | pyro ms | floor ms | ratio | paired [95% CI] | CPU ratio | "
        f"ratio of means (GC ms/step pyro, floor) | ≤ {RATIO_TARGET}? | pyro, "
        "reuse_path=False ms | reuse saves | saved MB pyro / floor | Pyro checks every "
        "step ms (ratio) |",
        "|---|---:|---:|---:|---:|---|---:|---|:-:|---:|---:|---:|---:|",
    ]
    for m, r in res["target"].items():
        pr = r["ratio_paired"]
        mem = r["memory"]
        lines.append(
            f"| {m} | {r['parameters'] / 1e6:.2f} M | {r['pyro_ms']:.1f} | {r['floor_ms']:.1f} | "
            f"{r['ratio']:.3f} | {pr['median']:.3f} [{pr['ci95'][0]:.3f}, {pr['ci95'][1]:.3f}] "
            f"| {r['ratio_cpu']:.3f} | {r['ratio_mean']:.3f} ({r['pyro_gc_ms']:.1f}, "
            f"{r['floor_gc_ms']:.1f}) | {'yes' if r['meets_target'] else '**no**'} | "
            f"{r['pyro_noreuse_ms']:.1f} | {100 * (1 - 1 / r['noreuse_over_pyro']):.1f}% | "
            f"{mem['pyro']['saved_mb']:.0f} / {mem['floor']['saved_mb']:.0f} | "
            + (f"{r['pyro_checked_ms']:.1f} ({r['checked_ratio']:.3f}) |"
               if "pyro_checked_ms" in r else "n/a |")
        )
    lines += targets_summary(res)
    sc = res.get("scaling")
    if sc:
        lengths = [r["length"] for r in next(iter(sc["length"].values()))["rows"]]
        lines += [
            "",
            f"## Scaling in T (B={TARGET['batch']}; NTM/LRU/DNC with N={FIXED_SLOTS} slots, "
            "Introspective with L=T)",
            "",
            "Median wall ms per step, Pyro (floor); the settings are interleaved, every "
            "repetition runs all T. *a*: slope of log time on log T (time ∝ T^a), fitted per "
            "repetition, median [95% CI]: Pyro wall time over all T; Pyro CPU time and "
            f"user (non-kernel) time, and the floor's user time, over T ≥ {UPPER_FROM}. *sys*: "
            "kernel share of the Pyro step's CPU time at the largest T (page faults). *a_mem*: "
            "the exponent of the saved bytes.",
            "",
            "| model | " + " | ".join(f"T={t}" for t in lengths)
            + f" | a pyro wall | a pyro CPU (T≥{UPPER_FROM}) | a pyro user (T≥{UPPER_FROM}) "
            f"| a floor user (T≥{UPPER_FROM}) | sys | a_mem |",
            "|---|" + "---:|" * (len(lengths) + 6),
        ]
        for m, s in sc["length"].items():
            e = s["exponent"]
            cells = [f"{r['pyro_ms']:.0f} ({r['floor_ms']:.0f})" for r in s["rows"]]
            last = s["rows"][-1]
            sys_share = last.get("pyro_sys_ms", 0.0) / last["pyro_cpu_ms"]
            lines.append(
                f"| {m} | " + " | ".join(cells) + f" | {_ci(e.get('pyro_wall_per_rep'))} | "
                f"{_ci(e.get('pyro_cpu_per_rep_upper'))} | "
                f"{_ci(e.get('pyro_user_per_rep_upper'))} | "
                f"{_ci(e.get('floor_user_per_rep_upper'))} | {100 * sys_share:.0f}% | "
                f"{_fmt(e['memory'], 2)} |"
            )
        lines += ["", "Saved MB per step (Pyro):", "",
                  "| model | " + " | ".join(f"T={t}" for t in lengths) + " |",
                  "|---|" + "---:|" * len(lengths)]
        for m, s in sc["length"].items():
            lines.append(f"| {m} | " + " | ".join(
                f"{r['memory']['pyro']['saved_mb']:.0f}" for r in s["rows"]) + " |")
        batches = [r["batch"] for r in next(iter(sc["batch"].values()))["rows"]]
        lines += [
            "",
            f"## Scaling in B (T={TARGET['length']})",
            "",
            "| model | " + " | ".join(f"B={b}" for b in batches) + " | a pyro wall | "
            "a pyro CPU | ratio at largest B (paired) | saved MB at largest B |",
            "|---|" + "---:|" * (len(batches) + 4),
        ]
        for m, s in sc["batch"].items():
            e = s["exponent"]
            cells = [f"{r['pyro_ms']:.0f} ({r['floor_ms']:.0f})" for r in s["rows"]]
            last = s["rows"][-1]
            lines.append(
                f"| {m} | " + " | ".join(cells) + f" | {_ci(e.get('pyro_wall_per_rep'))} | "
                f"{_ci(e.get('pyro_cpu_per_rep'))} | {last['ratio']:.3f} "
                f"({last['ratio_paired']['median']:.3f}) | "
                f"{last['memory']['pyro']['saved_mb']:.0f} |"
            )
        d = sc["slots"].get("dnc", {"rows": [], "exponent": {"pyro": None, "memory": None}})
        lines += [
            "",
            f"## DNC memory size N (B={TARGET['batch']}, T={TARGET['length']}; link matrix "
            "N×N)",
            "",
            "| N | pyro ms | floor ms | ratio | saved MB |",
            "|---:|---:|---:|---:|---:|",
        ]
        for r in d["rows"]:
            lines.append(
                f"| {r['num_slots']} | {r['pyro_ms']:.1f} | {r['floor_ms']:.1f} | "
                f"{r['ratio']:.3f} | {r['memory']['pyro']['saved_mb']:.0f} |"
            )
        lines.append(
            f"\nGrowth exponents in N (per-repetition fits): Pyro wall time "
            f"{_ci(d['exponent'].get('pyro_wall_per_rep'))}, CPU time "
            f"{_ci(d['exponent'].get('pyro_cpu_per_rep'))}; saved bytes "
            f"{_fmt(d['exponent']['memory'], 2)}."
        )
    var = {"jit": {}, "meanfield": {}, "particles": {}, **res.get("variants", {})}
    if any(var.values()):
        lines += [
            "",
            f"## Variants (B={TARGET['batch']}, T={TARGET['length']})",
            "",
            "### JitTrace_ELBO",
            "",
            "| model | first 3 calls ms | compile ms | steady ms | floor ms | steady / floor | "
            "same ELBO, new T | fresh ELBO at new T: first 3 calls ms | recompile ms |",
            "|---|---|---:|---:|---:|---:|---|---|---:|",
        ]
        for m, r in var["jit"].items():
            lines.append(
                f"| {m} | {', '.join(f'{t:.0f}' for t in r['first_calls_ms'])} | "
                f"{r['compile_ms']:.0f} | {r['jit_ms']:.1f} | {r['floor_ms']:.1f} | "
                f"{r['ratio']:.3f} | T={r['new_length']}: {r['same_elbo_new_length']} | "
                f"{', '.join(f'{t:.0f}' for t in r['new_length_first_calls_ms'])} | "
                f"{r['recompile_ms']:.0f} |"
            )
        lines += [
            "",
            "*compile ms* = sum over the first three calls of (call − steady state): tracing "
            "plus TorchScript's profiling re-optimisations.",
            "",
            "### TraceMeanField_ELBO",
            "",
            "| model | meanfield ms | floor ms | ratio |",
            "|---|---:|---:|---:|",
        ]
        for m, r in var["meanfield"].items():
            lines.append(
                f"| {m} | {r['meanfield_ms']:.1f} | {r['floor_ms']:.1f} | {r['ratio']:.3f} |"
            )
        ks = [r["particles"] for r in next(iter(var["particles"].values()), [])]
        lines += [
            "",
            "### Vectorised particles: `log_weights` (no gradients)",
            "",
            "ms per call (ms per particle) [peak memory increase MB: on CPU the rise of the "
            "peak RSS, a lower bound since memory the allocator already holds is reused; on "
            "CUDA the peak allocation]:",
            "",
            "| model | " + " | ".join(f"K={k}" for k in ks)
            + " | per-particle cost at largest K vs K=1 |",
            "|---|" + "---:|" * (len(ks) + 1),
        ]
        for m, rows in var["particles"].items():
            cells = []
            for r in rows:
                mem = r.get("peak_rss_increase_mb", r.get("cuda_peak_mb"))
                extra = f" [{mem:.0f}]" if mem is not None else ""
                cells.append(f"{r['ms']:.0f} ({r['ms_per_particle']:.1f}){extra}")
            lines.append(
                f"| {m} | " + " | ".join(cells) + f" | {rows[-1]['per_particle_vs_k1']:.2f} |"
            )
    ov = res.get("overhead")
    if ov:
        comp = ov["components_us"]
        lines += [
            "",
            "## Where the Pyro overhead goes",
            "",
            f"Per-call costs (µs; {ov['probe_model']}, target setting; per Pyro step the guide "
            "calls `check_inputs` (the model reuses its result when it follows the guide's "
            "path) and both call `pyro.module`):",
            "",
        ]
        lines += [f"- {k}: {_fmt(v, 0)}" for k, v in comp.items()]
        p = ov["profile"]
        lines += [
            "",
            f"cProfile of the Pyro step ({ov['probe_model']}, target setting): "
            f"{p['step_ms']:.0f} ms per step, "
            f"of which {p['pyro_python_ms']:.1f} ms in Pyro's own Python code; top:",
            "",
        ]
        lines += [f"- `{t['function']}`: {t['ms_per_step']:.2f} ms" for t in p["top"]]
        lines += [
            "",
            "Overhead-bound setting (tiny MLP networks: frames 1×1×16, latent 8, LSTM 32, B=8, "
            f"T={TARGET['length']}):",
            "",
            "| model | pyro ms | floor ms | ratio | floor + check_inputs ms | ratio, Pyro checks "
            "off | ratio, all validation off (both) | proposed GTM ms | proposed / floor | "
            "proposed / current (paired) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for m, r in ov["tiny"].items():
            pp = r["proposed_over_pyro"]
            lines.append(
                f"| {m} | {r['pyro_ms']:.2f} | {r['floor_ms']:.2f} | {r['ratio']:.3f} | "
                f"{r['floor_checked_ms']:.2f} | {r['ratio_no_pyro_checks']:.3f} | "
                f"{r['ratio_novalidation']:.3f} | {r['pyro_proposed_ms']:.2f} | "
                f"{r['ratio_proposed']:.3f} | {pp['median']:.3f} [{pp['ci95'][0]:.3f}, "
                f"{pp['ci95'][1]:.3f}] |"
            )
        lines += [
            "",
            "*Pyro checks off*: `pyro.infer`/`pyro.poutine` validation off (per-site shape "
            "checks, NaN/inf warnings with backward hooks on every `log_prob_sum`), torch's "
            "distribution validation still on, as in the floor.",
            "",
            "Garbage collector, steps run back to back (not interleaved):",
            "",
            "| setting | model | pyro ms/step | pyro GC ms/step | full collections/step | "
            "floor ms/step | floor GC ms/step | pyro after `gc.freeze()`: ms/step, GC ms/step | "
            "tracked objects |",
            "|---|---|---:|---:|---:|---:|---:|---|---:|",
        ]
        for label, g in ov.get("gc", {}).items():
            p_, f_, z_ = g["pyro"], g["floor"], g["pyro_after_gc_freeze"]
            lines.append(
                f"| {label} | {g['model']} | {p_['ms_per_step']:.1f} | "
                f"{p_['gc_ms_per_step']:.2f} | {p_['full_collections_per_step']:.3f} | "
                f"{f_['ms_per_step']:.1f} | {f_['gc_ms_per_step']:.2f} | "
                f"{z_['ms_per_step']:.1f}, {z_['gc_ms_per_step']:.2f} | {p_['tracked_objects']} |"
            )
        lines += ["", "Proposed GTM vs current GTM at the target setting (paired):", ""]
        for m, r in ov["target_proposed"].items():
            pr = r["ratio_paired"]
            pc = r["ratio_paired_cpu"]
            lines.append(
                f"- {m}: {r['pyro_proposed_ms']:.1f} ms vs {r['pyro_ms']:.1f} ms (medians), "
                f"paired ratio {pr['median']:.4f} [{pr['ci95'][0]:.4f}, {pr['ci95'][1]:.4f}]; "
                f"CPU time {r['pyro_proposed_cpu_ms']:.1f} vs {r['pyro_cpu_ms']:.1f} ms, paired "
                f"{pc['median']:.4f} [{pc['ci95'][0]:.4f}, {pc['ci95'][1]:.4f}]"
            )
    mal = res.get("malloc")
    if mal and "rows" in mal:
        env = " ".join(f"{k}={v}" for k, v in mal["tuned_env"].items())
        lines += [
            "",
            "## CPU allocator (glibc malloc): default vs tuned",
            "",
            f"{mal['model']}, B={TARGET['batch']}, fresh processes; *tuned*: `{env}` (large "
            "blocks from the heap, freed memory kept, so no fresh kernel-zeroed pages each "
            "step). *mallopt*: the same settings made from inside the process by "
            "`pgtm.allocator.keep_freed_memory()`, which the `pgtm` commands call at start. "
            "Medians of interleaved Pyro/floor steps.",
            "",
            "| T | who | default ms | tuned ms | speed-up | mallopt speed-up | default sys ms | "
            "tuned sys ms | default page faults/step | tuned page faults/step | peak RSS MB "
            "default / tuned |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in mal["rows"]:
            d, t = r["default"], r["tuned"]
            for who in ("pyro", "floor"):
                mallopt = r.get(f"{who}_speedup_mallopt")
                lines.append(
                    f"| {r['length']} | {who} | {d[f'{who}_ms']:.0f} | {t[f'{who}_ms']:.0f} | "
                    f"{r[f'{who}_speedup']:.2f}× | "
                    f"{'n/a' if mallopt is None else f'{mallopt:.2f}×'} | "
                    f"{d[f'{who}_sys_ms']:.0f} | "
                    f"{t[f'{who}_sys_ms']:.0f} | {d[f'{who}_minflt']:.0f} | "
                    f"{t[f'{who}_minflt']:.0f} | {_fmt(d.get('peak_rss_mb'), 0)} / "
                    f"{_fmt(t.get('peak_rss_mb'), 0)} |"
                )
    cuda = res.get("cuda")
    if cuda is None:
        pass
    elif "skipped" in cuda:
        lines += ["", "## CUDA", ""]
        lines.append(f"Skipped: {cuda['skipped']}.")
    else:
        lines += ["", f"## CUDA ({cuda['device']})", ""]
        lines += ["| model | B | pyro ms | floor ms | ratio | pyro frames/s | floor frames/s |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for m, rows in cuda.items():
            if m == "device":
                continue
            for r in rows:
                lines.append(
                    f"| {m} | {r['batch']} | {r['pyro_ms']:.1f} | {r['floor_ms']:.1f} | "
                    f"{r['ratio']:.3f} | {r['pyro_fps']:.0f} | {r['floor_fps']:.0f} |"
                )
    return "\n".join(lines) + "\n"


#: a fitted exponent within this distance of 1 counts as linear
LINEAR_TOLERANCE = 0.1


def targets_summary(res: dict) -> list[str]:
    """The two targets, model by model, from the measurements (nothing is assumed)."""
    lines = ["", "## Targets", ""]
    for m, r in res.get("target", {}).items():
        lo, hi = r["ratio_paired"]["ci95"]
        verdict = "met" if r["ratio"] <= RATIO_TARGET else "**not met**"
        lines.append(
            f"- {m}: Pyro step / floor = {r['ratio']:.3f} (ratio of medians; paired "
            f"{r['ratio_paired']['median']:.3f}, 95% CI [{lo:.3f}, {hi:.3f}]; CPU time "
            f"{r['ratio_cpu']:.3f}; ratio of means incl. garbage collection "
            f"{r['ratio_mean']:.3f}): ≤ {RATIO_TARGET} {verdict}."
        )
    sc = res.get("scaling", {}).get("length", {})
    for m, s in sc.items():
        e = s["exponent"]
        upper = "pyro_user_per_rep_upper" in e
        suffix = "_upper" if upper else ""
        span = f"T ≥ {e['upper_from']}" if upper else "all T"
        user, cpu = e[f"pyro_user_per_rep{suffix}"], e[f"pyro_cpu_per_rep{suffix}"]
        a = user["median"]
        lo, hi = user["ci95"]
        linear = a is not None and abs(a - 1) <= LINEAR_TOLERANCE
        note = ""
        if m == "introspective":
            note = (
                " Introspective reads a buffer of L = T latents, so each of its T steps is "
                "O(T) and a sequence costs O(T²) in the memory (attention, read, buffer "
                "copy) on top of the O(T) networks: it is *not* expected to be linear in T "
                "asymptotically; the memory-term exponents measure how far that has set in."
            )
        extra = ""
        if m != "vrnn" and "vrnn" in sc:
            d = memory_term_exponents(sc["vrnn"]["rows"], s["rows"])
            extra = (
                f" Memory term (this model minus the VRNN): time ∝ T^{_fmt(d['time'], 2)}, "
                f"saved bytes ∝ T^{_fmt(d['memory'], 2)}."
            )
        wall = e["pyro_wall_per_rep"]["median"]
        lines.append(
            f"- {m}: Pyro step user (compute) time ∝ T^a with a = {_fmt(a, 2)} ({span}, median "
            f"of the per-repetition fits, 95% CI [{_fmt(lo, 2)}, {_fmt(hi, 2)}]): "
            f"{'linear' if linear else '**not linear**'} (|a − 1| ≤ {LINEAR_TOLERANCE}); "
            f"CPU time incl. kernel {_fmt(cpu['median'], 2)} ({span}), wall time "
            f"{_fmt(wall, 2)} (all T); saved bytes ∝ T^{_fmt(e['memory'], 2)}.{extra}{note}"
        )
    return lines


def memory_term_exponents(base_rows: list[dict], rows: list[dict]) -> dict:
    """Growth exponents in T of what a memory adds to the VRNN (same T grid): the difference
    of the floor times (less noisy than Pyro's GC-prone ones) and of the saved bytes."""
    by_t = {r["length"]: r for r in base_rows}
    ts, dt, dm = [], [], []
    for r in rows:
        b = by_t.get(r["length"])
        if b is not None:
            ts.append(r["length"])
            dt.append(r["floor_ms"] - b["floor_ms"])
            dm.append(r["memory"]["floor"]["saved_mb"] - b["memory"]["floor"]["saved_mb"])
    return {"time": growth_exponent(ts, dt), "memory": growth_exponent(ts, dm)}


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sc = res["scaling"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5))
    colors = dict(zip(MODELS, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    panels = [
        (axes[0, 0], sc["length"], "length", "T (B=32)", "ms per step"),
        (axes[0, 1], sc["batch"], "batch", "B (T=20)", "ms per step"),
        (axes[1, 0], sc["length"], "length", "T (B=32)", "saved MB per step (Pyro)"),
        (axes[1, 1], sc["slots"], "num_slots", "DNC slots N (B=32, T=20)", "ms per step"),
    ]
    for i, (ax, series, key, xlabel, ylabel) in enumerate(panels):
        if not series:
            ax.set_visible(False)
            continue
        for m, s in series.items():
            xs = [r[key] for r in s["rows"]]
            if i == 2:
                ax.plot(xs, [r["memory"]["pyro"]["saved_mb"] for r in s["rows"]], "o-",
                        color=colors[m], label=f"{m} (a={_fmt(s['exponent']['memory'], 2)})")
                continue
            ax.plot(xs, [r["pyro_ms"] for r in s["rows"]], "o-", color=colors[m],
                    label=f"{m} pyro (a={_fmt(s['exponent']['pyro'], 2)})")
            ax.plot(xs, [r["floor_ms"] for r in s["rows"]], "x--", color=colors[m],
                    label=f"{m} floor")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    env = res["environment"]
    fig.suptitle(
        f"GTM SVI step, Pyro (solid) vs floor (dashed); {env['device']}, "
        f"{env['torch_num_threads']} thread(s)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
        "pgtm commands do, pgtm.allocator)",
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
        # as the pgtm commands run (pgtm.allocator); the malloc section compares both
        res_malloc = "pgtm.allocator.keep_freed_memory()" if keep_freed_memory() else (
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
