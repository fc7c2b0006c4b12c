"""The training loop: corruption inside the step, crash-safe checkpoints, validation, TensorBoard.

One `Trainer` runs a `PipelineConfig` into a model directory D, whose files (config.yaml,
checkpoints/, model.keras, best.keras, history.jsonl, ...) `bfcnn.training.run_directory` lists.

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

Targets (`train.target`): `clean`, `noisy` (Noise2Noise, Lehtinen et al., ICML 2018) or real
pairs from paired sources: see `bfcnn.training.targets`.
"""

import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Dict, Optional

import keras
import numpy as np
import tensorflow as tf

from bfcnn.config import CorruptionConfig, PipelineConfig, dump_config
from bfcnn.errors import BfcnnError, ConfigError
from bfcnn.evaluation import center_crop, evaluate_denoiser
from bfcnn.io import (directory_problem, existing_ancestor, json_safe, list_images, read_image, resolve_directory,
                      sha256, write_json)
from bfcnn.models.builder import build_model, model_builder, resolve_model_config
from bfcnn.models.checkpoints import listed_checkpoints, repair_state
from bfcnn.training.distribution import is_chief, make_strategy
from bfcnn.training.images import MAX_CACHE_BYTES, estimated_cache_bytes, load_directory, load_paired_directory
from bfcnn.training.initial_weights import check_init_from_file, load_initial_weights
from bfcnn.training.loss_scale import (FLOAT16_LOSS_SCALE, SKIP_LOSS_SCALE, Float16LossScale, SkipNonFinite,
                                       catch_up_iterations, stores_loss_scaler)
from bfcnn.training.losses import pixel_loss
from bfcnn.training.optim import build_optimizer, clip_summed_gradients, learning_rate_at
from bfcnn.training.run_directory import (BEST_RECORD, RUN_FILES, atomic_save_model, changed_validation_settings,
                                          lock_directory, record_start, recorded_best, recorded_validation,
                                          restore_newest, trim_history, validation_settings)
from bfcnn.training.sampler import InMemorySampler
from bfcnn.training.stopping import TrainingError, TrainingStopped, stop_on_signals
from bfcnn.training.streaming import streaming_dataset
from bfcnn.training.targets import paired_inputs, synthetic_inputs

log = logging.getLogger("bfcnn.train")


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
        check_init_from_file(Path(init_from))


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
        except ConfigError as error:  # "unknown model type 'x'": name the key as the config loader does
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
        chief = is_chief(strategy)
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
            self._resume_best(state.best)  # reads history.jsonl's lines after the checkpoint, which trimming drops
            trim_history(self.directory / "history.jsonl", int(state.step.numpy()))
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
                optimizer = Float16LossScale(optimizer)
            elif cfg.train.on_nan == "skip":
                optimizer = SkipNonFinite(optimizer)
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
            if stores_loss_scaler(path, default=wrapped) == wrapped:
                return checkpoint
            inner = optimizer.inner_optimizer if wrapped else optimizer
            return tf.train.Checkpoint(optimizer=inner if wrapped else tf.train.Checkpoint(inner_optimizer=inner),
                                       **others)

        # Workers falling back each on their own could resume at different steps and hang.
        restored = restore_newest(checkpoint, manager, fall_back=cfg.distribution.strategy != "multi_worker",
                                  restorer=restorer)
        if restored:
            log.info("resumed from %s at step %d", restored, int(step.numpy()))
            if isinstance(optimizer, SkipNonFinite):
                optimizer.dynamic_scale.assign(SKIP_LOSS_SCALE)  # a checkpoint of the stock scaler had grown it
            elif isinstance(optimizer, keras.optimizers.LossScaleOptimizer) and \
                    float(optimizer.dynamic_scale.numpy()) <= SKIP_LOSS_SCALE:
                # a checkpoint of `on_nan: skip` (scale 1) resumed in float16, which needs the large
                # starting scale (the stock scaler would take ~30,000 steps to grow it back)
                optimizer.dynamic_scale.assign(FLOAT16_LOSS_SCALE)
            catch_up_iterations(optimizer, int(step.numpy()))
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
        with stop_on_signals(received):
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
                                                          "sha256": sha256(self.directory / "best.keras"),
                                                          "validation": validation_settings(cfg)})
        return results
