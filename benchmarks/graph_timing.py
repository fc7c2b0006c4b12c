"""Two or more graphs with the same weights, each in Keras (graph mode) and LiteRT: interleaved timing.

Shared by the benchmarks that ask whether a change of graph (not of weights) changes speed
(`bench_opponent_fold.py`, `bench_multiscale_crops.py`). Each graph is converted with
`bfcnn.export.to_tflite` and run through `bfcnn.lite.TFLiteDenoiser`; every output is compared
with the first (printed to stderr), then the engines run in interleaved rounds.
"""

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def compare_graphs(graphs: dict, image: np.ndarray, runs: int, threads=None) -> tuple:
    """Median ms per megapixel of each (graph label, engine) on `image` [1, H, W, C], and the
    1-minute load average when the timing started."""
    import tensorflow as tf

    from bfcnn.export import to_tflite
    from bfcnn.lite import TFLiteDenoiser

    channels = image.shape[-1]
    engines, reference = {}, None
    with tempfile.TemporaryDirectory() as tmp:
        for label, model in graphs.items():
            infer = tf.function(lambda x, m=model: m(x, training=False),
                                input_signature=[tf.TensorSpec([1, None, None, channels], tf.float32)])
            path = Path(tmp) / f"{len(engines)}.tflite"
            path.write_bytes(to_tflite(model))
            lite = TFLiteDenoiser(path, num_threads=threads)
            engines[(label, "Keras graph")] = lambda f=infer: f(image).numpy()
            engines[(label, "TFLite fp32")] = lambda lite=lite: lite(image)
        for key, run in engines.items():
            out = run()
            reference = out if reference is None else reference
            print(f"{key[0]}, {key[1]}: max |difference| to the first {float(np.abs(out - reference).max()):.1e}",
                  file=sys.stderr)
        times = {key: [] for key in engines}
        load = os.getloadavg()[0]
        for _ in range(runs):
            for key, run in engines.items():
                start = time.perf_counter()
                run()
                times[key].append(time.perf_counter() - start)
    megapixels = image.shape[1] * image.shape[2] / 1e6
    return {key: 1000 * statistics.median(t) / megapixels for key, t in times.items()}, load


def parser_for(doc: str, model: str, size: int, runs: int):
    """The command line both graph benchmarks take: --model, --size, --runs, --threads."""
    import argparse

    from bfcnn.cli import positive_int

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--model", default=model, help="a zoo model name or a .keras file")
    parser.add_argument("--size", type=positive_int, default=size)
    parser.add_argument("--runs", type=positive_int, default=runs)
    parser.add_argument("--threads", type=positive_int, default=None, help="LiteRT threads (default: the cores)")
    return parser


def add_litert_timing(parser, min_size: int):
    """--size, --runs and --threads (default: every core) of the benchmarks that time zoo files
    in LiteRT (`bench_litert_kernels.py`, `bench_n3_parts.py`); returns a check of the parsed
    values to call on them, which stops with a usage error naming the limits."""
    parser.add_argument("--size", type=int, default=512, help="image height and width in pixels")
    parser.add_argument("--runs", type=int, default=5, help="timed rounds after one warm-up round")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="LiteRT threads")

    def check(args):
        if args.size < min_size or args.runs < 1 or args.threads < 1:
            parser.error(f"--size must be at least {min_size}, --runs and --threads at least 1")
        return args

    return check


def report(graphs: dict, args) -> None:
    """Times `graphs` on a noisy image of `args.size` and prints the heading and the table."""
    channels = next(iter(graphs.values())).input_shape[-1]
    ms, load = compare_graphs(graphs, noisy_image(args.size, channels), args.runs, args.threads)
    print(f"{args.model}, {args.size}x{args.size} image, median of {args.runs} interleaved runs, "
          f"LiteRT {args.threads or 'default'} threads, 1-minute load average {load:.1f} at the start\n")
    print_table(ms)


def print_table(ms: dict) -> None:
    """The markdown table of `compare_graphs`' result, with TFLite / Keras per graph."""
    print("| graph | engine | ms / MP | TFLite / Keras |")
    print("|---|---|---:|---:|")
    for (label, engine), value in ms.items():
        ratio = f"{value / ms[(label, 'Keras graph')]:.2f}" if engine != "Keras graph" else "-"
        print(f"| {label} | {engine} | {value:.0f} | {ratio} |")


def noisy_image(size: int, channels: int) -> np.ndarray:
    """A [1, size, size, channels] float32 image: uniform values plus noise of std 25, clipped."""
    rng = np.random.default_rng(0)
    shape = (1, size, size, channels)
    return np.clip(rng.uniform(0, 255, shape) + 25 * rng.standard_normal(shape), 0, 255).astype(np.float32)
