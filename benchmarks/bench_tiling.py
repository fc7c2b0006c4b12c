"""How far tiled inference lands from whole-image inference, for tile sizes and overlaps.

`bfcnn.tiling.tiled_apply` blends overlapping tiles with a window that is 0 within `margin`
pixels of a shared edge (default `overlap // 4`). A model whose receptive field is wider than
the margin sees less context near a tile's edge than in the whole image, so the blend differs
a little from the whole-image output. This runs a model on noisy scikit-image photographs
whole and in tiles, and prints, per case and image, the largest absolute difference (0-255
scale, before rounding) and the PSNR change of the rounded output against the clean image:

    python benchmarks/bench_tiling.py --model pyramid_gray_m --size 512 --sigma 25

Cases are `TILE,OVERLAP` or `TILE,OVERLAP,MARGIN` (`--cases 128,32 256,64,24`). Tiles start at
multiples of the model's shift period (`--align 1` starts them anywhere, to see what that costs
at a size where the last tiles would start off the model's grid, e.g. `--size 509`).

An opponent color model lifts its chrominance by the mean gray level of the image it is given.
`--offset whole` (the default) tiles it as `bfcnn.denoise` does, with the whole image's mean
(`bfcnn.models.opponent.LiftedParts`); `--offset tile` runs the whole model on each tile, which
then uses its own mean, as tiles of an exported file of the model do:

    python benchmarks/bench_tiling.py --model pyramid_color_m --offset tile
"""

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bfcnn.cli import positive_int  # noqa: E402
from bfcnn.tiling import min_tile_size  # noqa: E402

LIFTS = {"whole": "the whole image's mean gray level", "tile": "each tile's own mean gray level"}
DEFAULT_CASES = ["128,32", "256,32", "128,48", "256,48", "128,64", "256,64", "256,64,24", "192,96,40"]


def parse_case(text: str):
    """(tile, overlap, margin or None) from `TILE,OVERLAP[,MARGIN]`, checked as `tiled_apply` checks them.

    Raises:
        argparse.ArgumentTypeError: not 2 or 3 integers, a negative value, a tile under twice
            the overlap (or not larger than it), or 2 * margin >= overlap (margin 0 with overlap 0
            is allowed), naming the rule broken.
    """
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in (2, 3):
        raise argparse.ArgumentTypeError(f"a case is TILE,OVERLAP or TILE,OVERLAP,MARGIN (integers), got {text!r}")
    tile, overlap, margin = values[0], values[1], values[2] if len(values) == 3 else None
    if min(values) < 0:
        raise argparse.ArgumentTypeError(f"case {text!r}: TILE, OVERLAP and MARGIN must be >= 0")
    if tile < min_tile_size(overlap):
        raise argparse.ArgumentTypeError(f"case {text!r}: TILE must be at least twice OVERLAP (and larger than it)")
    if margin is not None and 2 * margin >= overlap and not overlap == margin == 0:
        raise argparse.ArgumentTypeError(f"case {text!r}: MARGIN must satisfy 2 * MARGIN < OVERLAP")
    return tile, overlap, margin


def photographs(names, size, channels):
    """Center crops of at most size x size of scikit-image's sample photographs, float32 [H, W, C]."""
    from bfcnn.evaluate import SKIMAGE_PHOTOS
    from bfcnn.evaluation import center_crop
    from bfcnn.io import read_image, resolve_directory

    root = resolve_directory("pkg:skimage/data")
    files = {Path(f).stem: root / f for f in SKIMAGE_PHOTOS}
    unknown = [n for n in names if n not in files]
    if unknown:
        raise SystemExit(f"unknown photograph(s) {unknown}; allowed: {', '.join(sorted(files))}")
    color = "gray" if channels == 1 else "rgb"
    return [(n, center_crop(read_image(files[n], color), size).astype(np.float32)) for n in names]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="pyramid_gray_m", help="zoo name or .keras path")
    parser.add_argument("--images", nargs="+", default=None,
                        help="scikit-image sample names (default: camera moon, or astronaut coffee for color)")
    parser.add_argument("--size", type=int, default=512, help="center crop of at most this size")
    parser.add_argument("--sigma", type=float, default=25.0)
    parser.add_argument("--cases", nargs="+", type=parse_case, default=[parse_case(c) for c in DEFAULT_CASES])
    parser.add_argument("--align", type=positive_int, default=None,
                        help="tiles start at multiples of it (default: the model's shift period, "
                             "bfcnn.models.shift; 1 starts them anywhere, as before the alignment)")
    parser.add_argument("--offset", choices=("whole", "tile"), default="whole",
                        help="an opponent color model's chrominance lift: from the whole image (as bfcnn.denoise "
                             "tiles it) or from each tile (the whole model on each tile); no effect on other models")
    args = parser.parse_args(argv)

    import bfcnn
    from bfcnn.errors import BfcnnError
    from bfcnn.evaluation import add_noise, noise_seed, psnr, to_uint8
    from bfcnn.inference import graph_runner, lifted_parts
    from bfcnn.models.shift import shift_period
    from bfcnn.tiling import tiled_apply

    try:
        model = bfcnn.load_model(args.model)
    except BfcnnError as error:  # an unknown zoo name, a missing or unreadable file
        print(f"error: --model: {error}", file=sys.stderr)
        return 2
    channels = model.input_shape[-1]
    align = shift_period(model) if args.align is None else args.align
    names = args.images or (["camera", "moon"] if channels == 1 else ["astronaut", "coffee"])
    run = graph_runner(model)
    parts = lifted_parts(model) if args.offset == "whole" else None

    def tiled_run(noisy, tile, overlap, margin):
        if parts is None:
            return tiled_apply(run, noisy, tile, overlap, margin, align=align)
        network, offset = graph_runner(parts.network), parts.offset(noisy)
        return tiled_apply(lambda x: parts.lower(network(parts.lift(x, offset)), offset), noisy, tile, overlap,
                           margin, align=align)

    rows = []
    images = []
    for index, (name, clean) in enumerate(photographs(names, args.size, channels)):
        noisy = add_noise(clean, args.sigma, noise_seed(0, index, args.sigma))
        whole = run(noisy)
        images.append((name, clean, noisy, whole, psnr(clean, to_uint8(whole))))
    for tile, overlap, margin in args.cases:
        cells = []
        for name, clean, noisy, whole, whole_psnr in images:
            tiled = tiled_run(noisy, tile, overlap, margin)
            cells.append((float(np.max(np.abs(tiled - whole))), psnr(clean, to_uint8(tiled)) - whole_psnr))
        rows.append((tile, overlap, overlap // 4 if margin is None else margin, cells))

    print(f"{args.model} on {' / '.join(names)} (at most {args.size} x {args.size}), sigma {args.sigma:g}, "
          f"whole-image PSNR {' / '.join(f'{i[4]:.2f}' for i in images)} dB; tiles start at multiples of {align}"
          + (f"; chrominance lifted by {LIFTS[args.offset]}" if lifted_parts(model) is not None else ""))
    print()
    print("| tile | overlap | margin | PSNR change vs whole image (dB) | max abs diff (0-255) |")
    print("|---:|---:|---:|---|---|")
    for tile, overlap, margin, cells in rows:
        print(f"| {tile} | {overlap} | {margin} | {' / '.join(f'{c[1]:+.3f}' for c in cells)} "
              f"| {' / '.join(f'{c[0]:.3g}' for c in cells)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
