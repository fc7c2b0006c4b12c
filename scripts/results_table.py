"""Prints the table of one or more `python -m bfcnn.evaluate --out` files, with paired differences.

BM3D takes about a minute per color image and noise level here, so a full validation set is
quicker as one evaluation per sigma run side by side (the noise depends on the seed, image and
sigma only, so the split changes nothing); this merges their results into one table:

    for s in 15 25 50; do python -m bfcnn.evaluate --model pyramid_color_m \\
        --dataset ../shared/datasets/val/McMaster18 --sigma $s --baseline bm3d --out r$s.json & done; wait
    python scripts/results_table.py r15.json r25.json r50.json

BM3D's output depends only on the noisy image and sigma, so its scores from an earlier
evaluation of the same images, seed and sigmas serve for a new model: `--baselines-from` takes
the baseline rows of other `--out` files (checking, image by image, that their noisy input
scored the same, i.e. that the noisy images are the same, and that their folder has the same name
however the path was written) and pairs the new model against them:

    python -m bfcnn.evaluate --model runs/R/model.keras --dataset ../shared/datasets/val/McMaster18 \
        --sigma 15 25 50 --out new.json
    python scripts/results_table.py new.json --baselines-from r15.json r25.json r50.json

`--compare-with` pairs the model against the model row of another evaluation of the same
noisy images instead, e.g. bfloat16 inference against float32:

    python -m bfcnn.evaluate --model pyramid_gray_m --dataset ../shared/datasets/val/Set12 --out f32.json
    python -m bfcnn.evaluate --model pyramid_gray_m --dataset ../shared/datasets/val/Set12 \
        --precision bfloat16 --out bf16.json
    python scripts/results_table.py bf16.json --compare-with f32.json

An infinite PSNR (an output identical to the clean image, null in the JSON file) shows as inf;
the paired differences leave such images out and say how many.

Exit codes: 0 printed, 2 files that do not belong together (other images, model or seed).
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bfcnn.evaluate import (MODEL_KEY, format_report, format_table, is_model_row, label_of,  # noqa: E402
                            precision_label)
from bfcnn.evaluation import NOISY  # noqa: E402

SAME = ("model", "precision", "dataset", "color", "metric", "seed", "images")
DEFAULTS = {"precision": "float32"}  # files written before `--precision` existed


def comparable(key, document):
    """What must match of `document[key]`: a dataset by its folder's name only (`../val/Set12/`,
    `../val/Set12` and an absolute path are one folder; the images are checked one by one)."""
    value = document.get(key, DEFAULTS.get(key))
    return Path(str(value)).name if key == "dataset" and value is not None else value


def first_difference(first, other, keys):
    """The first of `keys` whose value differs between two --out documents, else None."""
    return next((key for key in keys if comparable(key, first) != comparable(key, other)), None)


def scores(values) -> np.ndarray:
    """Per-image PSNRs as floats; a null is an infinite PSNR (an output identical to the clean
    image, e.g. a baseline at sigma 0 returning its input), which strict JSON cannot hold."""
    return np.array([np.inf if v is None else v for v in values], dtype=np.float64)


def restore_infinite(results) -> None:
    """Turns the nulls of the PSNR entries of `results` back into inf, in place (see `scores`)."""
    for entry in results.values():
        for row in entry.values():
            if isinstance(row, dict) and "psnr" in row:
                if row["psnr"] is None:
                    row["psnr"] = float("inf")
                if "psnr" in row.get("per_image", {}):
                    row["per_image"]["psnr"] = scores(row["per_image"]["psnr"]).tolist()


def paired_lines(results, labels) -> str:
    """`bfcnn.evaluate.format_paired` against the model: over the images where both PSNRs are
    finite (an image with an infinite PSNR has no difference to average; a note counts them)."""
    from bfcnn.evaluate import format_paired

    return format_paired(results, labels, MODEL_KEY)


def merge(documents):
    """One results dict {sigma: entry} from several --out documents of the same evaluation."""
    first = documents[0]
    results = {}
    for document in documents:
        key = first_difference(first, document, SAME)
        if key is not None:
            raise ValueError(f"the files differ in {key!r}: {first.get(key)!r} and {document.get(key)!r}")
        for sigma, entry in document["results"].items():
            if float(sigma) in results:
                raise ValueError(f"sigma {sigma} is in more than one file")
            results[float(sigma)] = entry
    return dict(sorted(results.items()))


def model_label(document) -> str:
    """The model's column label: its name, and the precision when it is not float32."""
    return precision_label(document["model"], document.get("precision", "float32"))


def borrow_rows(results, documents, first, flag: str, rows) -> None:
    """Copies into `results` rows of other evaluations of the same noisy images.

    `rows(sigma_entry, document)` gives the {column label: row} to copy from one sigma's entry
    of the merged `documents`; labels already in `results` are kept.

    Raises:
        ValueError: the documents are not of the same images, color, metric and seed, a sigma
            of `results` is missing from them, or an image's noisy score differs (other noise).
    """
    if not documents:
        return
    borrowed = merge(documents)
    key = first_difference(first, documents[0], [k for k in SAME if k not in ("model", "precision")])
    if key is not None:
        raise ValueError(f"{flag} differs in {key!r}: {first.get(key)!r} and {documents[0].get(key)!r}")
    for sigma, entry in results.items():
        if sigma not in borrowed:
            raise ValueError(f"{flag} has no sigma {sigma:g}")
        other = borrowed[sigma]
        ours, theirs = entry[NOISY]["per_image"], other[NOISY]["per_image"]
        for metric in set(ours) & set(theirs):
            if not np.allclose(scores(ours[metric]), scores(theirs[metric]), rtol=0, atol=1e-9):
                raise ValueError(f"{flag}: the noisy images at sigma {sigma:g} differ from these "
                                 f"({metric} per image), so their rows saw other noise")
        for name, row in rows(other, documents[0]).items():
            entry.setdefault(name, row)


def add_baselines(results, documents, first) -> None:
    """The baseline rows (BM3D, ...) of other evaluations of the same noisy images, into `results`."""
    borrow_rows(results, documents, first, "--baselines-from",
                lambda entry, _: {k: v for k, v in entry.items() if not is_model_row(k) and k != NOISY})


def add_compared(results, documents, first) -> None:
    """The model row of other evaluations of the same noisy images, labelled by their model and
    precision, into `results`."""
    def rows(entry, document):
        if first_difference(first, document, ("model", "precision")) is None:
            raise ValueError(f"--compare-with is an evaluation of the same model and precision "
                             f"({document['model']}, {document.get('precision', 'float32')})")
        precision = document.get("precision", "float32")
        if document["model"] == first["model"]:  # the same model in another precision: name it
            label = f"{label_of(document['model'])} {precision}"
        elif label_of(document["model"]) == label_of(first["model"]):  # runs/a/model.keras, runs/b/model.keras
            label = document["model"] + ("" if precision == "float32" else f" {precision}")
        else:
            label = model_label(document)
        return {label: entry[MODEL_KEY]}

    borrow_rows(results, documents, first, "--compare-with", rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="bfcnn.evaluate --out JSON files")
    parser.add_argument("--baselines-from", nargs="+", default=[], metavar="FILE",
                        help="--out files of the same images and seed whose baseline rows to pair against")
    parser.add_argument("--compare-with", nargs="+", default=[], metavar="FILE",
                        help="--out files of the same images and seed whose model row to pair against "
                             "(another model, or the same one in another --precision)")
    args = parser.parse_args(argv)
    try:
        documents = [json.loads(Path(f).read_text()) for f in args.files]
        results = merge(documents)
        add_baselines(results, [json.loads(Path(f).read_text()) for f in args.baselines_from], documents[0])
        add_compared(results, [json.loads(Path(f).read_text()) for f in args.compare_with], documents[0])
    except (OSError, ValueError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    first = documents[0]
    label = model_label(first)
    keys = [k for k in next(iter(results.values())) if k != "noisy"]
    labels = {k: (label if k == MODEL_KEY else k) for k in keys}
    print(f"{first['dataset']}: {len(first['images'])} images ({first['color']}), model {label}, seed {first['seed']}")
    if first["metric"] != "psnr":
        print(format_report(results, labels, first["metric"]))
        return 0
    restore_infinite(results)
    print(format_table(results, labels, "psnr"))
    if len(labels) > 1:
        print(paired_lines(results, labels))
    return 0


if __name__ == "__main__":
    sys.exit(main())
