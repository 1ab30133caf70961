"""Elementwise kernels on this CPU: torch's ELU and Bernoulli log-density against
:func:`pgtm.elementwise.elu` and :func:`pgtm.elementwise.bernoulli_log_prob`, and the
discretised logistic's log-mass by autograd against its written-out gradient.

Times (nanoseconds per element, medians of interleaved repetitions, one thread) ``exp``,
``log``, ``log1p`` and ``expm1`` on a step's frames (B = 32, T = 15, 28x28); forward +
backward of the ELU of the prior's hidden layer over a step ([480, 256]): torch's ``F.elu``
against :func:`pgtm.elementwise.elu`; forward + backward of the frames' Bernoulli log-density
over a step ([480, 784]): torch's ``binary_cross_entropy_with_logits`` against
:func:`pgtm.elementwise.bernoulli_log_prob`; forward + backward of the discretised logistic's
log-mass over a rotating-room batch (B = 32, T = 30, 3x32x32): autograd of its formula against
:class:`~pgtm.models.discretized_logistic.DiscretizedLogistic` (one node, the gradient written
out). Writes ``<out>/summary.{json,md}``::

    python benchmarks/elementwise.py --out results/elementwise
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
from torch.nn import functional as F

from pgtm.elementwise import bernoulli_log_prob, elu
from pgtm.models.discretized_logistic import _HALF_BIN, DiscretizedLogistic

sys.path.insert(0, str(Path(__file__).resolve().parent))
from matmul_floor import cpu_name, interleaved  # noqa: E402


def _median_ns_per_element(calls: dict, elements: int, repeats: int) -> dict[str, float]:
    return {name: 1e9 * seconds / elements
            for name, seconds in interleaved(calls, repeats, warmup=3).items()}


def _forward_backward(fn, *inputs, differentiable: int = 1):
    """Forward and backward of ``fn``, its first ``differentiable`` inputs as leaves."""
    def call():
        leaves = [t.detach().requires_grad_(i < differentiable) for i, t in enumerate(inputs)]
        fn(*leaves).sum().backward()
    return call


def measure(repeats: int) -> dict:
    generator = torch.Generator().manual_seed(0)
    logits = 4 * torch.randn(32 * 15, 784, generator=generator)
    positive = logits.abs() + 0.5
    fraction = torch.rand(logits.shape, generator=generator)
    kernels = _median_ns_per_element({
        "exp": lambda: logits.exp(), "log": lambda: positive.log(),
        "log1p": lambda: fraction.log1p(), "expm1": lambda: logits.expm1(),
    }, logits.numel(), repeats)
    hidden = torch.randn(32 * 15, 256, generator=generator)
    elus = _median_ns_per_element({"torch": _forward_backward(F.elu, hidden),
                                   "pgtm": _forward_backward(elu, hidden)},
                                  hidden.numel(), repeats)
    frames = (torch.rand(logits.shape, generator=generator) < 0.2).float()
    bernoullis = _median_ns_per_element(
        {"torch": _forward_backward(
            lambda a, b: -F.binary_cross_entropy_with_logits(a, b, reduction="none"),
            logits, frames),
         "pgtm": _forward_backward(bernoulli_log_prob, logits, frames)},
        logits.numel(), repeats)
    loc = torch.rand(32 * 30, 3, 32, 32, generator=generator)
    log_scale = -4 * torch.rand(loc.shape, generator=generator)
    level = (255 * torch.rand(loc.shape, generator=generator)).round() / 255
    log_masses = _median_ns_per_element(
        {"autograd": _forward_backward(_log_mass_by_autograd, loc, log_scale, level,
                                       differentiable=2),
         "written out": _forward_backward(
             lambda *a: DiscretizedLogistic(a[0], a[1]).log_prob(a[2]), loc, log_scale, level,
             differentiable=2)},
        loc.numel(), max(repeats // 5, 5))
    return {"kernels_ns_per_element": kernels, "elu_ns_per_element": elus,
            "bernoulli_ns_per_element": bernoullis,
            "discretized_logistic_ns_per_element": log_masses}


def _log_mass_by_autograd(loc, log_scale, level):
    """The log-mass of :mod:`pgtm.models.discretized_logistic` as autograd would differentiate
    it (the code before its gradient was written out)."""
    upper = (level + _HALF_BIN - loc) * torch.exp(-log_scale)
    lower = (level - _HALF_BIN - loc) * torch.exp(-log_scale)
    width = upper - lower
    log1mexp = torch.where(width < 0.6931, torch.log(-torch.expm1(-width)),
                           torch.log1p(-torch.exp(-width)))
    inner = F.logsigmoid(upper) + F.logsigmoid(-lower) + log1mexp
    edge = torch.where(level <= 0, F.logsigmoid(upper), F.logsigmoid(-lower))
    return torch.where((level <= 0) | (level >= 1), edge, inner)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = measure(args.repeats)
    results["environment"] = {
        "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "machine": cpu_name(),
        "load_average": list(os.getloadavg()),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["# Elementwise kernels: torch's and pgtm's", "",
             "Command: `python benchmarks/elementwise.py --out " + str(args.out) + "`; torch "
             f"{torch.__version__}, {results['environment']['machine']}, CPU capability "
             f"{results['environment']['cpu_capability']}, "
             "one thread; nanoseconds per element, forward + backward for the ELU, the "
             "Bernoulli log-density and the log-mass; load average "
             f"{results['environment']['load_average'][0]:.2f} at the end.", "",
             "| kernel | torch | pgtm |", "|---|---:|---:|"]
    for name, value in results["kernels_ns_per_element"].items():
        lines.append(f"| {name} | {value:.2f} | |")
    elus = results["elu_ns_per_element"]
    lines.append(f"| ELU [480, 256] | {elus['torch']:.2f} | {elus['pgtm']:.2f} |")
    bernoullis = results["bernoulli_ns_per_element"]
    lines.append(f"| Bernoulli log-density [480, 784] | {bernoullis['torch']:.2f} | "
                 f"{bernoullis['pgtm']:.2f} |")
    masses = results["discretized_logistic_ns_per_element"]
    lines.append(f"| discretised logistic log-mass [960, 3, 32, 32] (autograd, written out) | "
                 f"{masses['autograd']:.2f} | {masses['written out']:.2f} |")
    (args.out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
