"""Scale-equivariant N3Net against the plain one: same pipeline, same steps, scored on Set12.

    python scripts/compare_n3.py --steps 600                 # train (or reuse) both twins, print the table
    python scripts/compare_n3.py --steps 600 --write         # also put the table into docs/n3.md

The twins are `pipelines/n3net_gray.yaml` as it is (`model.scale_equivariant: true`, the N3
temperature scales with the image so the whole network stays homogeneous) and with
`model.scale_equivariant: false` (the temperature of Ploetz & Roth, NeurIPS 2018, which does
not scale). Each trains with `python -m bfcnn.train` into `--runs/n3net_gray_se` and
`--runs/n3net_gray_plain` (resumed if interrupted, reused once it has `--steps` steps); the
final `model.keras` (not the best by validation) is scored by `bfcnn.evaluation`'s protocol on
the full images (noise from a fixed seed, not clipped; output clipped and rounded; mean PSNR).
The homogeneity column is `max |f(2y) - 2 f(y)| / max |2 f(y)|` on a noisy Set12 crop in float32.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from doc_tables import check_markers, write_measured_table  # noqa: E402  (same folder)

BEGIN, END = "<!-- n3-se-table:begin -->", "<!-- n3-se-table:end -->"
TWINS = (("se", True), ("plain", False))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", default=str(ROOT / "pipelines" / "n3net_gray.yaml"))
    parser.add_argument("--steps", type=int, default=None, help="train.steps of both twins (default: the pipeline's)")
    parser.add_argument("--runs", default=str(ROOT / "runs"), help="folder of the twins' model directories")
    parser.add_argument("--dataset", default=str(ROOT.parent / "shared" / "datasets" / "val" / "Set12"))
    parser.add_argument("--sigmas", type=float, nargs="+", default=[15.0, 25.0, 50.0])
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument("--write", nargs="?", const=str(ROOT / "docs" / "n3.md"), default=None, metavar="MARKDOWN")
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    return args


def twin_overrides(equivariant: bool, steps) -> list:
    overrides = [f"model.scale_equivariant={'true' if equivariant else 'false'}"]
    return overrides + ([f"train.steps={steps}"] if steps is not None else [])


def train(args, tag: str, equivariant: bool) -> Path:
    from bfcnn.config import load_config

    directory = Path(args.runs) / f"n3net_gray_{tag}"
    steps = load_config(args.pipeline, twin_overrides(equivariant, args.steps)).train.steps
    summary = directory / "summary.json"
    if summary.exists() and json.loads(summary.read_text()).get("steps", 0) >= steps:
        return directory
    command = [sys.executable, "-m", "bfcnn.train", "--pipeline-config", args.pipeline, "--model-directory",
               str(directory)]
    for expression in twin_overrides(equivariant, args.steps):
        command += ["--set", expression]
    print("+ " + " ".join(command), flush=True)
    if subprocess.run(command, cwd=ROOT).returncode != 0:
        raise SystemExit(f"error: training {directory.name} failed (rerun this script to resume it)")
    return directory


def homogeneity_error(model, image: np.ndarray) -> float:
    noisy = image[None, :64, :64].astype(np.float32) + np.random.default_rng(0).normal(0, 25, (1, 64, 64, 1))
    once = 2.0 * model(noisy.astype(np.float32), training=False).numpy()
    twice = model((2.0 * noisy).astype(np.float32), training=False).numpy()
    return float(np.abs(twice - once).max() / np.abs(once).max())


def measure(args, directories):
    import bfcnn
    from bfcnn.evaluate import dataset_files, model_denoiser
    from bfcnn.evaluation import NOISY, evaluate_denoisers
    from bfcnn.io import read_image

    _, files = dataset_files(args.dataset)
    images = [read_image(f, "gray") for f in files[: args.max_images]]
    models = {tag: bfcnn.load_model(str(directory / "model.keras")) for tag, directory in directories.items()}
    results = evaluate_denoisers({tag: model_denoiser(m, 1) for tag, m in models.items()}, images, args.sigmas, seed=0)
    rows = {}
    for tag, directory in directories.items():
        summary = json.loads((directory / "summary.json").read_text())
        rows[tag] = {"psnr": [results[float(s)][tag]["psnr"] for s in args.sigmas], "steps": summary["steps"],
                     "hours": summary["elapsed_seconds"] / 3600.0,
                     "homogeneity": homogeneity_error(models[tag], images[0])}
    noisy = [results[float(s)][NOISY]["psnr"] for s in args.sigmas]
    return rows, noisy, len(images)


def table(rows, noisy, count, args) -> str:
    dataset = Path(args.dataset).name
    sigmas = "σ = " + " / ".join(f"{s:g}" for s in args.sigmas)
    lines = [f"| N3 temperature | steps | training hours | {dataset} PSNR {sigmas} | f(2y) vs 2f(y) |",
             "|---|---:|---:|---|---:|"]
    labels = {"se": "scale-equivariant (`scale_equivariant: true`)", "plain": "plain (Ploetz & Roth)"}
    for tag, row in rows.items():
        psnr = " / ".join(f"{p:.2f}" for p in row["psnr"])
        lines.append(f"| {labels[tag]} | {row['steps']:,} | {row['hours']:.2f} | {psnr} | {row['homogeneity']:.1e} |")
    lines += ["", f"Noisy input {' / '.join(f'{p:.2f}' for p in noisy)} dB; mean over {count} images."]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.write:
        check_markers(Path(args.write), BEGIN, END)  # before the training, not after
    directories = {tag: train(args, tag, equivariant) for tag, equivariant in TWINS}
    rows, noisy, count = measure(args, directories)
    text = table(rows, noisy, count, args)
    print(text)
    if args.write:
        command = "python scripts/compare_n3.py" + (f" --steps {args.steps}" if args.steps else "") + " --write"
        write_measured_table(Path(args.write), BEGIN, END, text, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
