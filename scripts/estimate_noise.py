"""How much noise a global estimator sees in clean and nearly clean photographs.

The estimate is the patch-covariance one of Chen, Zhu & Heng ("An efficient statistical method
for image noise level estimation", ICCV 2015), simplified: the eigenvalues of the covariance of
all 7x7 patches (stride 3) are sorted, the largest are dropped while the mean of the rest
exceeds their median (texture and edges live in a few large eigenvalues; white noise adds
sigma^2 to all of them), and sigma is the square root of the mean of the rest.

It shows why "never worse than the input at std 1" is out of reach of a blind denoiser on
photographs of fine texture: on such a photograph even a global estimate, which sees the whole
image, reads the clean texture as noise of a standard deviation many times 1.

    python scripts/estimate_noise.py                  # scikit-image's gray photographs
    python scripts/estimate_noise.py --dataset ../shared/datasets/val/Set12
"""

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PATCH, STRIDE = 7, 3


def estimate_sigma(image: np.ndarray, patch: int = PATCH, stride: int = STRIDE) -> float:
    """Noise standard deviation of a gray image [H, W] or [H, W, 1] (patch-covariance estimate)."""
    from numpy.lib.stride_tricks import sliding_window_view

    x = np.asarray(image, np.float64)
    x = x[..., 0] if x.ndim == 3 else x
    if x.ndim != 2 or min(x.shape) < patch:
        raise ValueError(f"need a gray image of at least {patch}x{patch} pixels, got shape {np.shape(image)}")
    patches = sliding_window_view(x, (patch, patch))[::stride, ::stride].reshape(-1, patch * patch)
    patches = patches - patches.mean(axis=0)
    eigenvalues = np.sort(np.linalg.eigvalsh(patches.T @ patches / len(patches)))
    while len(eigenvalues) > 1 and eigenvalues.mean() > np.median(eigenvalues):
        eigenvalues = eigenvalues[:-1]
    return float(np.sqrt(max(eigenvalues.mean(), 0.0)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="skimage", help="`skimage` or a folder of images")
    parser.add_argument("--sigma", nargs="+", type=float, default=[0.0, 1.0, 5.0, 25.0])
    args = parser.parse_args(argv)

    from bfcnn.evaluate import dataset_files
    from bfcnn.io import read_image

    _, names = dataset_files(args.dataset)
    images = [read_image(name, "gray") for name in names]
    print(f"Noise std estimated from each whole image (patch covariance, {PATCH}x{PATCH} patches), "
          f"{args.dataset}, Gaussian noise added with seed 0:\n")
    print("| image | " + " | ".join(f"true std {s:g}" for s in args.sigma) + " |")
    print("|---|" + "---:|" * len(args.sigma))
    rng = np.random.default_rng(0)
    for name, image in zip(names, images):
        clean = image.astype(np.float64)
        row = [estimate_sigma(clean + s * rng.standard_normal(clean.shape)) for s in args.sigma]
        print(f"| {Path(name).name} | " + " | ".join(f"{v:.1f}" for v in row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
