"""Where an N3Net's TFLite time goes: its N3 block, its convolution stages and the whole model.

    python benchmarks/bench_n3_parts.py [--model n3net_gray] [--size 512] [--runs 5]

Cuts the zoo's N3Net (two DnCNN-style stages around one N3 block, `bfcnn/models/n3net.py`)
into three models that share its weights: the first stage's convolutions (the image in), the
N3 block (the first stage's estimate in, the image and its k neighbour images out), and the
second stage's convolutions (the N3 block's output in). Each part and the whole model are
converted to TFLite (`bfcnn.export.to_tflite`, dynamic height and width) and timed against
Keras graph mode on one noisy image of `--size` x `--size` pixels, in interleaved rounds
after a warm-up (median ms). In its own file each part's input has a shape LiteRT knows when
the input is resized; in the whole model the second stage reads the N3 block's output, whose
shape LiteRT only learns while it runs (`bfcnn.export.runtime_sized_tensors`). The last row
compares the whole model with the sum of its parts. `--loop` converts the N3 block with its
loop over chunks of queries, as exports did before they left it out
(`bfcnn.layers.n3.queries_in_one_pass`), to compare the two.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="n3net_gray", help="a zoo name or .keras file of an n3net with 2 stages")
    from graph_timing import add_litert_timing  # same folder

    parser.add_argument("--loop", action="store_true",
                        help="convert the N3 block with its loop over chunks of queries (as exports did before)")
    check = add_litert_timing(parser, min_size=16)
    return check(parser.parse_args(argv))


def parts(model):
    """{name: keras.Model} for the first stage, the N3 block, the second stage and the whole
    model, built from `model`'s own layers (shared weights). ValueError for a model that is
    not a 2-stage N3Net."""
    import keras

    names = [layer.name for layer in model.layers]
    if "n3_0" not in names or "n3_1" in names or "stage1_residual" not in names:
        raise ValueError(f"{model.name} is not an N3Net of 2 stages (one N3 block, n3_0)")

    def stage(index, channels):
        x = inputs = keras.Input((None, None, channels))
        for name in names:
            if name.startswith(f"stage{index}_conv"):
                x = model.get_layer(name)(x)
        return keras.Model(inputs, x, name=f"stage{index}")

    block = model.get_layer("n3_0")
    image_channels = model.input_shape[-1]
    block_input = keras.Input((None, None, image_channels))
    block_model = keras.Model(block_input, block(block_input), name="n3_block")
    return {"first stage (convolutions)": stage(0, image_channels),
            "N3 block": block_model,
            "second stage (convolutions)": stage(1, block_model.output_shape[-1]),
            "whole model": model}


def engines(model, shape, threads: int, loop: bool = False):
    """(Keras graph function, LiteRT function) for `model` at input `shape`; the Keras side is
    `bfcnn.inference.graph_runner`, the function `bfcnn.denoise` runs (with the loop over query
    chunks, whatever `loop` says: it chooses for the TFLite file only)."""
    from ai_edge_litert.interpreter import Interpreter

    from bfcnn.export import to_tflite
    from bfcnn.inference import graph_runner
    from bfcnn.layers.n3 import queries_in_one_pass

    graph = graph_runner(model)
    with queries_in_one_pass(not loop):
        content = to_tflite(model, "none")
    lite = Interpreter(model_content=content, num_threads=threads)
    lite.resize_tensor_input(lite.get_input_details()[0]["index"], list(shape))
    lite.allocate_tensors()

    def run_lite(x):
        lite.set_tensor(lite.get_input_details()[0]["index"], x)
        lite.invoke()
        return lite.get_tensor(lite.get_output_details()[0]["index"])

    return (lambda x: graph(x[0])[None]), run_lite


def part_inputs(models: dict, image: np.ndarray) -> dict:
    """{part: the input the whole model gives it} for a 0-255 `image`, computed with Keras: the
    model scales the image to 0-1 (`scale_in`), adds the first stage's output to it
    (`stage0_residual`) and gives that estimate to the N3 block."""
    whole = models["whole model"]
    scaled = np.asarray(whole.get_layer("scale_in")(image))
    estimate = scaled + np.asarray(models["first stage (convolutions)"](scaled, training=False))
    return {"first stage (convolutions)": scaled, "N3 block": estimate,
            "second stage (convolutions)": np.asarray(models["N3 block"](estimate, training=False)),
            "whole model": image}


def time_parts(models: dict, image: np.ndarray, runs: int, threads: int, loop: bool = False) -> dict:
    """{part: (Keras median s, TFLite median s, max |Keras - TFLite|)}; each part gets the input
    the whole model gives it (`part_inputs`)."""
    inputs = part_inputs(models, image)
    runners = {name: engines(model, inputs[name].shape, threads, loop) for name, model in models.items()}
    seconds = {name: ([], []) for name in models}
    diffs = {}
    for round_ in range(runs + 1):
        for name, pair in runners.items():
            outs = []
            for engine, times in zip(pair, seconds[name]):
                start = time.perf_counter()
                outs.append(engine(inputs[name]))
                if round_:
                    times.append(time.perf_counter() - start)
            diffs[name] = float(np.max(np.abs(outs[0] - outs[1])))
    return {name: (statistics.median(k), statistics.median(t), diffs[name]) for name, (k, t) in seconds.items()}


def table(results: dict) -> str:
    lines = ["| part | Keras ms | TFLite ms | TFLite / Keras | max abs diff |", "|---|---:|---:|---:|---:|"]
    for name, (keras_s, lite_s, diff) in results.items():
        lines.append(f"| {name} | {1e3 * keras_s:.0f} | {1e3 * lite_s:.0f} | {lite_s / keras_s:.2f} | {diff:.1e} |")
    keras_sum = sum(r[0] for name, r in results.items() if name != "whole model")
    lite_sum = sum(r[1] for name, r in results.items() if name != "whole model")
    lines.append(f"| sum of the three parts | {1e3 * keras_sum:.0f} | {1e3 * lite_sum:.0f} | "
                 f"{lite_sum / keras_sum:.2f} | |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    import tensorflow as tf

    import bfcnn
    from bfcnn.errors import BfcnnError

    try:
        model = bfcnn.load_model(args.model)
        models = parts(model)
    except (BfcnnError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    image = np.random.default_rng(0).uniform(0, 255, (1, args.size, args.size, model.input_shape[-1]))
    results = time_parts(models, image.astype(np.float32), args.runs, args.threads, args.loop)
    loop = "with" if args.loop else "without"
    print(f"{args.model}, {args.size} x {args.size}, N3 block converted {loop} its loop over query chunks, "
          f"median of {args.runs} interleaved rounds, LiteRT with "
          f"{args.threads} thread(s) (XNNPACK); TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores; "
          f"1-minute load average {os.getloadavg()[0]:.1f} at the end\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
