"""Seconds per image of BM3D / CBM3D (and optionally a model) at a few image sizes on this machine.

The speed target "a zoo model is at least 10x faster than BM3D on a 512x512 image" is
measured here: crops of scikit-image's camera (gray) and astronaut (RGB) at sigma 25,
the median of a few repeats, wall-clock and process CPU seconds (CPU time tells a loaded
machine apart). Prints a Markdown table; `--json` writes the numbers too.

    python benchmarks/bench_bm3d_speed.py                          # gray 256 and 512
    python benchmarks/bench_bm3d_speed.py --model pyramid_gray_m --sizes 512 --repeats 3
    python benchmarks/bench_bm3d_speed.py --color rgb --baselines bm3d nlm

Exit codes: 0 timed, 2 bad arguments (an unknown baseline or model, a size or repeat count below 1).
"""

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np


def _image(color: str, size: int) -> np.ndarray:
    from skimage import data

    image = data.camera()[..., None] if color == "gray" else data.astronaut()
    reps = (-(-size // image.shape[0]), -(-size // image.shape[1]), 1)  # tile when larger than the photo
    return np.tile(image, reps)[:size, :size]


def _time(function, noisy, sigma, repeats):
    walls, cpus = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        function(noisy, sigma)
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - start_cpu)
    return statistics.median(walls), statistics.median(cpus)


def _functions(args) -> dict:
    """{name: denoise(noisy, sigma)} of the baselines and the model to time.

    Raises:
        BfcnnError: an unknown baseline or model (the message lists the known ones).
    """
    from bfcnn.baselines import get_baseline

    functions = {name: get_baseline(name) for name in args.baselines}
    if args.model:
        from bfcnn.evaluate import model_denoiser
        from bfcnn.zoo import load_model

        functions[args.model] = model_denoiser(load_model(args.model), 1 if args.color == "gray" else 3)
    return functions


def main(argv=None) -> int:
    from bfcnn.cli import positive_int

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=positive_int, nargs="+", default=[256, 512])
    parser.add_argument("--color", choices=("gray", "rgb"), default="gray")
    parser.add_argument("--baselines", nargs="+", default=["bm3d"])
    parser.add_argument("--model", help="also time this model (zoo name or .keras path)")
    parser.add_argument("--repeats", type=positive_int, default=2)
    parser.add_argument("--sigma", type=float, default=25.0)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from bfcnn.errors import BfcnnError
    from bfcnn.evaluation import add_noise, noise_seed

    try:
        functions = _functions(args)
    except BfcnnError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    rows = []
    for size in args.sizes:
        clean = _image(args.color, size)
        noisy = add_noise(clean, args.sigma, noise_seed(0, 0, args.sigma))
        for name, function in functions.items():
            function(noisy[:32, :32], args.sigma)  # warm-up: imports, graph tracing
            wall, cpu = _time(function, noisy, args.sigma, args.repeats)
            rows.append({"method": name, "size": size, "color": args.color, "seconds": wall, "cpu_seconds": cpu,
                         "ms_per_megapixel": 1000 * wall / (size * size / 1e6)})
            print(f"{name} {size}x{size}: {wall:.3f} s", file=sys.stderr)
    print(f"sigma {args.sigma:g}, {args.color}, median of {args.repeats}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print("| method | size | s/img | CPU s/img | ms/MP |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['method']} | {r['size']} | {r['seconds']:.3f} | {r['cpu_seconds']:.3f} | {r['ms_per_megapixel']:.0f} |")
    if args.json:
        from bfcnn.io import write_json  # atomic

        write_json(args.json, {"sigma": args.sigma, "load_average": os.getloadavg()[0], "rows": rows})
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout
    sys.exit(main())
