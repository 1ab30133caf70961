"""The compiled training step (``pgtm train --compile``) against the eager one and the
matmul-shape floor of ``matmul_floor.py``, measured in the same run.

The compiled objective (:class:`pgtm.inference.objective.CompiledObjective`) runs the GTM's ELBO
written out (:mod:`pgtm.inference.direct_elbo`) with autograd's per-step weight gradients,
traced as one graph: the batched weight gradients of the eager step are a Python autograd tape
that dynamo cannot trace. So that the gain of fusion and that of the batched weight gradients
are told apart, the written-out ELBO's eager steps are timed beside it. Variants per model, on
copies of one initial module, one thread, interleaved (Pyro's checks off, as in a training
step after a batch shape's first):

- ``pyro``: the ``pgtm train`` step (``matmul_floor.Step.pyro``);
- ``compiled``: the ``pgtm train --compile`` step (its first call, the compilation with Pyro's
  checks and the comparison with the Pyro loss, timed apart);
- ``floor``: ``floor.py``'s step (the written-out ELBO, weight gradients batched);
- ``floor_per_step``: the same with per-step weight gradients, the compiled graph's eager twin.

Writes ``<out>/summary.json`` and ``<out>/summary.md``::

    python benchmarks/compiled_step.py --out results/compiled_step
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
from pgtm.inference.direct_elbo import direct_elbo_loss
from pgtm.inference.objective import training_objective

sys.path.insert(0, str(Path(__file__).resolve().parent))
from floor import optimizer_step  # noqa: E402
from matmul_floor import (  # noqa: E402
    CLIP_NORM,
    LEARNING_RATE,
    MODELS,
    SETTINGS,
    Step,
    interleaved,
    matmul_floor,
    product_calls,
    run_record,
)

VARIANTS = ("pyro", "compiled", "floor", "floor_per_step")


class ObjectiveStep:
    """One optimisation step on a loss ``loss(gtm, x)`` of its own copy of a GTM, as a
    training step runs it (Pyro's checks off)."""

    def __init__(self, gtm, x, loss) -> None:
        self.gtm, self.x = copy.deepcopy(gtm), x
        self.optimizer = MultiTensorClippedAdam(list(self.gtm.parameters()), lr=LEARNING_RATE,
                                                clip_norm=CLIP_NORM)
        self.loss = loss(self.gtm)

    def __call__(self) -> float:
        return optimizer_step(lambda: self.loss(self.x), self.optimizer)


def compiled_objective(gtm):
    return training_objective(gtm, "trace", 1, compiled=True)[0]


def written_out(unrolled: bool):
    return lambda gtm: lambda x: direct_elbo_loss(gtm, x, unrolled=unrolled)


def bench_model(model: str, repeats: int) -> dict:
    setting = SETTINGS["readme"]
    step = Step(model, setting["length"], setting["network"], setting["batch"])
    steps = {
        "pyro": step.pyro,
        "compiled": ObjectiveStep(step.floor_gtm, step.x, compiled_objective),
        "floor": ObjectiveStep(step.floor_gtm, step.x, written_out(True)),
        "floor_per_step": ObjectiveStep(step.floor_gtm, step.x, written_out(False)),
    }
    first_s = {}
    for name in ("floor_per_step", "compiled"):
        start = time.perf_counter()
        steps[name]()
        first_s[name] = time.perf_counter() - start
    floor_s = matmul_floor(product_calls(step.products()))
    medians = interleaved(steps, repeats)
    row = {f"{name}_ms": 1e3 * medians[name] for name in VARIANTS}
    row.update({f"{name}_ratio": medians[name] / floor_s for name in VARIANTS})
    return {
        **row,
        "matmul_floor_ms": 1e3 * floor_s,
        "compile_s": first_s["compiled"] - first_s["floor_per_step"],
        "speedup": medians["pyro"] / medians["compiled"],
    }


def markdown(res: dict) -> str:
    lines = [
        "# The compiled training step against the eager one and the matmul floor",
        "",
        f"Command: `{res['command']}`  ",
        f"{res['date']}; {res['cpu']}, torch {res['torch']}; load average "
        f"{res['load'][0]:.2f} at start, {res['load'][1]:.2f} at end; code: commit "
        f"`{res['commit']}`.",
        "",
        "Perfect recall l=10 (T=15), MLP networks, B=32, one thread; one step = forward, "
        "backward and ClippedAdam, Pyro's checks off. *pgtm train*: the eager step; "
        "*--compile*: the compiled objective's; *floor*: `floor.py` (the written-out ELBO, "
        "weight gradients batched over the steps); *per-step*: the same with autograd's "
        "per-step weight gradients, the compiled graph's eager twin; *ratio* = step / "
        "matmul-shape floor (every product of the `pgtm train` step timed alone, warm); "
        "*speed-up* = pgtm train / --compile. *compile s*: the first compiled call over the "
        "first eager one. Medians of interleaved repetitions.",
        "",
        "| model | matmul floor ms | pgtm train ms (ratio) | --compile ms (ratio) | floor ms "
        "(ratio) | per-step ms (ratio) | speed-up | compile s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for model, r in res["models"].items():
        cells = " | ".join(f"{r[f'{name}_ms']:.1f} ({r[f'{name}_ratio']:.2f})"
                           for name in VARIANTS)
        lines.append(f"| {model} | {r['matmul_floor_ms']:.1f} | {cells} | "
                     f"{r['speedup']:.2f} | {r['compile_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    keep_freed_memory()
    torch.set_num_threads(1)
    res = {**run_record("compiled_step.py", argv), "models": {}}
    for model in args.models:
        r = res["models"][model] = bench_model(model, args.repeats)
        print(f"{model}: --compile {r['compiled_ms']:.1f} ms ({r['compiled_ratio']:.2f}x the "
              f"matmul floor), pgtm train {r['pyro_ms']:.1f} ({r['pyro_ratio']:.2f}x); "
              f"compile {r['compile_s']:.0f} s", flush=True)
    res["load"].append(os.getloadavg()[0])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(res, indent=1) + "\n")
    (args.out / "summary.md").write_text(markdown(res))
    print(f"wrote {args.out}/summary.json, summary.md")
    return res


if __name__ == "__main__":
    main()
