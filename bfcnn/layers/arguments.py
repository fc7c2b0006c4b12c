"""Argument checks shared by the layers and model builders: one wording for every bad value.

Each check raises `ValueError` naming the argument, what is allowed and the value given, and
returns the value as a plain Python `int` / `float`, so that numpy scalars (a size read from
an array, say) are accepted and a layer's `get_config()` stays JSON-serializable.
"""

import numbers

import numpy as np


def check_int(name: str, value, minimum: int = 1, *, hint: str = "") -> int:
    """`value` as an int if it is an integer (not a bool) `>= minimum`, else a ValueError
    (`hint`, if given, says in brackets what the value means)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}{_bracket(hint)}, got {value!r}")
    return int(value)


def check_number(name: str, value, low: float, high: float = None, *, strict: bool = False,
                 hint: str = "") -> float:
    """`value` as a float if it is a real number (not a bool) with `low <= value` (`low < value`
    when `strict`) and `value < high` when `high` is given, else a ValueError (`hint` as in
    `check_int`)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        ok = (value > low if strict else value >= low) and (high is None or value < high)
    if not ok:
        where = f"in [{low:g}, {high:g})" if high is not None else f"{'>' if strict else '>='} {low:g}"
        raise ValueError(f"{name} must be a number {where}{_bracket(hint)}, got {value!r}")
    return float(value)


def check_bool(name: str, value) -> bool:
    """`value` as a bool if it is one (numpy's too), else a ValueError: `bool("no")` is True."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_choice(name: str, value, options) -> None:
    """A ValueError listing `options` unless `value` is one of them."""
    if value not in options:
        raise ValueError(f"{name}={value!r} is not supported; allowed: {', '.join(map(repr, options))}")


def _bracket(hint: str) -> str:
    return f" ({hint})" if hint else ""
