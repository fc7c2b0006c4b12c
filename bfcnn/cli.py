"""Argument types shared by the command lines (`bfcnn.export`, `scripts/`, `benchmarks/`).

Importing this module does not import TensorFlow, so `--help` stays fast.
"""

import argparse


def positive_int(text: str) -> int:
    """An argparse `type=`: an integer >= 1, or an error naming the value given."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value
