"""Measured tables written between a pair of marker lines of a markdown file (used by the compare_* scripts),
and figures saved whole: the files these scripts write into docs/ are replaced atomically."""

import datetime
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bfcnn, from a checkout

from bfcnn.io import atomic_path  # noqa: E402  (numpy and Pillow only)


def check_markers(path: Path, begin: str, end: str) -> str:
    """The file's text; exits with a message unless it holds one `begin` line followed by one `end` line."""
    if not path.is_file():
        raise SystemExit(f"error: --write {path}: no such file")
    document = path.read_text()
    if document.count(begin) != 1 or document.count(end) != 1 or document.index(begin) > document.index(end):
        raise SystemExit(f"error: {path} needs one '{begin}' line and, after it, one '{end}' line")
    return document


def write_measured_table(path: Path, begin: str, end: str, text: str, command: str) -> None:
    """Replaces what lies between the markers by `text` and the date and command that measured it (atomic)."""
    document = check_markers(path, begin, end)
    head, rest = document.split(begin)
    _, tail = rest.split(end)
    block = f"{begin}\n{text}\n\nMeasured {datetime.date.today().isoformat()} with `{command}`.\n{end}"
    with atomic_path(path) as tmp:
        tmp.write_text(head + block + tail)
    print(f"wrote the table into {path}")


def save_figure(figure, path) -> None:
    """Saves a matplotlib figure at its dpi to `path` (format from the suffix) under a temporary
    name in the same folder, then moves it into place: an error mid-save leaves the previous
    image whole. Missing folders are created."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=figure.dpi)
