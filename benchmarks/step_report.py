"""The benchmark's report: the environment it ran in, ``benchmark.md`` and the scaling picture."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_harness import (  # noqa: E402
    FIXED_SLOTS,
    MODELS,
    RATIO_TARGET,
    TARGET,
    UPPER_FROM,
    growth_exponent,
)


def fmt(v, digits=1):
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
                f"{fmt(e['memory'], 2)} |"
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
            f"{fmt(d['exponent']['memory'], 2)}."
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
        lines += [f"- {k}: {fmt(v, 0)}" for k, v in comp.items()]
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
            "off | ratio, all validation off (both) |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for m, r in ov["tiny"].items():
            lines.append(
                f"| {m} | {r['pyro_ms']:.2f} | {r['floor_ms']:.2f} | {r['ratio']:.3f} | "
                f"{r['floor_checked_ms']:.2f} | {r['ratio_no_pyro_checks']:.3f} | "
                f"{r['ratio_novalidation']:.3f} |"
            )
        lines += [
            "",
            "*Pyro checks off*: `pyro.infer`/`pyro.poutine` validation off (per-site shape "
            "checks, NaN/inf warnings with backward hooks on every `log_prob_sum`) and, since "
            "commit 1f487ea, the distributions' argument validation off too.",
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
            "`pgtm.cli.allocator.keep_freed_memory()`, which the `pgtm` commands call at start. "
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
                    f"{t[f'{who}_minflt']:.0f} | {fmt(d.get('peak_rss_mb'), 0)} / "
                    f"{fmt(t.get('peak_rss_mb'), 0)} |"
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
                f" Memory term (this model minus the VRNN): time ∝ T^{fmt(d['time'], 2)}, "
                f"saved bytes ∝ T^{fmt(d['memory'], 2)}."
            )
        wall = e["pyro_wall_per_rep"]["median"]
        lines.append(
            f"- {m}: Pyro step user (compute) time ∝ T^a with a = {fmt(a, 2)} ({span}, median "
            f"of the per-repetition fits, 95% CI [{fmt(lo, 2)}, {fmt(hi, 2)}]): "
            f"{'linear' if linear else '**not linear**'} (|a − 1| ≤ {LINEAR_TOLERANCE}); "
            f"CPU time incl. kernel {fmt(cpu['median'], 2)} ({span}), wall time "
            f"{fmt(wall, 2)} (all T); saved bytes ∝ T^{fmt(e['memory'], 2)}.{extra}{note}"
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
                        color=colors[m], label=f"{m} (a={fmt(s['exponent']['memory'], 2)})")
                continue
            ax.plot(xs, [r["pyro_ms"] for r in s["rows"]], "o-", color=colors[m],
                    label=f"{m} pyro (a={fmt(s['exponent']['pyro'], 2)})")
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
