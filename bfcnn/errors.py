"""Errors raised by bfcnn, and the close-match suggestions they carry."""

import difflib
from typing import Iterable


class BfcnnError(ValueError):
    """Base class of bfcnn's errors about bad input: a ValueError with a clear message."""


class ConfigError(BfcnnError):
    """A pipeline or model config has an unknown key, a wrong type or an invalid value."""


class UnknownModelError(BfcnnError, KeyError):
    """A model name that the zoo does not know."""

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0] if self.args else ""


def did_you_mean(name: str, options: Iterable[str]) -> str:
    """Returns ", did you mean 'x'?" for the closest option, or "" when none is close."""
    matches = difflib.get_close_matches(str(name), [str(o) for o in options], n=1, cutoff=0.6)
    return f", did you mean '{matches[0]}'?" if matches else ""


def allowed(options: Iterable[str]) -> str:
    """Formats the allowed values for an error message."""
    return ", ".join(repr(o) for o in sorted(options))
