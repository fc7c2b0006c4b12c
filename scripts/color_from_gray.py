"""A gray denoiser on color images, with no color training: per RGB channel and in opponent space.

    python scripts/color_from_gray.py                    # McMaster18's first 6 images, sigma 15 25 50
    python scripts/color_from_gray.py --dataset ../shared/datasets/train/CBSD432 --max-images 8 --sigmas 25

Rows: the gray model (`--gray`, a zoo name or a .keras file) on R, G and B separately; the
`opponent` color model (`bfcnn.models.opponent.wrap_gray`) around the same weights for each
`--offsets` value of its chroma lift; and the color models of `--models` for comparison. PSNR
by the protocol of `bfcnn.evaluation` (fixed-seed noise, not clipped; output clipped and
rounded; mean over the images). Choose the lift on training images, not on the validation set.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gray", default="pyramid_gray_m", help="a gray zoo name or .keras file")
    parser.add_argument("--dataset", default=str(ROOT.parent / "shared" / "datasets" / "val" / "McMaster18"))
    parser.add_argument("--max-images", type=int, default=6)
    parser.add_argument("--sigmas", type=float, nargs="+", default=[15.0, 25.0, 50.0])
    parser.add_argument("--offsets", type=float, nargs="+", default=[1.0, 1.5, 2.0],
                        help="chroma lifts of the opponent model, in units of the mean gray level")
    parser.add_argument("--models", nargs="*", default=["pyramid_color_m"], help="color models to compare")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import bfcnn
    from bfcnn.evaluate import dataset_files, model_denoiser
    from bfcnn.evaluation import evaluate_denoisers
    from bfcnn.io import read_image
    from bfcnn.models.opponent import wrap_gray

    _, files = dataset_files(args.dataset)
    images = [read_image(f, color="rgb") for f in files[:args.max_images]]
    gray = bfcnn.load_model(args.gray)
    per_gray = model_denoiser(gray, 1)

    def per_rgb_channel(noisy, sigma):
        return np.concatenate([per_gray(noisy[..., c:c + 1], sigma) for c in range(3)], axis=-1)

    label = Path(args.gray).name
    denoisers = {f"{label} on R, G, B": per_rgb_channel}
    for offset in args.offsets:
        denoisers[f"{label} in opponent space, chroma lift {offset:g}"] = model_denoiser(
            wrap_gray(gray, offset), 3)
    for name in args.models:
        denoisers[name] = model_denoiser(bfcnn.load_model(name), 3)
    results = evaluate_denoisers(denoisers, images, args.sigmas)
    print(f"{Path(args.dataset).name}, {len(images)} images, PSNR (dB)\n")
    print("| denoiser | " + " | ".join(f"σ={s:g}" for s in args.sigmas) + " |")
    print("|---|" + "---:|" * len(args.sigmas))
    for name in ["noisy", *denoisers]:
        print(f"| {name} | " + " | ".join(f"{results[s][name]['psnr']:.2f}" for s in args.sigmas) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
