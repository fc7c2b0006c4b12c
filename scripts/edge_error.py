"""Error at an image's last row and column against its interior, for image sizes around a multiple of 4.

A model whose coarse levels halve the image (pyramids, stride-2 convolutions) can treat the
last rows and columns of some sizes worse than others. This script crops one photograph
(scikit-image's `camera`, or `astronaut` for color models) to each size, adds Gaussian noise
(`bfcnn.evaluation.add_noise`, noise seed 0), denoises it with each zoo model and prints the mean
absolute error (0-255 scale) of the last row, the last column and the interior (10 pixels from
every edge), and the PSNR of the whole crop.

    python scripts/edge_error.py                                   # every zoo model, sizes 252 to 256, sigma 5
    python scripts/edge_error.py --models pyramid_gray_m --sizes 321x481 --sigma 15
"""

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def size_pair(text: str):
    """`N` (square) or `HxW`, each >= 1."""
    try:
        values = [int(v) for v in text.lower().split("x")]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or min(values) < 1:
        raise argparse.ArgumentTypeError(f"a size is N or HxW with integers >= 1, got {text!r}")
    return (values[0], values[-1])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=None, help="zoo names (default: every model)")
    parser.add_argument("--sizes", nargs="+", type=size_pair, default=[(n, n) for n in range(252, 257)],
                        metavar="N|HxW", help="crop sizes (default 252 to 256, square)")
    parser.add_argument("--sigma", type=float, default=5.0, help="noise std on the 0-255 scale (default 5)")
    return parser.parse_args(argv)


def edge_errors(model, clean: np.ndarray, sigma: float) -> dict:
    """MAE of the last row, the last column and the interior, and the PSNR, of one denoised crop."""
    import bfcnn
    from bfcnn.evaluation import add_noise, noise_seed, psnr

    noisy = add_noise(clean, sigma, noise_seed(0, 0, sigma))
    denoised = bfcnn.denoise(noisy, model=model, tile_size=0)
    error = np.abs(denoised.astype(np.float64) - clean.astype(np.float64))
    interior = error[10:-10, 10:-10] if min(error.shape[:2]) > 20 else error
    return {"last_row": float(error[-1].mean()), "last_column": float(error[:, -1].mean()),
            "interior": float(interior.mean()), "psnr": psnr(clean, denoised)}


def main(argv=None) -> int:
    args = parse_args(argv)
    import bfcnn
    from skimage import data

    names = args.models or bfcnn.list_models()
    photos = {1: data.camera()[..., None], 3: data.astronaut()}
    print(f"MAE (0-255) of the last row / last column / interior, and PSNR, sigma {args.sigma:g}, noise seed 0; "
          "camera (gray) or astronaut (color), top-left crops\n")
    print("| model | size | last row | last column | interior | PSNR |")
    print("|---|---|---:|---:|---:|---:|")
    for name in names:
        model = bfcnn.load_model(name)
        photo = photos[int(model.input_shape[-1])]
        for height, width in args.sizes:
            if height > photo.shape[0] or width > photo.shape[1]:
                print(f"error: {height}x{width} is larger than the {photo.shape[0]}x{photo.shape[1]} photograph",
                      file=sys.stderr)
                return 2
            e = edge_errors(model, photo[:height, :width], args.sigma)
            print(f"| {name} | {height}x{width} | {e['last_row']:.2f} | {e['last_column']:.2f} | "
                  f"{e['interior']:.2f} | {e['psnr']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
