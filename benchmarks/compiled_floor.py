"""Would fusing the training step bring it near its matmul floor? The hand-written floor step
compiled whole by ``torch.compile`` (inductor), against the same step in eager mode and the
``pgtm train`` step, with the matmul-shape floor of ``matmul_floor.py`` measured in the same
run.

``floor.py``'s loss batches the recurrence's weight gradients over the steps through a tape
that is Python autograd code (:mod:`pgtm.unrolled_linear`), which dynamo cannot trace; the
compiled step therefore runs the floor with autograd's per-step weight gradients
(``unrolled=False``), traced as one graph (``fullgraph=True``; forward and backward fused by
inductor, no recompilation within a run since the shapes stay), and its eager twin is timed
beside it, so that the gain of fusion and that of the batched weight gradients are told apart.
Variants per model, on copies of one initial module, one thread, interleaved:

- ``pyro``: the ``pgtm train`` step (``matmul_floor.Step.pyro``);
- ``floor``: ``floor.py``'s step (batched weight gradients), argument validation off as in
  ``pgtm train``;
- ``floor_per_step``: ``floor.py``'s step with per-step weight gradients;
- ``compiled``: the same, compiled (its first call, the compilation, timed apart).

Writes ``<out>/summary.json`` and ``<out>/summary.md``::

    python benchmarks/compiled_floor.py --out results/compiled_floor
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import torch

from pgtm.cli.allocator import keep_freed_memory
from pgtm.inference.clipped_adam import MultiTensorClippedAdam
from pgtm.inference.guarded_step import without_pyro_checks

sys.path.insert(0, str(Path(__file__).resolve().parent))
from floor import floor_loss  # noqa: E402
from matmul_floor import (  # noqa: E402
    CLIP_NORM,
    LEARNING_RATE,
    MODELS,
    SETTINGS,
    Step,
    cpu_name,
    interleaved,
    matmul_floor,
    product_calls,
)

VARIANTS = ("pyro", "floor", "floor_per_step", "compiled")
# the compiled step draws its noise from torch's generator, as the eager one: the same draws
torch._inductor.config.fallback_random = True


class FloorStep:
    """One optimisation step on ``floor.py``'s loss of its own copy of a GTM, optionally with
    the loss compiled."""

    def __init__(self, gtm, x, *, unrolled: bool, compiled: bool) -> None:
        self.gtm, self.x = copy.deepcopy(gtm), x
        self.optimizer = MultiTensorClippedAdam(list(self.gtm.parameters()), lr=LEARNING_RATE,
                                                clip_norm=CLIP_NORM)
        loss = lambda x: floor_loss(self.gtm, x, unrolled=unrolled)  # noqa: E731
        self.loss = torch.compile(loss, fullgraph=True, dynamic=False) if compiled else loss

    def __call__(self) -> float:
        with without_pyro_checks():  # as pgtm train steps (validation is Python: graph breaks)
            loss = self.loss(self.x)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.item()


def bench_model(model: str, repeats: int) -> dict:
    setting = SETTINGS["readme"]
    step = Step(model, setting["length"], setting["network"], setting["batch"])
    steps = {
        "pyro": step.pyro,
        "floor": FloorStep(step.floor_gtm, step.x, unrolled=True, compiled=False),
        "floor_per_step": FloorStep(step.floor_gtm, step.x, unrolled=False, compiled=False),
        "compiled": FloorStep(step.floor_gtm, step.x, unrolled=False, compiled=True),
    }
    # the first call of each, under one seed: the compiled loss against its eager twin
    losses, first_s = {}, {}
    for name in ("floor_per_step", "compiled"):
        torch.manual_seed(2)
        start = time.perf_counter()
        losses[name] = steps[name]()
        first_s[name] = time.perf_counter() - start
    floor_s = matmul_floor(product_calls(step.products()))
    medians = interleaved(steps, repeats)
    row = {f"{name}_ms": 1e3 * medians[name] for name in VARIANTS}
    row.update({f"{name}_ratio": medians[name] / floor_s for name in VARIANTS})
    return {
        **row,
        "matmul_floor_ms": 1e3 * floor_s,
        "compile_s": first_s["compiled"] - first_s["floor_per_step"],
        "compiled_speedup": medians["floor_per_step"] / medians["compiled"],
        "first_loss_relative_difference": abs(losses["compiled"] - losses["floor_per_step"])
        / abs(losses["floor_per_step"]),
    }


def markdown(res: dict) -> str:
    lines = [
        "# The floor step compiled whole, against eager and the matmul floor",
        "",
        f"Command: `{res['command']}`  ",
        f"{res['date']}; {res['cpu']}, torch {res['torch']}; load average "
        f"{res['load'][0]:.2f} at start, {res['load'][1]:.2f} at end; code: commit "
        f"`{res['commit']}`.",
        "",
        "Perfect recall l=10 (T=15), MLP networks, B=32, one thread; one step = forward, "
        "backward and ClippedAdam. *floor*: `floor.py` (weight gradients batched over the "
        "steps); *per-step*: the same with autograd's per-step weight gradients; *compiled*: "
        "that loss through `torch.compile(fullgraph=True)`; *ratio* = step / matmul-shape "
        "floor (every product of the `pgtm train` step timed alone, warm). *compile s*: its "
        "first call over the eager one's. Medians of interleaved repetitions.",
        "",
        "| model | matmul floor ms | pgtm train ms (ratio) | floor ms (ratio) | per-step ms "
        "(ratio) | compiled ms (ratio) | compiled speed-up | compile s | loss rel. diff. |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for model, r in res["models"].items():
        cells = " | ".join(f"{r[f'{name}_ms']:.1f} ({r[f'{name}_ratio']:.2f})"
                           for name in VARIANTS)
        lines.append(f"| {model} | {r['matmul_floor_ms']:.1f} | {cells} | "
                     f"{r['compiled_speedup']:.2f} | {r['compile_s']:.0f} | "
                     f"{r['first_loss_relative_difference']:.1e} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["vrnn", "introspective", "dnc"],
                        choices=MODELS)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    keep_freed_memory()
    torch.set_num_threads(1)
    res = {
        "command": "python benchmarks/compiled_floor.py " + " ".join(
            sys.argv[1:] if argv is None else argv),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "cpu": f"{cpu_name()} ({os.cpu_count()} cores)",
        "torch": torch.__version__,
        "commit": os.popen("git rev-parse --short=12 HEAD 2>/dev/null").read().strip(),
        "load": [os.getloadavg()[0]],
        "models": {},
    }
    for model in args.models:
        r = res["models"][model] = bench_model(model, args.repeats)
        print(f"{model}: compiled {r['compiled_ms']:.1f} ms ({r['compiled_ratio']:.2f}x the "
              f"matmul floor), eager per-step {r['floor_per_step_ms']:.1f}, pgtm train "
              f"{r['pyro_ms']:.1f}; compile {r['compile_s']:.0f} s", flush=True)
    res["load"].append(os.getloadavg()[0])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(res, indent=1) + "\n")
    (args.out / "summary.md").write_text(markdown(res))
    print(f"wrote {args.out}/summary.json, summary.md")
    return res


if __name__ == "__main__":
    main()
