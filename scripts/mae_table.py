"""The original bfcnn's noise-level table for every zoo model: MAE of the noisy and the denoised image.

For noise std 1, 5, 10, 20, 30, 40, 50, 60, 70, 80 on the 0-255 scale, the mean absolute
error of the noisy image and of each zoo model's output, by the evaluation protocol of
`bfcnn.evaluation` (noise drawn with seed 0 and not clipped; estimates clipped and rounded to
uint8; the noisy image's MAE taken before rounding; mean over images). Gray models are
scored on scikit-image's sample photographs (as gray) and on Set12; color models on the
sample photographs and McMaster18. A cell is starred where the denoised MAE is above the
noisy one, which the zoo's models must never do.

A first row, std 0, gives each model's MAE on the clean image itself: how far it moves a
reference that it reads as noisy (film grain, fine texture). It is not starred (any change
is above 0), but it is the part of the std-1 error that no noise caused.

    python scripts/mae_table.py [--write README.md] [--models NAME ...] [--max-images N]

`--write` replaces the text between the `<!-- mae-table:begin/end -->` markers of the file. The exit
status is 1 when any model is worse than its noisy input at any std.
"""

import argparse
import os
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


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=None, help="zoo names (default: every model)")
    parser.add_argument("--max-images", type=int, default=None, help="the first N images of each dataset")
    parser.add_argument("--write", default=None, metavar="MARKDOWN", help="write the tables between the markers")
    return parser.parse_args(argv)


def dataset_label(dataset: str) -> str:
    return "scikit-image photographs" if dataset == "skimage" else Path(dataset).name


def measure(names, channels, dataset, max_images):
    """{sigma: {"noisy": mae, name: mae, ...}} and the image count, for models of one channel count."""
    import bfcnn
    from bfcnn.evaluate import MAE_SIGMAS, dataset_files, model_denoiser
    from bfcnn.evaluation import evaluate_denoisers
    from bfcnn.io import read_image

    _, files = dataset_files(dataset)
    files = files[:max_images]
    images = [read_image(f, "gray" if channels == 1 else "rgb") for f in files]
    denoisers = {name: model_denoiser(bfcnn.load_model(name), channels) for name in names}
    results = evaluate_denoisers(denoisers, images, (CLEAN_ROW,) + tuple(MAE_SIGMAS), seed=0, metrics=("mae",))
    table = {sigma: {key: row["mae"] for key, row in rows.items()} for sigma, rows in results.items()}
    return table, len(images)


def markdown(table, names, title) -> tuple:
    """A markdown table and the number of cells where the model is worse than the noisy image."""
    worse = 0
    lines = [title, "", "| noise std | noisy | " + " | ".join(f"`{n}`" for n in names) + " |",
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
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import bfcnn

    if args.write:
        check_markers(Path(args.write), BEGIN, END)  # before minutes of measuring, not after
    names = args.models or bfcnn.list_models()
    by_channels = {}
    for name in names:
        by_channels.setdefault(int(bfcnn.model_info(name)["channels"]), []).append(name)
    sections, worse = [], 0
    for channels in sorted(by_channels):
        for dataset in DATASETS[channels]:
            table, count = measure(by_channels[channels], channels, dataset, args.max_images)
            kind = "gray" if channels == 1 else "color"
            text, bad = markdown(table, by_channels[channels],
                                 f"MAE on the 0-255 scale, {kind} models, {dataset_label(dataset)} ({count} images):")
            print(text + "\n")
            sections.append(text)
            worse += bad
    if worse:
        print(f"{worse} cell(s) where a model's MAE is above the noisy image's (starred)", file=sys.stderr)
    if args.write:
        note = ("Noise not clipped, seed 0; denoised images clipped and rounded to uint8, the noisy one "
                "not rounded; mean over images. A star marks a model worse than its input. The "
                "std-0 row is each model run on the clean image: what it changes in a reference "
                "it reads as noisy.")
        command = "python scripts/mae_table.py --write " + args.write
        write_measured_table(Path(args.write), BEGIN, END, "\n\n".join(sections + [note]), command)
    return 1 if worse else 0


if __name__ == "__main__":
    sys.exit(main())
