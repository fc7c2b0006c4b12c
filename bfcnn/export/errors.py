"""The errors export raises; all are `bfcnn.errors.BfcnnError`s, so callers can catch one type."""

from typing import Optional, Sequence

from bfcnn.errors import BfcnnError


class ExportError(BfcnnError):
    """The model cannot be exported as asked (bad input, missing files, conversion failure)."""


class UnsupportedOpsError(ExportError):
    """The model uses operations that builtin-only TFLite cannot run; `.ops` names them."""

    def __init__(self, message: str, ops: Sequence[str] = ()):
        super().__init__(message)
        self.ops = list(ops)


class VerificationError(ExportError):
    """An exported artifact differs from the Keras model by more than its tolerance; `.report` has the numbers."""

    def __init__(self, message: str, report: Optional[dict] = None):
        super().__init__(message)
        self.report = report or {}
