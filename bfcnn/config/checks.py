"""Value checks and type coercion for the config dataclasses: the `_KeyProblem` error that names
a dotted key, the `_check*` helpers the sections' rules use, and `_coerce` / `_build`, which turn
parsed YAML into typed fields.
"""

import copy
import dataclasses
import functools
import math
import re
import typing
from collections.abc import Mapping
from typing import Any, Callable, Dict, Literal, Sequence, Union

from bfcnn.errors import ConfigError, allowed, did_you_mean


# ----------------------------------------------------------------------------- errors


class _KeyProblem(ConfigError):
    """A problem with one key, named relative to the config object that found it.

    It bubbles up through the nested sections, each prefixing its own name, and the loader
    turns it into a plain `ConfigError` that also names the file. Raised as is (without a
    file) when a config dataclass is built directly in Python.
    """

    def __init__(self, key: str, problem: str = "", kind: str = "invalid", options: Sequence[str] = (),
                 related: Sequence[str] = ()):
        # `related`: other keys whose values the problem depends on, dotted like `key` (relative
        # to the same section, prefixed alike), so the loader can name a `--set` that changed one.
        self.key, self.problem, self.kind, self.options = key, problem, kind, tuple(options)
        self.related = tuple(related)
        super().__init__(self.message(""))

    def within(self, prefix: str) -> "_KeyProblem":
        related = tuple(_join(prefix, key) for key in self.related)
        return _KeyProblem(_join(prefix, self.key), self.problem, self.kind, self.options, related)

    def message(self, where: str) -> str:
        place = f" in {where}" if where else ""
        if self.kind == "unknown":
            return f"unknown key '{self.key}'{place}{_unknown_key_hint(self.key, self.options)}"
        head = {"missing": "missing key", "type": "wrong type for"}.get(self.kind, "invalid value for")
        return f"{head} '{self.key}'{place}: {self.problem}"


def _join(prefix: str, key: str) -> str:
    if not prefix:
        return key
    if not key:
        return prefix
    return prefix + key if key.startswith("[") else f"{prefix}.{key}"


def _unknown_key_hint(key: str, options: Sequence[str]) -> str:
    """A close key at the same level, else a close key in another section, else the allowed keys."""
    from bfcnn.config.schema import _schema_keys  # on first use: the schema is built on this module

    prefix, _, leaf = key.rpartition(".")
    if did_you_mean(leaf, options):
        return did_you_mean(key, [_join(prefix, option) for option in options])
    others = [k for k in _schema_keys() if k != key]
    best = did_you_mean(leaf, {k.rpartition(".")[2] for k in others})
    elsewhere = [k for k in others if best and did_you_mean(leaf, [k.rpartition(".")[2]]) == best]
    if len(elsewhere) == 1:
        return f", did you mean '{elsewhere[0]}'?"
    if elsewhere:
        return f", did you mean one of {allowed(elsewhere)}?"
    return f"; allowed keys: {allowed(options)}" if options else ""


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 80 else text[:77] + '...'}"


def _check(condition: bool, key: str, problem: str, related: Sequence[str] = ()) -> None:
    if not condition:
        raise _KeyProblem(key, problem, related=related)


def _check_at_least(obj: Any, name: str, minimum: float) -> None:
    value = getattr(obj, name)
    _check(value >= minimum, name, f"must be >= {minimum}, got {value!r}")


def _check_optional_at_least(obj: Any, name: str, minimum: float) -> None:
    if getattr(obj, name) is not None:
        _check_at_least(obj, name, minimum)


def _check_probability(obj: Any, name: str = "probability") -> None:
    value = getattr(obj, name)
    _check(0.0 <= value <= 1.0, name, f"must be in [0, 1], got {value!r}")


def _check_applies(obj: Any, name: str, switch: str, kinds: Sequence[str], also_unset: Sequence[Any] = ()) -> None:
    """Refuses `name` when `obj.<switch>` is not one of `kinds`, the only ones that read it, and
    the key is set away from its default (or the values in `also_unset`, which mean the same):
    it would be accepted and silently ignored."""
    chosen, value = getattr(obj, switch), getattr(obj, name)
    default = next(f.default for f in dataclasses.fields(obj) if f.name == name)
    if chosen in kinds or value == default or value in also_unset:
        return
    names = " or ".join(kinds)
    raise _KeyProblem(name, f"applies to {switch}: {names} only ({switch} is {chosen!r}); remove it or use "
                            f"{switch}: {names}", related=(switch,))


# ------------------------------------------------------------------- type coercion

_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
# What YAML 1.1 (or 1.2) reads as an integer and `_Loader` (plain decimals only) as text.
_YAML11_INT = re.compile(r"[-+]?(?:0[0-9_]+|0[xob][0-9a-fA-F_]+|[0-9][0-9_]*(?::[0-5]?[0-9])+|[1-9][0-9]*_[0-9_]*)")


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> Dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Union:
        return " or ".join(_type_name(a) if a is not type(None) else "null" for a in args)
    if origin is Literal:
        return f"one of {allowed(args)}"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type_name(args[0])}"
        return f"list of {len(args)} {_type_name(args[0])}"
    if dataclasses.is_dataclass(tp) or tp is dict or origin is dict:
        return getattr(tp, "_TYPE_NAME", "mapping")
    return getattr(tp, "__name__", str(tp))


def _plain(value: Any) -> Any:
    """Deep copy into plain YAML types: mappings become dicts, tuples lists."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return copy.deepcopy(value)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Checks `value` against the annotation `tp` and converts it (lists to tuples, ints to floats)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)

    def wrong_type() -> _KeyProblem:
        hint = ""
        if isinstance(value, str) and _YAML11_INT.fullmatch(value) and int in (tp,) + args:
            hint = " (integers are plain decimals here; YAML 1.1's 0123, 0x10, 1_000 and 1:30 are read as text)"
        return _KeyProblem(key, f"expected {_type_name(tp)}, got {_describe(value)}{hint}", "type")

    if origin is Union:  # only Optional[X] is used
        if value is None:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        try:
            return _coerce(value, inner, key)
        except _KeyProblem as problem:
            if problem.kind == "type" and problem.key == key:
                raise wrong_type() from None
            raise
    if origin is Literal:
        if not isinstance(value, str):
            raise wrong_type()
        if value not in args:
            raise _KeyProblem(key, f"must be one of {allowed(args)}, got {value!r}{did_you_mean(value, args)}")
        return value
    if origin is tuple:
        return _coerce_tuple(value, args, key, wrong_type)
    if tp is dict or origin is dict:
        if not isinstance(value, Mapping):
            raise wrong_type()
        for name in value:
            if not isinstance(name, str):
                raise _KeyProblem(_join(key, str(name)), f"keys must be strings, got {_describe(name)}", "type")
        return _plain(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if value is None:  # an empty section, e.g. "validation:" with everything commented out
            value = {}
        if isinstance(value, str) and hasattr(tp, "_from_string"):
            return tp._from_string(value)
        if not isinstance(value, Mapping):
            raise wrong_type()
        return _build(tp, value, key)
    if tp in (bool, int, float, str):
        return _coerce_scalar(value, tp, key, wrong_type)
    raise TypeError(f"unsupported annotation {tp!r} for {key!r}")  # a bug in this module


def _coerce_tuple(value: Any, args: tuple, key: str, wrong_type: Callable[[], Exception]) -> tuple:
    """A list or tuple checked item by item: `Tuple[X, ...]` any length, `Tuple[X, Y]` exactly two."""
    if not isinstance(value, (list, tuple)):
        raise wrong_type()
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
    if len(value) != len(args):
        raise _KeyProblem(key, f"expected a list of {len(args)} values, got {_describe(value)}")
    return tuple(_coerce(v, t, f"{key}[{i}]") for i, (v, t) in enumerate(zip(value, args)))


def _coerce_scalar(value: Any, tp: type, key: str, wrong_type: Callable[[], Exception]) -> Any:
    """A bool, int (integral floats accepted), finite float (numeric strings accepted) or str."""
    if tp is bool:
        if not isinstance(value, bool):
            raise wrong_type()
        return value
    if tp is int:
        # 1e5 steps is common enough in YAML to accept integral floats.
        if isinstance(value, float) and not isinstance(value, bool) and value.is_integer():
            return int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise wrong_type()
        return value
    if tp is float:
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            value = float(value)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise wrong_type()
        if not math.isfinite(value):
            raise _KeyProblem(key, f"must be a finite number, got {value!r}")
        return float(value)
    if not isinstance(value, str):  # tp is str
        raise wrong_type()
    return value


def _build(cls: type, data: Mapping, key: str = "") -> Any:
    """Builds the dataclass `cls` from a mapping, with errors naming the dotted key."""
    if not isinstance(data, Mapping):
        raise _KeyProblem(key, f"expected mapping, got {_describe(data)}", "type")
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    try:
        for name in data:
            if name not in names:
                raise _KeyProblem(str(name), kind="unknown", options=names)
        for f in dataclasses.fields(cls):
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if required and f.name not in data:
                raise _KeyProblem(f.name, "required", "missing")
        return cls(**data)
    except _KeyProblem as problem:
        raise problem.within(key) from None
