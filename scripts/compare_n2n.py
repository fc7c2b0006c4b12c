"""Noise2Noise against clean targets: trains both twins and scores them on Set12 at sigma 25.

    python scripts/compare_n2n.py                  # train (or reuse) both runs, print the table
    python scripts/compare_n2n.py --write-docs     # also put the table into docs/training.md
    python scripts/compare_n2n.py --dry-run        # say what would be trained and evaluated

Lehtinen et al. ("Noise2Noise: Learning image restoration without clean data", ICML 2018)
show that with an L2 loss and zero-mean noise, training on a second noisy copy of each patch
has the same minimizer as training on the clean patch, and report nearly the same PSNR. The
twins `pipelines/n2n_gray.yaml` (`train.target: noisy`) and `pipelines/n2n_gray_clean.yaml`
(`train.target: clean`) differ in nothing else. A run is trained with `python -m bfcnn.train`
into `--runs/<pipeline name>` (resumed if it was interrupted, reused if finished), then its
final `model.keras` (not the best by validation, so Set12 does not pick the weights) is scored
with `bfcnn.evaluation`'s protocol on the full images: noise from a fixed seed, not clipped,
output clipped and rounded, mean of per-image PSNR.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TWINS = (("noisy", ROOT / "pipelines" / "n2n_gray.yaml"), ("clean", ROOT / "pipelines" / "n2n_gray_clean.yaml"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from doc_tables import check_markers, write_measured_table  # noqa: E402  (same folder)

BEGIN, END = "<!-- n2n-table:begin -->", "<!-- n2n-table:end -->"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=str(ROOT / "runs"), help="folder of the two model directories")
    parser.add_argument("--steps", type=int, default=None,
                        help="train.steps for both (a quick check); the run folders then end in _steps<N> so a "
                             "short run never resumes into the real one")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="a config override for both runs, as in python -m bfcnn.train")
    parser.add_argument("--dataset", default=str(ROOT.parent / "shared" / "datasets" / "val" / "Set12"),
                        help="clean evaluation images")
    parser.add_argument("--sigma", type=float, default=25.0)
    parser.add_argument("--seed", type=int, default=0, help="the evaluation noise seed")
    parser.add_argument("--max-images", type=int, default=None, help="score the first N images only")
    parser.add_argument("--write-docs", nargs="?", const=str(ROOT / "docs" / "training.md"), default=None,
                        metavar="MARKDOWN", help="write the table between the n2n-table markers of this file "
                                                 "(default docs/training.md)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan; train and evaluate nothing")
    return parser.parse_args(argv)


def plan(args):
    """[(target, pipeline path, run directory, config, state)], state one of 'finished', 'resume', 'new'."""
    from bfcnn.config import load_config

    overrides = list(args.overrides)
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
        warmup = load_config(TWINS[0][1], args.overrides).optimizer.schedule.warmup_steps
        if warmup > args.steps // 10:  # a short check keeps the warm-up a tenth of the run
            overrides.append(f"optimizer.schedule.warmup_steps={args.steps // 10}")
    runs = []
    for target, pipeline in TWINS:
        config = load_config(pipeline, overrides, require_inputs=True)
        if config.train.target != target:
            raise SystemExit(f"error: {pipeline} has train.target={config.train.target!r}, expected {target!r}")
        name = pipeline.stem + (f"_steps{args.steps}" if args.steps is not None else "")
        directory = Path(args.runs) / name
        runs.append((target, pipeline, directory, config, _state(directory, config.train.steps)))
    return overrides, runs


def _state(directory: Path, steps: int) -> str:
    summary = directory / "summary.json"
    if summary.exists() and (directory / "model.keras").exists() and \
            json.loads(summary.read_text()).get("steps", 0) >= steps:
        return "finished"
    return "resume" if (directory / "checkpoints").exists() else "new"


def train(pipeline: Path, directory: Path, overrides) -> None:
    command = [sys.executable, "-m", "bfcnn.train", "--pipeline-config", str(pipeline),
               "--model-directory", str(directory)]
    for expression in overrides:
        command += ["--set", expression]
    print("+ " + " ".join(command), flush=True)
    if subprocess.run(command, cwd=ROOT).returncode != 0:
        raise SystemExit(f"error: training {pipeline.name} failed (rerun this script to resume it)")


def evaluate(runs, args):
    """{target: {"psnr", "ssim", "steps"}} and the noisy input's PSNR."""
    import bfcnn
    from bfcnn.evaluate import dataset_files, model_denoiser
    from bfcnn.evaluation import NOISY, evaluate_denoisers
    from bfcnn.io import read_image

    _, files = dataset_files(args.dataset)
    files = files[: args.max_images] if args.max_images else files
    images = [read_image(f, "gray") for f in files]
    denoisers = {f"{target}_target": model_denoiser(bfcnn.load_model(str(directory / "model.keras")), 1)
                 for target, _, directory, _, _ in runs}
    results = evaluate_denoisers(denoisers, images, [args.sigma], seed=args.seed)[float(args.sigma)]
    rows = {}
    for target, _, directory, _, _ in runs:
        summary = json.loads((directory / "summary.json").read_text())
        scores = results[f"{target}_target"]
        rows[target] = {"psnr": scores["psnr"], "ssim": scores["ssim"],
                        "steps": summary["steps"]}
    return rows, results[NOISY]["psnr"], len(images)


def table(rows, noisy_psnr: float, count: int, args) -> str:
    dataset = Path(args.dataset).name
    lines = [f"| training target | steps | {dataset} PSNR (sigma {args.sigma:g}) | SSIM |",
             "|---|---:|---:|---:|"]
    for target, label in (("noisy", "noisy (Noise2Noise)"), ("clean", "clean")):
        r = rows[target]
        lines.append(f"| {label} | {r['steps']:,} | {r['psnr']:.2f} | {r['ssim']:.4f} |")
    lines += ["", f"Noisy input: {noisy_psnr:.2f} dB. Noisy minus clean target: "
                  f"{rows['noisy']['psnr'] - rows['clean']['psnr']:+.2f} dB over {count} images. Both runs "
                  "do the same work per step (wall-clock time is left out: it measures the "
                  "machine's load, not the method)."]
    return "\n".join(lines)


def write_docs(path: Path, text: str, command: str) -> None:
    write_measured_table(path, BEGIN, END, text, command)


def main(argv=None) -> int:
    from bfcnn.errors import BfcnnError

    try:
        return run(argv)
    except BfcnnError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def run(argv=None) -> int:
    args = parse_args(argv)
    overrides, runs = plan(args)
    for target, pipeline, directory, config, state in runs:
        print(f"{target:>5} target: {pipeline.relative_to(ROOT)} -> {directory} ({state}, "
              f"{config.train.steps} steps)")
    if args.dry_run:
        from bfcnn.evaluate import dataset_files

        _, files = dataset_files(args.dataset)
        count = min(len(files), args.max_images) if args.max_images else len(files)
        print(f"would evaluate {count} images of {args.dataset} at sigma {args.sigma:g} (seed {args.seed})")
        if args.write_docs:
            print(f"would write the table into {args.write_docs}")
        return 0
    if args.write_docs:
        check_markers(Path(args.write_docs), BEGIN, END)  # before the training, not after
    for _, pipeline, directory, _, state in runs:
        if state != "finished":
            train(pipeline, directory, overrides)
    rows, noisy_psnr, count = evaluate(runs, args)
    text = table(rows, noisy_psnr, count, args)
    print(text)
    if args.write_docs:
        command = "python scripts/compare_n2n.py" + "".join(f" {a}" for a in (argv if argv is not None
                                                                               else sys.argv[1:]))
        write_docs(Path(args.write_docs), text, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
