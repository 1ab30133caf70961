"""One experiment = build a GTM for a task, train it, evaluate it, draw it.

Used by ``pgtm train`` and by ``examples/studies/compare_models.py``; everything it writes lands
in one folder: ``checkpoint.pt``, ``log.csv``, ``results.json`` (the last final evaluation; each
one is also kept as ``results_step{STEPS}.json``, so a run continued to a larger budget keeps the
results of the smaller) and the pictures ``samples.png``,
``kl_per_step.png`` and, for models whose memory has read weights, ``read_weights.png``,
``read_heads.jsonl`` (the heads' statistics at every periodic evaluation) and
``read_heads.png`` (their dynamics over training).
"""

from __future__ import annotations

import json
import math
import os
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import pyro
import torch

from pgtm.inference.bounds import bound_sweep
from pgtm.inference.checkpoint import CHECKPOINT_NAME, check_module_state, load_checkpoint
from pgtm.inference.copy_metrics import COPY_TASKS, exact_match
from pgtm.inference.distributed import ranks
from pgtm.inference.evaluate import evaluate, save_json
from pgtm.inference.lifecycle import RunLock
from pgtm.inference.memory_forcing import MemoryForcing
from pgtm.inference.outliers import elbo_outliers
from pgtm.inference.read_heads import ReadHeadLog, read_head_statistics
from pgtm.inference.train import TrainConfig, train
from pgtm.models import build_gtm, count_parameters
from pgtm.models.build import class_reference
from pgtm.plotting import (
    plot_read_head_dynamics,
    plot_read_weights,
    plot_step_curves,
    save_sequences,
)
from pgtm.tasks import make_task

RUN_SPEC = "run.json"
RESULTS = "results.json"

#: the per-model numbers every ``summary.json`` holds
SUMMARY_KEYS = (
    "recall_kl", "prerecall_kl", "elbo", "iwae", "iwae_k", "steps", "seconds", "parameters",
)


def _name(part) -> str:
    """A part given by name stays a name; a user's class is recorded as an importable reference
    (:func:`~pgtm.models.build.class_reference`), which :func:`load_run` imports."""
    return part if isinstance(part, str) else class_reference(part)


#: what must agree between a run folder and the run asked to continue it
_SPEC_KEYS = (("model",), ("model_options",), ("task", "name"), ("task", "options"),
              ("task", "binarize"))


def check_same_run(out_dir, spec: dict) -> None:
    """Before a resume loads any weights: the run in ``out_dir`` (if it has a checkpoint) must
    be the one ``spec`` describes.

    :raises ValueError: one line saying what differs, e.g. ``model: 'vrnn' there, 'dnc' now``.
    """
    out = Path(out_dir)
    if not ((out / RUN_SPEC).is_file() and (out / CHECKPOINT_NAME).is_file()):
        return
    old = read_run_spec(out)
    differences = []
    for path in _SPEC_KEYS:
        there, now = old, spec
        for key in path:
            there, now = there.get(key, {}), now.get(key, {})
        if isinstance(now, dict) and isinstance(there, dict):
            differences += [f"{k}: {there.get(k)!r} there, {now.get(k)!r} now"
                            for k in sorted(set(there) | set(now)) if there.get(k) != now.get(k)]
        elif there != now:
            differences.append(f"{path[-1]}: {there!r} there, {now!r} now")
    if differences:
        raise ValueError(
            f"out: {out} holds a run with other settings ({'; '.join(differences)}); resume it "
            "with its own options, or use another output folder or --restart"
        )


def run_spec(task, memory, model_options: dict, data_dir=None, parameter_budget=None) -> dict:
    """The ``run.json`` of a run. ``model_options`` hold the resolved ``controller_size``
    (:func:`resolve_parameter_budget`); ``parameter_budget``, the request behind it, is kept for
    the record only."""
    return {
        "task": {
            "name": task.name,
            "binarize": getattr(task, "binarize", "dynamic"),
            "data_dir": None if data_dir is None else os.path.abspath(data_dir),
            "options": {k: getattr(task, k) for k in task.options},
        },
        "model": _name(memory),
        "model_options": {k: v if _plain(v) else _name(v) for k, v in model_options.items()},
        "parameter_budget": parameter_budget,
        # results depend (in the last bits) on the thread count: recorded, as in the checkpoint
        "threads": {"intra_op": torch.get_num_threads(),
                    "inter_op": torch.get_num_interop_threads()},
    }


def completed_results(run_dir, steps: int) -> dict | None:
    """The ``results.json`` of a run folder whose checkpoint has reached ``steps`` (a finished
    run, whose final evaluation need not be done again), else ``None``."""
    run = Path(run_dir)
    if not ((run / CHECKPOINT_NAME).is_file() and (run / RESULTS).is_file()):
        return None
    if int(load_checkpoint(run / CHECKPOINT_NAME)["step"]) < steps:
        return None
    results = json.loads((run / RESULTS).read_text())
    return results if results.get("steps", -1) >= steps else None


def load_run(run_dir, device: str = "cpu", data_dir=None):
    """Rebuild ``(gtm, task)`` of a run folder from ``run.json`` and ``checkpoint.pt``.

    :param data_dir: overrides the data folder recorded in the run.
    """
    run = Path(run_dir)
    for name in (RUN_SPEC, CHECKPOINT_NAME):
        if not (run / name).is_file():
            raise FileNotFoundError(f"{run / name} not found: RUN_DIR must be a folder written by "
                                    "'pgtm train'")
    spec = read_run_spec(run)
    task_spec = spec["task"]
    try:
        task = make_task(
            task_spec["name"], data_dir=data_dir or task_spec["data_dir"],
            binarize=task_spec["binarize"], **task_spec["options"],
        )
        gtm = build_for_task(spec["model"], task, **spec["model_options"])
    except (KeyError, TypeError) as e:
        raise ValueError(f"run.json: {run / RUN_SPEC} does not describe a run ({e!r})") from e
    except ValueError as e:
        if str(e).startswith("data_dir"):
            raise
        raise ValueError(f"run.json: {run / RUN_SPEC} cannot be rebuilt: {e}") from e
    ckpt = load_checkpoint(run / CHECKPOINT_NAME)
    check_module_state(gtm, ckpt["module"], run / CHECKPOINT_NAME)
    gtm.load_state_dict(ckpt["module"])
    return gtm.to(device).eval(), task


def read_run_spec(run_dir) -> dict:
    """The ``run.json`` of a run folder.

    :raises ValueError: one line, when it is not the JSON object ``pgtm train`` writes.
    """
    path = Path(run_dir) / RUN_SPEC
    try:
        spec = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"run.json: {path} is not valid JSON ({e})") from e
    if not (isinstance(spec, dict) and isinstance(spec.get("task"), dict)
            and {"model", "model_options"} <= set(spec)):
        raise ValueError(f"run.json: {path} lacks the task, model or model_options of a run")
    return spec


def default_likelihood(task) -> str:
    """Bernoulli for binarised frames, continuous Bernoulli for grey levels."""
    return "continuous-bernoulli" if getattr(task, "binarize", "dynamic") == "none" else "bernoulli"


def build_for_task(memory: str, task, **options):
    """A GTM sized for ``task`` (frame shape, length, context) with ``options`` passed on to
    :func:`~pgtm.models.build_gtm`."""
    options.setdefault("likelihood", default_likelihood(task))
    return build_gtm(
        memory,
        frame_shape=task.frame_shape,
        sequence_length=task.length,
        action_size=task.context_size,
        **options,
    )


def resolve_parameter_budget(memory, task, model_options: dict) -> tuple[dict, int | None]:
    """Replace a ``parameter_budget`` in ``model_options`` by the ``controller_size`` it chooses
    for ``task`` (:func:`~pgtm.models.build.controller_size_for_budget`), so that ``run.json``
    names the very model: reopening a run (``pgtm evaluate``/``sample``) then rebuilds it
    without searching again.

    :returns: ``(options without parameter_budget, the budget or None)``.
    """
    options = dict(model_options)
    budget = options.pop("parameter_budget", None)
    if budget is not None:
        with torch.device("meta"):  # only the chosen size is wanted: no weights, no random draws
            gtm = build_for_task(memory, task, parameter_budget=budget, **options)
        options["controller_size"] = gtm.controller.output_size
    return options, budget


def test_batch(task, num_sequences: int, seed: int = 12345):
    """A fixed batch of held-out sequences (the same for every model compared)."""
    return task.sample(num_sequences, "test", torch.Generator().manual_seed(seed))


def _to(batch, device):
    moved = {k: v.to(device) for k, v in batch._asdict().items() if torch.is_tensor(v)}
    return batch._replace(**moved)


@contextmanager
def _seeded_evaluation(gtm, seed: int):
    """``gtm`` in eval mode with Pyro seeded by ``seed``, the global RNG state restored after."""
    device = next(gtm.parameters()).device
    was_training = gtm.training
    gtm.eval()
    try:
        with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]):
            pyro.set_rng_seed(seed)
            yield device
    finally:
        gtm.train(was_training)


def evaluate_gtm(gtm, batch, num_particles: int, chunk_size: int = 50, seed: int = 0) -> dict:
    """:func:`~pgtm.inference.evaluate.evaluate` on a :class:`~pgtm.tasks.SequenceBatch`."""
    with _seeded_evaluation(gtm, seed) as device:
        batch = _to(batch, device)
        return evaluate(
            gtm.model, gtm.guide, batch.x, batch.c, batch.mask, batch.recall,
            num_particles=num_particles, chunk_size=min(chunk_size, num_particles),
        )


def bound_sweep_of_gtm(gtm, batch, seed: int = 0, **options) -> dict:
    """:func:`~pgtm.inference.bounds.bound_sweep` on a :class:`~pgtm.tasks.SequenceBatch`
    (its IWAE pass draws the samples :func:`evaluate_gtm` draws with the same seed and
    ``chunk_size``)."""
    with _seeded_evaluation(gtm, seed) as device:
        batch = _to(batch, device)
        return bound_sweep(gtm, batch.x, batch.c, batch.mask, batch.recall, **options)


def elbo_outliers_of_gtm(gtm, batch, num_particles: int, chunk_size: int = 50, seed: int = 0,
                         **options) -> list[dict]:
    """:func:`~pgtm.inference.outliers.elbo_outliers` of the samples that :func:`evaluate_gtm`
    with the same arguments averages; ``options``: ``num_sequences``, ``num_steps``."""
    with _seeded_evaluation(gtm, seed) as device:
        batch = _to(batch, device)
        return elbo_outliers(
            gtm.model, gtm.guide, batch.x, batch.c, batch.mask, num_particles=num_particles,
            chunk_size=min(chunk_size, num_particles), **options,
        )


def run_experiment(
    memory: str,
    task,
    config: TrainConfig,
    *,
    eval_sequences: int = 64,
    iwae_particles: int = 100,
    progress_eval_sequences: int = 32,
    model_options: dict[str, Any] | None = None,
    resume: bool = True,
    data_dir=None,
    memory_forcing: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``memory``'s GTM on ``task`` and evaluate it on held-out sequences.

    :param memory: a name in :data:`~pgtm.models.MEMORIES` (or a Memory class).
    :param config: training configuration; ``config.out_dir`` receives every output.
    :param eval_sequences: held-out sequences for the final evaluation.
    :param iwae_particles: :math:`K` of the final importance-weighted bound.
    :param progress_eval_sequences: held-out sequences for the periodic evaluation (1 particle).
    :param data_dir: the task's data folder, recorded in ``run.json``.
    :param memory_forcing: train with Memory Forcing: options of
        :class:`~pgtm.inference.memory_forcing.MemoryForcing` (``{}`` for its defaults, e.g.
        ``{"weight": 1.0, "accuracy_gate": 0.75}``); ``None`` (default) trains the ELBO alone.
    :returns: the results dict (also saved as ``results.json``; ``{}`` on ranks other than 0
        of a data-parallel run): the keys of
        :data:`SUMMARY_KEYS`, per-step ``kl``/``nll``, per-sequence ELBO / IWAE and PSIS
        ``khat``, ``memory_forcing`` (all its settings, or ``None``) and, for the copy task,
        ``exact_match`` and ``bit_accuracy`` (:func:`~pgtm.inference.copy_metrics.exact_match`;
        also in the periodic evaluations).
    """
    if config.out_dir is None:
        raise ValueError("config.out_dir must be set: run_experiment writes its results there")
    # one writer per run folder, from run.json to the pictures: in data-parallel training rank 0
    lock = RunLock(config.out_dir) if ranks().main else nullcontext()
    with lock:
        return _run_experiment(memory, task, config, eval_sequences, iwae_particles,
                               progress_eval_sequences, model_options, resume, data_dir,
                               memory_forcing)


def _run_experiment(memory, task, config, eval_sequences, iwae_particles,
                    progress_eval_sequences, model_options, resume, data_dir,
                    memory_forcing) -> dict[str, Any]:
    out = Path(config.out_dir)
    model_options, parameter_budget = resolve_parameter_budget(memory, task, model_options or {})
    pyro.set_rng_seed(config.seed)
    gtm = build_for_task(memory, task, **model_options)
    # built after the GTM, so its initial weights do not depend on memory forcing
    regulariser = None if memory_forcing is None else MemoryForcing(gtm, **memory_forcing)
    spec = run_spec(task, memory, model_options, data_dir, parameter_budget)
    if resume:
        check_same_run(out, spec)
    if ranks().main:
        save_json(spec, out / RUN_SPEC)
    parameters = count_parameters(gtm)
    progress_batch = test_batch(task, progress_eval_sequences)

    head_log = ReadHeadLog(out)

    def periodic_evaluation(module, step):
        r = evaluate_gtm(module, progress_batch, num_particles=1)
        metrics = {k: r[k] for k in ("elbo_mean", "recall_kl", "prerecall_kl", "kl_mean")
                   if r.get(k) is not None}
        heads = read_heads_on(module, progress_batch)
        if heads is not None:
            head_log.write(step, heads)
            metrics["read_entropy"] = sum(heads["entropy"]) / len(heads["entropy"])
            if "best_hit_rate" in heads:
                metrics["read_hit_rate"] = heads["best_hit_rate"]
        if task.name in COPY_TASKS:
            metrics["exact_match"] = exact_match(module, progress_batch)["exact_match"]
        return metrics

    started = time.perf_counter()
    result = train(gtm, task, config, evaluate_fn=periodic_evaluation, resume=resume,
                   regulariser=regulariser)
    if not ranks().main:
        return {}  # the final evaluation and pictures are rank 0's
    final_batch = test_batch(task, eval_sequences)
    r = evaluate_gtm(gtm, final_batch, num_particles=iwae_particles)
    gtm.eval()
    copy = exact_match(gtm, final_batch) if task.name in COPY_TASKS else {}
    device = next(gtm.parameters()).device
    recall = final_batch.recall[0]
    frames = int(final_batch.mask.sum())
    fed_back = " with frame feedback" if getattr(gtm, "frame_feedback", False) else ""
    title = f"{_name(memory)}{fed_back} on {task.name}"
    write_pictures(gtm, task, final_batch, r, out, device, title=title)
    head_records = head_log.read()
    if head_records:
        plot_read_head_dynamics(out / "read_heads.png", head_records, title=title)
    summary = {
        "model": _name(memory),
        "task": task.name,
        "recall_kl": r["recall_kl"],
        "recall_kl_median": r["recall_kl_median"],
        "recall_kl_per_sequence": r["recall_kl_seq"],
        "prerecall_kl": r["prerecall_kl"],
        "elbo": r["elbo_mean"],
        "iwae": r["iwae_mean"],
        "iwae_k": iwae_particles,
        "steps": result.step,
        "seconds": _seconds_trained(out, result.seconds),
        "wall_seconds_this_call": time.perf_counter() - started,
        "parameters": parameters,
        "eval_sequences": eval_sequences,
        "kl": r["kl"],
        "nll": r["nll"],
        "elbo_per_sequence": r["elbo"],
        "iwae_per_sequence": r["iwae"],
        # nats per observed frame (the paper's unit), over the whole evaluation batch
        "elbo_per_frame": r["elbo_sum"] / frames,
        "iwae_per_frame": r["iwae_sum"] / frames,
        "khat": r["khat"],
        "recall_steps": recall.tolist(),
        "penalty": r["penalty"],
        "global_kl": r["global_kl"],
        "khat_max": r["khat_max"],
        "khat_mean": r["khat_mean"],
        "khat_reading": r["khat_reading"],
        "config": config.to_dict(),
        "model_options": {k: v if _plain(v) else _name(v) for k, v in model_options.items()},
        "parameter_budget": parameter_budget,
        "memory_forcing": None if regulariser is None else dict(regulariser.config),
        "exact_match": copy.get("exact_match"),
        "bit_accuracy": copy.get("bit_accuracy"),
    }
    kept = out / RESULTS
    if kept.is_file():  # a smaller budget's, from a version that wrote results.json alone
        earlier = out / f"results_step{json.loads(kept.read_text())['steps']}.json"
        if not earlier.exists():
            os.replace(kept, earlier)
    save_json(summary, out / RESULTS)
    save_json(summary, out / f"results_step{result.step}.json")
    return summary


@torch.no_grad()
def read_heads_on(gtm, batch) -> dict | None:
    """:func:`~pgtm.inference.read_heads.read_head_statistics` of ``gtm``'s read heads on
    ``batch`` (latents from the posterior), or ``None`` for a memory without read weights.
    Hit rates are reported where the slot of each latent is known: for the Introspective
    memory, whose slots are past steps, and for memories that record their write weights."""
    device = next(gtm.parameters()).device
    was_training = gtm.training
    gtm.eval()
    c = None if batch.c is None else batch.c.to(device)
    length = batch.x.shape[1]
    path = gtm.generate(length, x=batch.x.to(device), c=c, observed_steps=length)
    gtm.train(was_training)
    if path.weights is None:
        return None
    def latent_slots(steps, times):
        return gtm.memory.latent_slots(steps, times, path.write_weights)

    return read_head_statistics(path.weights, path.gates, batch.recall[0], batch.addresses,
                                latent_slots)


def _plain(value) -> bool:
    return isinstance(value, (int, float, str, bool)) or value is None


def _seconds_trained(out: Path, fallback: float) -> float:
    """Cumulative training seconds from the log (so a resumed run reports its whole cost)."""
    log = out / "log.csv"
    try:
        last = log.read_text().strip().splitlines()[-1].split(",")
        header = log.read_text().splitlines()[0].split(",")
        return float(last[header.index("seconds")])
    except (OSError, ValueError, IndexError):
        return fallback


@torch.no_grad()
def write_pictures(gtm, task, batch, results, out: Path, device, title: str, num_rows: int = 4):
    """``samples.png`` (data; observe the pre-recall frames then generate; free samples),
    ``kl_per_step.png`` and ``read_weights.png`` (posterior path of the first sequence)."""
    out = Path(out)
    x = batch.x[:num_rows].to(device)
    c = None if batch.c is None else batch.c[:num_rows].to(device)
    recall = batch.recall[0]
    length = x.shape[1]
    observed = int((~recall).sum()) if bool(recall.any()) else length // 2
    cued = gtm.generate(length, x=x, c=c, observed_steps=observed)
    free = gtm.generate(length, num_rows, c=c)
    save_sequences(out / "samples.png", [
        ("held-out data", x, None),
        (f"first {observed} observed,\nthe rest generated", cued.frames,
         torch.arange(length) >= observed),
        ("free samples", free.frames, torch.ones(length, dtype=torch.bool)),
    ], title=f"{title}: samples")
    plot_step_curves(
        out / "kl_per_step.png", {title: [_nan_to_none(v) for v in results["kl"]]},
        recall=recall.tolist(), title="KL(q || p) per step on held-out sequences",
    )
    posterior = gtm.generate(length, x=x[:1], c=None if c is None else c[:1], observed_steps=length)
    if posterior.weights is not None:
        plot_read_weights(out / "read_weights.png", posterior.weights[0], posterior.gates[0]
                          if posterior.gates is not None else None, title=title)


def _nan_to_none(value):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def write_summary(summaries: dict[str, dict], out_dir, task_name: str) -> None:
    """``summary.json`` (model -> :data:`SUMMARY_KEYS`), ``summary.md`` (a table) and
    ``kl_per_step.png`` (all models) in ``out_dir``."""
    out = Path(out_dir)
    os.makedirs(out, exist_ok=True)
    table = {m: {k: s[k] for k in SUMMARY_KEYS} for m, s in summaries.items()}
    save_json(table, out / "summary.json")
    lines = [
        f"| model ({task_name}) | recall KL | pre-recall KL | ELBO | IWAE (K) | steps | minutes "
        "| parameters |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in summaries.items():
        lines.append(
            f"| {name} | {_fmt(s['recall_kl'])} | {_fmt(s['prerecall_kl'])} | {_fmt(s['elbo'])} "
            f"| {_fmt(s['iwae'])} ({s['iwae_k']}) | {s['steps']} | {s['seconds'] / 60:.1f} "
            f"| {s['parameters']:,} |"
        )
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    first = next(iter(summaries.values()))
    plot_step_curves(
        out / "kl_per_step.png",
        {name: [_nan_to_none(v) for v in s["kl"]] for name, s in summaries.items()},
        recall=first["recall_steps"], title=f"{task_name}: KL(q || p) per step (held-out)",
    )


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.2f}"
