"""The benchmark's settings and harness: size grids, interleaved timing with GC and CPU time,
paired ratios, saved-tensor memory, and the Pyro/floor :class:`Pair` of one GTM (used by
``bench_step.py``)."""

from __future__ import annotations

import contextlib
import copy
import datetime
import gc
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import ClippedAdam
from pyro.optim.clipped_adam import ClippedAdam as TorchClippedAdam

from pgtm.inference.train import without_pyro_checks
from pgtm.models import build_gtm

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

    def __init__(self, memory: str, length: int, device, elbo=None, **options):
        torch.manual_seed(0)
        self.gtm = build_gtm(memory, sequence_length=length, **{**SIZES, **options}).to(device)
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
        Pyro's checks off (:func:`~pgtm.inference.train.without_pyro_checks`: its per-site
        checks and the distributions' argument validation)."""
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
# the environment a run was timed in


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
    for rel in ("models/gtm.py", "inference/direct_elbo.py", "benchmarks/floor.py",
                "benchmarks/bench_step.py"):
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
