"""LiteRT's kernels for the zoo's TFLite files: the XNNPACK delegate (the default) against its builtin kernels.

    python benchmarks/bench_litert_kernels.py [--models pyramid_gray_m resnet_gray_s] [--size 512] [--runs 5]

LiteRT on a CPU applies the XNNPACK delegate to every operator it supports and runs the rest
with its builtin kernels; `OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES` runs everything
with the builtin kernels. Each zoo model's shipped `.tflite` file runs both ways in one process,
in interleaved rounds (the first round is a warm-up), on one noisy image of `--size` x `--size`
pixels; the table gives the median ms per megapixel, the ratio to XNNPACK and the largest
difference between the two outputs on the 0-255 scale. Which kernels are faster depends on the
CPU: run it where the files will run.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

KERNELS = ("XNNPACK delegate", "builtin kernels")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet_gray_s", "pyramid_gray_m", "pyramid_color_m"],
                        help="zoo names (bfcnn.list_models())")
    from graph_timing import add_litert_timing  # same folder

    check = add_litert_timing(parser, min_size=8)
    return check(parser.parse_args(argv))


def interpreter(path: Path, kernels: str, shape, threads: int):
    """A LiteRT interpreter of `path` sized to `shape`, with the given kernels."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = {KERNELS[0]: OpResolverType.AUTO, KERNELS[1]: OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    lite = Interpreter(model_path=str(path), num_threads=threads, experimental_op_resolver_type=resolver[kernels])
    lite.resize_tensor_input(lite.get_input_details()[0]["index"], list(shape))
    lite.allocate_tensors()
    return lite


def time_kernels(path: Path, image: np.ndarray, runs: int, threads: int) -> dict:
    """{kernels: (median seconds, output)} over `runs` interleaved rounds after a warm-up."""
    engines = {kernels: interpreter(path, kernels, image.shape, threads) for kernels in KERNELS}
    seconds = {kernels: [] for kernels in KERNELS}
    outputs = {}
    for round_ in range(runs + 1):
        for kernels, lite in engines.items():
            lite.set_tensor(lite.get_input_details()[0]["index"], image)
            start = time.perf_counter()
            lite.invoke()
            elapsed = time.perf_counter() - start
            outputs[kernels] = lite.get_tensor(lite.get_output_details()[0]["index"])
            if round_:
                seconds[kernels].append(elapsed)
    return {kernels: (statistics.median(seconds[kernels]), outputs[kernels]) for kernels in KERNELS}


def main(argv=None) -> int:
    args = parse_args(argv)
    from bfcnn import zoo

    unknown = [name for name in args.models if not zoo.is_zoo_name(name)]
    if unknown:
        print(f"error: unknown zoo name(s) {', '.join(unknown)}; known: {', '.join(zoo.list_models())}",
              file=sys.stderr)
        return 2
    load = os.getloadavg()[0]
    megapixels = args.size * args.size / 1e6
    print(f"{args.size}x{args.size} image, {args.threads} threads, median of {args.runs} runs, "
          f"1-minute load average {load:.2f} at the start")
    print("| model | kernels | ms / MP | x XNNPACK | max abs difference |")
    print("|---|---|---:|---:|---:|")
    rng = np.random.default_rng(0)
    for name in args.models:
        channels = zoo.model_info(name)["channels"]
        clean = rng.uniform(0, 255, (1, args.size, args.size, channels))
        image = (clean + rng.normal(0, 25, clean.shape)).astype(np.float32)
        results = time_kernels(zoo.model_file(name, "tflite"), image, args.runs, args.threads)
        first, reference = results[KERNELS[0]]
        for kernels, (seconds, output) in results.items():
            difference = float(np.abs(output - reference).max())
            print(f"| {name} | {kernels} | {seconds * 1e3 / megapixels:.0f} | {seconds / first:.2f} | {difference:.2g} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
