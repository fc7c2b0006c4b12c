"""Inference speed of the pipelines' models: Keras (graph mode) against LiteRT float32 / fp16 / int8.

For every `pipelines/*.yaml`, the model of its `model:` section (untrained weights: speed does
not depend on them) runs on one noisy photograph of `--size` x `--size` pixels:

- Keras: `tf.function` with a dynamic [1, H, W, C] signature, traced and warmed up first;
- LiteRT (`ai_edge_litert`, XNNPACK delegate, `--threads` threads) on each exported TFLite file;
  with `--tiles N`, also the float32 file run in tiles of N (`TFLiteDenoiser.denoise`); with
  `--fixed-tiles N`, a float32 file for N x N inputs only (`export --tflite-size N`), run in
  tiles of N.

Engines are timed in interleaved rounds (one run of each per round), so a change in machine
load hits all of them alike; the table gives the median wall time as ms per megapixel, the
CPU time of this process per megapixel, and the achieved GFLOP/s (FLOPs per pixel from
`bfcnn.models.cost`), per wall-clock second and per CPU-second, against the measured float32
matmul peak of TensorFlow on this machine (per CPU-second holds up when other jobs share the cores).

    python benchmarks/bench_inference.py --size 512 --runs 7
"""

import argparse
import glob
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

NON_LOCAL_SIZE = 128


def matmul_peak_gflops(n: int = 2048, runs: int = 10):
    """TensorFlow's float32 matmul speed, the practical peak of this CPU: (GFLOP/s, GFLOP per CPU-second).

    The best of `runs`; the second number (FLOPs over this process's CPU time) is the
    one that stays meaningful when other jobs share the cores.
    """
    import tensorflow as tf

    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    matmul = tf.function(lambda x, y: tf.matmul(x, y))
    matmul(a, b).numpy()
    wall, cpu = [], []
    for _ in range(runs):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        matmul(a, b).numpy()
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
    return 2 * n**3 / min(wall) / 1e9, 2 * n**3 / min(cpu) / 1e9


def photo(channels: int, size: int, sigma: float = 25.0) -> np.ndarray:
    from bfcnn.export import sample_image

    return sample_image(channels, size=(size, size), sigma=sigma)[1]


def _engines(model, image, folder: Path, threads: int, quantize, representative, tiles=(), fixed_tiles=(),
             bfloat16: bool = False) -> tuple:
    """The engines to time on `image`, TFLite files written into `folder`.

    Returns:
        ({name: (run, file bytes or None)}, {name: why it could not be made})
    """
    import tensorflow as tf

    from bfcnn.export import CONTROL_FLOW_OPS, TFLITE_FILES, UnsupportedOpsError, representative_images, to_tflite
    from bfcnn.lite import TFLiteDenoiser
    from bfcnn.models.shift import shift_period

    period = shift_period(model)  # tiles start on the model's grid, as an exported file's card makes them

    channels, size = image.shape[-1], image.shape[0]
    engines = {}
    keras_fn = tf.function(lambda x: model(x, training=False),
                           input_signature=[tf.TensorSpec([1, None, None, channels], tf.float32)])
    batch = tf.constant(image[None])
    engines["Keras graph"] = (lambda: keras_fn(batch).numpy(), None)
    if bfloat16:  # what bfcnn.denoise(..., precision="bfloat16") runs
        from bfcnn.models.precision import to_bfloat16

        fast = to_bfloat16(model)
        fast_fn = tf.function(lambda x: fast(x, training=False),
                              input_signature=[tf.TensorSpec([1, None, None, channels], tf.float32)])
        engines["Keras graph, bfloat16"] = (lambda: fast_fn(batch).numpy(), None)
    samples = representative_images(representative, channels, count=8) if "int8" in quantize else None
    failed = {}
    for mode in quantize:
        name = f"TFLite {mode if mode != 'none' else 'fp32'}"
        file = folder / TFLITE_FILES[mode]
        try:
            file.write_bytes(to_tflite(model, mode, samples))
        except UnsupportedOpsError as error:
            if mode == "int8" and set(error.ops) <= CONTROL_FLOW_OPS:
                failed[name] = f"no int8: TFLite's calibrator cannot run control flow ({', '.join(error.ops)})"
                continue
            for later in quantize[quantize.index(mode):]:  # the same ops block every variant
                failed[f"TFLite {later if later != 'none' else 'fp32'}"] = (
                    f"not convertible to builtin ops: {', '.join(error.ops)}")
            break
        runner = TFLiteDenoiser(file, num_threads=threads)
        engines[name] = (lambda r=runner: r(image), file.stat().st_size)
        if mode == "none":
            for tile in tiles:  # what TFLiteDenoiser.denoise does by default (tiles of 256, overlap 48)
                if tile < size:  # an interpreter of its own: resizing one back and forth reallocates each run
                    tiled = TFLiteDenoiser(file, num_threads=threads, shift_period=period)  # as the card says
                    engines[f"{name}, tiles of {tile}"] = (lambda r=tiled, t=tile: r.denoise(image, tile_size=t), None)
            for tile in fixed_tiles:  # a file for one input size (export --tflite-size), run tile by tile
                fixed = folder / f"model_{tile}.tflite"
                fixed.write_bytes(to_tflite(model, mode, input_size=(tile, tile)))
                runner = TFLiteDenoiser(fixed, num_threads=threads, shift_period=period)
                engines[f"{name}, {tile}x{tile} file, tiles of {tile}"] = (lambda r=runner: r.denoise(image),
                                                                           fixed.stat().st_size)
    return engines, failed


def _time_engines(engines, runs: int) -> tuple:
    """Wall and CPU seconds of each engine, {name: [seconds per run]} twice, timed in interleaved
    rounds after two warm-up runs each (tracing, allocation, XNNPACK packing)."""
    for run, _ in engines.values():
        run()
        run()
    wall = {name: [] for name in engines}
    cpu = {name: [] for name in engines}
    for _ in range(runs):
        for name, (run, _) in engines.items():
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            run()
            wall[name].append(time.perf_counter() - start_wall)
            cpu[name].append(time.process_time() - start_cpu)
    return wall, cpu


def bench_config(path: str, size: int, runs: int, threads: int, quantize, representative, tiles=(),
                 fixed_tiles=(), bfloat16: bool = False) -> dict:
    """The table rows of one pipeline's model; its TFLite files live in a temporary folder that
    is removed when the timing is done."""
    from bfcnn.config import load_config
    from bfcnn.export.loading import build_float32
    from bfcnn.models.cost import count_parameters, flops_per_pixel

    config = load_config(path)
    model = build_float32(config.model)
    channels = int(model.input_shape[-1])
    if any(type(layer).__name__ == "NonLocalBlock" for layer in model._flatten_layers()):
        # Global attention needs (H W)^2 / 4 floats: 69 GB at 512 x 512, 0.27 GB at 128 x 128.
        size = min(size, NON_LOCAL_SIZE)
    image = photo(channels, size)
    flops = flops_per_pixel(model)
    megapixels = size * size / 1e6
    with tempfile.TemporaryDirectory(prefix="bench-tflite-") as folder:
        engines, failed = _engines(model, image, Path(folder), threads, quantize, representative, tiles,
                                   fixed_tiles, bfloat16)
        wall, cpu = _time_engines(engines, runs)
    rows = []
    for name, (_, size_bytes) in engines.items():
        seconds = statistics.median(wall[name])
        cpu_seconds = statistics.median(cpu[name])
        rows.append({
            "engine": name,
            "ms_per_mp": 1000 * seconds / megapixels,
            "cpu_ms_per_mp": 1000 * cpu_seconds / megapixels,
            "gflops": flops * size * size / seconds / 1e9,
            "gflop_per_cpu_second": flops * size * size / cpu_seconds / 1e9,
            "bytes": size_bytes,
        })
    rows += [{"engine": name, "error": error} for name, error in failed.items()]
    return {"config": os.path.relpath(path, ROOT), "type": config.model["type"], "channels": channels,
            "size": size, "parameters": count_parameters(model), "flops_per_pixel": flops, "rows": rows}


def markdown(results, peak, args) -> str:
    import tensorflow as tf

    peak_wall, peak_cpu = peak
    lines = [f"Image {args.size} x {args.size}, median of {args.runs} interleaved runs, LiteRT with "
             f"{args.threads} thread(s) (XNNPACK); TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores "
             f"({platform.processor() or platform.machine()}); float32 matmul peak {peak_wall:.0f} GFLOP/s, "
             f"{peak_cpu:.0f} GFLOP per CPU-second.", "",
             "| config | model | params | MFLOP/px | engine | ms / MP | CPU ms / MP | GFLOP/s | GFLOP / CPU-s "
             "| % of peak (CPU) | file |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for result in results:
        for i, row in enumerate(result["rows"]):
            note = f" ({result['size']}x{result['size']})" if result["size"] != args.size else ""
            head = (f"{result['config']}{note} | {result['type']} C={result['channels']} | "
                    f"{result['parameters'] / 1e6:.2f} M | {result['flops_per_pixel'] / 1e6:.3f}") if i == 0 else " | | |"
            if "error" in row:
                lines.append(f"| {head} | {row['engine']} | {row['error']} | | | | | |")
                continue
            size = f"{row['bytes'] / 1e6:.2f} MB" if row["bytes"] else "-"
            lines.append(f"| {head} | {row['engine']} | {row['ms_per_mp']:.0f} | {row['cpu_ms_per_mp']:.0f} | "
                         f"{row['gflops']:.1f} | {row['gflop_per_cpu_second']:.1f} | "
                         f"{100 * row['gflop_per_cpu_second'] / peak_cpu:.0f}% | {size} |")
    return "\n".join(lines)


def tile_size(text: str) -> int:
    """A --tiles value: an integer at least twice the tile overlap, as bfcnn.tiling requires."""
    from bfcnn.lite import DEFAULT_OVERLAP
    from bfcnn.tiling import min_tile_size

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value < min_tile_size(DEFAULT_OVERLAP):
        raise argparse.ArgumentTypeError(f"must be at least {min_tile_size(DEFAULT_OVERLAP)} (twice the tile overlap, "
                                         f"{DEFAULT_OVERLAP}), got {value}")
    return value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=sorted(glob.glob(str(ROOT / "pipelines" / "*.yaml"))))
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--quantize", nargs="+", default=["none", "fp16", "int8"],
                        choices=["none", "fp16", "dynamic", "int8"])
    parser.add_argument("--representative-dir", default="pkg:skimage/data",
                        help="int8 calibration images (content does not change the speed)")
    parser.add_argument("--tiles", nargs="*", type=tile_size, default=[256],
                        help="also time TFLite fp32 through TFLiteDenoiser.denoise with these tile sizes "
                             "(default 256, its default; FLOPs count each image pixel once)")
    parser.add_argument("--fixed-tiles", nargs="*", type=int, default=[], metavar="N",
                        help="also TFLite fp32 files for one input size N x N (export --tflite-size N), "
                             "run in tiles of N (overlap 48)")
    parser.add_argument("--bfloat16", action="store_true",
                        help="also time the Keras model with its convolutions in bfloat16 "
                             "(bfcnn.denoise(..., precision='bfloat16'))")
    parser.add_argument("--json", help="also write the results as JSON here")
    args = parser.parse_args(argv)

    peak = matmul_peak_gflops()
    results = []
    for path in args.configs:
        print(f"benchmarking {os.path.relpath(path, ROOT)} ...", file=sys.stderr, flush=True)
        results.append(bench_config(path, args.size, args.runs, args.threads, args.quantize,
                                    args.representative_dir, args.tiles, args.fixed_tiles, args.bfloat16))
    table = markdown(results, peak, args)
    print(table)
    if args.json:
        from bfcnn.io import write_json  # atomic

        write_json(args.json, {"peak_gflops": peak[0], "peak_gflop_per_cpu_second": peak[1],
                               "results": results, "args": vars(args)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
