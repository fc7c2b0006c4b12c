"""The trainer's `tf.train` checkpoint folders (`<run>/checkpoints/`), read robustly.

`tf.train.CheckpointManager` keeps `ckpt-<step>.index` / `.data-*` files and a small state file,
`checkpoint`, listing them. TensorFlow ignores a state file it cannot parse (so a run would
start over at step 0 and overwrite its checkpoints) and raises on an empty one; here the
files on disk stand in for a missing or damaged state file. The trainer, checkpoint
averaging and the exporter list checkpoints through `checkpoint_paths`.
"""

import logging
import os
import re
import time
from pathlib import Path
from typing import List, Optional, Tuple

STATE_FILE = "checkpoint"
_NUMBERED = re.compile(r"^ckpt-(\d+)\.index$")

log = logging.getLogger("bfcnn.checkpoints")


def checkpoints_on_disk(ckpt_dir) -> List[Tuple[int, str]]:
    """(step, path prefix) of every `ckpt-<step>` in `ckpt_dir` with an index file, oldest first."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = []
    for entry in ckpt_dir.iterdir():
        match = _NUMBERED.match(entry.name)
        if match:
            found.append((int(match.group(1)), str(ckpt_dir / entry.name[: -len(".index")])))
    return sorted(found)


def listed_checkpoints(ckpt_dir) -> Optional[List[str]]:
    """The checkpoints the state file lists (as paths in `ckpt_dir`), oldest first; None when the
    file is missing, empty or cannot be parsed."""
    import tensorflow as tf

    if not (Path(ckpt_dir) / STATE_FILE).is_file():
        return None
    try:
        state = tf.train.get_checkpoint_state(str(ckpt_dir))  # None (and a warning) for text it cannot parse
    except ValueError:  # "Invalid checkpoint state": an empty file
        return None
    if state is None or not state.model_checkpoint_path:
        return None
    # The state file may name them relative to the folder, to the working directory or absolutely.
    paths = [str(Path(ckpt_dir) / Path(p).name) for p in state.all_model_checkpoint_paths]
    latest = str(Path(ckpt_dir) / Path(state.model_checkpoint_path).name)
    return paths if latest in paths else [*paths, latest]


def checkpoint_paths(ckpt_dir) -> List[str]:
    """The checkpoints of `ckpt_dir`, oldest first: those the state file lists or, when it is
    missing or damaged, every `ckpt-<step>` found on disk."""
    listed = listed_checkpoints(ckpt_dir)
    if listed is not None:
        return listed
    return [path for _, path in checkpoints_on_disk(ckpt_dir)]


def repair_state(ckpt_dir) -> Optional[str]:
    """Rewrites a missing, empty or unparsable state file from the checkpoints on disk.

    Returns a sentence saying what was done, or None when nothing needed doing (no
    checkpoint files, or a state file TensorFlow reads). The file is written to a temporary
    name and moved into place.
    """
    found = checkpoints_on_disk(ckpt_dir)
    if not found or listed_checkpoints(ckpt_dir) is not None:
        return None
    ckpt_dir = Path(ckpt_dir)
    state = ckpt_dir / STATE_FILE
    what = "was missing" if not state.exists() else "could not be read"
    names = [Path(path).name for _, path in found]
    stamps = [os.path.getmtime(path + ".index") for _, path in found]
    text = (f'model_checkpoint_path: "{names[-1]}"\n'
            + "".join(f'all_model_checkpoint_paths: "{name}"\n' for name in names)
            + "".join(f"all_model_checkpoint_timestamps: {stamp!r}\n" for stamp in stamps)
            + f"last_preserved_timestamp: {min(stamps + [time.time()]) - 1.0!r}\n")
    temporary = ckpt_dir / f".{STATE_FILE}.repair"
    temporary.write_text(text)
    os.replace(temporary, state)
    message = (f"the checkpoint state file {state} {what}; rebuilt it from the {len(found)} checkpoint(s) on disk "
               f"(steps {', '.join(str(step) for step, _ in found)})")
    log.warning(message)
    return message
