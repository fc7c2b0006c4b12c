"""`python -m bfcnn.export` (also `bfcnn-export`): export a trained denoiser; see `bfcnn.export`.

    python -m bfcnn.export --model-directory runs/x --output-directory out/x --to-tflite \\
        --quantize none fp16 int8 --representative-dir ../shared/datasets/train/Train400

Exit status: 0 exported and verified; 1 verification failed (nothing written); 2 bad
arguments, nothing loadable, an output folder that cannot be written, or a model that
builtin-only TFLite cannot run; 143 stopped by SIGTERM (the temporary folder removed).
"""

import argparse
import os
import sys
from typing import Optional, Sequence

from bfcnn.cli import positive_int
from bfcnn.export.tflite import MIN_FIXED_SIZE

QUANTIZATIONS = ("none", "fp16", "dynamic", "int8")  # bfcnn.export.QUANTIZATIONS, without importing TF


def _tflite_side(text: str) -> int:
    """An argparse `type=` for a `--tflite-size` side: any integer (the least allowed,
    `MIN_FIXED_SIZE`, is checked after parsing, where the message can name the whole size)."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= {MIN_FIXED_SIZE}, got {text!r}") from None


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bfcnn.export",
        description="Export a bfcnn denoiser to SavedModel, .keras and TFLite; every artifact is reloaded and "
                    "checked against the Keras model before the output folder is written.")
    parser.add_argument("--model-directory", "--checkpoint-directory", dest="model_directory", required=True,
                        metavar="D", help="a training run folder (model.keras, best.keras or checkpoints/), an "
                        "export folder, a .keras file or a zoo name; a zoo name wins over a file or folder of that "
                        "name here (with a warning): write ./NAME for the folder (--checkpoint-directory: older "
                        "name)")
    parser.add_argument("--output-directory", required=True, metavar="O",
                        help="the export folder; replaced if it holds a previous export")
    parser.add_argument("--to-tflite", action="store_true",
                        help="also write TFLite files (implied by --quantize and --tflite-size)")
    parser.add_argument("--quantize", nargs="+", choices=QUANTIZATIONS, metavar="MODE",
                        help="TFLite variants besides the float32 model.tflite, which is always written: "
                             "fp16, dynamic, int8 (none: model.tflite only, the default)")
    parser.add_argument("--tflite-size", type=_tflite_side, nargs="+", metavar="N",
                        help="TFLite files for one input size, N (square) or H W, each at least "
                             f"{MIN_FIXED_SIZE} (the files run in tiles overlapping by half that): sized ahead, "
                             "which makes graphs with shape arithmetic (N3 blocks) faster; bfcnn.lite tiles and "
                             "pads other sizes (default: any size)")
    parser.add_argument("--representative-dir", metavar="DIR",
                        help="images for int8 calibration (e.g. the training set); only with --quantize int8")
    parser.add_argument("--pipeline-config", metavar="P",
                        help="pipeline YAML to build the model when restoring a tf.train checkpoint "
                             "(default: the run's config.yaml)")
    parser.add_argument("--weights", choices=("auto", "final", "best", "checkpoint"), default="auto",
                        help="which weights of a run folder: model.keras (final), best.keras (best), the "
                             "latest checkpoint, or auto: final, else checkpoint, else best (a .keras file or a "
                             "zoo name takes auto only)")
    parser.add_argument("--name", help="the model name in model_card.json (default: the zoo name, the .keras "
                        "file's stem but the run folder's name for a run's model.keras / best.keras, or the "
                        "folder's name)")
    parser.add_argument("--threads", type=positive_int, default=None, help="LiteRT threads during verification")
    parser.add_argument("--tolerance", type=float, default=None,
                        help="the largest max|diff| of a float32 artifact on the 0-255 scale (default 1e-3, or "
                             "twice the Keras model's own change under float32 rounding of its input if that "
                             "is larger, at most 0.1)")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip reloading and comparing the artifacts (not recommended)")
    args = parser.parse_args(argv)
    if args.tflite_size is not None:
        if len(args.tflite_size) > 2:
            parser.error(f"--tflite-size takes N or H W, got {len(args.tflite_size)} numbers")
        if min(args.tflite_size) < MIN_FIXED_SIZE:
            parser.error(f"--tflite-size {' x '.join(map(str, args.tflite_size))} is too small: at least "
                         f"{MIN_FIXED_SIZE} (the file runs in tiles overlapping by {MIN_FIXED_SIZE // 2} pixels)")
        args.tflite_size = (args.tflite_size[0], args.tflite_size[-1])
    if args.representative_dir is not None and "int8" not in (args.quantize or ()):
        parser.error(f"--representative-dir {args.representative_dir}: the images are used for int8 calibration "
                     "only; add --quantize int8 or leave it out")
    if args.tolerance is not None and not 0 < args.tolerance < float("inf"):
        parser.error(f"--tolerance needs a finite number > 0 (the 0-255 scale), got {args.tolerance}")
    if args.pipeline_config is not None and not os.path.isfile(args.pipeline_config):
        parser.error(f"--pipeline-config {args.pipeline_config}: no such file")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the exporter; returns the exit status (0 ok, 1 verification failed, 2 error)."""
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from bfcnn.errors import BfcnnError
    from bfcnn.export.errors import VerificationError
    from bfcnn.export.exporter import export_model

    quantize = args.quantize or ["none"]
    try:
        export_model(
            args.model_directory,
            args.output_directory,
            to_tflite=args.to_tflite or bool(args.quantize) or args.tflite_size is not None,
            quantize=quantize,
            representative_dir=args.representative_dir,
            name=args.name,
            pipeline_config=args.pipeline_config,
            weights=args.weights,
            verify_artifacts=not args.no_verify,
            num_threads=args.threads,
            tflite_size=args.tflite_size,
            **({"tolerance": args.tolerance} if args.tolerance is not None else {}),
        )
    except VerificationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except BfcnnError as error:  # ExportError, UnsupportedOpsError, ConfigError, UnknownModelError
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
