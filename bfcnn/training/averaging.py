"""The weights of a run's last checkpoints, averaged.

Averaging the iterates at the end of stochastic gradient descent (Polyak & Juditsky,
"Acceleration of stochastic approximation by averaging", SIAM J. Control Optim. 1992;
for networks, Izmailov et al., "Averaging Weights Leads to Wider Optima and Better
Generalization", UAI 2018) cancels part of the noise the last steps leave in the weights.
The trainer keeps the last `train.keep_checkpoints` checkpoints of a run (one every
`train.checkpoint_every` steps), so a run started with a large `keep_checkpoints` can be
averaged after the fact, with no change to the training step.

Only floating-point weights are averaged; integer state (a layer's random seed) comes
from the newest checkpoint. A model with batch norm gets the mean of the checkpoints' moving
standard deviations, an approximation: Izmailov et al. recompute those statistics for the
averaged weights with a pass over the training data, which this does not do (the zoo's
flagships have no batch norm). The average is a network of the same bias-free architecture,
so it is homogeneous, `f(a*x) = a*f(x)`, as each checkpoint is.
"""

import re
from pathlib import Path
from typing import List, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf

from bfcnn.errors import ConfigError
from bfcnn.models.checkpoints import checkpoint_paths

_STEP = re.compile(r"-(\d+)$")


def list_checkpoints(model_directory) -> List[Tuple[int, str]]:
    """The (step, path prefix) of every checkpoint the run in `model_directory` keeps, oldest first.

    Raises:
        ConfigError: the directory does not exist or holds no checkpoints.
    """
    if not Path(model_directory).is_dir():
        what = "is a file, not a directory" if Path(model_directory).exists() else "does not exist"
        raise ConfigError(f"model directory {str(model_directory)!r} {what}: give a bfcnn.train model directory")
    ckpt_dir = Path(model_directory) / "checkpoints"
    found = []
    for path in checkpoint_paths(ckpt_dir):  # those the state file lists, or on disk if it is damaged
        match = _STEP.search(path)
        if match and Path(path + ".index").exists():
            found.append((int(match.group(1)), path))
    if not found:
        raise ConfigError(f"{model_directory} holds no training checkpoints (looked in {ckpt_dir})")
    return sorted(found)


def average_checkpoints(model_directory, last: Optional[int] = None) -> Tuple[keras.Model, List[int]]:
    """The model of the run in `model_directory` with the mean weights of its last `last` checkpoints.

    Args:
        model_directory: a `python -m bfcnn.train` model directory (its `config.yaml` gives
            the architecture, `checkpoints/` the weights).
        last: how many of the newest checkpoints to average; `None` averages all kept.

    Returns:
        The model (float32) and the steps of the checkpoints averaged.

    Raises:
        ConfigError: no config or checkpoints, a damaged checkpoint (named), or `last` is not in
            1..(checkpoints kept).
    """
    from bfcnn.config import load_config
    from bfcnn.models.builder import build_model

    directory = Path(model_directory)
    checkpoints = list_checkpoints(directory)
    if last is None:
        last = len(checkpoints)
    if isinstance(last, bool) or not isinstance(last, int) or not 1 <= last <= len(checkpoints):
        steps = ", ".join(str(s) for s, _ in checkpoints)
        raise ConfigError(f"last={last!r}: {directory} keeps {len(checkpoints)} checkpoint(s) (steps {steps}); "
                          f"allowed: 1 to {len(checkpoints)}")
    chosen = checkpoints[-last:]
    config_path = directory / "config.yaml"
    if not config_path.exists():
        raise ConfigError(f"{directory} has no config.yaml: it is not a bfcnn.train model directory")
    config = load_config(config_path)
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        model = build_model(config.model)
    finally:
        keras.mixed_precision.set_global_policy(policy)

    floating = [np.issubdtype(np.dtype(w.dtype), np.floating) for w in model.weights]
    total = None
    for _, path in chosen:
        # Every weight of the model must come from the checkpoint (the optimizer's state is left out).
        try:
            tf.train.Checkpoint(model=model).restore(path).expect_partial().assert_existing_objects_matched()
        except (tf.errors.OpError, IndexError) as error:  # a truncated index or data file, a missing data file
            raise ConfigError(f"checkpoint {path} is damaged ({str(error).splitlines()[0][:200]}) and cannot be "
                              "averaged; --last N averages only the newest N checkpoints") from None
        except (AssertionError, ValueError) as error:
            raise ConfigError(f"{path} does not hold every weight of the model {config_path} builds (was the "
                              f"architecture or bfcnn changed since?): {str(error)[:300]}") from None
        values = [np.asarray(v, dtype=np.float64) if f else None for v, f in zip(model.get_weights(), floating)]
        total = values if total is None else [t + v if f else None for t, v, f in zip(total, values, floating)]
    newest = model.get_weights()
    model.set_weights([(t / len(chosen)).astype(n.dtype) if f else n for t, n, f in zip(total, newest, floating)])
    return model, [step for step, _ in chosen]
