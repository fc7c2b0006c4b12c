"""Putting an export in place: the output folder checked, the finished temporary folder moved in
(a previous export replaced, or put back on failure), temporaries a killed export left removed,
and SIGTERM turned into an exit so that the temporary folder is removed."""

import contextlib
import os
import re
import shutil
import signal
import tempfile
import threading
from pathlib import Path

from bfcnn.export.errors import ExportError
from bfcnn.export.tflite import LIFTED_FILE, TFLITE_FILES
from bfcnn.io import existing_ancestor, usual_mode

# what an export folder holds; replacing one that holds anything else is refused
EXPORT_FILES = frozenset({"saved_model", "model.keras", "model_card.json", LIFTED_FILE, *TFLITE_FILES.values()})


def check_output(out: Path) -> None:
    """Refuses an output path that is a file, lies under a file, or is a folder holding other files
    than a previous export (checked before the export work, and again before the move)."""
    existing = existing_ancestor(out)
    if not existing.is_dir():
        where = "exists" if existing == out else f"lies under {str(existing)!r}, which exists"
        raise ExportError(f"output path {str(out)!r} {where} and is not a directory")
    if existing != out or not any(out.iterdir()):
        return
    if not (out / "model_card.json").exists():
        raise ExportError(f"output directory {str(out)!r} is not empty and holds no bfcnn export; "
                          "choose a new or empty folder")
    foreign = sorted(entry.name for entry in out.iterdir() if entry.name not in EXPORT_FILES)
    if foreign:  # replacing the folder would delete them
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ExportError(f"output directory {str(out)!r} holds a previous export and other files ({shown}), "
                          "which replacing it would delete; move them or choose another folder")


def place(tmp: Path, out: Path) -> None:
    """Moves the finished temporary folder to `out`, replacing a previous export there; the previous
    export is put back if the move fails or is interrupted (Ctrl-C, SIGTERM) half way."""
    os.chmod(tmp, usual_mode(directory=True))  # mkdtemp made it private
    check_output(out)
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        try:
            os.replace(out, old / out.name)
            os.replace(tmp, out)
        except BaseException:  # an OSError, or KeyboardInterrupt / SystemExit between the two moves
            if not out.exists() and (old / out.name).exists():
                os.replace(old / out.name, out)
            raise
        finally:
            if out.exists():  # the new export, or the previous one put back: `old` holds nothing needed
                shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def remove_stale_temporaries(out: Path, log) -> None:
    """Removes `.<name>.tmp-XXXXXXXX` folders an export to `out` that was killed left beside it
    (only folders of exactly that pattern: mkdtemp's prefix and 8 random characters)."""
    pattern = re.compile(re.escape(f".{out.name}.tmp-") + r"[a-z0-9_]{8}")
    try:
        entries = list(out.parent.iterdir())
    except OSError:
        return
    for entry in entries:
        if pattern.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink():
            log(f"removing {entry}, left by an export that was killed")
            shutil.rmtree(entry, ignore_errors=True)


@contextlib.contextmanager
def sigterm_as_exit():
    """Turns SIGTERM into `SystemExit(128 + 15)` while the export runs, so its temporary folder is
    removed (`finally` blocks run) before the process ends; a second SIGTERM ends it at once.
    Only in the main thread (Python delivers signals there) and only where SIGTERM has its
    default action (a caller's own handler or an ignored SIGTERM is left alone)."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def handler(signum, frame):
        signal.signal(signum, signal.SIG_DFL)  # a second one: as without this handler
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
