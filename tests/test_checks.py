"""The shared validators of :mod:`pgtm.checks`: what they accept, what they refuse, and that the
one-line message starts with the argument's name and shows the value given."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from pgtm.checks import integer, number, one_of

#: (low, high) pairs, with ``None`` for an open side, that the sweeps run over
BOUNDS = [(None, None), (0, None), (1, None), (None, 5), (-3, 3), (2, 2), (4, 128)]


def refusal(call) -> str:
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_random_sweep_of_integers_matches_the_bounds():
    rng = random.Random(18)
    for _ in range(2000):
        low, high = rng.choice(BOUNDS)
        value = rng.randint(-200, 200)
        inside = (low is None or value >= low) and (high is None or value <= high)
        if inside:
            assert integer("count", value, low, high) == value
        else:
            message = refusal(lambda v=value, lo=low, hi=high: integer("count", v, lo, hi))
            assert message.startswith("count must be an integer") and message.endswith(
                f", got {value}")


@pytest.mark.parametrize("low, high, inside, outside", [
    (1, None, [1, 2, 10**6], [0, -1]),
    (None, 5, [5, -10**6], [6]),
    (4, 8, [4, 8], [3, 9]),
])
def test_integer_bounds_are_inclusive(low, high, inside, outside):
    for value in inside:
        assert integer("n", value, low, high) == value
    for value in outside:
        refusal(lambda v=value: integer("n", v, low, high))


@pytest.mark.parametrize("value", [True, False, 1.0, 1.5, "1", None, [1], np.float64(2.0)])
def test_integer_refuses_what_is_not_an_integer(value):
    assert refusal(lambda: integer("n", value)).startswith("n must be an integer")


@pytest.mark.parametrize("kind", [np.int8, np.int32, np.int64, np.uint16])
def test_integer_takes_numpy_integers_and_returns_a_python_int(kind):
    checked = integer("n", kind(7), 1, 10)
    assert checked == 7 and type(checked) is int
    refusal(lambda: integer("n", kind(11), 1, 10))


def test_integer_messages_name_the_bounds():
    assert refusal(lambda: integer("steps", 0, 1)) == "steps must be an integer >= 1, got 0"
    assert refusal(lambda: integer("size", 9, high=8)) == "size must be an integer <= 8, got 9"
    assert refusal(lambda: integer("size", 256, 8, 128)) == (
        "size must be an integer in [8, 128], got 256")
    assert refusal(lambda: integer("period", 16, 4, 15, high_name="prerecall_length")) == (
        "period must be an integer in [4, prerecall_length=15], got 16")


def test_integer_allow_none():
    assert integer("every", None, 1, allow_none=True) is None
    assert refusal(lambda: integer("every", 0, 1, allow_none=True)) == (
        "every must be an integer >= 1 or None, got 0")
    assert refusal(lambda: integer("every", None, 1)) == (
        "every must be an integer >= 1, got None")


def test_a_random_sweep_of_numbers_matches_the_bounds():
    rng = random.Random(4)
    for _ in range(2000):
        low, high = rng.choice(BOUNDS)
        low_open, high_open = rng.random() < 0.5, rng.random() < 0.5
        # a grid of halves hits the bounds themselves often
        value = rng.randint(-20, 20) / 2
        above = low is None or (value > low if low_open else value >= low)
        below = high is None or (value < high if high_open else value <= high)
        options = {"low_open": low_open, "high_open": high_open}
        if above and below:
            assert number("rate", value, low, high, **options) == value
        else:
            message = refusal(
                lambda v=value, lo=low, hi=high, o=options: number("rate", v, lo, hi, **o))
            assert message.startswith("rate must be a number") and message.endswith(
                f", got {value!r}")


@pytest.mark.parametrize("low_open, high_open, inside, outside, expected", [
    (False, False, [0, 0.5, 1], [-1e-9, 1 + 1e-9], "[0, 1]"),
    (True, False, [1e-9, 1], [0, -1], "(0, 1]"),
    (False, True, [0, 1 - 1e-9], [1, 2], "[0, 1)"),
    (True, True, [0.5], [0, 1], "(0, 1)"),
])
def test_number_bounds_open_or_closed(low_open, high_open, inside, outside, expected):
    for value in inside:
        assert number("x", value, 0, 1, low_open=low_open, high_open=high_open) == value
    for value in outside:
        message = refusal(
            lambda v=value: number("x", v, 0, 1, low_open=low_open, high_open=high_open))
        assert message == f"x must be a number in {expected}, got {value!r}"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, np.float32("nan"),
                                   np.float64("inf")])
def test_number_refuses_what_is_not_finite_even_without_bounds(value):
    assert refusal(lambda: number("x", value)).startswith("x must be a finite number, got")
    refusal(lambda: number("x", value, 0, low_open=True))


@pytest.mark.parametrize("value", [True, False, "0.5", None, [0.5], 1j])
def test_number_refuses_what_is_not_a_real_number(value):
    assert refusal(lambda: number("x", value, 0, 1)).startswith("x must be a number in [0, 1]")


def test_number_takes_ints_and_numpy_numbers_and_returns_a_float():
    for value in (1, np.int64(1), np.float32(1.0), np.float64(1.0)):
        checked = number("x", value, 0, 2)
        assert checked == 1.0 and type(checked) is float


def test_number_messages_name_the_bounds():
    assert refusal(lambda: number("learning_rate", 0.0, 0, low_open=True)) == (
        "learning_rate must be a number > 0, got 0.0")
    assert refusal(lambda: number("ratio", 1, 1, low_open=True)) == (
        "ratio must be a number > 1, got 1")
    assert refusal(lambda: number("weight", -0.5, 0)) == "weight must be a number >= 0, got -0.5"
    assert refusal(lambda: number("p", 2.5, high=1.5, high_open=True)) == (
        "p must be a number < 1.5, got 2.5")


def test_number_allow_none():
    assert number("ratio", None, 1, allow_none=True) is None
    assert refusal(lambda: number("ratio", 0.5, 1, allow_none=True)) == (
        "ratio must be a number >= 1 or None, got 0.5")


def test_one_of():
    allowed = ("train", "test")
    assert one_of("split", "test", allowed) == "test"
    assert one_of("split", "train", iter(allowed)) == "train"  # any iterable
    assert refusal(lambda: one_of("split", "dev", allowed)) == (
        "split must be one of 'train', 'test', got 'dev'")
    assert refusal(lambda: one_of("split", None, allowed)).endswith("got None")


@pytest.mark.parametrize("call", [
    lambda name: integer(name, -1, 0),
    lambda name: integer(name, "3"),
    lambda name: number(name, math.nan),
    lambda name: number(name, 3, 0, 1, allow_none=True),
    lambda name: one_of(name, "z", "ab"),
], ids=["integer-range", "integer-type", "number-nan", "number-range", "one_of"])
@pytest.mark.parametrize("name", ["steps", "recall_length", "x"])
def test_every_message_starts_with_the_argument_name(call, name):
    # the command line rewrites that first word as the option the user typed
    assert refusal(lambda: call(name)).startswith(f"{name} must be ")
