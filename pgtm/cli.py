"""Command line interface: ``pgtm <command> ...``.

Commands are registered in :data:`COMMANDS`, a dict mapping a command name to a function
``register(subparsers)`` that adds its sub-parser and sets ``func`` (called with the parsed
``argparse.Namespace``, returning an exit status or ``None``) via ``set_defaults(func=...)``.
Implemented here: ``pgtm data preview``.  Placeholders for ``train``, ``evaluate`` and ``sample``
are marked below; their owners add a ``register`` function (e.g. in ``pgtm.inference``) and one
line to :data:`COMMANDS` (or call :func:`register_command` before :func:`main`).

Errors raised by our code (:class:`ValueError`, :class:`FileNotFoundError`) are printed as one
line ``pgtm: error: ...`` on stderr with exit status 2, without a traceback.  :func:`main` returns
the exit status (it never raises :class:`SystemExit`), so ``sys.exit(main())`` is the script.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Callable, Sequence

from pgtm.allocator import keep_freed_memory

__all__ = [
    "COMMANDS",
    "add_data_options",
    "add_task_options",
    "add_threads_option",
    "set_threads",
    "build_parser",
    "main",
    "register_command",
]

Register = Callable[["argparse._SubParsersAction"], None]


# ----------------------------------------------------------------------------------------------
# shared option groups (reuse them in train/evaluate/sample)


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """``--data-dir``, ``--download``, ``--binarize``."""
    parser.add_argument(
        "--data-dir",
        default=None,
        metavar="DIR",
        help="folder holding the data sets (default: $PGTM_DATA_DIR, else the bundled MNIST "
        "subset for MNIST tasks)",
    )
    parser.add_argument(
        "--download", action="store_true", help="download missing data through torchvision"
    )
    parser.add_argument(
        "--binarize",
        default="dynamic",
        metavar="MODE",
        help="binarisation: dynamic (default), fixed or none",
    )


def add_task_options(parser: argparse.ArgumentParser) -> None:
    """Positional ``TASK`` and the task-shape options ``-l``/``-k``."""
    from .tasks import TASK_NAMES

    parser.add_argument("task", metavar="TASK", help=f"one of: {', '.join(TASK_NAMES)}")
    parser.add_argument(
        "-l",
        "--prerecall-length",
        type=int,
        default=None,
        metavar="L",
        help="pre-recall length l (task default if omitted)",
    )
    parser.add_argument(
        "-k",
        "--recall-length",
        type=int,
        default=None,
        metavar="K",
        help="recall length k (task default if omitted)",
    )


def add_optimisation_options(parser, default_steps: int) -> None:
    """``--steps``, ``--batch-size``, ``--learning-rate`` and ``--kl-anneal-steps`` (the fields of
    :class:`~pgtm.inference.train.TrainConfig` every training entry point exposes)."""
    parser.add_argument(
        "--steps", type=int, default=default_steps, help=f"SVI steps (default {default_steps})"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument(
        "--kl-anneal-steps",
        type=int,
        default=0,
        help="length of the linear KL warm-up in steps (0: none)",
    )


#: Default torch intra-op threads of every command. Torch's own default (one per core) made the
#: quick-start step 3.2x slower beside one busy process on a 2-core machine, for a 14% gain when
#: the machine is otherwise idle (``benchmarks/threads.py``, ``results/threads/``).
DEFAULT_THREADS = 1


def add_threads_option(parser) -> None:
    """``--threads N`` (default :data:`DEFAULT_THREADS`); apply it with :func:`set_threads`."""
    parser.add_argument(
        "--threads",
        type=int,
        default=DEFAULT_THREADS,
        help=f"torch CPU threads (default {DEFAULT_THREADS}: fastest beside other busy "
        "processes; run one process per core)",
    )


def set_threads(threads: int) -> None:
    """Use ``threads`` intra-op threads and one inter-op thread in this process."""
    import torch

    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"--threads must be an integer >= 1, got {threads!r}")
    torch.set_num_threads(threads)
    if torch.get_num_interop_threads() != 1:
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # inter-op work already started in this process: keep its pool
            pass


def task_from_args(args: argparse.Namespace):
    """Build the task named by ``args`` (see :func:`add_task_options`, :func:`add_data_options`)."""
    from .tasks import make_task

    return make_task(
        args.task,
        data_dir=args.data_dir,
        download=args.download,
        binarize=args.binarize,
        prerecall_length=args.prerecall_length,
        recall_length=args.recall_length,
    )


# ----------------------------------------------------------------------------------------------
# pgtm data ...


def _cmd_data_preview(args: argparse.Namespace) -> int:
    import torch

    from .preview import write_preview

    task = task_from_args(args)
    generator = torch.Generator().manual_seed(args.seed)
    out = write_preview(task, args.out, n_sequences=args.n, generator=generator, split=args.split)
    print(f"wrote {out} ({task.name}, T={task.length}, {args.n} sequences, {args.split})")
    return 0


def _register_data(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="inspect data sets and tasks")
    data_sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    preview = data_sub.add_parser(
        "preview", help="write a PNG grid of sampled sequences (recall frames in red)"
    )
    add_task_options(preview)
    preview.add_argument("--out", required=True, metavar="FILE.png", help="PNG file to write")
    add_data_options(preview)
    preview.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    preview.add_argument("--n", type=int, default=4, help="number of sequences (default 4)")
    preview.add_argument("--split", default="train", help="train (default) or test")
    preview.set_defaults(func=_cmd_data_preview)


#: command name -> registration function.  Add new commands here.
COMMANDS: dict[str, Register] = {
    "data": _register_data,
}


def register_command(name: str, register: Register) -> None:
    """Add (or replace) a top-level command; ``register(subparsers)`` must set ``func``."""
    COMMANDS[name] = register


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every command in :data:`COMMANDS`."""
    from .commands import REGISTER

    for name, register in REGISTER.items():
        COMMANDS.setdefault(name, register)
    parser = argparse.ArgumentParser(
        prog="pgtm", description="Generative temporal models with memory (Pyro)."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in COMMANDS.values():
        register(sub)
    return parser


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"pgtm: warning: {' '.join(str(message).split())}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 usage or data error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse usage errors and --help
        return exc.code if isinstance(exc.code, int) else 2
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="pgtm: %(message)s"
    )
    keep_freed_memory()
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning  # one line per warning, no source echo
        try:
            status = args.func(args)
        except (ValueError, FileNotFoundError) as err:
            print(f"pgtm: error: {_one_line(err)}", file=sys.stderr)
            return 2
    return 0 if status is None else int(status)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
