"""The checks every entry point shares (nbrunner.checks): the values at their bounds are
taken, one past them refused with the message the user sees."""

from __future__ import annotations

import math

import pytest

from nbrunner import checks
from nbrunner.errors import BadInput, InvalidParameter, UnknownRun


@pytest.mark.parametrize(("given", "taken"), [(3, 3), ("3", 3), (3.0, 3), (1, 1), (10, 10)])
def test_a_whole_number_within_its_bounds_is_taken(given: object, taken: int) -> None:
    assert checks.whole_number(given, "n", 1, 10) == taken


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (0, "n must be a whole number ≥ 1, got 0"),
        (11, "n must be a whole number ≤ 10, got 11"),
        (2.5, "n must be a whole number ≥ 1, got 2.5"),
        ("three", "n must be a whole number ≥ 1, got 'three'"),
        (True, "n must be a whole number ≥ 1, got True"),
        (math.nan, "n must be a whole number ≥ 1, got nan"),
    ],
)
def test_a_whole_number_out_of_bounds_or_not_whole_is_refused(given: object, message: str) -> None:
    with pytest.raises(InvalidParameter) as refused:
        checks.whole_number(given, "n", 1, 10, InvalidParameter)
    assert str(refused.value) == message


@pytest.mark.parametrize(("given", "run"), [(42, 42), ("42", 42), ("#42", 42), (" #7 ", 7)])
def test_a_run_id_is_read_from_a_number_or_its_text(given: object, run: int) -> None:
    assert checks.run_id(given) == run


@pytest.mark.parametrize("given", ["x", "4x2", 4.5, True, None, "42#", "X42"])
def test_anything_else_is_not_a_run_id(given: object) -> None:
    with pytest.raises(BadInput) as refused:
        checks.run_id(given)
    assert str(refused.value) == f"run ids are whole numbers like 42, got {given!r}"


def test_a_run_id_past_what_sqlite_holds_is_no_run_and_the_largest_is_looked_up() -> None:
    assert checks.run_id(checks.SQLITE_INT_MAX) == checks.SQLITE_INT_MAX
    assert checks.run_id(-checks.SQLITE_INT_MAX) == -checks.SQLITE_INT_MAX
    for past in (checks.SQLITE_INT_MAX + 1, -checks.SQLITE_INT_MAX - 1):
        with pytest.raises(UnknownRun):
            checks.run_id(past)


@pytest.mark.parametrize("given", [None, 0.5, 1, 3600])
def test_a_timeout_is_none_or_positive_seconds(given: object) -> None:
    assert checks.timeout(given) == given


@pytest.mark.parametrize("given", [0, -1, math.nan, math.inf, "60", True])
def test_a_timeout_of_zero_or_less_or_not_a_number_is_refused(given: object) -> None:
    with pytest.raises(InvalidParameter) as refused:
        checks.timeout(given)
    assert str(refused.value) == f"timeout must be a positive number of seconds, got {given!r}"


def test_a_group_is_a_name_or_none() -> None:
    assert checks.group(None) is None
    assert checks.group("") is None  # the module's group, as if none was given
    assert checks.group("gpu") == "gpu"
    with pytest.raises(InvalidParameter, match="group must not contain NUL bytes"):
        checks.group("g\0")
