"""Training speed of the pipelines' models on this machine: steps/s in float32 and mixed bfloat16.

Times the trainer's step (the model of a pipeline config, its loss and optimizer, one
fixed batch of the config's size) under each precision policy, and prints steps/s,
patches/s, achieved GFLOP/s (forward + backward taken as 3x the forward FLOPs) and the
speed-up over float32. The input pipeline is left out: `bench_input_pipeline.py` measures
its share (a few per cent). Precisions are timed in interleaved rounds and the median
round is kept, so drifting load affects them alike.

The speed-up of mixed bfloat16 rests on the CPU's bfloat16 instructions (the table's header
lists them): run this before choosing `train.precision` on a new machine.

    PYTHONPATH=. python benchmarks/bench_training.py
    PYTHONPATH=. python benchmarks/bench_training.py --configs pipelines/resnet_gray_s.yaml --steps 10 --rounds 3
"""

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bfcnn.config import load_config  # noqa: E402
from bfcnn.models.builder import build_model  # noqa: E402
from bfcnn.models.cost import flops_per_pixel  # noqa: E402
from bfcnn.training.losses import pixel_loss  # noqa: E402
from bfcnn.training.optim import build_optimizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIGS = ["pipelines/resnet_gray_s.yaml", "pipelines/pyramid_gray_m.yaml", "pipelines/pyramid_color_m.yaml"]
PRECISIONS = ["float32", "mixed_bfloat16"]


def cpu_flags() -> str:
    """The CPU's bfloat16-related instruction sets, as /proc/cpuinfo names them ('' if unknown)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split("flags", 2)[1].split("\n", 1)[0].split()
    except (OSError, IndexError):
        return ""
    return " ".join(sorted({f for f in flags if "bf16" in f or f.startswith("amx") or f == "avx512f"}))


def make_step(config, precision: str, seed: int = 0):
    """A traced training step of `config`'s model under `precision`, and its forward FLOPs per pixel."""
    keras.mixed_precision.set_global_policy(precision)
    try:
        keras.utils.set_random_seed(seed)
        model = build_model(config.model)
        optimizer = build_optimizer(config.optimizer, config.train.steps)
        optimizer.build(model.trainable_variables)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    flops = flops_per_pixel(model)
    data = config.dataset
    rng = np.random.default_rng(seed)
    shape = (data.batch_size, data.patch_size, data.patch_size, data.channels)
    clean = tf.constant(rng.uniform(0, 255, shape), tf.float32)
    noisy = clean + tf.constant(rng.normal(0, 25, shape), tf.float32)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss, _ = pixel_loss(clean, model(noisy, training=True), config.loss, noisy=noisy)
            total = loss + tf.add_n(model.losses) if model.losses else loss
        optimizer.apply(tape.gradient(total, model.trainable_variables), model.trainable_variables)
        return total

    return (lambda: float(step())), flops


def seconds_per_step(function, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        function()
    return (time.perf_counter() - start) / steps


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, help="pipeline configs (YAML)")
    parser.add_argument("--precisions", nargs="+", default=PRECISIONS, choices=PRECISIONS)
    parser.add_argument("--steps", type=int, default=20, help="steps per precision per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores, CPU flags: {cpu_flags() or 'unknown'}; "
          f"{args.rounds} rounds x {args.steps} steps, median round\n")
    print("| config | batch | precision | steps / s | patches / s | GFLOP/s | vs float32 |")
    print("|---|---|---|---:|---:|---:|---:|")
    for path in args.configs:
        config = load_config(path if Path(path).exists() else ROOT / path)
        steps = {}
        for precision in args.precisions:
            function, flops = make_step(config, precision)
            seconds_per_step(function, 3)  # trace and warm up
            steps[precision] = function
        rounds = {precision: [] for precision in steps}
        for _ in range(args.rounds):
            for precision, function in steps.items():
                rounds[precision].append(seconds_per_step(function, args.steps))
        data = config.dataset
        pixels = data.batch_size * data.patch_size ** 2
        base = statistics.median(rounds["float32"]) if "float32" in rounds else None
        for precision, times in rounds.items():
            seconds = statistics.median(times)
            ratio = f"{base / seconds:.2f}x" if base else "-"
            print(f"| {Path(path).stem} | {data.batch_size} x {data.patch_size}^2 x {data.channels} | {precision} | "
                  f"{1 / seconds:.2f} | {data.batch_size / seconds:.0f} | {3 * flops * pixels / seconds / 1e9:.0f} | "
                  f"{ratio} |")


if __name__ == "__main__":
    main()
