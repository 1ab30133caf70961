"""Linear probes along the dynamic-dependency pointer chain of a trained run.

To recall on dynamic dependency a model must (1) read the class of the previous frame off its
latent, (2) find the slot holding the latent of the pre-recall position that class names, which
content addressing can only do if the slot's content says its position, and (3) hold that
position in its controller when it reads. Each stage is probed with a multinomial logistic
regression fitted on half of the held-out sequences and scored on the other half:

* ``label``: the class of frame ``t`` from the posterior latent :math:`z_t` (every step);
* ``slot_position``: the pre-recall position ``p`` in ``0..9`` from the memory row that holds
  :math:`z_p` when the first recall step reads (the slot of the largest write weight of step
  ``p + 1``; memories that record their write weights: NTM, DNC);
* ``target_position``: the position each recall step repeats, from the controller output
  :math:`h_t` of that step (the one its keys come from).

Chance is about 0.1 for each. Latents are sampled from the posterior along the path, as in
training. ``writes`` says how the addressable positions were written: the mean number of
distinct slots they went to (of 10) and the mean total write weight of their steps. Writes
``<out>`` (default ``<run>/probes.json``)::

    python examples/probe_pointer_chain.py results/dynamic_dependency_16000/dnc \\
        --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch.nn import functional as F

from pgtm.cli import add_threads_option, set_threads
from pgtm.experiment import load_run, test_batch
from pgtm.inference.evaluate import save_json

#: pre-recall positions a dynamic-dependency label can point at
ADDRESSABLE = 10


@torch.no_grad()
def posterior_path(gtm, x: torch.Tensor, seed: int = 0) -> dict[str, torch.Tensor]:
    """Run the guide's path on ``x [B, T, *frame]`` and keep what the probes read.

    :returns: ``latents [B, T, Z]``, ``controller [B, T, C]`` (:math:`h_t`), ``memories``, the
        memory matrix after each step ``[B, T, N, W]``, and ``write_weights [B, T, H, N]`` (both
        ``None`` for a memory without them).
    """
    torch.manual_seed(seed)
    gtm.eval()
    batch, length = x.shape[:2]
    path = gtm.unroll(length, batch, features=gtm.encoder(x), observed_steps=length,
                      keep_memories=True)
    return {"latents": path.latents, "controller": path.contexts[..., gtm.memory.read_size:],
            "memories": path.memories, "write_weights": path.write_weights}


def probe_accuracy(inputs: torch.Tensor, targets: torch.Tensor, groups: torch.Tensor,
                   classes: int, l2: float = 1e-3) -> dict[str, float]:
    """Fit a multinomial logistic regression on the examples of even ``groups`` (sequences),
    score it on the odd ones.

    :param inputs: ``[E, D]``; :param targets: long ``[E]`` in ``[0, classes)``;
    :param groups: long ``[E]``, the sequence of each example (a sequence is never split).
    :returns: ``train`` and ``test`` accuracy.
    """
    train = groups % 2 == 0
    mean, std = inputs[train].mean(0), inputs[train].std(0).clamp_min(1e-6)
    inputs = (inputs - mean) / std
    weight = torch.zeros(inputs.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    optimiser = torch.optim.LBFGS([weight, bias], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        loss = F.cross_entropy(inputs[train] @ weight + bias, targets[train])
        loss = loss + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    with torch.no_grad():
        hits = (inputs @ weight + bias).argmax(-1) == targets
    return {"train": hits[train].float().mean().item(), "test": hits[~train].float().mean().item()}


def probe_pointer_chain(gtm, batch) -> dict[str, dict[str, float] | None]:
    """The three probes of the module docstring on ``batch`` (a dynamic-dependency batch)."""
    path = posterior_path(gtm, batch.x)
    size, length = batch.x.shape[:2]
    sequence = torch.arange(size).unsqueeze(1)
    prerecall = int((~batch.recall[0]).sum())
    recall_steps = torch.nonzero(batch.recall[0]).squeeze(1)
    results = {
        "label": probe_accuracy(
            path["latents"].flatten(0, 1), batch.labels.flatten(),
            sequence.expand(size, length).flatten(), classes=10,
        ),
        "target_position": probe_accuracy(
            path["controller"][:, recall_steps].flatten(0, 1),
            batch.addresses[:, recall_steps].flatten(),
            sequence.expand(size, len(recall_steps)).flatten(), classes=ADDRESSABLE,
        ),
        "slot_position": None,
        "writes": None,
    }
    if path["write_weights"] is not None:
        positions = torch.arange(ADDRESSABLE)
        # step p + 1 writes z_p; the slot of its largest write weight (first write head)
        writes = path["write_weights"][:, positions + 1, 0]  # [B, P, N]
        slots = writes.argmax(-1)  # [B, P]
        results["writes"] = {
            "distinct_slots": sum(len(set(row.tolist())) for row in slots) / size,
            "total_weight": writes.sum(-1).mean().item(),
        }
        memory = path["memories"][:, prerecall]  # [B, N, W]: what the first recall step reads
        rows = memory[sequence, slots]  # [B, P, W]
        results["slot_position"] = probe_accuracy(
            rows.flatten(0, 1), positions.expand(size, -1).flatten(),
            sequence.expand(size, ADDRESSABLE).flatten(), classes=ADDRESSABLE,
        )
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run folder written by pgtm train (dynamic dependency)")
    parser.add_argument("--sequences", type=int, default=2048, help="held-out sequences")
    parser.add_argument("--data-dir", default=None)
    add_threads_option(parser)
    parser.add_argument("--out", default=None, help="JSON file (default RUN/probes.json)")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    gtm, task = load_run(args.run, data_dir=args.data_dir)
    if task.name != "dynamic-dependency":
        parser.error(f"run must be a dynamic-dependency run, got a {task.name} run")
    results = {"run": str(args.run), "sequences": args.sequences,
               **probe_pointer_chain(gtm, test_batch(task, args.sequences))}
    out = Path(args.out) if args.out else Path(args.run) / "probes.json"
    save_json(results, out)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
