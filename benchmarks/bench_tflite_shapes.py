"""Why a crop can slow a whole TFLite model down: Keras against LiteRT on one conv stack, five ways.

Eight 3x3 convolutions (32 channels, or `--filters`) on a 1-channel image, converted with `bfcnn.export.to_tflite`
(dynamic [1, H, W, 1] input, resized to the image), each variant with one operation after the
second convolution:

- `plain`: nothing;
- `slice crop`: `x[:, :h - 1, :w - 1]` with h, w read from the tensor's shape at run time
  (how the pyramids and pixel shuffle cropped before);
- `gather crop`: the same crop as two gathers (`bfcnn.layers.cropping.crop_to`, what they do now);
- `transposed up`: a 2x2 stride-2 convolution down and a 2x2 stride-2 `Conv2DTranspose` back up
  (TRANSPOSE_CONV takes an output shape computed at run time; the multiscale lifts before);
- `shuffle up`: the same down, and up as a 1x1 convolution to 4x the channels and a
  depth-to-space (the same map; what the multiscale lifts do now).

Engines run in interleaved rounds; the table gives the median wall time and TFLite / Keras.

    python benchmarks/bench_tflite_shapes.py --size 512 --runs 5
    python benchmarks/bench_tflite_shapes.py --variants plain --filters 32 48 64   # channel counts
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


VARIANTS = ("plain", "slice crop", "gather crop", "transposed up", "shuffle up")


def build(variant: str, filters: int = 32):
    import keras
    import tensorflow as tf
    from keras import ops

    from bfcnn.layers.cropping import crop_to

    class SliceCrop(keras.layers.Layer):
        def call(self, x):
            shape = ops.shape(x)
            return x[:, : shape[1] - 1, : shape[2] - 1, :]

    class GatherCrop(keras.layers.Layer):
        def call(self, x):
            shape = ops.shape(x)
            return crop_to(x, shape[1] - 1, shape[2] - 1)

    class ShuffleUp(keras.layers.Layer):
        def call(self, x):
            return tf.nn.depth_to_space(x, 2)

    inputs = keras.Input((None, None, 1))
    x = inputs
    for i in range(8):
        if i == 2 and variant in ("slice crop", "gather crop"):
            x = (SliceCrop() if variant == "slice crop" else GatherCrop())(x)
        if i == 2 and variant.endswith(" up"):
            x = keras.layers.Conv2D(filters, 2, strides=2, use_bias=False)(x)
            if variant == "transposed up":
                x = keras.layers.Conv2DTranspose(filters, 2, strides=2, use_bias=False)(x)
            else:
                x = ShuffleUp()(keras.layers.Conv2D(4 * filters, 1, use_bias=False)(x))
        x = keras.layers.Conv2D(filters if i < 7 else 1, 3, padding="same", use_bias=False,
                                activation="relu" if 0 < i < 7 else None)(x)
    return keras.Model(inputs, x)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--filters", type=int, nargs="+", default=[32],
                        help="channels of the convolutions; one row per variant and count (default 32)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS, metavar="VARIANT",
                        help=f"which graphs to time (default all: {', '.join(VARIANTS)})")
    args = parser.parse_args(argv)
    if min(args.filters) < 1:
        parser.error(f"--filters must be >= 1, got {args.filters}")

    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from bfcnn.export import to_tflite

    image = np.random.default_rng(0).uniform(0, 255, (1, args.size, args.size, 1)).astype(np.float32)
    print(f"{args.size}x{args.size} image, median of {args.runs} interleaved runs, {args.threads} LiteRT threads, "
          f"1-minute load average {os.getloadavg()[0]:.1f} at the start\n")
    print("| variant | filters | Keras ms | TFLite ms | TFLite / Keras |")
    print("|---|---:|---:|---:|---:|")
    for variant, filters in ((v, f) for v in args.variants for f in args.filters):
        model = build(variant, filters)
        keras_run = tf.function(lambda x: model(x, training=False))
        interpreter = Interpreter(model_content=to_tflite(model), num_threads=args.threads)
        index = interpreter.get_input_details()[0]["index"]
        interpreter.resize_tensor_input(index, image.shape)
        interpreter.allocate_tensors()

        def lite_run():
            interpreter.set_tensor(index, image)
            interpreter.invoke()

        engines = {"keras": lambda: keras_run(image).numpy(), "tflite": lite_run}
        times = {name: [] for name in engines}
        for name, run in engines.items():
            run()  # trace / warm up
        for _ in range(args.runs):
            for name, run in engines.items():
                start = time.perf_counter()
                run()
                times[name].append(1000 * (time.perf_counter() - start))
        k, t = statistics.median(times["keras"]), statistics.median(times["tflite"])
        print(f"| {variant} | {filters} | {k:.0f} | {t:.0f} | {t / k:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
