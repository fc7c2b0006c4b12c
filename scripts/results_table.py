"""Prints the table of one or more `python -m bfcnn.evaluate --out` files, with paired differences.

BM3D takes about a minute per color image and noise level here, so a full validation set is
quicker as one evaluation per sigma run side by side (the noise depends on the seed, image and
sigma only, so the split changes nothing); this merges their results into one table:

    for s in 15 25 50; do python -m bfcnn.evaluate --model pyramid_color_m \\
        --dataset ../shared/datasets/val/McMaster18 --sigma $s --baseline bm3d --out r$s.json & done; wait
    python scripts/results_table.py r15.json r25.json r50.json

Exit codes: 0 printed, 2 files that do not belong together (other images, model or seed).
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bfcnn.evaluate import MODEL_KEY, format_report, label_of  # noqa: E402

SAME = ("model", "dataset", "color", "metric", "seed", "images")


def merge(documents):
    """One results dict {sigma: entry} from several --out documents of the same evaluation."""
    first = documents[0]
    results = {}
    for document in documents:
        for key in SAME:
            if document.get(key) != first.get(key):
                raise ValueError(f"the files differ in {key!r}: {first.get(key)!r} and {document.get(key)!r}")
        for sigma, entry in document["results"].items():
            if float(sigma) in results:
                raise ValueError(f"sigma {sigma} is in more than one file")
            results[float(sigma)] = entry
    return dict(sorted(results.items()))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="bfcnn.evaluate --out JSON files")
    args = parser.parse_args(argv)
    try:
        documents = [json.loads(Path(f).read_text()) for f in args.files]
        results = merge(documents)
    except (OSError, ValueError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    first = documents[0]
    label = label_of(first["model"])
    keys = [k for k in next(iter(results.values())) if k != "noisy"]
    labels = {k: (label if k == MODEL_KEY else k) for k in keys}
    print(f"{first['dataset']}: {len(first['images'])} images ({first['color']}), model {label}, seed {first['seed']}")
    print(format_report(results, labels, first["metric"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
