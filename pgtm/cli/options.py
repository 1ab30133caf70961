"""What every command shares: the parser (one-line usage errors, defaults in the help),
checked option types, the option groups of tasks, data, optimisation, threads and trained runs,
and the checks of output paths."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

__all__ = [
    "DEFAULT_THREADS",
    "add_assignments_option",
    "assignments",
    "HelpFormatter",
    "Parser",
    "add_data_options",
    "add_optimisation_options",
    "add_run_options",
    "add_task_options",
    "add_threads_option",
    "check_output_file",
    "check_output_folder",
    "device",
    "integer",
    "non_empty_path",
    "number",
    "picture_formats",
    "set_threads",
    "task_from_args",
]


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
    from pgtm.tasks import TASK_NAMES

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
    add_assignments_option(parser, "--task-option", "task (e.g. period=10 for rotating-room)")


def add_assignments_option(parser, flag: str, what: str) -> None:
    """A repeatable ``flag NAME=VALUE`` (parse it with :func:`assignments`)."""
    parser.add_argument(flag, action="append", default=[], metavar="NAME=VALUE",
                        help=f"set an option of the {what} by name (repeatable); its type is "
                        "that of the option's default")


def assignments(flag: str, items: list[str], accepted: dict[str, Any]) -> dict[str, Any]:
    """``["period=10", ...]`` as ``{"period": 10}``, each value converted to the type of its
    default in ``accepted`` (``NAME -> default``; a ``None`` default takes an int, a float or a
    string, whichever the text is).

    :raises ValueError: one line naming ``flag``: no ``=``, an unknown name (the accepted ones
        listed), or a value of the wrong type.
    """
    chosen: dict[str, Any] = {}
    for item in items:
        name, equals, text = item.partition("=")
        name = name.strip().replace("-", "_")
        if not equals or not name:
            raise ValueError(f"{flag}: expected NAME=VALUE, got {item!r}")
        if name not in accepted:
            raise ValueError(f"{flag}: unknown option {name!r}; accepted: "
                             f"{', '.join(sorted(accepted)) or 'none'}")
        chosen[name] = _typed(flag, name, text.strip(), accepted[name])
    return chosen


def _typed(flag: str, name: str, text: str, default: Any) -> Any:
    if isinstance(default, bool):
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"{flag}: {name} expects true or false, got {text!r}")
    kinds = (type(default),) if isinstance(default, (int, float, str)) else (int, float, str)
    for kind in kinds:
        try:
            return kind(text)
        except ValueError:
            continue
    raise ValueError(f"{flag}: {name} expects {kinds[0].__name__}, got {text!r}")


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
    from pgtm.tasks import make_task, task_class

    chosen = assignments("--task-option", args.task_option, task_class(args.task).options)
    for name in ("prerecall_length", "recall_length"):
        if name in chosen and getattr(args, name) is not None:
            raise ValueError(f"--task-option {name} and --{name.replace('_', '-')} both given")
        chosen.setdefault(name, getattr(args, name))
    return make_task(args.task, data_dir=args.data_dir, download=args.download,
                     binarize=args.binarize, **chosen)


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The trained run to load, and where."""
    parser.add_argument("run", metavar="RUN_DIR", help="folder written by pgtm train")
    parser.add_argument("--seed", type=integer(0), default=0,
                        help="seeds the held-out sequences and the samples")
    parser.add_argument("--device", type=device, default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--data-dir", default=None, metavar="DIR",
                        help="override the run's data folder")
    add_threads_option(parser)


def check_output_folder(path: str) -> None:
    """``--out`` must be a folder this process can create and write into."""
    import os
    from pathlib import Path

    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--out: {folder} is a file; expected a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--out: cannot create the folder {folder} ({e.strerror})") from e
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"--out: the folder {folder} is not writable")


def check_output_file(path: str, suffixes: tuple[str, ...] | None = None) -> None:
    """``--out`` must name a file (not a folder) in an existing folder, of a known format."""
    from pathlib import Path

    file = Path(path)
    if file.is_dir():
        raise ValueError(f"--out: {file} is a folder; expected a file name")
    if not file.parent.is_dir():
        raise ValueError(f"--out: the folder {file.parent} does not exist")
    if suffixes is not None and file.suffix.lower().lstrip(".") not in suffixes:
        raise ValueError(f"--out: {file} must end in one of "
                         f"{', '.join('.' + s for s in suffixes)}")


def picture_formats() -> tuple[str, ...]:
    from matplotlib.figure import Figure

    return tuple(sorted(Figure().canvas.get_supported_filetypes()))
