"""`python -m bfcnn.explain`: draw a bias-free denoiser's adaptive filters (Mohan et al., ICLR 2020).

    python -m bfcnn.explain --model pyramid_gray_m photo.png --sigma 25 \\
        --pixels 100,120 200,40 --sigmas 5 25 50 100 -o explain_out/

Writes to the output folder:

* `noisy.png`: the image with noise of std `--sigma` added, the pixels circled and numbered;
* `filter_<i>_r<row>_c<col>.png` per pixel: for each of `--sigmas`, the noisy and the
  denoised `--window` x `--window` crop around the pixel and the pixel's adaptive filter
  (its row of the Jacobian A(y)), on a diverging color map with a symmetric range set by
  the largest weight off the pixel itself (the centre weight is drawn saturated);
* `singular_values.png`: the singular values of A(y) on a `--svd-crop` crop centred on the
  first pixel, per noise level, and the effective dimension against the noise level;
* `summary.json`: the numbers behind the figures (filter spread, sum of weights, the
  check `f(y) = A(y) y`, effective dimensions).

The same noise pattern, scaled, is used at every noise level (seed `--seed`). Every
argument is checked before anything is written, and the files are made in a hidden
`.explain-*` work folder inside the output folder (or its nearest existing parent, when it
is new), moved into place at the end and the work folder removed, so a failed run leaves the
output folder as it was (a killed one may leave the work folder); an output may not replace
the input image.
Exit status: 0 done; 2 bad input (an unreadable image, an unknown model, a pixel outside
the image, a model that is not bias-free without `--allow-bias`, an output folder that
cannot be made).
"""

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

DEFAULT_SIGMAS = (5.0, 25.0, 50.0, 100.0)


def _pixel(text: str) -> Tuple[int, int]:
    try:
        row, col = (int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a pixel is ROW,COLUMN (two integers), got {text!r}") from None
    return row, col


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bfcnn.explain",
        description="Draws a bias-free denoiser's adaptive filters (rows of its Jacobian) and their spectrum.",
    )
    parser.add_argument("image", help="a clean image file; noise is added")
    parser.add_argument("--model", default="default", help="a zoo name, a .keras file, or a model folder")
    parser.add_argument("--sigma", type=float, default=25.0,
                        help="noise std (0-255 scale) of the image with the pixels marked (default 25)")
    parser.add_argument("--sigmas", type=float, nargs="+", default=list(DEFAULT_SIGMAS), metavar="SIGMA",
                        help="noise levels of the filter maps and the spectrum (default 5 25 50 100)")
    parser.add_argument("--pixels", type=_pixel, nargs="+", default=None, metavar="ROW,COL",
                        help="output pixels to explain (default: the centre)")
    parser.add_argument("-o", "--output-directory", required=True,
                        help="where the PNG files and summary.json go (made if missing)")
    parser.add_argument("--window", type=int, default=41,
                        help="size of the crops drawn around each pixel, odd: centred on it (default 41)")
    parser.add_argument("--svd-crop", type=int, default=24,
                        help="size of the crop whose full Jacobian is decomposed (default 24; 0 skips it)")
    parser.add_argument("--channel", type=int, default=0, help="output channel (color models: 0 R, 1 G, 2 B)")
    parser.add_argument("--seed", type=int, default=0, help="the noise seed (default 0)")
    parser.add_argument("--allow-bias", action="store_true",
                        help="explain a model that is not bias-free (its filters then miss the constant part)")
    parser.add_argument("--backend", choices=("auto", "matplotlib", "pillow"), default="auto",
                        help="how figures are drawn (default: matplotlib when installed, else Pillow)")
    # argparse reads "-1,5" as an option, and --pixels would then say it got no pixel; a leading
    # space keeps it a value (int() ignores it), so the pixel check names it instead.
    argv = [" " + a if re.fullmatch(r"-\d+,-?\d+", a) else a for a in (sys.argv[1:] if argv is None else argv)]
    args = parser.parse_args(argv)
    bad = [s for s in [args.sigma, *args.sigmas] if not np.isfinite(s) or s < 0]
    if bad:
        parser.error(f"noise levels must be finite and >= 0 on the 0-255 scale, got {bad}")
    if args.window < 3 or args.window % 2 == 0:
        parser.error(f"--window must be an odd number >= 3 (the crop is centred on the pixel, with as many "
                     f"pixels on each side), got {args.window}")
    if args.svd_crop < 0:
        parser.error(f"--svd-crop must be >= 0 (0 skips the spectrum), got {args.svd_crop}")
    if args.seed < 0:
        parser.error(f"--seed needs an integer >= 0, got {args.seed}")
    if len(set(args.sigmas)) != len(args.sigmas):
        parser.error(f"--sigmas has a noise level twice: {args.sigmas}")
    return args


def _output_files(pixels, svd: bool) -> List[str]:
    """The names `run` writes into the output folder, in order."""
    names = ["noisy.png"] + [f"filter_{i + 1}_r{row}_c{col}.png" for i, (row, col) in enumerate(pixels)]
    return names + (["singular_values.png"] if svd else []) + ["summary.json"]


def _check_outputs(out: Path, image: Path, names: Sequence[str]) -> None:
    """BfcnnError when the output folder cannot be made or an output would replace the input."""
    from bfcnn.errors import BfcnnError
    from bfcnn.io import check_output_folder

    check_output_folder(out)
    for name in names:
        target = out / name
        if target.exists() and os.path.samefile(target, image):
            raise BfcnnError(f"the output {target} would replace the input image; choose another output folder")


def _denoise(model, image: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    return tf.cast(model(tf.constant(image[None]), training=False), tf.float32).numpy()[0]


def run(args: argparse.Namespace) -> dict:
    """Computes and writes everything; returns the summary written to summary.json."""
    from bfcnn.errors import BfcnnError
    from bfcnn.explain import MAX_JACOBIAN_INPUTS, as_model_input, check_pixel, require_bias_free
    from bfcnn.explain.inputs import check_channel
    from bfcnn.explain import plots
    from bfcnn.io import existing_ancestor, read_image
    from bfcnn.zoo import load_model

    backend = plots.resolve_backend(args.backend)
    model = load_model(args.model)
    require_bias_free(model, args.allow_bias)
    channels = int(model.input_shape[-1])
    clean = as_model_input(read_image(args.image, color="gray" if channels == 1 else "rgb"), channels)
    height, width = clean.shape[:2]
    requested = args.pixels or [(height // 2, width // 2)]
    pixels: List[Tuple[int, int]] = [check_pixel(p, height, width) for p in requested]
    check_channel(args.channel, channels)
    if args.svd_crop ** 2 * channels > MAX_JACOBIAN_INPUTS:
        raise BfcnnError(f"--svd-crop {args.svd_crop} gives a Jacobian of {args.svd_crop ** 2 * channels} inputs, more "
                         f"than {MAX_JACOBIAN_INPUTS} (its SVD would take minutes to hours): at most "
                         f"{int((MAX_JACOBIAN_INPUTS // channels) ** 0.5)} for this model")
    final = Path(args.output_directory)
    _check_outputs(final, Path(args.image), _output_files(pixels, bool(args.svd_crop)))
    noise = np.random.default_rng(args.seed).standard_normal(clean.shape).astype(np.float32)
    # a work folder in the output folder or its nearest existing parent; its files are moved
    # into place at the end and it is removed, whatever happens
    out = Path(tempfile.mkdtemp(prefix=".explain-", dir=existing_ancestor(final)))
    try:
        summary = _compute_and_draw(args, model, clean, pixels, noise, out, backend)
        final.mkdir(parents=True, exist_ok=True)
        for name in summary["files"] + ["summary.json"]:
            os.replace(out / name, final / name)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return summary


def _compute_and_draw(args, model, clean, pixels, noise, out: Path, backend: str) -> dict:
    """Computes the filters and spectra, draws the figures and writes summary.json into `out`."""
    from bfcnn.explain import plots

    height, width = clean.shape[:2]

    def noisy_at(sigma):
        return clean + np.float32(sigma) * noise

    summary = {"model": str(args.model), "image": str(args.image), "size": [height, width],
               "pixels": [list(p) for p in pixels], "channel": args.channel, "seed": args.seed,
               "backend": backend, "files": [], "sigmas": {f"{sigma:g}": {} for sigma in args.sigmas}}
    marked = out / "noisy.png"
    plots.marked_image(marked, noisy_at(args.sigma), pixels,
                       title=f"noisy, sigma = {args.sigma:g}", backend=backend)
    summary["files"].append(marked.name)
    _filters(args, model, noisy_at, pixels, out, backend, summary)
    if args.svd_crop:
        _spectrum(args, model, noisy_at, pixels[0], out, backend, summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return summary


def _filters(args, model, noisy_at, pixels, out: Path, backend: str, summary: dict) -> None:
    """One figure per pixel (its filter at each sigma) and the filters' figures in `summary`."""
    from bfcnn.explain import adaptive_filters, crop_around, effective_support, filter_spread, off_centre_limit
    from bfcnn.explain import plots

    columns = {i: [] for i in range(len(pixels))}
    for sigma in args.sigmas:
        noisy = noisy_at(sigma)
        rows = adaptive_filters(model, noisy, pixels, channel=args.channel, allow_bias=args.allow_bias)
        denoised = _denoise(model, noisy)
        entry = []
        for i, (pixel, weights) in enumerate(zip(pixels, rows)):
            output = float(denoised[pixel[0], pixel[1], args.channel])
            applied = float(np.sum(weights.astype(np.float64) * noisy))
            spread = filter_spread(weights, pixel)
            entry.append({"pixel": list(pixel), "output": output, "filter_times_input": applied,
                          "relative_error": abs(output - applied) / max(abs(output), 1e-12),
                          "sum_of_weights": float(weights.sum()), "spread_pixels": spread,
                          "support_pixels": effective_support(weights),
                          "largest_weight": float(np.max(np.abs(weights)))})
            crop_noisy, position = crop_around(noisy, pixel, args.window)
            crop_denoised, _ = crop_around(denoised, pixel, args.window)
            crop_weights, _ = crop_around(weights.sum(axis=-1), pixel, args.window)
            columns[i].append({"noisy": crop_noisy, "denoised": crop_denoised, "weights": crop_weights,
                               "position": position, "limit": off_centre_limit(crop_weights, position),
                               "label": f"sigma {sigma:g}, spread {spread:.1f} px"})
        summary["sigmas"][f"{sigma:g}"]["filters"] = entry
    for i, pixel in enumerate(pixels):
        path = out / f"filter_{i + 1}_r{pixel[0]}_c{pixel[1]}.png"
        plots.filter_figure(path, columns[i], backend=backend,
                            title=f"pixel {i + 1} (row {pixel[0]}, column {pixel[1]}): adaptive filter vs noise")
        summary["files"].append(path.name)


def _spectrum(args, model, noisy_at, pixel, out: Path, backend: str, summary: dict) -> None:
    """The Jacobian's singular values on a crop around `pixel` at each sigma: a figure and `summary`."""
    from bfcnn.explain import crop_around, effective_dimensionality
    from bfcnn.explain import plots

    size = args.svd_crop
    curves, dims = [], []
    for sigma in args.sigmas:
        crop, _ = crop_around(noisy_at(sigma), pixel, size)
        result = effective_dimensionality(model, crop, allow_bias=args.allow_bias, max_inputs=max(crop.size, 1))
        curves.append({"x": np.arange(1, result.size + 1), "y": result.singular_values,
                       "label": f"sigma {sigma:g}: dim {result.dimension:.1f}"})
        dims.append(result.dimension)
        summary["sigmas"][f"{sigma:g}"]["spectrum"] = {
            "crop": list(crop.shape), "dimension_sum_squared_singular_values": result.dimension,
            "trace": result.trace, "largest_singular_value": float(result.singular_values[0]),
            "size": result.size}
    path = out / "singular_values.png"
    second = {"curves": [{"x": list(args.sigmas), "y": dims, "marker": "o"}], "xlabel": "noise sigma",
              "ylabel": "effective dimension (sum of s^2)"}
    plots.line_figure(path, curves, "index", "singular value of A(y)", backend=backend, second=second,
                      title=f"Jacobian spectrum on a {size}x{size} crop around pixel 1")
    summary["files"].append(path.name)


def _print(summary: dict) -> None:
    print(f"{'sigma':>6} {'pixel':>10} {'spread px':>10} {'support px':>10} {'sum w':>8} {'rel. err':>9}  dimension")
    for sigma, entry in summary["sigmas"].items():
        dimension = entry.get("spectrum", {}).get("dimension_sum_squared_singular_values")
        for j, f in enumerate(entry["filters"]):
            dim = f"{dimension:.1f}" if dimension is not None and j == 0 else ""
            print(f"{sigma:>6} {str(tuple(f['pixel'])):>10} {f['spread_pixels']:10.2f} {f['support_pixels']:10.1f} "
                  f"{f['sum_of_weights']:8.3f} "
                  f"{f['relative_error']:9.1e}  {dim}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from bfcnn.errors import BfcnnError

    try:
        summary = run(args)
    except (BfcnnError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    _print(summary)
    print(f"wrote {', '.join(summary['files'])} and summary.json to {args.output_directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
