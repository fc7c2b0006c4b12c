"""Peak memory and time of denoising large photographs, whole and in tiles, Keras and LiteRT.

`bfcnn.denoise` tiles images above one megapixel (tiles of 512 with a blended overlap), and
`bfcnn.lite.TFLiteDenoiser.denoise(tile_size=...)` does the same through LiteRT, so memory
stays bounded however large the photograph. This measures it: each case runs in its own
subprocess, which reports its peak resident memory (VmHWM) after loading the model (`loaded`)
and, reset once the test image is made, while denoising (`peak`; Linux only). The image is synthetic (a smooth pattern plus sigma 25
noise, uint8): time and memory do not depend on its content. Prints a Markdown table.

    python benchmarks/bench_memory.py           # pyramid_color_m, 1 / 6 / 24 MP, whole up to 6, tiles 512 / 256
    python benchmarks/bench_memory.py --model resnet_gray_s --megapixels 1 12 --whole-up-to 12 --tiles 512
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time


def _peak_rss_mb() -> float:
    """The peak resident memory since the process started or since `_reset_peak`."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _reset_peak() -> bool:
    """Resets the peak to the current resident memory (Linux: /proc/self/clear_refs); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def _image(megapixels: float, channels: int):
    """A uint8 [H, W, C] photograph-sized test image with a 4:3 aspect ratio."""
    import numpy as np

    height = int(round((megapixels * 1e6 * 3 / 4) ** 0.5))
    width = int(round(megapixels * 1e6 / height))
    rng = np.random.default_rng(0)
    y = np.linspace(0, 6, height, dtype=np.float32)[:, None]
    x = np.linspace(0, 8, width, dtype=np.float32)[None, :]
    base = 128 + 60 * np.sin(x) * np.cos(y)
    image = np.empty((height, width, channels), np.uint8)
    for c in range(channels):  # channel by channel: the float32 temporaries stay one plane large
        image[..., c] = np.clip(base + 25 * rng.standard_normal((height, width), dtype=np.float32), 0, 255)
    return image


def child(args) -> None:
    """One measurement; prints a JSON line."""
    import numpy as np

    import bfcnn

    tile = args.tile if args.mode == "tiles" else 0
    if args.engine == "keras":
        model = bfcnn.load_model(args.model)
        channels = int(model.input_shape[-1])
        bfcnn.denoise(np.zeros((64, 64, channels), np.uint8), model=model, tile_size=0)  # trace once

        def run(image):
            return bfcnn.denoise(image, model=model, tile_size=tile)
    else:
        from bfcnn.lite import TFLiteDenoiser
        from bfcnn.zoo import model_file

        denoiser = TFLiteDenoiser(model_file(args.model, "tflite"), num_threads=args.threads)
        channels = denoiser.channels
        denoiser.denoise(np.zeros((64, 64, channels), np.uint8))

        def run(image):
            return denoiser.denoise(image, tile_size=tile or None)
    loaded = _peak_rss_mb()
    image = _image(args.megapixels, channels)
    if not _reset_peak():  # the peak would include the temporaries that made the test image
        raise SystemExit("this benchmark needs Linux's /proc/self/clear_refs to reset the peak memory")
    start = time.perf_counter()
    out = run(image)
    seconds = time.perf_counter() - start
    assert out.shape == image.shape and out.dtype == np.uint8, (out.shape, out.dtype)
    print(json.dumps({"loaded_mb": loaded, "image_mb": image.nbytes / 2**20, "peak_mb": _peak_rss_mb(),
                      "seconds": seconds, "shape": list(image.shape)}))


def main() -> None:
    from bench_inference import tile_size  # the same folder: the --tiles rule of both benchmarks

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pyramid_color_m", help="a zoo name (default pyramid_color_m)")
    parser.add_argument("--megapixels", type=float, nargs="+", default=[1, 6, 24])
    parser.add_argument("--engines", nargs="+", choices=["keras", "tflite"], default=["keras", "tflite"])
    parser.add_argument("--tiles", type=tile_size, nargs="+", default=[512, 256],
                        help="tile sizes of the tiled runs (default 512 256)")
    parser.add_argument("--tile", type=int, default=512, help=argparse.SUPPRESS)
    parser.add_argument("--whole-up-to", type=float, default=6.0,
                        help="run whole-image (untiled) cases only up to this many megapixels (default 6)")
    parser.add_argument("--threads", type=int, default=None, help="LiteRT threads (default: the CPU cores)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--engine", choices=["keras", "tflite"], help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=["whole", "tiles"], help=argparse.SUPPRESS)
    parser.add_argument("--megapixels-one", type=float, dest="one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.megapixels = args.one
        child(args)
        return

    load = os.getloadavg()[0]
    print(f"{args.model}, synthetic uint8 photographs (4:3), tile overlap 48; "
          f"{os.cpu_count()} CPU cores ({platform.machine()}), 1-minute load average {load:.1f} at the start; "
          "peak = the process's peak resident memory while it denoises (reset after making the test image), "
          "loaded = its peak after loading the model and running it once on a small image, "
          "input = the uint8 photograph itself\n")
    print("| engine | megapixels | size | mode | seconds | loaded MB | input MB | peak MB | peak - loaded MB |")
    print("|---|---:|---|---|---:|---:|---:|---:|---:|")
    for engine in args.engines:
        for megapixels in args.megapixels:
            cases = ([("whole", 0)] if megapixels <= args.whole_up_to else []) + [("tiles", t) for t in args.tiles]
            for mode, tile in cases:
                command = [sys.executable, os.path.abspath(__file__), "--child", "--model", args.model,
                           "--engine", engine, "--mode", mode, "--megapixels-one", str(megapixels),
                           "--tile", str(tile)]
                if args.threads:
                    command += ["--threads", str(args.threads)]
                done = subprocess.run(command, capture_output=True, text=True)
                lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
                if done.returncode or not lines:
                    reason = (done.stderr.strip().splitlines() or ["no output"])[-1][:120]
                    print(f"| {engine} | {megapixels:g} | | {mode} | failed: {reason} | | | | |")
                    continue
                r = json.loads(lines[-1])
                h, w, _ = r["shape"]
                label = "whole image" if mode == "whole" else f"tiles of {tile}"
                print(f"| {engine} | {megapixels:g} | {w} x {h} | {label} | {r['seconds']:.2f} | {r['loaded_mb']:.0f} | "
                      f"{r['image_mb']:.0f} | {r['peak_mb']:.0f} | {r['peak_mb'] - r['loaded_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
