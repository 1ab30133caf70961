"""``pgtm data preview``: a PNG grid of sampled sequences of a task."""

from __future__ import annotations

import argparse

from .options import add_data_options, add_task_options, integer, non_empty_path, task_from_args


def _cmd_data_preview(args: argparse.Namespace) -> int:
    import torch

    from pgtm.preview import write_preview

    task = task_from_args(args)
    generator = torch.Generator().manual_seed(args.seed)
    out = write_preview(task, args.out, n_sequences=args.n, generator=generator, split=args.split)
    print(f"wrote {out} ({task.name}, T={task.length}, {args.n} sequences, {args.split})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="inspect data sets and tasks",
                                 description="Inspect data sets and tasks.")
    data_sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    preview = data_sub.add_parser(
        "preview", help="write a PNG grid of sampled sequences (recall frames in red)"
    )
    add_task_options(preview)
    preview.add_argument("--out", required=True, type=non_empty_path, metavar="FILE.png",
                         help="PNG file to write")
    add_data_options(preview)
    preview.add_argument("--seed", type=integer(0), default=0, help="generator seed")
    preview.add_argument("--n", type=integer(1), default=4, help="number of sequences")
    preview.add_argument("--split", default="train", choices=("train", "test"),
                         help="which pool the images come from")
    preview.set_defaults(func=_cmd_data_preview)
