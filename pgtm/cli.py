"""Command line interface: ``pgtm <command> ...``.

Commands are registered in :data:`COMMANDS`, a dict mapping a command name to a function
``register(subparsers)`` that adds its sub-parser and sets ``func`` (called with the parsed
``argparse.Namespace``, returning an exit status or ``None``) via ``set_defaults(func=...)``.
Implemented here: ``pgtm data preview``.  Placeholders for ``train``, ``evaluate`` and ``sample``
are marked below; their owners add a ``register`` function (e.g. in ``pgtm.inference``) and one
line to :data:`COMMANDS` (or call :func:`register_command` before :func:`main`).

Every failure is one line on stderr. Bad input (a usage error, or a :class:`ValueError` /
:class:`OSError` raised by our code) is ``pgtm ...: error: ...`` naming the option, with exit
status 2; an API parameter named in a message is shown as its option (``recall_length`` becomes
``--recall-length``; a command adds names of its own with ``set_defaults(option_names=...)``).
Anything else is one line with exit status 1 and a hint; ``--debug`` (or ``PGTM_DEBUG=1``)
shows the traceback. :func:`main` returns the exit status (it never raises
:class:`SystemExit`), so ``sys.exit(main())`` is the script.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence

from pgtm.allocator import keep_freed_memory

__all__ = [
    "COMMANDS",
    "Parser",
    "device",
    "non_empty_path",
    "integer",
    "number",
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
# the parser: one-line usage errors, defaults in the help, checked option types


class Parser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` whose usage errors are one line (and whose help
    shows every default)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to an option's help unless it says its default already or has
    none worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        quiet = (None, False, argparse.SUPPRESS)
        if "default" in text or action.default in quiet or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


def integer(low: int, high: int | None = None) -> Callable[[str], int]:
    """An option type: an integer in ``[low, high]`` (``high=None``: no upper bound)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            bound = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise argparse.ArgumentTypeError(f"expected an integer {bound}, got {text!r}")
        return value

    parse.__name__ = "integer"
    return parse


def number(low: float = -math.inf, high: float = math.inf, *, low_open: bool = False,
           high_open: bool = False, off: bool = False) -> Callable[[str], float | None]:
    """An option type: a finite number in the interval from ``low`` to ``high`` (open at the
    ends marked so); with ``off=True`` the word ``off`` gives ``None``."""

    def parse(text: str) -> float | None:
        if off and text == "off":
            return None
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        inside = math.isfinite(value) and (value > low if low_open else value >= low) and (
            value < high if high_open else value <= high)
        if not inside:
            interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
            raise argparse.ArgumentTypeError(
                f"expected a number in {interval}{' or off' if off else ''}, got {text!r}")
        return value

    parse.__name__ = "number"
    return parse


def device(text: str) -> str:
    """An option type: ``cpu``, ``cuda`` or ``cuda:N`` of a GPU that is present."""
    kind, _, index = text.partition(":")
    if text != "cpu" and not (kind == "cuda" and (not index or index.isdigit())):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")
    if kind == "cuda":
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise argparse.ArgumentTypeError(
                f"{text!r} was asked for but torch sees no CUDA GPU here; use cpu")
        if index and int(index) >= count:
            raise argparse.ArgumentTypeError(f"{text!r}: only {count} CUDA GPU(s) present")
    return text


def non_empty_path(text: str) -> str:
    """An option type: a path that is not empty."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got ''")
    return text


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
        choices=("dynamic", "fixed", "none"),
        help="binarisation: dynamic (a fresh sample per batch), fixed (one per image) or none "
        "(grey levels)",
    )


def add_task_options(parser: argparse.ArgumentParser) -> None:
    """Positional ``TASK`` and the task-shape options ``-l``/``-k``."""
    from .tasks import TASK_NAMES

    parser.add_argument("task", metavar="TASK", help=f"one of: {', '.join(TASK_NAMES)}")
    parser.add_argument(
        "-l",
        "--prerecall-length",
        type=integer(1),
        default=None,
        metavar="L",
        help="pre-recall length l (task default if omitted)",
    )
    parser.add_argument(
        "-k",
        "--recall-length",
        type=integer(1),
        default=None,
        metavar="K",
        help="recall length k (task default if omitted)",
    )


def add_optimisation_options(parser, default_steps: int) -> None:
    """``--steps``, ``--batch-size``, ``--learning-rate`` and ``--kl-anneal-steps`` (the fields of
    :class:`~pgtm.inference.train.TrainConfig` every training entry point exposes)."""
    parser.add_argument("--steps", type=integer(1), default=default_steps,
                        help="SVI steps in all (a resumed run continues up to this)")
    parser.add_argument("--batch-size", type=integer(1), default=32, help="sequences per step")
    parser.add_argument("--learning-rate", type=number(0, low_open=True), default=1e-3,
                        help="Adam learning rate")
    parser.add_argument("--kl-anneal-steps", type=integer(0), default=0,
                        help="length of the linear KL warm-up in steps (0: none)")


#: Default torch intra-op threads of every command. Torch's own default (one per core) made the
#: quick-start step 3.2x slower beside one busy process on a 2-core machine, for a 14% gain when
#: the machine is otherwise idle (``benchmarks/threads.py``, ``results/threads/``).
DEFAULT_THREADS = 1


def add_threads_option(parser) -> None:
    """``--threads N`` (default :data:`DEFAULT_THREADS`); apply it with :func:`set_threads`."""
    parser.add_argument(
        "--threads",
        type=integer(1),
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


#: command name -> registration function.  Add new commands here.
COMMANDS: dict[str, Register] = {
    "data": _register_data,
}


def register_command(name: str, register: Register) -> None:
    """Add (or replace) a top-level command; ``register(subparsers)`` must set ``func``."""
    COMMANDS[name] = register


def build_parser() -> Parser:
    """The top-level parser with every command in :data:`COMMANDS`."""
    from .commands import REGISTER

    for name, register in REGISTER.items():
        COMMANDS.setdefault(name, register)
    parser = Parser(prog="pgtm", description="Generative temporal models with memory (Pyro).")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error (also PGTM_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in COMMANDS.values():
        register(sub)
    return parser


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"pgtm: warning: {' '.join(str(message).split())}", file=sys.stderr)


def _options_by_name(parser: argparse.ArgumentParser) -> dict[str, str]:
    """``dest -> how the user wrote it`` (``recall_length -> --recall-length``, ``task ->
    TASK``) over the parser and all its sub-parsers."""
    names: dict[str, str] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                names.update(_options_by_name(sub))
        elif action.dest != "help":
            longest = max(action.option_strings, key=len) if action.option_strings else None
            names.setdefault(action.dest, longest or action.metavar or action.dest.upper())
    return names


_LEADING_NAME = re.compile(r"^([a-z][a-z0-9_]*)(?=[\s:=])")


_SNAKE_NAME = re.compile(r"\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b")


def _as_option(message: str, options: dict[str, str]) -> str:
    """``"recall_length must be ..."`` -> ``"--recall-length must be ..."``: the leading word,
    and any ``snake_case`` word, that names an option is written as the option."""
    match = _LEADING_NAME.match(message)
    if match and match.group(1) in options:
        message = options[match.group(1)] + message[match.end():]
    return _SNAKE_NAME.sub(lambda m: options.get(m.group(0), m.group(0)), message)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 failure, 2 bad input, 128 + N after
    signal N)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse usage errors and --help
        return exc.code if isinstance(exc.code, int) else 2
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for a command that relaunches
    debug = args.debug or os.environ.get("PGTM_DEBUG", "") not in ("", "0")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="pgtm: %(message)s"
    )
    keep_freed_memory()
    prog = "pgtm"
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning  # one line per warning, no source echo
        try:
            status = args.func(args)
        except (ValueError, OSError) as err:
            if debug:
                traceback.print_exc()
            names = {**_options_by_name(parser), **getattr(args, "option_names", {})}
            message = _as_option(_one_line(err), names)
            print(f"{prog}: error: {message}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"{prog}: interrupted", file=sys.stderr)
            return 130
        except Exception as err:  # a failure of ours: still one line, the traceback on request
            if debug:
                traceback.print_exc()
            print(f"{prog}: error: {type(err).__name__}: {_one_line(err)} (rerun with --debug "
                  "for the traceback)", file=sys.stderr)
            return 1
    return 0 if status is None else int(status)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
