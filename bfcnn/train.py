"""`python -m bfcnn.train --pipeline-config P --model-directory D [--set key.path=value ...]`.

Trains the denoiser a pipeline config describes; running the same command again
resumes from the latest checkpoint in D. A thin wrapper over `bfcnn.training.loop`.

Exit codes: 0 trained, 1 training failed (the loss became NaN, the checkpoints in D
cannot be resumed from), 2 bad input (the config file, a --set override, the model
section, a missing image directory or train.init_from, an unusable --model-directory);
nothing is written to D on bad input.
"""

import argparse
import logging
import os
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bfcnn.train", description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline-config", required=True, help="the pipeline config (YAML)")
    parser.add_argument("--model-directory", "--checkpoint-directory", dest="model_directory", required=True,
                        help="where checkpoints, logs and the trained model go (--checkpoint-directory is "
                             "the older name)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override a config value (parsed as YAML), e.g. --set train.steps=2000")
    args = parser.parse_args(argv)
    if not args.model_directory.strip():  # an unset shell variable: would train into the working directory
        parser.error("--model-directory is empty; give the folder the run writes to")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from bfcnn.config import load_config
    from bfcnn.errors import BfcnnError

    try:
        config = load_config(args.pipeline_config, args.overrides, require_inputs=True)
    except (BfcnnError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from bfcnn.training.distribution import configure_logical_cpus
    from bfcnn.training.loop import Trainer, TrainingError, TrainingStopped

    try:
        if config.distribution.strategy == "mirrored":
            configure_logical_cpus(config.distribution.devices)
        Trainer(config, args.model_directory, source=args.pipeline_config).run()
    except TrainingStopped as error:
        print(str(error), file=sys.stderr)
        return 128 + error.signum  # the shell's convention for a process ended by a signal
    except TrainingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except BfcnnError as error:  # the model section, the data, train.init_from, the model directory
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
