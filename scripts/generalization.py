"""Generalization beyond the training noise range: a bias-free model against its with-bias twin.

    python scripts/generalization.py --bias-free runs/generalization_bf --with-bias runs/generalization_bias

Mohan et al. (ICLR 2020) train DnCNN with and without biases on noise
of std in [0, 55] and test beyond it: at sigma 70 on BSD68 the bias-free network holds
24.88 dB while the with-bias one drops to 22.12 dB. This script scores two trained runs
(the twins of `pipelines/generalization_bf.yaml` and `pipelines/generalization_bias.yaml`)
on Set12 at sigma 10, 20, ..., 100 by the evaluation protocol (`bfcnn.evaluation`: the
same fixed-seed noise for both models, not clipped; outputs clipped and rounded; mean PSNR
over images), prints the table, writes a plot (`--plot`) and puts the table into
`docs/generalization.md` between its markers (`--markdown`; `--markdown ''` skips it).

A run is a model directory (its latest checkpoint, restored into a float32 model built from
its config.yaml; `--weights final` takes model.keras instead), a `.keras` file or a zoo name.
"""

import argparse
import datetime
import os
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from doc_tables import save_figure  # noqa: E402  (same folder)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

BEGIN, END = "<!-- generalization:begin -->", "<!-- generalization:end -->"
DEFAULT_DATASET = ROOT.parent / "shared" / "datasets" / "val" / "Set12"
# Mohan et al., ICLR 2020: DnCNN trained on [0, 55], BSD68, sigma 70.
PAPER = ("BF-DnCNN 24.88 dB vs DnCNN 22.12 dB at sigma 70 on BSD68 (trained on [0, 55]; Mohan, Kadkhodaie, "
         "Simoncelli & Fernandez-Granda, \"Robust and interpretable blind image denoising via bias-free "
         "convolutional neural networks\", ICLR 2020)")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bias-free", required=True, help="the bias-free run (model directory, .keras or zoo name)")
    parser.add_argument("--with-bias", required=True, help="its with-bias twin")
    parser.add_argument("--dataset", default=str(DEFAULT_DATASET), help="clean test images (default Set12)")
    parser.add_argument("--sigmas", type=float, nargs="+", default=[10, 20, 30, 40, 50, 60, 70, 80, 90, 100])
    parser.add_argument("--training-range", type=float, nargs=2, default=[0, 55], metavar=("LOW", "HIGH"))
    parser.add_argument("--weights", choices=("latest", "final"), default="latest",
                        help="latest: the run's latest checkpoint (default); final: its model.keras")
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results as JSON here")
    parser.add_argument("--plot", default=str(ROOT / "docs" / "figures" / "generalization.png"))
    parser.add_argument("--markdown", default=str(ROOT / "docs" / "generalization.md"))
    return parser.parse_args(argv)


def load_run(name_or_path: str, weights: str):
    """(float32 model, description) for a model directory, a .keras file or a zoo name."""
    import bfcnn

    path = Path(name_or_path)
    checkpoints = path / "checkpoints"
    if path.is_dir() and weights == "latest" and checkpoints.is_dir():
        import keras
        import tensorflow as tf

        from bfcnn.config import load_config

        latest = tf.train.latest_checkpoint(str(checkpoints))
        if latest is None:
            raise SystemExit(f"no checkpoint in {checkpoints}")
        config = load_config(path / "config.yaml")
        keras.mixed_precision.set_global_policy("float32")
        model = bfcnn.build_model(config.model)
        step = tf.Variable(0, dtype=tf.int64)
        tf.train.Checkpoint(model=model, step=step).restore(latest).expect_partial()
        return model, f"{path} ({Path(latest).name}, step {int(step.numpy())})"
    if path.is_dir():
        final = path / "model.keras"
        if not final.exists():
            raise SystemExit(f"{path} has neither checkpoints/ nor model.keras")
        return bfcnn.load_model(str(final)), f"{final}"
    return bfcnn.load_model(name_or_path), name_or_path


def table(results, sigmas, training_range):
    low, high = training_range
    lines = ["| sigma | noisy | bias-free | with bias | bias-free - with bias |", "|---|---|---|---|---|"]
    for sigma in sigmas:
        row = results[float(sigma)]
        bf, wb = row["bias_free"]["psnr"], row["with_bias"]["psnr"]
        mark = "" if low <= sigma <= high else " (outside training)"
        lines.append(f"| {sigma:g}{mark} | {row['noisy']['psnr']:.2f} | {bf:.2f} | {wb:.2f} | {bf - wb:+.2f} |")
    return "\n".join(lines)


def plot(path, results, sigmas, training_range, labels):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.2, 4.0), dpi=90)
    axes = figure.add_subplot()
    axes.axvspan(*training_range, color="0.9", label=f"training range [{training_range[0]:g}, {training_range[1]:g}]")
    for key, style in (("bias_free", "o-"), ("with_bias", "s--"), ("noisy", ":")):
        axes.plot(sigmas, [results[float(s)][key]["psnr"] for s in sigmas], style, label=labels[key])
    axes.set(xlabel="noise sigma (0-255)", ylabel="PSNR, dB (mean over images)",
             title="Generalization beyond the training noise range")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    FigureCanvasAgg(figure)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_figure(figure, path)  # whole or not at all


def marker_problem(path: Path):
    """Why the table cannot go into `path` (missing, or not one BEGIN line followed by one END line), or None."""
    if not path.is_file():
        return f"--markdown {path}: no such file"
    text = path.read_text(encoding="utf-8")
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        return f"--markdown {path} needs one '{BEGIN}' line and, after it, one '{END}' line"
    return None


def update_markdown(path: Path, block: str) -> None:
    """Replaces the text between the markers in `path` with `block`, atomically (`atomic_path`)."""
    from bfcnn.errors import BfcnnError
    from bfcnn.io import atomic_path

    problem = marker_problem(path)
    if problem:
        raise BfcnnError(problem)
    head, rest = path.read_text(encoding="utf-8").split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    with atomic_path(path) as tmp:
        tmp.write_text(f"{head}{BEGIN}\n{block}\n{END}{tail}", encoding="utf-8")


def main(argv=None):
    args = parse_args(argv)
    from bfcnn.evaluate import dataset_files, model_denoiser
    from bfcnn.evaluation import evaluate_denoisers
    from bfcnn.io import read_image, write_json
    from bfcnn.models import is_bias_free

    problem = marker_problem(Path(args.markdown)) if args.markdown else None
    if problem:  # before minutes of measuring, not after
        print(f"error: {problem}", file=sys.stderr)
        return 2

    models, descriptions, labels = {}, {}, {"noisy": "noisy input"}
    for key, run in (("bias_free", args.bias_free), ("with_bias", args.with_bias)):
        model, description = load_run(run, args.weights)
        models[key], descriptions[key] = model, description
        labels[key] = f"{'bias-free' if key == 'bias_free' else 'with bias'}: {description}"
        print(f"{key}: {description}, {model.count_params()} parameters, is_bias_free={is_bias_free(model)}")
    if not is_bias_free(models["bias_free"]) or is_bias_free(models["with_bias"]):
        print("warning: --bias-free should be bias-free and --with-bias should not be", file=sys.stderr)

    root, files = dataset_files(args.dataset)
    files = files[: args.max_images] if args.max_images else files
    images = [read_image(f, color="gray") for f in files]
    denoisers = {key: model_denoiser(model, 1) for key, model in models.items()}
    results = evaluate_denoisers(denoisers, images, args.sigmas, seed=args.seed, metrics=("psnr",))
    text = table(results, args.sigmas, args.training_range)
    print(f"\n{len(images)} images from {args.dataset}, noise seed {args.seed}\n")
    print(text)

    if args.json:  # atomic
        write_json(args.json, {f"{s:g}": {k: {m: v for m, v in r.items() if m != "per_image"} for k, r in row.items()}
                               for s, row in results.items()})
    if args.plot:
        plot(args.plot, results, args.sigmas, args.training_range, labels)
        print(f"wrote {args.plot}")
    if args.markdown:
        markdown = Path(args.markdown)
        figure = os.path.relpath(args.plot, markdown.parent) if args.plot else None
        block = "\n".join([
            f"Measured {datetime.date.today().isoformat()} by `python scripts/generalization.py --bias-free "
            f"{args.bias_free} --with-bias {args.with_bias}` on {len(images)} images of `{args.dataset}` "
            f"(noise seed {args.seed}, PSNR by `bfcnn.evaluation`). Trained on sigma in "
            f"[{args.training_range[0]:g}, {args.training_range[1]:g}].",
            "",
            f"- bias-free: {descriptions['bias_free']}",
            f"- with bias: {descriptions['with_bias']}",
            "",
            text,
            "",
            f"The paper's anchor: {PAPER}.",
            *(["", f"![PSNR against sigma]({figure})"] if figure else []),
        ])
        update_markdown(markdown, block)
        print(f"updated {markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
