"""Command line interface: ``pgtm <command> ...``.

One command per module (``data``, ``train``, ``evaluate``, ``sample``), each with a
``register(subparsers)`` that adds its sub-parser and sets ``func`` (called with the parsed
``argparse.Namespace``, returning an exit status or ``None``); :data:`COMMANDS` is the one
registry (:func:`register_command` adds to it). :mod:`pgtm.cli.options` holds what they share.

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
import os
import re
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence

from . import data, evaluate, sample, train
from .allocator import keep_freed_memory
from .options import (
    DEFAULT_THREADS,
    Parser,
    add_data_options,
    add_optimisation_options,
    add_run_options,
    add_task_options,
    add_threads_option,
    device,
    integer,
    non_empty_path,
    number,
    set_threads,
    task_from_args,
)

__all__ = [
    "COMMANDS",
    "DEFAULT_THREADS",
    "Parser",
    "add_data_options",
    "add_optimisation_options",
    "add_run_options",
    "add_task_options",
    "add_threads_option",
    "build_parser",
    "device",
    "integer",
    "main",
    "non_empty_path",
    "number",
    "register_command",
    "set_threads",
    "task_from_args",
]

Register = Callable[["argparse._SubParsersAction"], None]

#: command name -> registration function: the one registry of commands
COMMANDS: dict[str, Register] = {
    "data": data.register,
    "train": train.register,
    "evaluate": evaluate.register,
    "sample": sample.register,
}


def register_command(name: str, register: Register) -> None:
    """Add (or replace) a top-level command; ``register(subparsers)`` must set ``func``."""
    COMMANDS[name] = register


def build_parser() -> Parser:
    """The top-level parser with every command in :data:`COMMANDS`."""
    parser = Parser(prog="pgtm", description="Generative temporal models with memory (Pyro).")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error (also PGTM_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in COMMANDS.values():
        register(sub)
    return parser


#: the most of an unexpected error's message its one line shows (``--debug`` shows it all)
UNEXPECTED_MESSAGE_CHARS = 400


def _one_line(err: BaseException, limit: int | None = None) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    if limit is not None and len(text) > limit:  # e.g. a compiler's whole output
        text = f"{text[:limit]}... ({len(text):,} characters)"
    return text


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
    if message.startswith("-"):  # names its option already, and the API names after it
        return message
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
            print(f"{prog}: error: {type(err).__name__}: "
                  f"{_one_line(err, UNEXPECTED_MESSAGE_CHARS)} (rerun with --debug for the "
                  "traceback)", file=sys.stderr)
            return 1
    return 0 if status is None else int(status)
