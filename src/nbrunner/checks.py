"""Checks shared by every entry point: modules.toml, settings, the CLI and the Python API.

Each check returns the value it accepted or raises the error class it is given, with a message
naming the input (`what`), the value and what would be right: the caller prefixes where the
input came from (a file, a flag), so the whole story stays one line.
"""

from __future__ import annotations

import math
from typing import Any

from .errors import BadInput, InvalidParameter, UnknownRun

# SQLite stores integers as signed 64-bit; a larger Python int fails inside the driver.
SQLITE_INT_MAX = 2**63 - 1
# Far inside SQLite's range, so moving a run to the front (the highest priority + 1) never
# overflows, and any priority a person would type still fits.
PRIORITY_LIMIT = 10**9


def is_number(value: Any) -> bool:
    """A real, finite int or float (bool is not a number here, nan and inf are not either)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def text(value: Any, what: str, form: str, error: type[BadInput] = BadInput) -> str:
    """A non-empty UTF-8 string without NUL bytes (the OS refuses them in argv, env and
    paths)."""
    if not isinstance(value, str) or not value:
        raise error(f"{what} must be {form}, got {value!r}")
    if "\0" in value:
        raise error(f"{what} must not contain NUL bytes (\\0), got {value!r}")
    return utf8(value, what, error)


def utf8(value: str, what: str, error: type[BadInput] = BadInput) -> str:
    """Text the store can keep: bytes a terminal passed that are not UTF-8 (Python holds
    them as lone surrogates) would fail deep in a query."""
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            try:  # bytes a terminal passed, shown as they came
                given: object = value.encode(errors="surrogateescape")
            except UnicodeEncodeError:  # a lone surrogate made in Python
                given = value
            raise error(f"{what} must be UTF-8, got {given!r}") from None
    return value


def whole_number(
    value: Any, what: str, minimum: int, maximum: int, error: type[BadInput] = BadInput
) -> int:
    """An int (or its text, or a float with nothing after the point) within the bounds."""
    try:
        number = int(value) if isinstance(value, str) else value
    except ValueError:
        number = None
    if is_number(number) and isinstance(number, float) and number.is_integer():
        number = int(number)
    if isinstance(number, bool) or not isinstance(number, int) or number < minimum:
        raise error(f"{what} must be a whole number ≥ {minimum}, got {value!r}")
    if number > maximum:
        raise error(f"{what} must be a whole number ≤ {maximum}, got {value!r}")
    return number


def run_id(value: Any) -> int:
    """A run id as the store can hold it, from an int or text like "42" or "#42"."""
    if isinstance(value, str):
        value = value.strip().lstrip("#")
    try:
        number = int(value) if isinstance(value, str) else value
    except ValueError:
        number = None
    if isinstance(number, bool) or not isinstance(number, int):
        raise BadInput(f"run ids are whole numbers like 42, got {value!r}")
    if abs(number) > SQLITE_INT_MAX:  # no such run, and SQLite could not even look it up
        raise UnknownRun(number)
    return number


def priority(value: Any) -> int:
    return whole_number(value, "priority", -PRIORITY_LIMIT, PRIORITY_LIMIT, InvalidParameter)


def timeout(value: Any) -> float | None:
    """None (no timeout of its own) or a finite number of seconds > 0."""
    if value is not None and not (is_number(value) and value > 0):
        raise InvalidParameter(f"timeout must be a positive number of seconds, got {value!r}")
    return None if value is None else float(value)  # an int past 2**63 is too big for SQLite


def group(value: Any) -> str | None:
    """None (the module's group, if any) or a group name."""
    if value is None or value == "":
        return None
    return text(value, "group", 'a group name like "gpu"', InvalidParameter)
