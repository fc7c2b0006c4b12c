"""Prints the README's zoo table from the model cards (`--write` replaces it in README.md, atomically).

Exit codes: 0 done, 2 a file without one `<!-- zoo-table: ... -->` line followed by one `<!-- /zoo-table -->` line.
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BEGIN, END = "<!-- zoo-table:", "<!-- /zoo-table -->"


def table() -> str:
    cards = [json.loads(p.read_text()) for p in sorted((ROOT / "pretrained").glob("*.json"))]
    if not cards:
        return "_The zoo is empty: no model has been trained yet._\n"
    sigmas = sorted({s for c in cards for s in c["validation"]["results"]}, key=float)
    head = ["model", "channels", "parameters", "FLOPs / pixel", "ms / MP (Keras)", "ms / MP (TFLite)",
            "validation set"] + [f"PSNR σ={s} (model / BM3D)" for s in sigmas] + ["steps", "training time"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in cards:
        results = c["validation"]["results"]
        cells = [f"`{c['name']}`", str(c["channels"]), f"{c['parameters']:,}", f"{c['flops_per_pixel'] / 1e3:.0f}K",
                 f"{c['speed'].get('keras_ms_per_megapixel', float('nan')):.0f}",
                 f"{c['speed'].get('tflite_fp32_ms_per_megapixel', float('nan')):.0f}",
                 f"{c['validation']['dataset']} ({c['validation']['images']})"]
        for s in sigmas:
            row = results.get(s, {})
            model, bm3d = row.get(c["name"], {}).get("psnr"), row.get("bm3d", {}).get("psnr")
            cells.append(f"{model:.2f} / {bm3d:.2f}" if model and bm3d else (f"{model:.2f}" if model else "-"))
        hours = c["training"]["wall_time_seconds"] / 3600
        cells += [f"{c['training']['steps']:,}", f"{hours:.1f} h"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    loads = sorted(c["speed"].get("load_average_1min", float("nan")) for c in cards)
    lines.append("PSNR in dB by the protocol of `../shared/datasets/README.md` (noise not clipped, output "
                 "rounded, mean over the validation images, their count in brackets, seed 0), BM3D run side by "
                 "side on the same noisy images; all models blind. Published for comparison: DnCNN 32.86 / 30.44 / "
                 "27.18 on Set12 at sigma 15 / 25 / 50 (one model per sigma) and its blind version DnCNN-B, trained "
                 "on sigma in [0, 55], 32.68 / 30.36 / 27.21 (Zhang et al., TIP 2017, Table III); FFDNet 34.66 / "
                 "32.35 / 29.18 on McMaster, given the sigma (Zhang et al., TIP 2018). Speed: median "
                 "of 5 runs on a 512x512 image on the 2-core CPU, 1-minute load average "
                 f"{loads[0]:.1f} to {loads[-1]:.1f} when timed (from the cards; the timing itself accounts for "
                 "about 1 of it, so above 2 means another job shared the cores). Generated from the model cards by `python scripts/zoo_table.py --write`; "
                 "the cards by `scripts/make_zoo_entry.py`.")
    return "\n".join(lines) + "\n"


def write_table(path: Path, text: str) -> None:
    """Puts `text` between the line that starts with BEGIN (kept) and the END line of `path`, atomically.

    Raises:
        BfcnnError: the file is missing or lacks one BEGIN line followed by one END line.
    """
    from bfcnn.errors import BfcnnError
    from bfcnn.io import atomic_path

    if not path.is_file():
        raise BfcnnError(f"{path}: no such file")
    content = path.read_text(encoding="utf-8")
    if content.count(BEGIN) != 1 or content.count(END) != 1 or content.index(BEGIN) > content.index(END):
        raise BfcnnError(f"{path} needs one '{BEGIN} ...' line and, after it, one '{END}' line")
    start = content.find("\n", content.index(BEGIN)) + 1
    if start == 0 or start > content.index(END):
        raise BfcnnError(f"{path}: the '{BEGIN} ...' line and the '{END}' line must be separate lines")
    with atomic_path(path) as tmp:
        tmp.write_text(content[:start] + text + content[content.index(END):], encoding="utf-8")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="replace the table in README.md (or --readme)")
    parser.add_argument("--readme", default=str(ROOT / "README.md"), help="the file --write updates")
    args = parser.parse_args(argv)
    text = table()
    if not args.write:
        print(text)
        return 0
    from bfcnn.errors import BfcnnError

    try:
        write_table(Path(args.readme), text)
    except BfcnnError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
