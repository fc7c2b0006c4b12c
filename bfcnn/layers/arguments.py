"""Argument checks shared by the layers and model builders: one wording for every bad value.

Each check raises `ValueError` naming the argument, what is allowed and the value given, and
returns the value as a plain Python `int` / `float`, so that numpy scalars (a size read from
an array, say) are accepted and a layer's `get_config()` stays JSON-serializable.
"""

import numbers

import keras
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


def check_initializer(name: str, value):
    """`keras.initializers.get(value)`, or a ValueError naming the argument and the kinds of
    value allowed (Keras's own says only "Could not interpret initializer identifier")."""
    try:
        return keras.initializers.get(value)
    except (ValueError, TypeError):
        raise ValueError(f"{name} must be a Keras initializer: a name such as 'ones', 'zeros', 'glorot_uniform' "
                         f"or 'he_normal', its serialized config, or a keras.initializers.Initializer; "
                         f"got {value!r}") from None


def check_pair(layer: str, inputs, *, hint: str = "") -> tuple:
    """`(x, like)` if `inputs` is a list or tuple of two tensors (or, in `build`, of two
    shapes), else a ValueError saying that `layer` takes `[x, like]` (`hint`, if given, says
    in brackets what `like` is for) and what it got."""
    if isinstance(inputs, (list, tuple)) and len(inputs) == 2 and not any(_is_size(item) for item in inputs):
        return tuple(inputs)
    raise ValueError(f"{layer} takes a list of two tensors, [x, like]{_bracket(hint)}, got {_describe_inputs(inputs)}")


def _is_size(value) -> bool:
    return value is None or (isinstance(value, numbers.Integral) and not isinstance(value, bool))


def _describe_inputs(inputs) -> str:
    if hasattr(inputs, "shape"):
        return f"one tensor of shape {tuple(inputs.shape)}"
    if isinstance(inputs, (list, tuple)) and inputs and all(_is_size(item) for item in inputs):
        return f"one tensor of shape {tuple(inputs)}"  # a single tensor's shape, as `build` gets it
    if isinstance(inputs, (list, tuple)):
        return f"a list of {len(inputs)}"
    return repr(inputs)


def _bracket(hint: str) -> str:
    return f" ({hint})" if hint else ""
