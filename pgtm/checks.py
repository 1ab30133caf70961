"""Argument validators shared by every layer.

Each returns the checked value (as a plain ``int``, ``float`` or the allowed item) or raises a
:class:`ValueError` with one line that starts with the argument's name, says what is expected
and shows what was given, e.g. ``steps must be an integer >= 1, got 0``. The name comes first so
that the command line can rewrite it as the option the user typed (``--steps``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

__all__ = ["integer", "number", "one_of"]


def _bound(value: float) -> str:
    """``1`` rather than ``1.0`` for a whole bound; ``inf`` as ``inf``."""
    if isinstance(value, numbers.Integral):
        return str(int(value))
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _range(low, high, low_open: bool, high_open: bool, high_name: str | None = None) -> str:
    """`` in [0, 1)``, `` >= 1``, `` < 5`` or nothing: the bounds in words."""
    if high is not None:
        high_shown = _bound(high) if high_name is None else f"{high_name}={high}"
    if low is not None and high is not None:
        return (f" in {'(' if low_open else '['}{_bound(low)}, {high_shown}"
                f"{')' if high_open else ']'}")
    if low is not None:
        return f" {'>' if low_open else '>='} {_bound(low)}"
    if high is not None:
        return f" {'<' if high_open else '<='} {high_shown}"
    return ""


def integer(
    name: str,
    value: Any,
    low: int | None = None,
    high: int | None = None,
    *,
    high_name: str | None = None,
    allow_none: bool = False,
) -> int | None:
    """``value`` as an ``int`` if it is an integer in ``[low, high]``.

    :param name: the argument's name, the first word of the message.
    :param value: what was given; a Python or NumPy integer (``bool`` is refused: ``True`` is
        an integer to Python but never a count the caller meant).
    :param low: the smallest allowed value, or ``None`` for no lower bound.
    :param high: the largest allowed value, or ``None`` for no upper bound.
    :param high_name: what ``high`` is (``"prerecall_length"``): the message shows
        ``[1, prerecall_length=10]`` so that the user sees which other argument bounds this one.
    :param allow_none: ``None`` is allowed (and returned).
    :returns: ``int(value)``, or ``None``.
    :raises ValueError: ``value`` is not an integer or lies outside the bounds.
    """
    if value is None and allow_none:
        return None
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if ok:
        ok = (low is None or value >= low) and (high is None or value <= high)
    if not ok:
        expected = "an integer" + _range(low, high, False, False, high_name)
        _refuse(name, expected, value, allow_none)
    return int(value)


def number(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    allow_none: bool = False,
) -> float | None:
    """``value`` as a ``float`` if it is a finite real number between ``low`` and ``high``.

    :param name: the argument's name, the first word of the message.
    :param value: what was given; any real number (Python or NumPy) but a ``bool``; NaN and
        infinities are refused.
    :param low: the lower bound, or ``None`` for none.
    :param high: the upper bound, or ``None`` for none.
    :param low_open: ``low`` itself is excluded (``value > low``).
    :param high_open: ``high`` itself is excluded (``value < high``).
    :param allow_none: ``None`` is allowed (and returned).
    :returns: ``float(value)``, or ``None``.
    :raises ValueError: ``value`` is not a finite number or lies outside the bounds.
    """
    if value is None and allow_none:
        return None
    ok = (isinstance(value, numbers.Real) and not isinstance(value, bool)
          and math.isfinite(value))
    if ok:
        ok = (low is None or (value > low if low_open else value >= low)) and (
            high is None or (value < high if high_open else value <= high))
    if not ok:
        expected = ("a finite number" if low is None and high is None
                    else "a number" + _range(low, high, low_open, high_open))
        _refuse(name, expected, value, allow_none)
    return float(value)


def one_of(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """``value`` if it is one of ``allowed``.

    :param name: the argument's name, the first word of the message.
    :param value: what was given.
    :param allowed: the accepted values, in the order the message lists them.
    :returns: ``value``.
    :raises ValueError: ``value`` is not in ``allowed``.
    """
    allowed = tuple(allowed)
    if value not in allowed:
        _refuse(name, "one of " + ", ".join(map(repr, allowed)), value, False)
    return value


def _refuse(name: str, expected: str, value: Any, allow_none: bool) -> None:
    raise ValueError(f"{name} must be {expected}{' or None' if allow_none else ''}, "
                     f"got {value!r}")
