"""`python -m bfcnn.evaluate --model NAME_OR_PATH --dataset DIR --sigma 15 25 50 [--baseline bm3d nlm]`.

Scores a denoiser on a folder of clean images with the protocol behind published tables
(`bfcnn.evaluation`): fixed-seed Gaussian noise, not clipped or rounded; the output clipped
and rounded to uint8; PSNR against the uint8 clean image, averaged over images; plus SSIM.
Baselines (`bfcnn.baselines`) run side by side on the same noisy images.

`--metric mae` prints the original bfcnn's noise-level table instead: the mean absolute
error of the noisy and of the denoised image for noise std 1, 5, 10, 20, ..., 80.

`--dataset skimage` evaluates on scikit-image's bundled sample photographs (no download).
Exit codes: 0 done, 2 bad input (a missing or empty dataset, an unknown model or baseline).
"""

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from bfcnn.errors import BfcnnError
from bfcnn.inference import PRECISIONS
from bfcnn.io import output_problem, write_json  # noqa: F401  (bfcnn.evaluate.write_json, as before)

PSNR_SIGMAS = (15.0, 25.0, 50.0)
# The noise levels of the original bfcnn README's table.
MAE_SIGMAS = (1.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0)
# scikit-image's bundled natural photographs (`--dataset skimage`), all in the package, none
# downloaded: the gray ones are gray, the rest RGB; drawings, charts and test patterns left out.
SKIMAGE_PHOTOS = (
    "astronaut.png", "brick.png", "camera.png", "chelsea.png", "coffee.png", "coins.png",
    "grass.png", "gravel.png", "moon.png", "page.png", "rocket.jpg",
)
SKIMAGE_DATASET = "skimage"
PROTOCOL = (
    "noisy = clean + sigma * N(0, 1) from noise_seed(seed, image index, sigma), not clipped or rounded; "
    "estimates clipped to [0, 255] and rounded to uint8; PSNR / SSIM / MAE against the uint8 clean "
    "image, mean over images; the noisy image's MAE is taken before rounding"
)
EIGHT_BIT = "; --eight-bit: the noisy image clipped to [0, 255] and rounded before the denoisers see it"
MODEL_KEY = "model"


def ensemble_key(size: int) -> str:
    """The results key of the model's row averaged over `size` rotations and flips (`--ensemble`)."""
    return f"model_x{size}"


def strength_key(strength: float) -> str:
    """The results key of the model's row at `--strength` (`bfcnn.denoise(strength=)`)."""
    return f"model_strength_{strength:g}"


def known_noise_key(factor: float = 1.0) -> str:
    """The results key of the model's row told the noise level times `factor` (`--known-noise`)."""
    return f"{MODEL_KEY}_given_sigma" + ("" if factor == 1 else f"_x{factor:g}")


def given_sigma(denoise, factor: float = 1.0):
    """`denoise(noisy, sigma)` told the noise level (times `factor`, to see what a wrong level
    costs): its change cut to what noise of that std explains, as
    `bfcnn.denoise(noise_std=factor * sigma)` does (`bfcnn.inference.noise_strength`)."""
    from bfcnn.inference import blend, noise_strength

    def told(noisy, sigma):
        out = np.array(denoise(noisy, sigma), np.float32)  # a copy: blend works in place
        return blend(out, noisy, noise_strength(out, np.asarray(noisy, np.float32), factor * sigma))

    return told


def last_output(denoise):
    """`denoise(noisy, sigma)` remembering its last result: called again on the same noisy array
    (the same object, which it holds on to, so its id is not reused) it returns that result."""
    last = {}

    def denoised(noisy, sigma):
        if last.get("noisy") is not noisy or last.get("sigma") != sigma:
            last.update(noisy=noisy, sigma=sigma, output=denoise(noisy, sigma))
        return last["output"]

    return denoised


def is_model_row(key: str) -> bool:
    """Whether a results key is a row of the evaluated model (as is, x8 or at a strength), not a baseline."""
    return key == MODEL_KEY or key.startswith(MODEL_KEY + "_")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bfcnn.evaluate",
        description="Scores a denoiser (and classical baselines on the same noisy images) on a folder of clean images.",
    )
    parser.add_argument("--model", required=True, help="a zoo name, a .keras file, or a model / export folder")
    parser.add_argument("--dataset", required=True,
                        help=f"a folder of clean images (searched recursively), 'pkg:module/dir', or "
                             f"'{SKIMAGE_DATASET}' for scikit-image's sample photographs")
    parser.add_argument("--sigma", type=float, nargs="+", default=None, metavar="SIGMA",
                        help="noise standard deviations on the 0-255 scale (default 15 25 50; "
                             "with --metric mae 1 5 10 20 30 40 50 60 70 80)")
    parser.add_argument("--baseline", nargs="*", default=[], metavar="NAME",
                        help="classical denoisers to run side by side: bm3d, nlm")
    parser.add_argument("--out", help="write the results as JSON to this file")
    parser.add_argument("--save-images", metavar="DIR",
                        help="write clean | noisy | model | baselines side-by-side PNGs here")
    parser.add_argument("--max-images", type=int, default=None, metavar="N", help="only the first N images")
    parser.add_argument("--metric", choices=("psnr", "mae"), default="psnr",
                        help="psnr: PSNR and SSIM (default); mae: the original bfcnn's noise-level table")
    parser.add_argument("--seed", type=int, default=0, help="the noise seed (default 0)")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32",
                        help="run the model's convolutions in bfloat16 (bfcnn.models.precision.to_bfloat16) "
                             "to measure what that costs; default float32")
    parser.add_argument("--ensemble", type=int, nargs="*", default=None, choices=(2, 4, 8), metavar="N",
                        help="also score the model averaged over N rotations and flips (rows 'xN', N times "
                             "slower): 8 (all of them, what a bare --ensemble scores), 4 or 2; several N may be given")
    parser.add_argument("--strength", nargs="+", type=float, default=[], metavar="S",
                        help="also score the model at these strengths, 0 to 1: input + S * (output - input), "
                             "as bfcnn.denoise(strength=S) gives")
    parser.add_argument("--known-noise", nargs="*", type=float, default=None, metavar="F",
                        help="also score the model told each level's noise std, as the baselines are: "
                             "bfcnn.denoise(noise_std=sigma) (row 'given sigma'; with --eight-bit the std of "
                             "the added noise); factors F > 0 tell it F times the std instead (one row each), "
                             "to see what a wrong level costs")
    parser.add_argument("--eight-bit", action="store_true",
                        help="clip the noisy images to [0, 255] and round them, as an 8-bit photograph holds them, "
                             "before any denoiser sees them (not the published protocol, which leaves them unclipped)")
    parser.add_argument("--color", choices=("gray", "rgb"), default=None,
                        help="read images as gray or RGB (default: the model's input channels)")
    args = parser.parse_args(argv)
    if args.sigma is None:
        args.sigma = list(MAE_SIGMAS if args.metric == "mae" else PSNR_SIGMAS)
    bad = [s for s in args.sigma if not np.isfinite(s) or s < 0]
    if bad:
        parser.error(f"--sigma needs finite values >= 0 on the 0-255 scale, got {bad}")
    if args.max_images is not None and args.max_images < 1:
        parser.error(f"--max-images needs a number >= 1, got {args.max_images}")
    if args.known_noise is not None:
        bad = [f for f in args.known_noise if not (np.isfinite(f) and f > 0)]
        if bad:
            parser.error(f"--known-noise needs factors > 0 (1: the true std), got {bad}")
        args.known_noise = list(dict.fromkeys(args.known_noise or [1.0]))
    bad = [s for s in args.strength if not 0 <= s <= 1]
    if bad:
        parser.error(f"--strength needs values from 0 (the input) to 1 (the model's output), got {bad}")
    if args.seed < 0:
        parser.error(f"--seed needs an integer >= 0, got {args.seed}")
    # Checked before any work: a path that cannot be written would otherwise fail at the end.
    for flag, path, folder in (("--out", args.out, False), ("--save-images", args.save_images, True)):
        problem = path and output_problem(Path(path), folder)
        if problem:
            parser.error(f"{flag} {path}: {problem}")
    return args


def _model_channels(model) -> Optional[int]:
    """The model's input channels (1 or 3), or None when the model does not say."""
    try:
        channels = model.inputs[0].shape[-1]
    except (AttributeError, IndexError, TypeError, ValueError):
        try:
            channels = model.input_shape[-1]
        except (AttributeError, IndexError, TypeError, ValueError):
            return None
    return int(channels) if channels in (1, 3) else None


def model_denoiser(model, channels: int) -> Callable[[np.ndarray, float], np.ndarray]:
    """The model as a baseline-style function (noisy [H, W, C], sigma) -> estimate, in graph mode.

    One `tf.function` with input signature [1, None, None, C] serves every image size; input
    and output are float32 (a mixed-precision model's output is cast back). Sigma is unused:
    the models are blind.
    """
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([1, None, None, channels], tf.float32)])
    def infer(batch):
        return tf.cast(model(batch, training=False), tf.float32)

    def denoise(noisy: np.ndarray, sigma: float) -> np.ndarray:
        return infer(tf.constant(np.asarray(noisy, np.float32)[None]))[0].numpy()

    return denoise


def dataset_files(dataset: str) -> Tuple[Path, List[Path]]:
    """The dataset's root folder and its image files, sorted.

    Raises:
        BfcnnError: the folder does not exist or holds no image (the message names the path).
    """
    from bfcnn.io import list_images, resolve_directory

    if dataset == SKIMAGE_DATASET:
        root = resolve_directory("pkg:skimage/data")
        files = [root / name for name in SKIMAGE_PHOTOS if (root / name).is_file()]
        if not files:
            raise BfcnnError(f"no scikit-image sample photographs in {str(root)!r} ({', '.join(SKIMAGE_PHOTOS)})")
        return root, files
    return resolve_directory(dataset), list_images(dataset)


def side_by_side(panels: Sequence[np.ndarray], gap: int = 4) -> np.ndarray:
    """uint8 [H, W, C] images joined left to right with white gaps."""
    height, channels = panels[0].shape[0], panels[0].shape[-1]
    spacer = np.full((height, gap, channels), 255, np.uint8)
    parts = []
    for panel in panels:
        parts += [panel, spacer]
    return np.concatenate(parts[:-1], axis=1)


class _Progress:
    """A one-line progress bar on stderr; on a non-terminal, a line at every tenth of the work."""

    def __init__(self, total: int, stream=None, width: int = 30):
        self.total, self.done, self.width = max(1, total), 0, width
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.perf_counter()
        self._reported = 0
        self._last = 0

    def step(self, label: str) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.start
        eta = elapsed / self.done * (self.total - self.done)
        filled = int(self.width * self.done / self.total)
        line = (f"[{'=' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} {label}"
                f"  {elapsed:.0f}s elapsed, {eta:.0f}s left")
        if self.tty:  # padded so that a shorter line hides the previous one
            self.stream.write("\r" + line.ljust(self._last) + ("\n" if self.done == self.total else ""))
            self._last = len(line)
        elif self.done == self.total or self.done * 10 // self.total > self._reported:
            self._reported = self.done * 10 // self.total
            self.stream.write(line + "\n")
        self.stream.flush()


def _fmt(value: Optional[float], digits: int) -> str:
    if value is None:
        return "-"
    return "inf" if value == float("inf") else f"{value:.{digits}f}"


def format_table(results: Dict[float, Dict[str, dict]], labels: Dict[str, str], metric: str) -> str:
    """A Markdown table: one row per sigma, the noisy image and each method in columns.

    Args:
        results: `bfcnn.evaluation.evaluate_denoisers` output.
        labels: method key -> column label, in column order (the noisy row excluded).
        metric: 'psnr' (PSNR and SSIM columns) or 'mae'.
    """
    if metric == "mae":
        header = ["noise std", "noisy MAE"] + [f"{label} MAE" for label in labels.values()]
    else:
        header = ["sigma", "noisy PSNR"]
        for label in labels.values():
            header += [f"{label} PSNR", f"{label} SSIM"]
    header += [f"{label} s/img" for label in labels.values()]
    rows = []
    for sigma, entry in results.items():
        if metric == "mae":
            row = [f"{sigma:g}", _fmt(entry["noisy"]["mae"], 2)] + [_fmt(entry[k]["mae"], 2) for k in labels]
        else:
            row = [f"{sigma:g}", _fmt(entry["noisy"]["psnr"], 2)]
            for key in labels:
                row += [_fmt(entry[key]["psnr"], 2), _fmt(entry[key]["ssim"], 4)]
        rows.append(row + [_fmt(entry[k]["seconds_per_image"], 3) for k in labels])
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |",
             "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"]
    lines += ["| " + " | ".join(c.rjust(w) for c, w in zip(row, widths)) + " |" for row in rows]
    return "\n".join(lines)


def format_paired(results: Dict[float, Dict[str, dict]], labels: Dict[str, str], reference: str) -> str:
    """Lines 'model - other' per sigma: mean PSNR difference, its standard error, images won.

    An image where either PSNR is infinite (an output identical to the clean image, e.g. a
    baseline at sigma 0) has no difference to average: it is left out and counted, as in
    `scripts/results_table.py`; where both are infinite on every image the line says so.

    Args:
        results: `bfcnn.evaluation.evaluate_denoisers` output with per-image PSNR (an
            infinite one may be None, as the JSON file stores it).
        labels: method key -> label; every method but `reference` is compared with it.
        reference: the key the others are compared with (the model).
    """
    from bfcnn.evaluation import paired_difference

    def scores(values) -> np.ndarray:
        return np.array([np.inf if v is None else v for v in values], np.float64)

    lines = []
    for key, label in labels.items():
        if key == reference:
            continue
        for sigma, entry in results.items():
            ours, theirs = scores(entry[reference]["per_image"]["psnr"]), scores(entry[key]["per_image"]["psnr"])
            finite = np.isfinite(ours) & np.isfinite(theirs)
            skipped = int((~finite).sum())
            head = f"{labels[reference]} - {label} at sigma {sigma:g}: "
            if np.isinf(ours).all() and np.isinf(theirs).all():
                lines.append(head + f"identical: both infinite PSNR (output identical to the clean image) on "
                                    f"all {ours.size} images")
                continue
            note = (f"; {skipped} image(s) with an infinite PSNR (output identical to the clean image) "
                    "left out") if skipped else ""
            if not finite.any():
                lines.append(head + f"no image with two finite PSNRs{note}")
                continue
            d = paired_difference(ours[finite], theirs[finite])
            lines.append(head + f"{d['mean']:+.3f} dB PSNR (standard error {d['standard_error']:.3f}; better on "
                         f"{d['better']} of {d['images']} images{note})")
    return "\n".join(lines)


def format_report(results: Dict[float, Dict[str, dict]], labels: Dict[str, str], metric: str) -> str:
    """`format_table`, then for PSNR each other method's paired lines against the model (`MODEL_KEY`)."""
    report = format_table(results, labels, metric)
    if metric == "psnr" and len(labels) > 1:
        report += "\n" + format_paired(results, labels, MODEL_KEY)
    return report


def precision_label(model, precision: str = "float32") -> str:
    """`label_of(model)`, followed by the precision unless it is float32."""
    return label_of(model) + ("" if precision == "float32" else f" {precision}")


def label_of(model) -> str:
    """The column label of a `--model` argument: a .keras file's stem, else the name or path as given."""
    return Path(str(model)).stem if str(model).endswith(".keras") else str(model)


def _machine() -> dict:
    import tensorflow as tf

    from importlib.metadata import PackageNotFoundError, version

    # The load average says whether the timings were taken on a busy machine.
    info = {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
            "load_average": os.getloadavg()[0], "python": platform.python_version(),
            "tensorflow": tf.__version__}
    for package in ("bm3d", "scikit-image"):
        try:
            info[package] = version(package)
        except PackageNotFoundError:
            pass
    return info


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from bfcnn.baselines import get_baseline
    from bfcnn.evaluation import evaluate_denoisers, to_uint8
    from bfcnn.inference import in_precision
    from bfcnn.io import read_image, write_image
    from bfcnn.zoo import load_model

    try:
        baselines = {name: get_baseline(name) for name in dict.fromkeys(args.baseline)}
        root, files = dataset_files(args.dataset)
        files = files[: args.max_images]
        model = in_precision(load_model(args.model), args.precision)
        channels = _model_channels(model)
        if channels is None and args.color is None:
            raise BfcnnError(f"cannot tell the input channels of model {args.model!r}: pass --color gray or rgb")
        color = args.color or ("gray" if channels == 1 else "rgb")
        if channels is not None and channels != (1 if color == "gray" else 3):
            raise BfcnnError(f"--color {color} does not fit model {args.model!r}, which takes {channels} channel(s)")
        images = [read_image(f, color) for f in files]
    except (BfcnnError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    names = [str(f.relative_to(root)) if f.is_relative_to(root) else str(f) for f in files]
    denoise = model_denoiser(model, 1 if color == "gray" else 3)
    denoise(images[0].astype(np.float32), 0.0)  # traces the graph, so that timings exclude it
    denoisers = {MODEL_KEY: denoise}
    model_label = precision_label(args.model, args.precision)
    labels = {MODEL_KEY: model_label}
    if args.ensemble is not None:
        from bfcnn.inference import self_ensemble

        for size in sorted(set(args.ensemble or [8])):
            denoisers[ensemble_key(size)] = lambda noisy, sigma, n=size: self_ensemble(
                lambda image: denoise(image, sigma), n)(noisy)
            labels[ensemble_key(size)] = f"{model_label} x{size}"
    if args.strength or args.known_noise:
        from bfcnn.inference import blend

        denoised = denoisers[MODEL_KEY] = last_output(denoise)  # its output blended, not computed again
        for strength in dict.fromkeys(args.strength):  # blend works in place: on a copy of the shared output
            denoisers[strength_key(strength)] = lambda noisy, sigma, s=strength: blend(
                np.array(denoised(noisy, sigma), np.float32), noisy, s)
            labels[strength_key(strength)] = f"{model_label} strength {strength:g}"
        for factor in args.known_noise or []:
            denoisers[known_noise_key(factor)] = given_sigma(denoised, factor)
            labels[known_noise_key(factor)] = f"{model_label} given sigma" + ("" if factor == 1 else f" x{factor:g}")
    denoisers.update(baselines)
    labels.update({name: name for name in baselines})
    metrics = ("mae",) if args.metric == "mae" else ("psnr", "ssim")

    progress = _Progress(len(args.sigma) * len(images))
    save_dir = Path(args.save_images) if args.save_images else None

    def after_image(sigma, index, clean, noisy, estimates):
        progress.step(f"sigma {sigma:g} {names[index]}")
        if save_dir is not None:
            panels = [clean, to_uint8(noisy)] + [to_uint8(estimates[key]) for key in denoisers]
            stem = Path(names[index]).stem
            write_image(save_dir / f"{index + 1:03d}_{stem}_sigma{sigma:g}.png", side_by_side(panels))

    results = evaluate_denoisers(denoisers, images, args.sigma, seed=args.seed, metrics=metrics,
                                 callback=after_image, eight_bit=args.eight_bit)
    what = "MAE on the 0-255 scale" if args.metric == "mae" else "PSNR dB and SSIM"
    noisy_kind = "; noisy images clipped and rounded to 8 bits" if args.eight_bit else ""
    print(f"{args.dataset}: {len(images)} images ({color}), model {model_label}, seed {args.seed}{noisy_kind}; "
          f"{what}, mean over images; s/img = seconds per image")
    print(format_report(results, labels, args.metric))
    if args.out:
        write_json(args.out, {
            "model": str(args.model), "dataset": str(args.dataset), "color": color, "metric": args.metric,
            "seed": args.seed, "sigmas": [float(s) for s in args.sigma], "baselines": list(baselines),
            "precision": args.precision, "strengths": [float(s) for s in dict.fromkeys(args.strength)],
            "known_noise": args.known_noise or [],
            "protocol": PROTOCOL + (EIGHT_BIT if args.eight_bit else ""), "images": names,
            "results": {f"{sigma:g}": entry for sigma, entry in results.items()},
            "machine": _machine(), "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        })
        print(f"wrote {args.out}", file=sys.stderr)
    if save_dir is not None:
        print(f"wrote {len(images) * len(args.sigma)} side-by-side images to {save_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
