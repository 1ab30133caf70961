"""The training step of every GTM against its matmul-shape floor, and its speed against the
batch size on 1 and 2 threads.

The process tunes glibc's malloc as the ``pgtm`` commands do (:mod:`pgtm.cli.allocator`).

*Matmul-shape floor*: one step of ``pgtm train`` (Pyro's ``Trace_ELBO`` through the objective
module, backward, ClippedAdam) is run under a dispatch mode that records every matrix product it
issues (``aten::mm``, ``addmm``, ``bmm``, ``baddbmm``: forward, backward and the LSTM cell's) with
its inputs' shapes and strides; every product is then timed alone on float32 tensors of those
very layouts, in the same process, and the floor is the sum over the step's products of their
medians. Whatever a step costs above it is elementwise work, Python, autograd, Pyro, and the
products' own loss of cache: timed alone, a product finds its weights in cache. The *cold floor*
times each product after overwriting twice the last-level cache, so that its inputs come from
memory; a step's products, measured inside a profiled step, take between the two (at B=32 a
step's weights, not its activations, are most of the products' traffic, and how much of them
survives from one time step to the next depends on what else shares the last-level cache).
Convolutions are not products here: at the conv setting the floor leaves them out, so the ratio
there includes their time.

Settings: ``readme`` (the quick start's: perfect recall l=10, k=5, so T=15; MLP networks; B=32)
and ``target`` (the step benchmark's: T=20, conv networks, B=32), 28x28 binary frames, default
sizes. For each model the Pyro step, the hand-written floor step (``benchmarks/floor.py``) and the
products are interleaved; ``ratio`` = median Pyro step / matmul floor. The batch sweep times the
Pyro step at the readme setting for B = 32 ... 512 with 1 and with 2 intra-op threads (frames/s
= B T / step time). Writes ``<out>/summary.json``, ``<out>/summary.md`` and
``<out>/matmul_floor.png``::

    python benchmarks/matmul_floor.py --out results/matmul_floor
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import platform
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

from pgtm.cli.allocator import keep_freed_memory
from pgtm.inference.clipped_adam import MultiTensorClippedAdam
from pgtm.inference.objective import training_objective
from pgtm.models import build_gtm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from floor import floor_step, optimizer_step  # noqa: E402

MODELS = ("vrnn", "introspective", "ntm", "lru", "dnc")
SETTINGS = {
    "readme": {"length": 15, "network": "mlp", "batch": 32},
    "target": {"length": 20, "network": "conv", "batch": 32},
}
PRODUCTS = {torch.ops.aten.mm.default: "mm", torch.ops.aten.addmm.default: "addmm",
            torch.ops.aten.bmm.default: "bmm", torch.ops.aten.baddbmm.default: "baddbmm"}
PROFILED_PRODUCTS = tuple(f"aten::{name}" for name in PRODUCTS.values())
BATCHES = (32, 64, 128, 256, 512)
LEARNING_RATE, CLIP_NORM = 1e-3, 10.0


class Step:
    """One model at one setting: the ``pgtm train`` step and the floor step, on two copies of
    one initial module."""

    def __init__(self, model: str, length: int, network: str, batch: int) -> None:
        torch.manual_seed(0)
        self.gtm = build_gtm(model, frame_shape=(1, 28, 28), sequence_length=length,
                             network=network)
        self.floor_gtm = copy.deepcopy(self.gtm)
        self.objective, _ = training_objective(self.gtm, "trace", 1)
        self.optimizer, self.floor_optimizer = (
            MultiTensorClippedAdam(list(module.parameters()), lr=LEARNING_RATE,
                                   clip_norm=CLIP_NORM)
            for module in (self.gtm, self.floor_gtm))
        generator = torch.Generator().manual_seed(1)
        self.x = (torch.rand(batch, length, 1, 28, 28, generator=generator) < 0.2).float()
        self.parameters = sum(p.numel() for p in self.gtm.parameters())

    def pyro(self) -> None:
        optimizer_step(lambda: self.objective(self.x), self.optimizer)

    def floor(self) -> None:
        floor_step(self.floor_gtm, self.floor_optimizer, self.x)

    def products(self) -> list[tuple[str, tuple, int]]:
        """``(op, inputs, count)`` of every matrix product of one Pyro step; ``inputs`` holds
        ``(shape, stride)`` for a tensor argument and the value of any other."""
        self.pyro()  # warm, so that the recorded step is a steady one
        with _RecordProducts() as recorder:
            self.pyro()
        return [(op, inputs, count) for (op, inputs), count in recorder.counts.items()]

    def products_in_step(self, profiled_steps: int = 5) -> float:
        """Seconds the matrix products take inside a Pyro step, where their inputs come from
        the step's own (colder) caches: the median over ``profiled_steps`` profiled steps."""
        totals = []
        for _ in range(profiled_steps):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                self.pyro()
            totals.append(sum(e.self_cpu_time_total for e in prof.key_averages()
                              if e.key in PROFILED_PRODUCTS) / 1e6)
        return statistics.median(totals)


class _RecordProducts(TorchDispatchMode):
    """Counts the matrix products dispatched while active, by op, shapes and strides."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in PRODUCTS:
            if kwargs:
                raise NotImplementedError(f"{func} called with keyword arguments {kwargs}")
            inputs = tuple((tuple(a.shape), a.stride()) if torch.is_tensor(a) else a
                           for a in args)
            self.counts[(PRODUCTS[func], inputs)] += 1
        return func(*args, **kwargs)


def _strided(shape: tuple, stride: tuple) -> torch.Tensor:
    """A float32 tensor of ``shape`` laid out with ``stride``."""
    extent = 1 + sum(max(size - 1, 0) * step for size, step in zip(shape, stride, strict=True))
    return torch.randn(extent).as_strided(shape, stride)


def product_calls(products) -> list[tuple[callable, int]]:
    """Each product as ``(call, count)``: ``op`` on fresh float32 tensors of its recorded
    shapes and strides."""
    calls = []
    for op, inputs, count in products:
        args = [_strided(*a) if isinstance(a, tuple) else a for a in inputs]
        calls.append((functools.partial(getattr(torch, op), *args), count))
    return calls


def last_level_cache_bytes(default: int = 32 << 20) -> int:
    """The largest CPU cache of this machine (Linux sysfs), else ``default``."""
    sizes = []
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = (index / "size").read_text().strip()
        except OSError:
            continue
        unit = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        sizes.append(int(text.rstrip("KMG")) * unit)
    return max(sizes, default=default)


def cache_evictor() -> callable:
    """A call that overwrites twice the last-level cache."""
    buffer = torch.zeros(2 * last_level_cache_bytes() // 4)
    return lambda: buffer.add_(1.0)


def median_seconds(fn, repeats: int, before=None) -> float:
    """Median seconds of ``fn`` over ``repeats`` calls, each after ``before()`` (untimed)."""
    times = []
    for _ in range(repeats):
        if before is not None:
            before()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_floor(calls, repeats: int = 25, before=None) -> float:
    """Seconds: the sum over the products of a step of each one's median time alone, each
    call after ``before()`` (e.g. :func:`cache_evictor`)."""
    total = 0.0
    for call, count in calls:
        for _ in range(3):
            call()
        total += count * median_seconds(call, repeats, before)
    return total


def all_products(calls) -> None:
    """Every product of one step, back to back."""
    for call, count in calls:
        for _ in range(count):
            call()


def interleaved_times(calls: dict, repeats: int, warmup: int = 2) -> dict[str, list[float]]:
    """Seconds of each call at every repetition, the calls interleaved in rotating order."""
    for _ in range(warmup):
        for call in calls.values():
            call()
    times = {name: [] for name in calls}
    names = list(calls)
    for repeat in range(repeats):
        for name in names[repeat % len(names):] + names[:repeat % len(names)]:
            start = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - start)
    return times


def interleaved(calls: dict, repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median seconds of each call, the calls interleaved in rotating order."""
    return _medians(interleaved_times(calls, repeats, warmup))


def _medians(times: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(values) for name, values in times.items()}


def bench_setting(model: str, setting: dict, repeats: int) -> dict:
    step = Step(model, setting["length"], setting["network"], setting["batch"])
    products = step.products()
    inside_s = step.products_in_step()
    calls = product_calls(products)
    floor_s = matmul_floor(calls)
    cold_s = matmul_floor(calls, before=cache_evictor())
    times = interleaved_times({"pyro": step.pyro, "floor": step.floor,
                               "products": lambda: all_products(calls)}, repeats)
    medians = _medians(times)
    # each step over the products run next to it: the two see the same load of the host
    paired = statistics.median(
        step_s / products_s for step_s, products_s in zip(times["pyro"], times["products"],
                                                          strict=True))
    return {
        "parameters": step.parameters,
        "products_per_step": sum(count for _, _, count in products),
        "gflop_per_step": sum(count * _flops(inputs) for _, inputs, count in products) / 1e9,
        "pyro_ms": 1e3 * medians["pyro"],
        "floor_ms": 1e3 * medians["floor"],
        "matmul_floor_ms": 1e3 * floor_s,
        "cold_matmul_floor_ms": 1e3 * cold_s,
        "products_back_to_back_ms": 1e3 * medians["products"],
        "products_in_step_ms": 1e3 * inside_s,
        "ratio": medians["pyro"] / floor_s,
        "cold_ratio": medians["pyro"] / cold_s,
        "paired_ratio": paired,
        "floor_ratio": medians["floor"] / floor_s,
    }


def _flops(inputs: tuple) -> float:
    """Multiply-adds times 2 of a product whose last two matrix inputs are ``[(b,) m, k]`` and
    ``[(b,) k, n]`` (``addmm``/``baddbmm`` carry the added term first)."""
    a, b = [shape for shape, _ in (i for i in inputs if isinstance(i, tuple))
            if len(shape) >= 2][-2:]
    batch = a[0] if len(a) == 3 else 1
    return 2.0 * batch * a[-2] * a[-1] * b[-1]


def bench_batches(model: str, repeats: int, thread_counts) -> dict:
    setting = SETTINGS["readme"]
    rows = {}
    for threads in thread_counts:
        torch.set_num_threads(threads)
        for batch in BATCHES:
            step = Step(model, setting["length"], setting["network"], batch)
            seconds = interleaved({"pyro": step.pyro}, repeats, warmup=1)["pyro"]
            rows[f"{threads}/{batch}"] = {
                "threads": threads, "batch": batch, "ms_per_step": 1e3 * seconds,
                "frames_per_s": batch * setting["length"] / seconds,
            }
            print(f"  {model} B={batch} threads={threads}: {1e3 * seconds:.1f} ms", flush=True)
    torch.set_num_threads(1)
    return rows


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_record(script: str, argv) -> dict:
    """What a benchmark's summary says of its run: the command, date, CPU, torch, commit and
    the load average at start (append the one at the end to ``load``)."""
    return {
        "command": f"python benchmarks/{script} " + " ".join(
            sys.argv[1:] if argv is None else argv),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "cpu": f"{cpu_name()} ({os.cpu_count()} cores)",
        "torch": torch.__version__,
        "commit": os.popen("git rev-parse --short=12 HEAD 2>/dev/null").read().strip(),
        "load": [os.getloadavg()[0]],
    }


def markdown(res: dict) -> str:
    lines = [
        "# The training step against its matmul-shape floor",
        "",
        f"Command: `{res['command']}`  ",
        f"{res['date']}; {res['cpu']}, torch {res['torch']}; malloc: {res['malloc']}; load "
        f"average {res['load'][0]:.2f} at start, {res['load'][1]:.2f} at end; code: commit "
        f"`{res['commit']}`.",
        "",
        "One step = forward + backward + ClippedAdam update, as `pgtm train` runs it (Pyro's "
        "per-site checks off after the first step of a shape). *Matmul floor*: every matrix "
        "product of the step timed alone at its shapes and strides (float32), summed; *ratio* = "
        "step / matmul floor (at the conv setting the convolutions are in the step, not in "
        "the floor). *Cold floor*: the same, each product timed after twice the last-level "
        "cache was overwritten (inputs from memory); *cold ratio* = step / cold floor. "
        "*Paired ratio*: the median over repetitions of the step over the products back to "
        "back run beside it (less sensitive to the host's drift than the other ratios, whose "
        "floors are timed apart from the steps). *In "
        "the step*: the same products' time inside a profiled step (inputs and outputs from "
        "the step's own caches), and its ratio to the floor. "
        "Medians of interleaved repetitions, one thread; the batch sweep with 1 "
        "and 2 threads, the training processes of this machine paused.",
        "",
    ]
    for name, setting in SETTINGS.items():
        lines += [
            f"## Setting `{name}`: T={setting['length']}, {setting['network']} networks, "
            f"B={setting['batch']}",
            "",
            "| model | params | GFLOP/step | products/step | matmul floor ms (back to back) | "
            "cold floor ms | in the step ms (ratio) | Pyro step ms | ratio | cold ratio | "
            "paired ratio | floor.py step ms | floor.py ratio |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for model, r in res["settings"][name].items():
            lines.append(
                f"| {model} | {r['parameters'] / 1e6:.2f} M | {r['gflop_per_step']:.2f} | "
                f"{r['products_per_step']} | {r['matmul_floor_ms']:.1f} "
                f"({r['products_back_to_back_ms']:.1f}) | "
                f"{_optional(r, 'cold_matmul_floor_ms', 1)} | "
                f"{_in_step(r)} | {r['pyro_ms']:.1f} | {r['ratio']:.2f} | "
                f"{_optional(r, 'cold_ratio', 2)} | {_optional(r, 'paired_ratio', 2)} | "
                f"{r['floor_ms']:.1f} | {r['floor_ratio']:.2f} |")
        lines.append("")
    if res.get("batches"):
        lines += [
            "## Batch size (setting `readme`), 1 and 2 threads",
            "",
            "| model | threads | " + " | ".join(f"B={b}" for b in BATCHES) + " |",
            "|---|---:|" + "---:|" * len(BATCHES),
        ]
        for model, rows in res["batches"].items():
            for threads in res["thread_counts"]:
                cells = [rows[f"{threads}/{b}"] for b in BATCHES]
                lines.append(f"| {model} | {threads} | " + " | ".join(
                    f"{c['ms_per_step']:.0f} ms ({c['frames_per_s']:.0f} fr/s)" for c in cells)
                    + " |")
        lines.append("")
    return "\n".join(lines)


def _optional(row: dict, key: str, digits: int) -> str:
    return f"{row[key]:.{digits}f}" if key in row else "–"  # a summary from before the column


def _in_step(row: dict) -> str:
    if "products_in_step_ms" not in row:  # a summary written before this column
        return "–"
    inside = row["products_in_step_ms"]
    return f"{inside:.1f} ({inside / row['matmul_floor_ms']:.2f})"


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ax = axes[0]
    models = list(res["settings"]["readme"])
    width = 0.38
    for i, name in enumerate(SETTINGS):
        ratios = [res["settings"][name][m]["ratio"] for m in models]
        where = [j + (i - 0.5) * width for j in range(len(models))]
        ax.bar(where, ratios, width,
               label=f"{name} (T={SETTINGS[name]['length']}, {SETTINGS[name]['network']})")
        cold = [res["settings"][name][m].get("cold_ratio") for m in models]
        if None not in cold:
            ax.plot(where, cold, "k_", ms=14, mew=2,
                    label="against the cold floor" if i == 0 else None)
    ax.axhline(1.3, color="k", ls="--", lw=0.8)
    ax.text(len(models) - 0.5, 1.33, "target 1.3", ha="right", fontsize=8)
    ax.set_xticks(range(len(models)), models)
    ax.set_ylabel("Pyro step / matmul-shape floor (bars: warm)")
    ax.set_title("Training step against its matmul floor (1 thread, B=32)")
    ax.set_ylim(0, 1.2 * max(r["ratio"] for rows in res["settings"].values()
                             for r in rows.values()))
    ax.legend(fontsize=8, loc="upper left")
    ax = axes[1]
    for model, rows in res.get("batches", {}).items():
        for threads, style in zip(res["thread_counts"], ("-", "--"), strict=False):
            cells = [rows[f"{threads}/{b}"] for b in BATCHES]
            ax.plot(BATCHES, [c["frames_per_s"] for c in cells], "o" + style,
                    label=f"{model}, {threads} thread{'s' if threads > 1 else ''}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(BATCHES, [str(b) for b in BATCHES])
    ax.set_xlabel("batch size B (sequences of T=15 frames)")
    ax.set_ylabel("training frames per second")
    ax.set_title("Training throughput, perfect recall, MLP networks")
    ax.legend(fontsize=7)
    fig.suptitle(f"{res['cpu']}; commit {res['commit']}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--batch-models", nargs="*", default=["vrnn", "introspective", "dnc"],
                        choices=MODELS, help="models of the batch sweep (none: skip it)")
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--batch-repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    allocator = "pgtm.cli.allocator.keep_freed_memory()" if keep_freed_memory() else (
        "glibc defaults")  # as the pgtm commands run
    torch.set_num_threads(1)
    thread_counts = sorted({1, min(2, os.cpu_count() or 1)})
    res = {
        **run_record("matmul_floor.py", argv),
        "thread_counts": thread_counts,
        "malloc": allocator,
        "settings": {name: {} for name in SETTINGS},
        "batches": {},
    }
    for name, setting in SETTINGS.items():
        for model in args.models:
            r = bench_setting(model, setting, args.repeats)
            res["settings"][name][model] = r
            print(f"{name} {model}: step {r['pyro_ms']:.1f} ms, matmul floor "
                  f"{r['matmul_floor_ms']:.1f} ms, ratio {r['ratio']:.2f}", flush=True)
    for model in args.batch_models:
        res["batches"][model] = bench_batches(model, args.batch_repeats, thread_counts)
    res["load"].append(os.getloadavg()[0])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(res, indent=1) + "\n")
    (args.out / "summary.md").write_text(markdown(res))
    plot(res, args.out / "matmul_floor.png")
    print(f"wrote {args.out}/summary.json, summary.md, matmul_floor.png")
    return res


if __name__ == "__main__":
    main()
