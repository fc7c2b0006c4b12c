"""Cost of the training input pipeline: patches/s with real data and corruption vs. a synthetic batch.

Times the same training step (a small bias-free ResNet, MSE, Adam) fed three ways:

- synthetic: one fixed (noisy, clean) batch held in memory, no sampling, no corruption;
- in-memory: `InMemorySampler` crops + flips drawn in-graph, then in-graph corruption, as
  the trainer does with `dataset.cache: true`;
- streaming: the `tf.data` pipeline of `dataset.cache: false` (parallel decode, crops,
  shuffle, prefetch), then in-graph corruption.

The pipeline share of a path is `1 - t(synthetic) / t(path)`, the part of a step that input
and corruption add, in wall time and in CPU time of this process (all its threads, the
tf.data ones included). CPU time is the steadier measure when other jobs share the machine.
The paths are timed in interleaved rounds and the median round is kept, so drifting load
affects them alike. Each step ends by reading the loss, as the trainer's loop does.

    PYTHONPATH=. python benchmarks/bench_input_pipeline.py          # Train400, or skimage's photos
    PYTHONPATH=. python benchmarks/bench_input_pipeline.py --directory DIR --color rgb --steps 40 --rounds 5
"""

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from bfcnn.config import CorruptionConfig, DatasetConfig, InputSource, LossConfig  # noqa: E402
from bfcnn.models.builder import build_model  # noqa: E402
from bfcnn.training.corruption import corrupt  # noqa: E402
from bfcnn.training.images import load_directory  # noqa: E402
from bfcnn.training.losses import pixel_loss  # noqa: E402
from bfcnn.training.sampler import InMemorySampler  # noqa: E402
from bfcnn.training.streaming import streaming_dataset  # noqa: E402

TRAIN400 = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "train" / "Train400"


def default_directory() -> str:
    return str(TRAIN400.resolve()) if TRAIN400.is_dir() else "pkg:skimage/data"


def make_steps(model, optimizer, sampler, corruption, loss_config, batch_size):
    """The three step functions; each returns the loss of one optimizer step."""

    def train(clean, noisy):
        with tf.GradientTape() as tape:
            loss, _ = pixel_loss(clean, model(noisy, training=True), loss_config)
        optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        return loss

    def keys(step):
        return tf.random.experimental.stateless_split(tf.stack([tf.constant(0, tf.int64), step]), num=2)

    @tf.function
    def synthetic(clean, noisy):
        return train(clean, noisy)

    @tf.function
    def in_memory(step):
        k = keys(step)
        clean = sampler.sample(batch_size, k[0])
        return train(clean, corrupt(clean, corruption, k[1]))

    @tf.function
    def streamed(clean, step):
        return train(clean, corrupt(clean, corruption, keys(step)[1]))

    return synthetic, in_memory, streamed


def seconds_per_call(function, calls):
    """Mean (wall, process CPU) seconds of `function()`, which must block until its result is ready."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        function()
    return (time.perf_counter() - wall) / calls, (time.process_time() - cpu) / calls


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--directory", default=default_directory(),
                        help="clean training images (default: Train400 if present, else pkg:skimage/data)")
    parser.add_argument("--color", default="gray", choices=["gray", "rgb"])
    parser.add_argument("--patch-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--filters", type=int, default=32)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20, help="steps per path per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-streaming", action="store_true")
    args = parser.parse_args(argv)
    b, p = args.batch_size, args.patch_size

    keras.utils.set_random_seed(0)
    channels = 3 if args.color == "rgb" else 1
    start = time.perf_counter()
    images, skipped = load_directory(args.directory, args.color, p, "pad")
    load_seconds = time.perf_counter() - start
    sampler = InMemorySampler(images, [1.0] * len(images), p, patches_per_image=4)
    model = build_model({"type": "resnet", "channels": channels, "filters": args.filters, "blocks": args.blocks})
    optimizer = keras.optimizers.Adam(1e-4)
    optimizer.build(model.trainable_variables)
    corruption, loss_config = CorruptionConfig(), LossConfig()
    synthetic, in_memory, streamed = make_steps(model, optimizer, sampler, corruption, loss_config, b)

    clean = sampler.sample(b, tf.constant([1, 1], tf.int64))
    noisy = corrupt(clean, corruption, tf.constant([1, 2], tf.int64))
    counter = {"step": 0}

    def next_step():
        counter["step"] += 1
        return tf.constant(counter["step"], tf.int64)

    paths = {
        "synthetic batch (no input, no corruption)": lambda: float(synthetic(clean, noisy)),
        "in-memory sampler + corruption": lambda: float(in_memory(next_step())),
    }
    iterator = None
    if not args.no_streaming:
        config = DatasetConfig(inputs=(InputSource(directory=args.directory),), color=args.color, patch_size=p,
                               batch_size=b, cache=False)
        dataset = streaming_dataset(config.inputs, config, seed=0)
        iterator = iter(tf.distribute.get_strategy().experimental_distribute_dataset(dataset))
        paths["streaming tf.data + corruption"] = lambda: float(streamed(next(iterator), next_step()))

    # Parts alone (no model), for the breakdown.
    sample_only = tf.function(lambda s: sampler.sample(b, s))
    corrupt_only = tf.function(lambda x, s: corrupt(x, corruption, s))
    parts = {
        "sampler alone": lambda: sample_only(tf.constant([0, counter["step"]], tf.int64)).numpy(),
        "corruption alone": lambda: corrupt_only(clean, tf.constant([0, counter["step"]], tf.int64)).numpy(),
    }
    if iterator is not None:
        parts["streaming tf.data alone"] = lambda: next(iterator).numpy()

    for function in list(paths.values()) + list(parts.values()):  # trace and warm up
        seconds_per_call(function, 3)
    rounds = {name: [] for name in list(paths) + list(parts)}
    for _ in range(args.rounds):
        for name, function in paths.items():
            rounds[name].append(seconds_per_call(function, args.steps))
        for name, function in parts.items():
            rounds[name].append(seconds_per_call(function, args.steps))
    median = {name: statistics.median(t[0] for t in times) for name, times in rounds.items()}
    cpu = {name: statistics.median(t[1] for t in times) for name, times in rounds.items()}

    synthetic_name = "synthetic batch (no input, no corruption)"
    base, base_cpu = median[synthetic_name], cpu[synthetic_name]
    print(f"\ndata: {args.directory}: {len(images)} images ({skipped} skipped), decoded in {load_seconds:.1f} s, "
          f"{sampler.nbytes / 2**20:.1f} MiB in memory")
    print(f"model: bias-free ResNet, {args.blocks} blocks x {args.filters} filters, "
          f"{model.count_params():,} parameters; batch {b} x {p}x{p}x{channels}; "
          f"{args.rounds} rounds x {args.steps} steps, median round")
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores\n")
    print("| path | wall ms / step | patches / s | CPU ms / step | pipeline share (wall) | pipeline share (CPU) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in paths:
        shares = ("-", "-") if name == synthetic_name else \
            (f"{100 * (1 - base / median[name]):.1f}%", f"{100 * (1 - base_cpu / cpu[name]):.1f}%")
        print(f"| {name} | {1000 * median[name]:.0f} | {b / median[name]:.0f} | {1000 * cpu[name]:.0f} | "
              f"{shares[0]} | {shares[1]} |")
    for name in parts:
        print(f"| {name} (no model) | {1000 * median[name]:.1f} | {b / median[name]:.0f} | {1000 * cpu[name]:.1f} | "
              f"{100 * median[name] / base:.1f}% of a synthetic step | {100 * cpu[name] / base_cpu:.1f}% |")
    spread = {name: (min(w for w, _ in t), max(w for w, _ in t)) for name, t in rounds.items() if name in paths}
    print("\nround spread (ms/step): " + "; ".join(
        f"{name.split(' ')[0]} {1000 * lo:.0f}-{1000 * hi:.0f}" for name, (lo, hi) in spread.items()))


if __name__ == "__main__":
    main()
