"""`python -m bfcnn.average --model-directory D [--last N] [--output PATH]`.

Writes the model of a training run with the mean weights of its last N checkpoints
(`bfcnn.training.averaging`; default: every checkpoint the run kept) to PATH, by default
D/averaged.keras, which `bfcnn.evaluate --model` and `bfcnn.export` take like any .keras
file. Train with `--set train.keep_checkpoints=K` to keep more than the default 3.
Exit codes: 0 written, 2 bad input (no such run, too few or damaged checkpoints).
"""

import argparse
import logging
import os
import sys
from pathlib import Path


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bfcnn.average", description="Averages the weights of a training run's last checkpoints.")
    parser.add_argument("--model-directory", required=True, help="a bfcnn.train model directory")
    parser.add_argument("--last", type=int, default=None, metavar="N",
                        help="average the newest N checkpoints (default: all the run kept)")
    parser.add_argument("--output", default=None, help="the .keras file to write (default: D/averaged.keras)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from bfcnn.errors import BfcnnError
    from bfcnn.training.averaging import average_checkpoints, list_checkpoints
    from bfcnn.training.run_directory import atomic_save_model

    from bfcnn.io import output_problem

    try:  # the run is named first: a model directory that is a file is not an --output problem
        list_checkpoints(args.model_directory)
    except BfcnnError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    output = Path(args.output) if args.output else Path(args.model_directory) / "averaged.keras"
    if output.suffix != ".keras":
        print(f"error: --output={str(output)!r} must end in .keras", file=sys.stderr)
        return 2
    problem = output_problem(output, folder=False)
    if problem:  # found before the checkpoints are read, not after
        print(f"error: --output {str(output)!r}: {problem}", file=sys.stderr)
        return 2
    try:
        model, steps = average_checkpoints(args.model_directory, args.last)
    except BfcnnError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_model(model, output)
    print(f"averaged {len(steps)} checkpoint(s), steps {steps[0]} to {steps[-1]}: wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
