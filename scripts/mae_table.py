"""The original bfcnn's noise-level table for every zoo model: MAE of the noisy and the denoised image.

For noise std 1, 5, 10, 20, 30, 40, 50, 60, 70, 80 on the 0-255 scale, the mean absolute
error of the noisy image and of each zoo model's output, by the evaluation protocol of
`bfcnn.evaluation` (noise drawn with seed 0 and not clipped; estimates clipped and rounded to
uint8; the noisy image's MAE taken before rounding; mean over images). Gray models are
scored on scikit-image's sample photographs (as gray) and on Set12; color models on the
sample photographs and McMaster18. A cell is starred where the denoised MAE is above the
noisy one, which the zoo's models must never do.

`--known-noise` adds a column per model told each std, as BM3D is
(`bfcnn.denoise(noise_std=sigma)`: the model's change cut to what that noise explains).

A first row, std 0, gives each model's MAE on the clean image itself: how far it moves a
reference that it reads as noisy (film grain, fine texture). It is not starred (any change
is above 0), but it is the part of the std-1 error that no noise caused.

    python scripts/mae_table.py [--write README.md] [--models NAME ...] [--max-images N] [--known-noise]

`--write` replaces the text between the `<!-- mae-table:begin/end -->` markers of the file with
the tables of every zoo model (it is refused with a subset of `--models`, which would drop the
other tables) and the command line that measured them. The exit status is 1 when any model is
worse than its noisy input at any std, 2 for bad arguments (an unknown model, N < 1).
"""

import argparse
import os
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATASETS = {1: ("skimage", str(ROOT.parent / "shared/datasets/val/Set12")),
            3: ("skimage", str(ROOT.parent / "shared/datasets/val/McMaster18"))}
CLEAN_ROW = 0.0  # the clean image itself: reported, never starred
BEGIN, END = "<!-- mae-table:begin -->", "<!-- mae-table:end -->"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from doc_tables import check_markers, write_measured_table  # noqa: E402  (same folder)

from bfcnn.cli import positive_int  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=None, help="zoo names (default: every model)")
    parser.add_argument("--max-images", type=positive_int, default=None, metavar="N",
                        help="the first N images of each dataset (N >= 1)")
    parser.add_argument("--known-noise", action="store_true",
                        help="also a column per model told the noise std (bfcnn.denoise(noise_std=sigma))")
    parser.add_argument("--write", default=None, metavar="MARKDOWN",
                        help="write the tables of every model between the markers (not with a subset of --models)")
    return parser.parse_args(argv)


def dataset_label(dataset: str) -> str:
    return "scikit-image photographs" if dataset == "skimage" else Path(dataset).name


def title(kind: str, dataset: str, count: int, gray: int) -> str:
    """A table's title line; for color models it says how many of the images are gray ones
    (the same on all three channels), which test no color."""
    images = f"{count} images" + (f"; {gray} of them gray, the same on all three channels" if gray else "")
    return f"MAE on the 0-255 scale, {kind} models, {dataset_label(dataset)} ({images}):"


def gray_count(images) -> int:
    """How many color images [H, W, 3] have three equal channels."""
    return sum(1 for image in images
               if image.shape[-1] == 3 and (image[..., :1] == image[..., 1:]).all())


GIVEN = " given σ"


def given(name: str) -> str:
    """The column of model `name` told the noise std (`--known-noise`)."""
    return name + GIVEN


def header(column: str) -> str:
    """A column's header: the model's name as code, then what it was told."""
    name = column[: -len(GIVEN)] if column.endswith(GIVEN) else column
    return f"`{name}`" + column[len(name):]


def measure(names, channels, dataset, max_images, known_noise=False):
    """{sigma: {"noisy": mae, name: mae, ...}}, the image count and how many of the images are gray
    ones in three channels, for models of one channel count; with `known_noise` also the
    column `given(name)` of each model told the noise std."""
    import bfcnn
    from bfcnn.evaluate import MAE_SIGMAS, dataset_files, given_sigma, last_output, model_denoiser
    from bfcnn.evaluation import evaluate_denoisers
    from bfcnn.io import read_image

    _, files = dataset_files(dataset)
    files = files[:max_images]
    images = [read_image(f, "gray" if channels == 1 else "rgb") for f in files]
    denoisers = {}
    for name in names:
        denoisers[name] = last_output(model_denoiser(bfcnn.load_model(name), channels))
        if known_noise:  # the model's output of the same image, cut to the noise
            denoisers[given(name)] = given_sigma(denoisers[name])
    results = evaluate_denoisers(denoisers, images, (CLEAN_ROW,) + tuple(MAE_SIGMAS), seed=0, metrics=("mae",))
    table = {sigma: {key: row["mae"] for key, row in rows.items()} for sigma, rows in results.items()}
    return table, len(images), gray_count(images)


def markdown(table, names, title) -> tuple:
    """A markdown table and the number of cells where the model is worse than the noisy image."""
    worse = 0
    lines = [title, "", "| noise std | noisy | " + " | ".join(header(n) for n in names) + " |",
             "|---" * (len(names) + 2) + "|"]
    for sigma, row in table.items():
        cells = []
        for name in names:
            bad = sigma != CLEAN_ROW and row[name] > row["noisy"]
            worse += bad
            cells.append(f"{row[name]:.2f}" + (" *" if bad else ""))
        label = "0 (clean input)" if sigma == CLEAN_ROW else f"{sigma:g}"
        lines.append(f"| {label} | {row['noisy']:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines), worse


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import bfcnn
    from bfcnn.errors import BfcnnError

    try:
        names = args.models or bfcnn.list_models()
        by_channels = {}
        for name in names:
            by_channels.setdefault(int(bfcnn.model_info(name)["channels"]), []).append(name)
        if args.write:
            if set(names) != set(bfcnn.list_models()):
                raise BfcnnError(f"--write replaces the tables of every zoo model; --models "
                                 f"{' '.join(names)} would drop the others (leave out --models to write)")
            check_markers(Path(args.write), BEGIN, END)  # before minutes of measuring, not after
        sections, worse = [], 0
        for channels in sorted(by_channels):
            for dataset in DATASETS[channels]:
                table, count, gray = measure(by_channels[channels], channels, dataset, args.max_images,
                                             args.known_noise)
                kind = "gray" if channels == 1 else "color"
                columns = [c for n in by_channels[channels] for c in ([n, given(n)] if args.known_noise else [n])]
                text, bad = markdown(table, columns,
                                     title(kind, dataset, count, gray if channels == 3 else 0))
                print(text + "\n")
                sections.append(text)
                worse += bad
    except BfcnnError as error:  # an unknown model, a missing dataset
        print(f"error: {error}", file=sys.stderr)
        return 2
    if worse:
        print(f"{worse} cell(s) where a model's MAE is above the noisy image's (starred)", file=sys.stderr)
    if args.write:
        note = ("Noise not clipped, seed 0; denoised images clipped and rounded to uint8, the noisy one "
                "not rounded; mean over images. A star marks a model worse than its input. The "
                "std-0 row is each model run on the clean image: what it changes in a reference "
                "it reads as noisy." + (" A column \"given σ\" is the model told the noise std, as "
                                         "`bfcnn.denoise(noise_std=sigma)` does." if args.known_noise else ""))
        command = "python scripts/mae_table.py " + shlex.join(argv)
        write_measured_table(Path(args.write), BEGIN, END, "\n\n".join(sections + [note]), command)
    return 1 if worse else 0


if __name__ == "__main__":
    sys.exit(main())
