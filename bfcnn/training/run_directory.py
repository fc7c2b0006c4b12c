"""The model directory a run writes into: its files, its lock, its checkpoints and its records.

A `Trainer` (`bfcnn.training.loop`) runs a `PipelineConfig` into a model directory D:

    D/config.yaml        the resolved config (every default filled in)
    D/checkpoints/       tf.train checkpoints (model, optimizer, step, wall time), last K kept
    D/model.keras        the final model;   D/best.keras   the best one by validation PSNR
    D/best_validation.json   the step, mean PSNR and sha256 of best.keras, and the validation
                         settings they were measured under (best tracking starts afresh when they change)
    D/history.jsonl      one line per validation;   D/logs/   TensorBoard events
    D/summary.json       at the end: steps, wall time, best PSNR, the last validation and the
                         number of unreadable files skipped (null when streaming: not counted)
"""

import errno
import json
import logging
import math
import os
from pathlib import Path
from typing import Dict, Optional

import keras
import tensorflow as tf

from bfcnn.errors import ConfigError
from bfcnn.io import atomic_path, sha256, write_json
from bfcnn.training.stopping import TrainingError

log = logging.getLogger("bfcnn.train")

BEST_RECORD = "best_validation.json"  # best.keras's step, mean PSNR, sha256 and validation settings, written after it
LOCK_FILE = ".lock"  # held by the run writing into a model directory (lock_directory)
# What a run writes into its model directory: name -> whether it is a folder.
RUN_FILES = {"checkpoints": True, "logs": True, "config.yaml": False, "model.keras": False, "best.keras": False,
             "summary.json": False, "history.jsonl": False, BEST_RECORD: False, "init_from.json": False}


def lock_directory(directory: Path):
    """An open file holding an exclusive lock on `directory/.lock` while the run lasts (released
    when it is closed or the process ends), so two runs cannot write into one model directory.

    Raises:
        ConfigError: another process holds the lock (its pid named).
    """
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks
        return None
    handle = open(directory / LOCK_FILE, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):  # a file system without locks
            handle.close()
            log.warning("cannot lock %s (%s): running without the lock", directory, error.strerror or error)
            return None
        handle.seek(0)
        owner = handle.read().strip() or "unknown"
        handle.close()
        raise ConfigError(f"another training run (pid {owner}) is writing into {str(directory)!r}; wait for it to "
                          "end or give another --model-directory") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def record_start(directory: Path, init_from) -> dict:
    """Writes `<directory>/init_from.json`: the weights a run started from (path and sha256) and,
    when a model card lies beside them (`<name>.json`, as for a zoo entry), the training steps and
    seconds it counted then. The file may be replaced later (a zoo entry shipped again) and its
    card with it; `scripts/make_zoo_entry.py` reads this record to count what the run began with.
    """
    path = Path(init_from)
    record = {"path": str(init_from), "sha256": sha256(path)}
    card_path = path.with_suffix(".json")
    if card_path.exists():
        try:
            training = json.loads(card_path.read_text()).get("training", {})
            record["card"] = {"steps": int(training["steps"]),
                              "wall_time_seconds": float(training["wall_time_seconds"])}
        except (ValueError, KeyError, TypeError, AttributeError):
            pass  # a .json beside the weights that is not a model card
    write_json(directory / "init_from.json", record)
    return record


def atomic_save_model(model: keras.Model, path: Path) -> None:
    """Saves a .keras file under a temporary name, flushed to disk, then renames it into place."""
    with atomic_path(path) as tmp:
        model.save(tmp)


def restore_newest(checkpoint: tf.train.Checkpoint, manager: tf.train.CheckpointManager,
                   fall_back: bool = True, restorer=None) -> Optional[str]:
    """Restores the newest checkpoint of `manager` that can be read; a damaged one (a truncated
    index, a missing data file) is logged and, with `fall_back`, the one before it tried.

    `restorer(path)`, when given, returns the checkpoint object to restore `path` with (the
    same variables, arranged as that file stores them); `checkpoint` otherwise.

    Returns:
        The checkpoint restored, or None when there is none.

    Raises:
        TrainingError: a checkpoint does not hold every weight of the model, or every
            checkpoint is damaged; the message says how to start over.
    """
    checkpoints = list(manager.checkpoints)  # oldest first
    if manager.latest_checkpoint and manager.latest_checkpoint not in checkpoints:
        checkpoints.append(manager.latest_checkpoint)
    damaged = []
    for path in reversed(checkpoints):
        try:
            # Every variable must come from the checkpoint: a model whose graph changed
            # since (other shapes or layers) would otherwise resume with fresh weights.
            (restorer(path) if restorer else checkpoint).restore(path).assert_existing_objects_matched().expect_partial()
        except (tf.errors.OpError, IndexError) as error:  # a truncated index or data file, a missing data file
            reason = str(error).splitlines()[0][:200]
            damaged.append(f"{path} ({reason})")
            if not fall_back:
                break
            log.warning("checkpoint %s is damaged (%s); trying the one before it", path, reason)
            continue
        except (AssertionError, ValueError) as error:
            raise TrainingError(
                f"cannot resume from {path}: it does not hold every weight of the model and optimizer the config "
                f"builds (were model, optimizer.type or bfcnn changed since?): {str(error)[:300]}. Train into a new model "
                "directory, with train.init_from=<the old run>/model.keras to start from its weights") from None
        return path
    if damaged:
        which = "every checkpoint is damaged" if fall_back else "the latest checkpoint is damaged (with several " \
            "workers none falls back on its own: remove it on every worker to resume from the one before)"
        raise TrainingError(
            f"cannot resume from {manager.directory}: {which}: {'; '.join(damaged)}. To start "
            "over, train into a new --model-directory, with train.init_from=<this run>/best.keras (or model.keras) "
            "to start from this run's weights if it has them")
    return None


def trim_history(path: Path, step: int) -> None:
    """Drops the lines of `history.jsonl` after `step` (validations of steps a resumed run repeats),
    and a line cut short by a crash; rewrites the file atomically, only if anything changes."""
    if not path.exists():
        return
    lines = path.read_text().splitlines()
    kept = []
    for line in lines:
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            log.warning("%s: dropped a damaged line: %.80s", path, line)
    if len(kept) != len(lines):
        log.info("%s: dropped %d line(s) after step %d, which this run repeats", path, len(lines) - len(kept), step)
        with atomic_path(path) as tmp:
            tmp.write_text("".join(line + "\n" for line in kept))


def recorded_best(directory: Path) -> float:
    """The mean PSNR of `best.keras` (-inf when there is none).

    As `best_validation.json` records it, unless `best.keras` is newer than that record: a run
    stopped after moving a new `best.keras` into place and before writing its record leaves
    a file whose sha256 is not the recorded one (or no record at all). Then it is the best
    mean PSNR `history.jsonl` holds after the record's step (each validation is written there
    before `best.keras`), so a later, worse model does not replace it. Call it before
    `trim_history`, which drops the lines after the checkpoint's step. Records written before
    the sha256 was recorded are taken as they are.
    """
    record = _best_record(directory)
    try:
        recorded = float(record["mean_psnr"]) if record is not None else -math.inf
    except (KeyError, TypeError, ValueError):
        recorded = -math.inf
    best_file = directory / "best.keras"
    if not best_file.is_file() or (record is not None and "sha256" not in record):
        return recorded
    if record is not None and record["sha256"] == sha256(best_file):
        return recorded
    after = record.get("step", -1) if record is not None else -1
    later = [entry.get("mean_psnr") for entry in _history_entries(directory / "history.jsonl")
             if isinstance(entry.get("step"), int) and isinstance(after, int) and entry["step"] > after]
    later = [float(value) for value in later if isinstance(value, (int, float)) and math.isfinite(value)]
    if later:
        log.info("best.keras is newer than %s (the run stopped between writing the two): its mean PSNR is "
                 "taken from history.jsonl", BEST_RECORD)
    return max([recorded] + later)


def _best_record(directory: Path) -> Optional[Dict]:
    """`best_validation.json` as a dict; None when it is missing, unreadable or not an object."""
    try:
        record = json.loads((directory / BEST_RECORD).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _history_entries(path: Path):
    """The JSON objects of `history.jsonl`'s readable lines (none when it cannot be read)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    entries = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def validation_settings(config) -> Dict:
    """What a validation's mean PSNR depends on besides the model (the `validation` keys but
    `every`), as `best_validation.json` records it: PSNRs measured under other settings are
    not comparable."""
    settings = {"directory": None if config.directory is None else str(config.directory),
                "sigmas": [float(sigma) for sigma in config.sigmas], "max_size": config.max_size,
                "max_images": config.max_images, "seed": config.seed}
    return json.loads(json.dumps(settings))  # as read back from the file


def changed_validation_settings(directory: Path, settings: Dict) -> Dict:
    """The settings that differ between `settings` and those `best_validation.json` records,
    {key: (recorded, now)}; {} when they match, when there is no record, or when the record
    predates the settings being recorded (its best is kept, as before)."""
    recorded = (_best_record(directory) or {}).get("validation")
    if not isinstance(recorded, dict):
        return {}
    return {key: (recorded.get(key), value) for key, value in settings.items() if recorded.get(key) != value}


def recorded_validation(directory: Path, step: int) -> Dict:
    """The validation of `step` as `history.jsonl` records it ({sigma: results}; {} when none)."""
    for entry in reversed(_history_entries(directory / "history.jsonl")):
        try:
            if entry["step"] == step:
                return {float(sigma): results for sigma, results in entry["results"].items()}
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
    return {}
