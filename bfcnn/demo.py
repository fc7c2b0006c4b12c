"""`python -m bfcnn.demo`: the zoo's default models on real photographs, in a minute.

Adds Gaussian noise (sigma 25 on the 0-255 scale, fixed seed, not clipped) to
scikit-image's bundled photographs, denoises them with the zoo's gray and color
flagships, prints PSNR noisy -> denoised per image, and writes clean | noisy |
denoised side-by-side PNGs. Exit codes: 0 done, 2 bad arguments (an unknown model, a
negative or non-finite --sigma, an output folder that cannot be made, scikit-image missing).
"""

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

PHOTOS = {"camera": "gray", "astronaut": "rgb", "coffee": "rgb"}


def _sigma(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0 (0-255 scale), got {text!r}")
    return value


def _make_folders(folder: Path) -> list:
    """Makes `folder` and its missing parents; returns those made, outermost first.

    Raises:
        OSError: one cannot be made (those made before it are removed again).
    """
    from bfcnn.io import existing_ancestor

    folder = folder.absolute()
    top = existing_ancestor(folder)
    missing = [folder, *folder.parents][: len(folder.parts) - len(top.parts)]  # innermost first
    made = []
    try:
        for path in reversed(missing):
            path.mkdir(exist_ok=True)
            made.append(path)
    except OSError:
        _remove_folders(made)
        raise
    return made


def _remove_folders(made: list) -> None:
    """Removes the folders `_make_folders` made, innermost first, while they are empty."""
    for folder in reversed(made):
        try:
            folder.rmdir()
        except OSError:
            return


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bfcnn.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--output-directory", default="demo_output", help="where the PNGs go")
    parser.add_argument("--sigma", type=_sigma, default=25.0,
                        help="noise level on the 0-255 scale, >= 0 (default: 25)")
    parser.add_argument("--gray-model", default=None, help="zoo name or path (default: the gray flagship)")
    parser.add_argument("--color-model", default=None, help="zoo name or path (default: the color flagship)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported: errors only
    try:
        from skimage import data
    except ImportError:
        print("error: the demo's photographs come with scikit-image: pip install scikit-image "
              "(or pip install 'bfcnn[demo]')", file=sys.stderr)
        return 2

    import bfcnn
    from bfcnn.errors import BfcnnError
    from bfcnn.evaluation import add_noise, noise_seed, psnr, to_uint8
    from bfcnn.io import check_output_folder, write_image
    from bfcnn.zoo import DEFAULT_GRAY_MODEL, DEFAULT_MODEL

    names = {"gray": args.gray_model or DEFAULT_GRAY_MODEL, "rgb": args.color_model or DEFAULT_MODEL}
    out_dir = Path(args.output_directory)
    try:
        check_output_folder(out_dir, flag="--output-directory")
        # Made before any model is loaded: a folder that cannot be made (no permission, /proc)
        # would otherwise fail at the first image, after the models loaded and it was denoised.
        made = _make_folders(out_dir)
    except BfcnnError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: output folder {out_dir} cannot be made: {error.strerror or error}", file=sys.stderr)
        return 2
    try:
        models = {color: bfcnn.load_model(name) for color, name in names.items()}
    except BfcnnError as error:
        _remove_folders(made)
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"sigma {args.sigma:g}; models: gray {names['gray']}, color {names['rgb']}")
    print(f"{'image':<10} {'size':>9} {'noisy PSNR':>11} {'denoised':>9} {'seconds':>8}")
    for index, (photo, color) in enumerate(PHOTOS.items()):
        clean = getattr(data, photo)()
        clean = clean[..., None] if clean.ndim == 2 else clean[..., :3]
        noisy = add_noise(clean, args.sigma, noise_seed(0, index, args.sigma))
        start = time.perf_counter()
        denoised = bfcnn.denoise(noisy, model=models[color])
        seconds = time.perf_counter() - start
        print(f"{photo:<10} {clean.shape[1]:>4}x{clean.shape[0]:<4} {psnr(clean, noisy):>9.2f} dB "
              f"{psnr(clean, denoised):>6.2f} dB {seconds:>7.2f}")
        write_image(out_dir / f"{photo}_clean_noisy_denoised.png",
                    np.concatenate([clean, to_uint8(noisy), to_uint8(denoised)], axis=1))
    print(f"side-by-side images (clean | noisy | denoised) in {out_dir}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
