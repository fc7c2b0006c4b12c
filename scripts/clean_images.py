"""What a denoiser does to photographs that get no added noise.

For each model and each clean image x, the change d = f(x) - x on the 0-255 scale: its mean
(a brightness shift: a bias-free network has no additive constant, but its gain on the local
mean can still differ from 1), its RMS, the MAE of the rounded output against x (the
`--metric mae` table at std 0), and the lag-1 correlation of d along rows (near 0 for a white
change, such as noise removed from the "clean" reference itself; far from 0 for removed detail).
Means over images, and the same for a flat mid-gray image.

    python scripts/clean_images.py --models pyramid_gray_m resnet_gray_s
    python scripts/clean_images.py --models runs/x/model.keras --dataset ../shared/datasets/val/Set12
"""

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_DATASET = str(ROOT.parent / "shared/datasets/val/Set12")


def change_statistics(clean: np.ndarray, output: np.ndarray) -> dict:
    """Mean, RMS, rounded MAE and row lag-1 correlation of `output - clean` ([H, W, C] arrays)."""
    clean = np.asarray(clean, np.float64)
    output = np.asarray(output, np.float64)
    change = output - clean
    centred = change - change.mean()
    power = float((centred**2).mean())
    lag1 = float((centred[:, 1:] * centred[:, :-1]).mean() / power) if power > 0 else 0.0
    return {
        "mean": float(change.mean()),
        "rms": float(np.sqrt((change**2).mean())),
        "mae": float(np.abs(np.clip(np.round(output), 0, 255) - clean).mean()),
        "lag1": lag1,
    }


def measure(model, images) -> dict:
    """Mean over images of `change_statistics` for a model mapping [1, H, W, C] to the same."""
    rows = [change_statistics(x, model(x[None].astype(np.float32), training=False).numpy()[0]) for x in images]
    return {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", required=True, help="zoo names or .keras files")
    parser.add_argument("--dataset", default=DEFAULT_DATASET, help="a folder of clean images, or 'skimage'")
    parser.add_argument("--max-images", type=int, default=None, help="only the first N images")
    args = parser.parse_args(argv)

    import bfcnn
    from bfcnn.evaluate import dataset_files
    from bfcnn.io import read_image

    _, files = dataset_files(args.dataset)
    files = files[: args.max_images]
    print(f"{args.dataset}: {len(files)} images, no added noise; change = f(x) - x on the 0-255 scale\n")
    print("| model | mean change | RMS change | MAE (rounded) | row lag-1 corr. | flat 128: mean change |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in args.models:
        model = bfcnn.load_model(name)
        channels = model.input_shape[-1]
        images = [read_image(f, "gray" if channels == 1 else "rgb").astype(np.float32) for f in files]
        stats = measure(model, images)
        flat = measure(model, [np.full((128, 128, channels), 128.0, np.float32)])
        print(f"| {name} | {stats['mean']:+.3f} | {stats['rms']:.2f} | {stats['mae']:.2f} | "
              f"{stats['lag1']:+.2f} | {flat['mean']:+.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
