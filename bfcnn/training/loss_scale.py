"""Loss scaling as Keras optimizer wrappers: float16's dynamic scaler and `train.on_nan: skip`'s fixed one."""

import logging

import keras
import tensorflow as tf

log = logging.getLogger("bfcnn.train")

# The loss scales of `keras.optimizers.LossScaleOptimizer`: float16 training starts at 2**15
# and adapts; `train.on_nan: skip` in other precisions keeps 1 (the wrapper only skips steps).
FLOAT16_LOSS_SCALE = 2.0**15
SKIP_LOSS_SCALE = 1.0


class Float16LossScale(keras.optimizers.LossScaleOptimizer):
    """`mixed_float16`: Keras's dynamic loss scaler, except that a step it skips (non-finite
    gradients: the scale is halved) still counts in the inner optimizer's `iterations`, as
    Keras's does not, so the learning-rate schedule keeps to the run's step counter."""

    def __init__(self, inner_optimizer, **kwargs):
        super().__init__(inner_optimizer, initial_scale=FLOAT16_LOSS_SCALE, **kwargs)

    def _stateful_handle_non_finite_grads(self):
        super()._stateful_handle_non_finite_grads()
        self.inner_optimizer.iterations.assign_add(1)


class SkipNonFinite(keras.optimizers.LossScaleOptimizer):
    """`train.on_nan: skip`: Keras's loss scaler at a fixed scale of 1, used only because it skips
    a step whose gradients are not finite. The stock one would halve its scale at each such
    step (to 0 after about 150), and the step would then multiply the loss by 0. A skipped
    step still counts in the inner optimizer's `iterations`, so the learning-rate schedule
    keeps to the run's step counter."""

    def __init__(self, inner_optimizer, **kwargs):
        super().__init__(inner_optimizer, initial_scale=SKIP_LOSS_SCALE, dynamic_growth_steps=2**31 - 1, **kwargs)

    def _stateful_handle_non_finite_grads(self):
        self.step_counter.assign(0)
        self.inner_optimizer.iterations.assign_add(1)


def catch_up_iterations(optimizer, step: int) -> None:
    """Sets the optimizer's `iterations`, which the learning-rate schedule reads, to the step
    counter where a checkpoint left it behind: one of a `mixed_float16` run by an older bfcnn,
    whose loss scaler did not count the steps it skipped."""
    iterations = int(optimizer.iterations.numpy())
    if iterations < step:
        log.info("the optimizer counted %d steps, the run %d (float16 steps skipped by an older bfcnn): the "
                 "learning-rate schedule goes on from step %d", iterations, step, step)
        optimizer.iterations.assign(step)


def stores_loss_scaler(path: str, default: bool) -> bool:
    """Whether checkpoint `path` holds an optimizer wrapped in a loss scaler; `default` when the
    file cannot be read (its restore then reports the damage)."""
    try:
        return any(name.startswith("optimizer/inner_optimizer/") for name, _ in tf.train.list_variables(path))
    except (tf.errors.OpError, IndexError, ValueError):
        return default
