"""The training loop: corruption inside the step, crash-safe checkpoints, validation, TensorBoard.

One `Trainer` runs a `PipelineConfig` into a model directory:

    D/config.yaml        the resolved config (every default filled in)
    D/checkpoints/       tf.train checkpoints (model, optimizer, step, wall time), last K kept
    D/model.keras        the final model;   D/best.keras   the best one by validation PSNR
    D/best_validation.json   the step and mean PSNR of best.keras, and the validation settings
                         they were measured under (best tracking starts afresh when they change)
    D/history.jsonl      one line per validation;   D/logs/   TensorBoard events
    D/summary.json       at the end: steps, wall time, best PSNR, the last validation and the
                         number of unreadable files skipped (null when streaming: not counted)

The paths a run reads (image directories, `train.init_from`) are checked, the data and
weights loaded, before anything is written to D, so a bad input leaves no half-made run.

Checkpoints are written by TensorFlow's CheckpointManager, which writes the data under a
temporary name and then renames it and the index atomically, so a crash mid-write leaves
the previous checkpoint intact. Running the same command again resumes from the latest
one: model, optimizer state, step counter, best PSNR and elapsed time (a damaged latest
checkpoint is logged and the one before it used). Batches and noise
are functions of (seed, step) when images are cached, so a resumed run follows the same
path as an uninterrupted one; a streamed pipeline restarts from a seed folded with the
restored step (`streaming_dataset`), so it draws new batches rather than the first session's.

Targets (`train.target`): `clean` trains on (corrupted patch -> clean patch); `noisy` is
Noise2Noise (Lehtinen et al., "Noise2Noise: Learning image restoration without clean data",
ICML 2018): the target is a second, independent corruption of the same patch. A paired source
(`dataset.inputs[].paired`) gives real pairs instead: the input is a crop of `noisy_a`, the
target the same crop of `noisy_b` (with `target: noisy` the two are swapped for a random half
of the patches, so neither copy is always the target; with `target: clean` never, and
`noisy_b` is taken as the clean reference). The `corruption` section applies to the other
sources only; both kinds may be mixed in one run.
"""

import contextlib
import dataclasses
import errno
import json
import logging
import math
import os
import signal
import time
from pathlib import Path
from typing import Dict, Optional

import keras
import numpy as np
import tensorflow as tf

from bfcnn.config import CorruptionConfig, PipelineConfig, dump_config
from bfcnn.errors import BfcnnError, ConfigError
from bfcnn.evaluation import center_crop, evaluate_denoiser
from bfcnn.io import (atomic_path, directory_problem, existing_ancestor, json_safe, list_images, read_image,
                      resolve_directory, sha256, write_json)
from bfcnn.models.builder import build_model, model_builder, resolve_model_config
from bfcnn.models.checkpoints import listed_checkpoints, repair_state
from bfcnn.models.files import load_keras_file
from bfcnn.models.multiscale import copy_legacy_weights, has_legacy_lifts
from bfcnn.models.opponent import has_guided_chroma, seed_chroma_from_gray
from bfcnn.models.transfer import graft_weights
from bfcnn.training.corruption import corrupt, corrupt_pair
from bfcnn.training.data import (MAX_CACHE_BYTES, InMemorySampler, estimated_cache_bytes, load_directory,
                                 load_paired_directory, streaming_dataset)
from bfcnn.training.losses import pixel_loss
from bfcnn.training.optim import build_optimizer, clip_summed_gradients, learning_rate_at

log = logging.getLogger("bfcnn.train")

# The loss scales of `keras.optimizers.LossScaleOptimizer`: float16 training starts at 2**15
# and adapts; `train.on_nan: skip` in other precisions keeps 1 (the wrapper only skips steps).
FLOAT16_LOSS_SCALE = 2.0**15
SKIP_LOSS_SCALE = 1.0
BEST_RECORD = "best_validation.json"  # best.keras's step, mean PSNR and validation settings, written after it
LOCK_FILE = ".lock"  # held by the run writing into a model directory (lock_directory)
# What a run writes into its model directory: name -> whether it is a folder.
RUN_FILES = {"checkpoints": True, "logs": True, "config.yaml": False, "model.keras": False, "best.keras": False,
             "summary.json": False, "history.jsonl": False, BEST_RECORD: False, "init_from.json": False}


class _Float16LossScale(keras.optimizers.LossScaleOptimizer):
    """`mixed_float16`: Keras's dynamic loss scaler, except that a step it skips (non-finite
    gradients: the scale is halved) still counts in the inner optimizer's `iterations`, as
    Keras's does not, so the learning-rate schedule keeps to the run's step counter."""

    def __init__(self, inner_optimizer, **kwargs):
        super().__init__(inner_optimizer, initial_scale=FLOAT16_LOSS_SCALE, **kwargs)

    def _stateful_handle_non_finite_grads(self):
        super()._stateful_handle_non_finite_grads()
        self.inner_optimizer.iterations.assign_add(1)


class _SkipNonFinite(keras.optimizers.LossScaleOptimizer):
    """`train.on_nan: skip`: Keras's loss scaler at a fixed scale of 1, used only because it skips
    a step whose gradients are not finite. The stock one would halve its scale at each such
    step (to 0 after about 150), and the step would then multiply the loss by 0. A skipped
    step still counts in the inner optimizer's `iterations`, so the learning-rate schedule
    keeps to the run's step counter."""

    def __init__(self, inner_optimizer, **kwargs):
        super().__init__(inner_optimizer, initial_scale=SKIP_LOSS_SCALE, dynamic_growth_steps=2**31 - 1, **kwargs)

    def _stateful_handle_non_finite_grads(self):
        self.step_counter.assign(0)
        self.inner_optimizer.iterations.assign_add(1)


def _catch_up_iterations(optimizer, step: int) -> None:
    """Sets the optimizer's `iterations`, which the learning-rate schedule reads, to the step
    counter where a checkpoint left it behind: one of a `mixed_float16` run by an older bfcnn,
    whose loss scaler did not count the steps it skipped."""
    iterations = int(optimizer.iterations.numpy())
    if iterations < step:
        log.info("the optimizer counted %d steps, the run %d (float16 steps skipped by an older bfcnn): the "
                 "learning-rate schedule goes on from step %d", iterations, step, step)
        optimizer.iterations.assign(step)


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
def _stop_on_signals(received: list):
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


def _check_tf_config(text: str) -> None:
    """ConfigError unless TF_CONFIG is JSON with a cluster and a task that lies in it."""
    try:
        spec = json.loads(text)
    except ValueError as error:
        raise ConfigError(f"TF_CONFIG is not JSON ({error}); expected e.g. "
                          '{"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", '
                          '"index": 0}}') from None
    cluster = spec.get("cluster") if isinstance(spec, dict) else None
    task = spec.get("task") if isinstance(spec, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise ConfigError("TF_CONFIG needs a 'cluster' mapping (job name -> list of host:port) and a 'task' "
                          "({'type': job name, 'index': n})")
    members = cluster.get(task.get("type"))
    index = task.get("index", 0)
    if not isinstance(members, list) or not isinstance(index, int) or not 0 <= index < len(members):
        raise ConfigError(f"TF_CONFIG's task {task} is not in its cluster (jobs: "
                          f"{', '.join(f'{job} x{len(v)}' for job, v in cluster.items() if isinstance(v, list))})")


def make_strategy(config) -> tf.distribute.Strategy:
    """The tf.distribute strategy of `distribution.strategy`.

    `mirrored` uses every GPU, or, without GPUs, `distribution.devices` logical CPU devices
    (which must be configured before TensorFlow starts: the CLI does it first thing).
    `multi_worker` reads the cluster from the TF_CONFIG environment variable.
    """
    if config.strategy == "default":
        return tf.distribute.get_strategy()
    if config.strategy == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        if config.devices:
            devices = devices[: config.devices]
        return tf.distribute.MirroredStrategy(devices=devices)
    if config.strategy == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ConfigError("distribution.strategy 'multi_worker' needs the TF_CONFIG environment variable")
        _check_tf_config(os.environ["TF_CONFIG"])
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ConfigError(f"distribution.strategy={config.strategy!r}; allowed: 'default', 'mirrored', 'multi_worker'")


def synthetic_inputs(clean, corruption: CorruptionConfig, seed, noisy_target: bool):
    """(input, target) from clean patches: a corruption and the clean patch, or with
    `noisy_target` two independent corruptions (Noise2Noise)."""
    if noisy_target:
        return corrupt_pair(clean, corruption, seed)
    return corrupt(clean, corruption, seed), clean


def paired_inputs(both, is_pair, corruption: CorruptionConfig, seed, *, channels: int, noisy_target: bool,
                  all_paired: bool = False):
    """(input, target) of the patches of a run with paired sources (Lehtinen et al., ICML 2018).

    Args:
        both: float [B, P, P, 2C]: a real pair's `noisy_a` and `noisy_b` crops side by side,
            or a clean patch twice (a patch of a non-paired source).
        is_pair: bool [B], which patches are real pairs.
        corruption: the `corruption` section, applied to the non-paired patches only.
        seed: int [2], the step's corruption seed.
        channels: C.
        noisy_target: `train.target == "noisy"`: a real pair is swapped (input `noisy_b`,
            target `noisy_a`) for a random half of the patches, and non-paired patches get
            two independent corruptions. Otherwise the input is `noisy_a` and the target
            `noisy_b` (the clean reference), and non-paired patches are corrupted once.
        all_paired: every patch is a real pair, so the corruption is skipped.

    Returns:
        (input, target), each float [B, P, P, C]; the same seed gives the same result.
    """
    first, second = both[..., :channels], both[..., channels:]
    if noisy_target:
        # Its own stream, folded from the corruption seed, so runs without pairs draw as before.
        swap_seed = tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), 0x5A9)
        swap = tf.random.stateless_uniform([tf.shape(both)[0], 1, 1, 1], swap_seed) < 0.5
        first, second = tf.where(swap, second, first), tf.where(swap, first, second)
    if all_paired:
        return first, second
    noisy, target = synthetic_inputs(both[..., :channels], corruption, seed, noisy_target)
    real = tf.reshape(is_pair, [-1, 1, 1, 1])
    return tf.where(real, first, noisy), tf.where(real, second, target)


def configure_logical_cpus(devices: Optional[int]) -> None:
    """Splits the CPU into `devices` logical devices (for mirrored training without GPUs)."""
    if not devices or tf.config.list_physical_devices("GPU"):
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)


def _is_chief(strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0)


def _check_init_from_file(path: Path) -> None:
    """ConfigError naming `train.init_from` unless `path` is a file."""
    if not path.is_file():
        raise ConfigError(f"train.init_from: no such file {str(path)!r}" if not path.exists() else
                          f"train.init_from: {str(path)!r} is a directory, not a .keras file")


def load_initial_weights(model: keras.Model, path) -> None:
    """`train.init_from`: the weights of a `.keras` file, also one saved before the multiscale
    lifts became 1x1 convolutions + depth-to-space (moved by name, `copy_legacy_weights`), and
    for an `opponent` color model those of its gray network alone (a gray model's file), and
    for a model grown from the file's by layers it lacks (e.g. `n3_levels`), its layers by
    name (`bfcnn.models.transfer.graft_weights`).

    Raises:
        ConfigError: the file is missing, is not a .keras file, or does not hold weights for
            this architecture; the message names `train.init_from`.
    """
    path = Path(path)
    _check_init_from_file(path)
    try:
        source = load_keras_file(path)
    except BfcnnError as error:  # NOT_KERAS, or what Keras said
        raise ConfigError(f"train.init_from: {str(path)!r} is not a readable .keras model: {error}") from None
    if len(source.weights) > len(model.weights):
        # Keras would load the weights it finds a place for and silently drop the rest.
        raise ConfigError(f"train.init_from={str(path)!r} does not fit the model in model: the file holds "
                          f"{len(source.weights)} weights, the model {len(model.weights)}")
    _load_weights(model, source, path)
    if has_guided_chroma(model) and not has_guided_chroma(source):
        seed_chroma_from_gray(model)
        log.info("train.init_from: the chrominance network starts from the luminance network's weights, "
                 "with zeros for its guide")


def _load_weights(model: keras.Model, source: keras.Model, path) -> None:
    """The weights of `source` (read from `path`) into `model`, by whichever rule fits.

    Keras's own loader is tried only on a model built like the file's (the same kinds of
    layers, the same weight shapes): on any other it fails anyway, after warning about
    containers it cannot match.
    """
    problem = None
    if _same_build(model, source):
        try:
            model.load_weights(path)
            return
        except ValueError as error:
            problem = error
    inner = next((layer for layer in model.layers if isinstance(layer, keras.Model)), None)
    if inner is not None and _same_build(inner, source):
        try:
            inner.load_weights(path)
            return
        except ValueError:
            pass
    try:
        if has_legacy_lifts(source):
            copy_legacy_weights(model, source)
            return
        try:
            new = graft_weights(model, source)
        except ValueError:
            raise ValueError(str(problem).splitlines()[0] if problem else _shape_mismatch(source, model)) from None
        log.info("train.init_from: every layer of %s copied by name; new layers keep their initial values: %s",
                 path, ", ".join(new) or "none")
        _warn_if_grown_model_differs(model, source, path)
    except (ValueError, OSError) as error:
        raise ConfigError(f"train.init_from={str(path)!r} does not fit the model in model: {error}") from None


GRAFT_TOLERANCE = 5.0  # on the 0-255 scale: far above bfloat16 rounding, far below a changed function


def _warn_if_grown_model_differs(model: keras.Model, source: keras.Model, path) -> None:
    """Logs a warning when a model grown by `graft_weights` does not compute what its source
    did on a random image (e.g. more pyramid levels: the layers it shares then see other
    inputs); training still starts from there."""
    if tuple(model.input_shape[1:]) != tuple(source.input_shape[1:]):  # e.g. a guide input: not comparable
        return
    x = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, model.input_shape[-1])).astype(np.float32)
    difference = float(np.max(np.abs(np.asarray(model(x, training=False), np.float32)
                                      - np.asarray(source(x, training=False), np.float32))))
    if difference > GRAFT_TOLERANCE:
        log.warning("train.init_from: the grown model does not compute what %s did (max difference %.1f on a random "
                    "64x64 image, 0-255 scale): the layers it shares with it see other inputs; training starts "
                    "from these weights all the same", path, difference)


def _shapes(model: keras.Model) -> list:
    return [tuple(weight.shape) for weight in model.weights]


def _same_build(model: keras.Model, source: keras.Model) -> bool:
    kinds = [type(layer).__name__ for layer in model.layers]
    return kinds == [type(layer).__name__ for layer in source.layers] and _shapes(model) == _shapes(source)


def _shape_mismatch(source: keras.Model, model: keras.Model) -> str:
    """Where the file's weights first differ from the model's, in words."""
    theirs, ours = _shapes(source), _shapes(model)
    for index, (a, b) in enumerate(zip(theirs, ours)):
        if a != b:
            return (f"weight {index} ({model.weights[index].path}) has shape {b}, the file's "
                    f"({source.weights[index].path}) {a}")
    if len(theirs) != len(ours):
        return f"the file holds {len(theirs)} weights, the model {len(ours)}"
    return "the file's model has the same weight shapes but other layers"


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


def check_inputs_exist(config: PipelineConfig, starting: bool) -> None:
    """Cheap checks that the folders and files a run reads exist, each error naming its config key,
    so that a typo is reported before the run writes anything.

    Args:
        config: the pipeline config.
        starting: the run starts now (no checkpoint yet), so `train.init_from` will be read.

    Raises:
        ConfigError: a missing image directory or `train.init_from` file.
    """
    def directory(key: str, path) -> None:
        try:
            root = resolve_directory(path)
        except BfcnnError as error:  # a pkg: path whose package is missing
            raise ConfigError(f"{key}: {error}") from None
        problem = directory_problem(root)
        if problem:
            raise ConfigError(f"{key}: image directory {problem}: {str(root)!r}")

    for i, source in enumerate(config.dataset.inputs):
        key = f"dataset.inputs[{i}]"
        if source.directory is not None:
            directory(key, source.directory)
        elif source.paired is not None:
            directory(f"{key}.paired.noisy_a", source.paired.noisy_a)
            directory(f"{key}.paired.noisy_b", source.paired.noisy_b)
        elif source.image_folder is not None:
            directory(f"{key}.image_folder.root_dir", source.image_folder.root_dir)
    if config.validation.directory:
        directory("validation.directory", config.validation.directory)
    init_from = config.train.init_from
    if starting and init_from:
        _check_init_from_file(Path(init_from))


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


def _stores_loss_scaler(path: str, default: bool) -> bool:
    """Whether checkpoint `path` holds an optimizer wrapped in a loss scaler; `default` when the
    file cannot be read (its restore then reports the damage)."""
    try:
        return any(name.startswith("optimizer/inner_optimizer/") for name, _ in tf.train.list_variables(path))
    except (tf.errors.OpError, IndexError, ValueError):
        return default


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


def _log_step(writer, progress, step: int, metrics, loss: float, lr: float, rate: float) -> None:
    """The loss terms, learning rate and speed to TensorBoard and the progress bar."""
    with writer.as_default(step=step):
        for name, value in metrics.items():
            tf.summary.scalar(f"loss/{name}", value)
        tf.summary.scalar("learning_rate", lr)
        tf.summary.scalar("steps_per_second", rate)
    progress.update(step, [("loss", loss), ("lr", lr), ("steps/s", rate)])


def _image_summary(writer, step: int, images) -> None:
    """Four (clean | noisy | denoised) rows of the step's batch to TensorBoard."""
    clean, noisy, estimate = images
    with writer.as_default(step=step):
        row = tf.concat([clean[:4], noisy[:4], tf.cast(estimate[:4], tf.float32)], axis=2)
        tf.summary.image("clean_noisy_denoised", tf.clip_by_value(row / 255.0, 0.0, 1.0), max_outputs=4)


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


def recorded_best(directory: Path) -> float:
    """The mean PSNR of `best.keras` as `best_validation.json` records it (-inf when there is none)."""
    try:
        return float(json.loads((directory / BEST_RECORD).read_text())["mean_psnr"])
    except (OSError, ValueError, KeyError, TypeError):
        return -math.inf


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
    try:
        recorded = json.loads((directory / BEST_RECORD).read_text()).get("validation")
    except (OSError, ValueError, AttributeError):
        return {}
    if not isinstance(recorded, dict):
        return {}
    return {key: (recorded.get(key), value) for key, value in settings.items() if recorded.get(key) != value}


def recorded_validation(directory: Path, step: int) -> Dict:
    """The validation of `step` as `history.jsonl` records it ({sigma: results}; {} when none)."""
    try:
        lines = (directory / "history.jsonl").read_text().splitlines()
    except OSError:
        return {}
    for line in reversed(lines):
        try:
            entry = json.loads(line)
            if entry["step"] == step:
                return {float(sigma): results for sigma, results in entry["results"].items()}
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
    return {}


def load_validation_images(config, color: str):
    """The clean validation images (uint8), center-cropped to `validation.max_size`."""
    files = list_images(config.directory)
    if config.max_images:
        files = files[: config.max_images]
    return [center_crop(read_image(f, color), config.max_size) for f in files]


@dataclasses.dataclass
class _RunState:
    """What a run trains and checkpoints: the model, its optimizer and the counters saved with
    them (`step`, `elapsed` seconds, `best` validation PSNR), their checkpoint manager, and the
    checkpoint the run resumed from (None for a new run)."""

    model: keras.Model
    optimizer: keras.optimizers.Optimizer
    step: tf.Variable
    elapsed: tf.Variable
    best: tf.Variable
    manager: tf.train.CheckpointManager
    restored: Optional[str]


class Trainer:
    """Trains the model of a pipeline config into `model_directory` (resuming if it holds a run).

    Args:
        config: the validated pipeline config.
        model_directory: where checkpoints, logs and the final model go.
        source: the config file's name, for messages.
    """

    def __init__(self, config: PipelineConfig, model_directory, source: str = "<config>"):
        self.config = config
        self.directory = Path(model_directory)
        self.source = source
        channels = config.model.get("channels", 1)
        expected = 1 if config.dataset.color == "gray" else 3
        if channels != expected:
            raise ConfigError(
                f"model.channels={channels} but dataset.color={config.dataset.color!r} gives {expected} "
                f"channel(s) in {source}"
            )
        try:
            model_builder(config.model.get("type"))
        except ConfigError as error:  # "unknown model type 'x'": name the key as config.py does
            raise ConfigError(f"invalid value for 'model.type': {error}") from None
        resolve_model_config(config.model)  # fail on a bad model key before loading data
        if config.loss.scale_weights is not None:
            raise ConfigError(
                f"loss.scale_weights in {source}: per-scale targets need a model with one output per "
                "scale, and every bfcnn model returns only the full-resolution image; remove the key"
            )
        if not config.dataset.inputs:
            raise ConfigError(f"dataset.inputs is empty in {source}: give at least one image directory")
        paired = [input_.paired is not None for input_ in config.dataset.inputs]
        self.paired = any(paired)
        if all(paired) and config.corruption != CorruptionConfig():
            log.warning("the corruption section of %s is not used: every source is paired, and real pairs "
                        "get no synthetic noise (it applies to non-paired sources only)", source)

    # ----------------------------------------------------------------------------- set-up
    def _check_directory(self):
        """Refuses a model directory that is a file (or lies under one) or holds another model's run;
        writes nothing."""
        existing = existing_ancestor(self.directory)
        if not existing.is_dir():
            problem = "is a file" if existing == self.directory else f"cannot be made: {str(existing)!r} is a file"
            raise ConfigError(f"model directory {str(self.directory)!r} {problem}, not a directory; "
                              "give another --model-directory")
        for name, folder in RUN_FILES.items():
            path = self.directory / name
            if path.exists() and path.is_dir() != folder:
                kind = "a folder" if folder else "a file"
                raise ConfigError(f"{str(path)!r} must be {kind} for the run to write it; move it away or give "
                                  "another --model-directory")
        stored = self.directory / "config.yaml"
        if stored.exists():
            from bfcnn.config import load_config

            previous = load_config(stored)
            if resolve_model_config(previous.model) != resolve_model_config(self.config.model):
                raise ConfigError(
                    f"{self.directory} holds a run of a different model ({previous.model}); "
                    "use a new --model-directory"
                )

    def _start_directory(self):
        """Creates the model directory, takes its lock, clears temporary files a killed run left
        and writes config.yaml, once every input has loaded."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(f"cannot create the model directory {str(self.directory)!r}: "
                              f"{error.strerror or error}") from None
        if self._lock is False:  # not tried yet (a new directory)
            self._lock = lock_directory(self.directory)
        for name in RUN_FILES:  # bfcnn.io.atomic_path's temporary files, of a run killed mid-save
            for leftover in self.directory.glob(f".{name}.*.tmp*"):
                if leftover.is_file():
                    leftover.unlink()
        dump_config(self.config, self.directory / "config.yaml")

    def _data(self, strategy, start_step: int = 0):
        """(sampler, None) for cached images, or (None, iterator of distributed batches) for
        streamed ones, whose pipeline a run resumed at `start_step` seeds from that step too
        (`streaming_dataset`): cached batches are drawn in the step from (seed, step) anyway."""
        cfg = self.config.dataset
        cacheable = cfg.cache and all(s.directory is not None or s.paired is not None for s in cfg.inputs)
        if cacheable:  # measured from the file headers, before anything is decoded
            estimate = estimated_cache_bytes(cfg.inputs, cfg.color, self.paired, cfg.patch_size, cfg.small_images)
            if estimate > MAX_CACHE_BYTES:
                log.info("training data too large to cache (%d MiB from the file headers): streaming instead",
                         estimate >> 20)
                cacheable = False
        if cacheable:
            images, weights, is_pair, skipped = [], [], [], 0
            for source in cfg.inputs:
                if source.paired is not None:
                    loaded, bad = load_paired_directory(source.paired.noisy_a, source.paired.noisy_b, cfg.color,
                                                        cfg.patch_size, cfg.small_images)
                else:
                    loaded, bad = load_directory(source.directory, cfg.color, cfg.patch_size, cfg.small_images)
                    if self.paired:  # the layout of a paired run: the clean image in both halves
                        loaded = [np.concatenate([im, im], axis=-1) for im in loaded]
                skipped += bad
                images += loaded
                weights += [source.weight / len(loaded)] * len(loaded)
                is_pair += [source.paired is not None] * len(loaded)
            loaded = None  # `images` holds the only references: the sampler frees them as it copies
            if sum(im.nbytes for im in images) <= MAX_CACHE_BYTES:
                log.info("training data: %d images in memory (%d files skipped)", len(images), skipped)
                self.skipped_files = skipped
                with tf.device("/cpu:0"):
                    self.is_pair = tf.constant(is_pair, tf.bool)
                return InMemorySampler(images, weights, cfg.patch_size, cfg.patches_per_image, cfg.flips,
                                       cfg.rotations, release=True), None
            log.info("training data too large to cache: streaming instead")
        self.skipped_files = None  # not counted when streaming: files are read (and skipped) as training goes
        dataset = streaming_dataset(cfg.inputs, cfg, self.config.train.seed, start_step)
        return None, iter(strategy.experimental_distribute_dataset(dataset))

    # ----------------------------------------------------------------------------- training
    def run(self, stop_after: Optional[int] = None) -> Dict:
        """Trains to `train.steps` and returns the last validation results (if any).

        Args:
            stop_after: stop (with a checkpoint) after this many steps of this call, to
                train within a time budget; the next call resumes.

        The global Keras precision policy is `train.precision` while it runs and restored
        after; the global random seeds are left set to `train.seed`.
        """
        policy = keras.mixed_precision.global_policy()
        try:
            return self._run(stop_after)
        finally:
            keras.mixed_precision.set_global_policy(policy)
            lock, self._lock = getattr(self, "_lock", None), False
            if lock:
                lock.close()

    def _run(self, stop_after: Optional[int]) -> Dict:
        cfg = self.config
        keras.mixed_precision.set_global_policy(cfg.train.precision)
        keras.utils.set_random_seed(cfg.train.seed)
        strategy = make_strategy(cfg.distribution)
        chief = _is_chief(strategy)
        self._lock = False  # the directory's lock: an open file once taken, None where locks are unavailable
        if chief:
            self._check_directory()
            if self.directory.is_dir():  # before its checkpoint state may be repaired
                self._lock = lock_directory(self.directory)
        # Every worker must save (the save may run collectives); only the chief's copy is used.
        output_dir = self.directory if chief else self.directory / f".worker{strategy.cluster_resolver.task_id}"
        ckpt_dir = output_dir / "checkpoints"
        repair_state(ckpt_dir)  # else TensorFlow ignores a damaged state file and the run starts over
        check_inputs_exist(cfg, starting=listed_checkpoints(ckpt_dir) is None)
        replicas = strategy.num_replicas_in_sync
        if cfg.dataset.batch_size % replicas:
            raise ConfigError(f"dataset.batch_size={cfg.dataset.batch_size} must be a multiple of the "
                              f"{replicas} replicas")
        state = self._restore_state(strategy, ckpt_dir)
        # After the restore: a streamed pipeline folds the step it starts at into its seed.
        sampler, iterator = self._data(strategy, int(state.step.numpy()))
        train_step = self._make_train_step(strategy, state, sampler)

        validation, self._infer = None, None
        if cfg.validation.directory:
            validation = load_validation_images(cfg.validation, cfg.dataset.color)
        if chief:  # every input has loaded: the run's files may be written now
            self._start_directory()
            if cfg.train.init_from and not state.restored:
                record_start(self.directory, cfg.train.init_from)
            trim_history(self.directory / "history.jsonl", int(state.step.numpy()))
            self._resume_best(state.best)
        writer = tf.summary.create_file_writer(str(self.directory / "logs")) if (chief and cfg.train.tensorboard) \
            else tf.summary.create_noop_writer()

        finished_before = int(state.step.numpy()) >= cfg.train.steps
        last_results = self._train(state, train_step, iterator, validation, writer, chief, stop_after)
        if int(state.step.numpy()) < cfg.train.steps:
            return last_results
        if not last_results and validation is not None:  # a run already at train.steps: its last validation
            last_results = recorded_validation(self.directory, int(state.step.numpy()))
        if finished_before and (output_dir / "model.keras").exists() and (self.directory / "summary.json").exists():
            log.info("the run is already at train.steps=%d; nothing to do", cfg.train.steps)
            return last_results  # its files stay as they are (saving again would change model.keras's bytes)
        output_dir.mkdir(parents=True, exist_ok=True)
        atomic_save_model(state.model, output_dir / "model.keras")
        if chief:
            summary = {"steps": int(state.step.numpy()), "elapsed_seconds": float(state.elapsed.numpy()),
                       "best_psnr": float(state.best.numpy()), "validation": last_results,
                       "skipped_files": self.skipped_files}
            write_json(self.directory / "summary.json", summary)
        return last_results

    def _restore_state(self, strategy, ckpt_dir: Path) -> _RunState:
        """Builds the model, the optimizer and the counters, then resumes them from the newest
        readable checkpoint in `ckpt_dir` or, on a new run, loads `train.init_from`."""
        cfg = self.config
        with strategy.scope():
            model = build_model(cfg.model)
            # With several replicas the train step clips their summed gradient (clip_summed_gradients).
            optimizer = build_optimizer(cfg.optimizer, cfg.train.steps, clip=strategy.num_replicas_in_sync == 1)
            if cfg.train.precision == "mixed_float16":
                # Scales the loss so float16 gradients do not underflow (the step scales the
                # loss, the optimizer divides the gradients back); skips non-finite steps.
                optimizer = _Float16LossScale(optimizer)
            elif cfg.train.on_nan == "skip":
                optimizer = _SkipNonFinite(optimizer)
            optimizer.build(model.trainable_variables)
            step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
            elapsed = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="elapsed_seconds")
            best = tf.Variable(-np.inf, dtype=tf.float64, trainable=False, name="best_psnr")

        # The random state of layers that draw in training (stochastic depth) is not part of
        # the model's checkpoint; saved beside it, a resumed run draws what an uninterrupted one would.
        rng = [v for v in model.variables if v.path.endswith("seed_generator_state")]
        others = dict(model=model, step=step, elapsed=elapsed, best=best, **({"rng": rng} if rng else {}))
        checkpoint = tf.train.Checkpoint(optimizer=optimizer, **others)
        manager = tf.train.CheckpointManager(checkpoint, str(ckpt_dir), max_to_keep=cfg.train.keep_checkpoints)

        def restorer(path):
            """A checkpoint written with the optimizer wrapped in a loss scaler (`on_nan: skip`,
            `mixed_float16`) or not, restored into a run that does the other: its own optimizer
            state either way (the scaler's own state stays as it starts)."""
            wrapped = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
            if _stores_loss_scaler(path, default=wrapped) == wrapped:
                return checkpoint
            inner = optimizer.inner_optimizer if wrapped else optimizer
            return tf.train.Checkpoint(optimizer=inner if wrapped else tf.train.Checkpoint(inner_optimizer=inner),
                                       **others)

        # Workers falling back each on their own could resume at different steps and hang.
        restored = restore_newest(checkpoint, manager, fall_back=cfg.distribution.strategy != "multi_worker",
                                  restorer=restorer)
        if restored:
            log.info("resumed from %s at step %d", restored, int(step.numpy()))
            if isinstance(optimizer, _SkipNonFinite):
                optimizer.dynamic_scale.assign(SKIP_LOSS_SCALE)  # a checkpoint of the stock scaler had grown it
            elif isinstance(optimizer, keras.optimizers.LossScaleOptimizer) and \
                    float(optimizer.dynamic_scale.numpy()) <= SKIP_LOSS_SCALE:
                # a checkpoint of `on_nan: skip` (scale 1) resumed in float16, which needs the large
                # starting scale (the stock scaler would take ~30,000 steps to grow it back)
                optimizer.dynamic_scale.assign(FLOAT16_LOSS_SCALE)
            _catch_up_iterations(optimizer, int(step.numpy()))
        elif cfg.train.init_from:
            load_initial_weights(model, cfg.train.init_from)
            log.info("initialised the weights from %s", cfg.train.init_from)
        return _RunState(model, optimizer, step, elapsed, best, manager, restored)

    def _resume_best(self, best: tf.Variable) -> None:
        """Sets `best`, the mean PSNR a validation must beat to replace best.keras: the larger
        of the checkpoint's and `best_validation.json`'s, or -inf (logged) when that record was
        measured under other validation settings than this run's."""
        cfg = self.config.validation
        changed = changed_validation_settings(self.directory, validation_settings(cfg)) if cfg.directory else {}
        if changed:
            log.info("validation settings changed since best.keras was chosen (%s): best tracking starts afresh, "
                     "the next validation replaces best.keras",
                     ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in changed.items()))
            best.assign(-np.inf)
            return
        best.assign(max(float(best.numpy()), recorded_best(self.directory)))

    def _make_train_step(self, strategy, state: _RunState, sampler):
        """The traced training step: (step number, batch or None) -> (mean loss terms, one
        replica's (clean, noisy, estimate) for the image summaries).

        The noise (and, from cached images, the batch) is a function of (train.seed, step,
        replica), so a resumed run repeats what an uninterrupted one would have drawn.
        """
        cfg = self.config
        replicas = strategy.num_replicas_in_sync
        per_replica = cfg.dataset.batch_size // replicas  # a multiple: checked by _run
        # One replica: the optimizer clips (build_optimizer); several: the step clips their sum.
        clipnorm = cfg.optimizer.clipnorm if replicas > 1 else None
        model, optimizer = state.model, state.optimizer
        seed = tf.constant(cfg.train.seed, tf.int64)
        corruption, loss_config, channels = cfg.corruption, cfg.loss, cfg.dataset.channels
        noisy_target = cfg.train.target == "noisy"
        paired_run = self.paired
        all_paired = all(s.paired is not None for s in cfg.dataset.inputs)

        def replica_step(batch, step_value):
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            key = tf.random.experimental.stateless_fold_in(tf.stack([seed, step_value]), replica)
            keys = tf.random.experimental.stateless_split(key, num=2)
            if paired_run:
                if batch is None:
                    both, index = sampler.sample(per_replica, keys[0], return_index=True)
                    is_pair = tf.gather(self.is_pair, index)
                else:
                    both, is_pair = batch
                noisy, target = paired_inputs(both, is_pair, corruption, keys[1], channels=channels,
                                              noisy_target=noisy_target, all_paired=all_paired)
                clean = target  # what the image summaries show as the reference
            else:
                clean = sampler.sample(per_replica, keys[0]) if batch is None else batch
                noisy, target = synthetic_inputs(clean, corruption, keys[1], noisy_target)
            with tf.GradientTape() as tape:
                estimate = model(noisy, training=True)
                loss, terms = pixel_loss(target, estimate, loss_config, noisy=noisy)
                total = loss + tf.add_n(model.losses) if model.losses else loss
                # A LossScaleOptimizer divides the gradients by its scale: the loss is multiplied
                # by it here (other optimizers return the loss as it is).
                scaled = optimizer.scale_loss(total) / replicas
            grads = tape.gradient(scaled, model.trainable_variables)
            if clipnorm is not None:
                grads = clip_summed_gradients(grads, clipnorm, optimizer.scale_loss(tf.constant(1.0)), replicas)
            optimizer.apply(grads, model.trainable_variables)
            return {"loss": total, **terms}, (clean, noisy, estimate)

        @tf.function(reduce_retracing=True)
        def train_step(step_value, batch=None):
            metrics, images = strategy.run(replica_step, args=(batch, step_value))
            reduced = {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None) for k, v in metrics.items()}
            return reduced, tf.nest.map_structure(lambda t: strategy.experimental_local_results(t)[0], images)

        return train_step

    def _train(self, state: _RunState, train_step, iterator, validation, writer, chief,
               stop_after: Optional[int]) -> Dict:
        """Steps from the restored step to `train.steps` (or `stop_after` steps on), logging,
        validating and checkpointing on the config's schedule; returns the last validation."""
        cfg = self.config.train
        start = int(state.step.numpy())
        end = cfg.steps if stop_after is None else min(cfg.steps, start + int(stop_after))
        received: list = []
        with _stop_on_signals(received):
            return self._steps(state, train_step, iterator, validation, writer, chief, start, end, received)

    def _steps(self, state: _RunState, train_step, iterator, validation, writer, chief, start: int, end: int,
               received: list) -> Dict:
        """`_train`'s loop from step `start` to `end`; a signal in `received` stops it after a checkpoint."""
        cfg = self.config.train
        step, elapsed = state.step, state.elapsed
        progress = keras.utils.Progbar(cfg.steps, stateful_metrics=["loss", "lr", "steps/s"], verbose=1
                                       if chief else 0)
        progress.update(start)
        last_results: Dict = {}
        last_saved = state.restored
        tick, tick_step, wall = time.time(), start, time.time()
        while int(step.numpy()) < end:
            current = int(step.numpy())
            batch = next(iterator) if iterator is not None else None
            metrics, images = train_step(tf.constant(current, tf.int64), batch)
            loss = float(metrics["loss"].numpy())
            if not math.isfinite(loss):
                if cfg.on_nan != "skip":
                    raise TrainingError(
                        f"the loss became {loss} at step {current}; stopped without saving. The last good "
                        f"checkpoint is {last_saved}. Lower optimizer.learning_rate, set "
                        "optimizer.clipnorm, or set train.on_nan: skip"
                    )
                log.warning("non-finite loss at step %d: batch skipped", current)
            step.assign_add(1)
            done = current + 1
            now = time.time()
            elapsed.assign_add(now - wall)
            wall = now
            if done % cfg.log_every == 0 or done == cfg.steps:
                rate = (done - tick_step) / max(now - tick, 1e-9)
                tick, tick_step = now, done
                _log_step(writer, progress, done, metrics, loss, learning_rate_at(state.optimizer, current), rate)
            if cfg.tensorboard and cfg.image_summaries_every and done % cfg.image_summaries_every == 0:
                _image_summary(writer, done, images)
            if validation is not None and (done % self.config.validation.every == 0 or done == cfg.steps):
                last_results = self._validate(state.model, validation, done, state.best, writer, chief)
            if done % cfg.checkpoint_every == 0 or done == end or received:
                last_saved = state.manager.save(checkpoint_number=done)
            if received and done < end:
                raise TrainingStopped(received[0], done, last_saved)
        return last_results

    def _validate(self, model, images, step, best, writer, chief) -> Dict:
        cfg = self.config.validation
        if getattr(self, "_infer", None) is None:  # one trace for every validation of the run
            channels = images[0].shape[-1]
            self._infer = tf.function(lambda x: model(x, training=False),
                                      input_signature=[tf.TensorSpec([1, None, None, channels], tf.float32)])
        infer = self._infer
        results = evaluate_denoiser(lambda noisy: infer(noisy[None])[0].numpy(), images, cfg.sigmas, cfg.seed)
        mean_psnr = float(np.mean([r["psnr"] for r in results.values()]))
        with writer.as_default(step=step):
            for sigma, r in results.items():
                tf.summary.scalar(f"validation/psnr_sigma{sigma:g}", r["psnr"])
                tf.summary.scalar(f"validation/ssim_sigma{sigma:g}", r["ssim"])
            tf.summary.scalar("validation/psnr_mean", mean_psnr)
        line = "  ".join(f"sigma {s:g}: {r['psnr']:.2f} dB" for s, r in results.items())
        log.info("step %d validation: %s", step, line)
        if chief:
            entry = {"step": step, "results": {f"{s:g}": r for s, r in results.items()}, "mean_psnr": mean_psnr}
            with open(self.directory / "history.jsonl", "a") as f:  # strict JSON, as summary.json (inf: null)
                f.write(json.dumps(json_safe(entry), allow_nan=False) + "\n")
            if mean_psnr > float(best.numpy()):
                best.assign(mean_psnr)
                atomic_save_model(model, self.directory / "best.keras")
                # The checkpoint records `best` only every train.checkpoint_every steps: a resumed
                # run reads this too, so a worse model never replaces best.keras.
                write_json(self.directory / BEST_RECORD, {"step": step, "mean_psnr": mean_psnr,
                                                          "validation": validation_settings(cfg)})
        return results
