"""How a run stops early: its errors, and SIGTERM / SIGINT turned into a checkpoint and a stop
between two steps."""

import contextlib
import logging
import signal

from bfcnn.errors import BfcnnError

log = logging.getLogger("bfcnn.train")


class TrainingError(BfcnnError):
    """Training cannot go on (e.g. the loss became NaN); the last good checkpoint is kept."""


class TrainingStopped(BfcnnError):
    """SIGTERM or SIGINT (Ctrl-C) stopped the run between two steps, after a checkpoint of the
    step it reached was saved: the same command resumes from there."""

    def __init__(self, signum: int, step: int, checkpoint: str):
        self.signum, self.step = signum, step
        name = signal.Signals(signum).name
        super().__init__(f"stopped by {name} at step {step}; saved {checkpoint}: run the same command to resume")


@contextlib.contextmanager
def stop_on_signals(received: list):
    """Appends SIGTERM / SIGINT to `received` instead of ending the process, so the training loop
    can save a checkpoint and stop between steps; a second one ends the process at once, as
    without this. Only in the main thread (Python delivers signals there); elsewhere a no-op."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def handler(signum, frame):
        if received:  # the second: as if no handler were installed
            signal.signal(signum, previous[signum])
            signal.raise_signal(signum)
            return
        received.append(signum)
        log.warning("%s received: stopping after this step (a second one stops at once)", signal.Signals(signum).name)

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
