"""Model options side by side: trains one variant of a small base pipeline per option and scores Set12.

    python scripts/compare_options.py --dry-run                # the plan; builds each model, trains nothing
    python scripts/compare_options.py --steps 3000             # train (or reuse) every variant, print the table
    python scripts/compare_options.py --steps 3000 --write     # also put the table into docs/options.md
    python scripts/compare_options.py --variants baseline prelu --steps 500

Each variant is `pipelines/options_base.yaml` with one or two `model` keys changed (see
VARIANTS and docs/options.md); everything else, the training seed included, is the same.
A variant trains with bfcnn's trainer into `--runs/<variant>` (resumed if it was interrupted,
reused if it already has `--steps` steps); its final `model.keras` (not the best by
validation, so Set12 does not pick the weights) is scored with `bfcnn.evaluation`'s protocol
on the full images: noise from a fixed seed, not clipped, output clipped and rounded, mean
of per-image PSNR. "seconds" is the trainer's own training time (summary.json), without
start-up, so it compares the options' cost when the machine is otherwise idle.
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# variant -> the model keys it changes (values as they would be written in the YAML file).
VARIANTS = {
    "baseline": {},
    "soft_orthonormal": {"kernel_regularizer": {"type": "soft_orthonormal", "weight": 1.0e-4}},
    "center_away": {"kernel_regularizer": {"type": "center_away", "l2": 1.0e-4, "sigma": 0.25}},
    "block_gate": {"gate": "block"},
    "squeeze_excite": {"gate": "squeeze_excite"},
    "sparsity": {"sparsity": 0.1},
    "stochastic_depth": {"stochastic_depth": 0.1},
    "prelu": {"activation": "prelu"},
}
sys.path.insert(0, str(Path(__file__).resolve().parent))
from doc_tables import check_markers, write_measured_table  # noqa: E402  (same folder)

BEGIN, END = "<!-- options-table:begin -->", "<!-- options-table:end -->"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=str(ROOT / "pipelines" / "options_base.yaml"),
                        help="the base pipeline config every variant changes")
    parser.add_argument("--steps", type=int, default=None, help="train.steps of every variant (default: the base's)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="VARIANT",
                        help=f"which variants (default all: {', '.join(VARIANTS)})")
    parser.add_argument("--runs", default=str(ROOT / "runs" / "options"), help="folder of the variants' runs")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="a config override for every variant, as in python -m bfcnn.train")
    parser.add_argument("--dataset", default=str(ROOT.parent / "shared" / "datasets" / "val" / "Set12"),
                        help="clean evaluation images")
    parser.add_argument("--sigma", type=float, default=25.0)
    parser.add_argument("--seed", type=int, default=0, help="the evaluation noise seed")
    parser.add_argument("--max-images", type=int, default=None, help="score the first N images only")
    parser.add_argument("--write", nargs="?", const=str(ROOT / "docs" / "options.md"), default=None,
                        metavar="MARKDOWN", help="write the table between the options-table markers of this "
                                                 "file (default docs/options.md)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and build each model; train nothing")
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    return args


def _yaml_value(value) -> str:
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**6).strip()
    return text.removesuffix("...").strip()


def variant_overrides(variant: str) -> list:
    """The `--set` expressions of a variant's model keys."""
    return [f"model.{key}={_yaml_value(value)}" for key, value in VARIANTS[variant].items()]


def plan(args):
    """[(variant, run directory, config, state)], state one of 'finished', 'resume', 'new'."""
    from bfcnn.config import load_config

    common = list(args.overrides)
    if args.steps is not None:
        common.append(f"train.steps={args.steps}")
        warmup = load_config(args.base, args.overrides).optimizer.schedule.warmup_steps
        if warmup > args.steps // 10:  # a short check keeps the warm-up a tenth of the run
            common.append(f"optimizer.schedule.warmup_steps={args.steps // 10}")
    runs = []
    for variant in args.variants:
        config = load_config(args.base, common + variant_overrides(variant), require_inputs=True)
        directory = Path(args.runs) / variant
        runs.append((variant, directory, config, _state(directory, config.train.steps)))
    return runs


def _state(directory: Path, steps: int) -> str:
    summary = directory / "summary.json"
    if summary.exists() and (directory / "model.keras").exists():
        done = json.loads(summary.read_text()).get("steps", 0)
        if done == steps:
            return "finished"
        if done > steps:
            raise SystemExit(f"error: {directory} holds a run of {done} steps, more than the {steps} asked for; "
                             "use another --runs folder")
    return "resume" if (directory / "checkpoints").exists() else "new"


def train(config, directory: Path, source: str) -> None:
    import keras

    from bfcnn.training.loop import Trainer

    keras.backend.clear_session()
    Trainer(config, directory, source=source).run()


def evaluate(runs, args):
    """{variant: {"psnr", "seconds", "steps", "parameters"}}, the noisy input's PSNR and the image count."""
    import keras

    import bfcnn
    from bfcnn.evaluate import dataset_files, model_denoiser
    from bfcnn.evaluation import NOISY, evaluate_denoisers
    from bfcnn.io import read_image

    keras.mixed_precision.set_global_policy("float32")  # the trainer leaves its policy set; score in float32
    _, files = dataset_files(args.dataset)
    files = files[: args.max_images] if args.max_images else files
    images = [read_image(f, "gray") for f in files]
    rows, noisy = {}, None
    for variant, directory, _, _ in runs:
        model = bfcnn.load_model(str(directory / "model.keras"))
        results = evaluate_denoisers({variant: model_denoiser(model, 1)}, images, [args.sigma], seed=args.seed,
                                     metrics=("psnr",))[float(args.sigma)]
        summary = json.loads((directory / "summary.json").read_text())
        rows[variant] = {"psnr": results[variant]["psnr"], "seconds": summary["elapsed_seconds"],
                         "steps": summary["steps"], "parameters": int(model.count_params())}
        noisy = results[NOISY]["psnr"]
    return rows, noisy, len(images)


def table(rows, noisy_psnr: float, count: int, args) -> str:
    dataset = Path(args.dataset).name
    lines = [f"| variant | model keys | parameters | {dataset} PSNR (sigma {args.sigma:g}) | vs baseline | seconds |",
             "|---|---|---:|---:|---:|---:|"]
    baseline = rows.get("baseline", {}).get("psnr")
    for variant, r in rows.items():
        keys = ", ".join(f"`{k}: {_yaml_value(v)}`" for k, v in VARIANTS[variant].items()) or "(base)"
        delta = f"{r['psnr'] - baseline:+.2f}" if baseline is not None else "-"
        lines.append(f"| {variant} | {keys} | {r['parameters']:,} | {r['psnr']:.2f} | {delta} | {r['seconds']:.0f} |")
    steps = sorted({r["steps"] for r in rows.values()})
    lines += ["", f"{', '.join(f'{s:,}' for s in steps)} training steps each; noisy input {noisy_psnr:.2f} dB; "
                  f"mean over {count} images."]
    return "\n".join(lines)


def _check_markers(path: Path) -> str:
    return check_markers(path, BEGIN, END)


def write_table(path: Path, text: str, command: str) -> None:
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
    if args.write:
        _check_markers(Path(args.write))  # before hours of training, not after
    runs = plan(args)
    for variant, directory, config, state in runs:
        print(f"{variant:>16}: {' '.join(variant_overrides(variant)) or '(base)'} -> {directory} "
              f"({state}, {config.train.steps} steps)", flush=True)
    if args.dry_run:
        import bfcnn
        from bfcnn.evaluate import dataset_files

        for variant, _, config, _ in runs:
            print(f"{variant:>16}: {bfcnn.build_model(config.model).count_params():,} parameters")
        _, files = dataset_files(args.dataset)
        count = min(len(files), args.max_images) if args.max_images else len(files)
        print(f"would evaluate {count} images of {args.dataset} at sigma {args.sigma:g} (seed {args.seed})")
        if args.write:
            print(f"would write the table into {args.write}")
        return 0
    for variant, directory, config, state in runs:
        if state != "finished":
            print(f"training {variant} into {directory}", flush=True)
            train(config, directory, f"{args.base} ({variant})")
    rows, noisy_psnr, count = evaluate(runs, args)
    text = table(rows, noisy_psnr, count, args)
    print(text)
    if args.write:
        command = "python scripts/compare_options.py" + "".join(
            f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
        write_table(Path(args.write), text, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
