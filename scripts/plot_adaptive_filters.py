"""Adaptive filters of a bias-free denoiser widen as the noise grows (Mohan et al., ICLR 2020).

    python scripts/plot_adaptive_filters.py            # writes docs/figures/adaptive_filters.png

The zoo model `pyramid_gray_m` (bias-free) denoises Set12's cameraman (01.png; scikit-image's
camera, halved to 256x256, when ../shared/datasets is absent) at several noise levels,
the same noise pattern scaled. For three pixels (flat sky, an edge, grass texture) the
figure shows the row of the Jacobian A(y): the weights the network gives every noisy pixel.
Printed: each filter's spread (RMS distance of its weight from the pixel, in pixels), its
support (`(sum |w|)^2 / sum w^2`, in pixels), the sum of its weights, and `f(y)` against
`A(y) y` on random pixels. The color range is the largest weight off the pixel itself. Needs matplotlib
(`pip install 'bfcnn[docs]'`).
"""

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from doc_tables import save_figure  # noqa: E402  (same folder)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SET12_IMAGE = ROOT.parent / "shared" / "datasets" / "val" / "Set12" / "01.png"
# (row, column, what is there) on the 256x256 cameraman.
PIXELS = ((40, 200, "flat sky"), (105, 34, "coat edge"), (236, 150, "grass"))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pyramid_gray_m", help="a bias-free gray model (zoo name or path)")
    parser.add_argument("--image", default=None, help="a gray image (default: Set12 01.png, else skimage camera)")
    parser.add_argument("--sigmas", type=float, nargs="+", default=[5, 25, 50, 100])
    parser.add_argument("--window", type=int, default=41, help="size of the drawn crops")
    parser.add_argument("--check-pixels", type=int, default=12, help="random pixels for the f(y) = A(y) y check")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "docs" / "figures" / "adaptive_filters.png"))
    return parser.parse_args(argv)


def require_size(image, height: int, width: int, what: str) -> None:
    """Exits with a message unless `image` is at least height x width (the fixed positions of
    the pixels or crops are for the 256x256 cameraman)."""
    if image.shape[0] < height or image.shape[1] < width:
        raise SystemExit(f"error: {what} are placed for the 256x256 cameraman and need an image of at least "
                         f"{height}x{width}; --image is {image.shape[0]}x{image.shape[1]}")


def load_image(path):
    from bfcnn.io import read_image

    if path:
        return read_image(path, color="gray")[..., 0], str(path)
    if SET12_IMAGE.exists():
        return read_image(SET12_IMAGE, color="gray")[..., 0], "Set12 01.png"
    from skimage import data

    return data.camera()[::2, ::2], "skimage camera, halved"


def main(argv=None):
    args = parse_args(argv)
    from matplotlib.figure import Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    import bfcnn
    from bfcnn.explain import (adaptive_filters, crop_around, effective_support, filter_spread, off_centre_limit,
                               reconstruction)

    model = bfcnn.load_model(args.model)
    clean, source = load_image(args.image)
    require_size(clean, max(r for r, _, _ in PIXELS) + 1, max(c for _, c, _ in PIXELS) + 1, "the pixels")
    clean = clean.astype(np.float32)
    noise = np.random.default_rng(args.seed).standard_normal(clean.shape).astype(np.float32)
    pixels = [(r, c) for r, c, _ in PIXELS]
    print(f"model {args.model}, image {source} {clean.shape[0]}x{clean.shape[1]}, noise seed {args.seed}")
    print("per pixel: spread (RMS distance of the weight, px) / support ((sum|w|)^2 / sum w^2, px) / sum of weights")
    print(f"{'sigma':>6}  " + "  ".join(f"{name:>26}" for _, _, name in PIXELS)
          + f"  {'f vs Ay rel. error':>18}")

    maps = {}
    for sigma in args.sigmas:
        noisy = clean + np.float32(sigma) * noise
        rows = adaptive_filters(model, noisy, pixels)
        check = reconstruction(model, noisy, num_pixels=args.check_pixels, seed=args.seed)
        cells = []
        for (row, col), weights in zip(pixels, rows):
            spread, support = filter_spread(weights, (row, col)), effective_support(weights)
            crop, position = crop_around(weights[..., 0], (row, col), args.window)
            maps[(sigma, (row, col))] = (crop, position, spread, support)
            cells.append(f"{spread:6.2f} / {support:6.1f} / {weights.sum():6.3f}")
        print(f"{sigma:6g}  " + "  ".join(f"{c:>26}" for c in cells) + f"  {check.relative_error:18.1e}")

    columns = len(args.sigmas) + 1
    figure = Figure(figsize=(1.9 * columns + 0.3, 1.95 * len(pixels) + 0.5), dpi=80)
    grid = figure.subplots(len(pixels), columns, squeeze=False)
    middle = args.sigmas[(len(args.sigmas) - 1) // 2]  # the second of 4 (sigma 25), the middle one of 3
    for i, (row, col, name) in enumerate(PIXELS):
        crop, position = crop_around(np.clip(clean + np.float32(middle) * noise, 0, 255), (row, col), args.window)
        axes = grid[i, 0]
        axes.imshow(crop, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        axes.plot([position[1]], [position[0]], "+", color="#ff3030", markersize=10, markeredgewidth=1.5)
        axes.set_ylabel(f"{name}\n({row}, {col})", fontsize=8)
        if i == 0:
            axes.set_title(f"noisy, sigma {middle:g}", fontsize=8)
        for j, sigma in enumerate(args.sigmas):
            weights, position, spread, support = maps[(sigma, (row, col))]
            limit = off_centre_limit(weights, position)
            axes = grid[i, j + 1]
            axes.imshow(weights, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
            axes.set_title(f"sigma {sigma:g}: {spread:.1f} px, {support:.0f} px\n"
                           f"centre {weights[position]:.2f}, range +-{limit:.2g}", fontsize=8)
        for axes in grid[i]:
            axes.set_xticks([])
            axes.set_yticks([])
    figure.suptitle(f"Adaptive filters of {args.model} (rows of A(y)), {args.window}x{args.window} crops; "
                    "titles: RMS spread, support; color range: largest weight off the centre",
                    fontsize=9)
    figure.tight_layout()
    FigureCanvasAgg(figure)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_figure(figure, out)  # whole or not at all
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
