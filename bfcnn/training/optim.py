"""Optimizers and learning-rate schedules from the `optimizer:` config section (Keras 3).

Adam (Kingma & Ba, ICLR 2015), AdamW's decoupled weight decay (Loshchilov & Hutter, ICLR
2019), cosine decay and warm restarts (SGDR, Loshchilov & Hutter, ICLR 2017), and a linear
warm-up (Goyal et al., 2017, "Accurate, large minibatch SGD"). `optimizer.clipnorm` clips
the global norm of all gradients together: Keras's `global_clipnorm` on one replica, and
`clip_summed_gradients` with several, where Keras would clip each replica's share before
summing them (a limit of replicas x clipnorm).
"""

import math

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="bfcnn")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up over `warmup_steps` (`peak * (step + 1) / warmup_steps`: peak / W at step 0,
    the peak at step W - 1), then `schedule(step - warmup_steps)`."""

    def __init__(self, schedule, warmup_steps, peak):
        self.schedule = schedule
        self.warmup_steps = int(warmup_steps)
        self.peak = float(peak)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warm = self.peak * (step + 1.0) / max(self.warmup_steps, 1)
        after = self.schedule(tf.maximum(step - self.warmup_steps, 0.0))
        return tf.where(step < self.warmup_steps, warm, after)

    def get_config(self):
        return {"schedule": keras.optimizers.schedules.serialize(self.schedule),
                "warmup_steps": self.warmup_steps, "peak": self.peak}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["schedule"] = keras.optimizers.schedules.deserialize(config["schedule"])
        return cls(**config)


def learning_rate_schedule(config, total_steps: int):
    """The schedule of `optimizer.schedule` for a run of `total_steps` optimizer steps."""
    lr = float(config.learning_rate)
    s = config.schedule
    decay_steps = max(total_steps - s.warmup_steps, 1)
    schedules = keras.optimizers.schedules
    if s.type == "constant":
        schedule = schedules.PiecewiseConstantDecay([total_steps + 1], [lr, lr])
    elif s.type == "cosine":
        schedule = schedules.CosineDecay(lr, decay_steps, alpha=s.alpha)
    elif s.type == "cosine_restarts":
        first = s.first_decay_steps or max(decay_steps // 4, 1)
        schedule = schedules.CosineDecayRestarts(lr, first, t_mul=s.t_mul, m_mul=s.m_mul, alpha=s.alpha)
    elif s.type == "step":
        schedule = schedules.PiecewiseConstantDecay(list(s.boundaries), [lr * v for v in s.values])
    elif s.type == "exponential":
        schedule = schedules.ExponentialDecay(lr, s.decay_steps, s.decay_rate)
    else:
        raise ValueError(f"optimizer.schedule.type={s.type!r} is not supported")
    if s.warmup_steps > 0:
        schedule = WarmupSchedule(schedule, s.warmup_steps, lr)
    return schedule


def build_optimizer(config, total_steps: int, clip: bool = True) -> keras.optimizers.Optimizer:
    """A Keras optimizer (adam, adamw, rmsprop) with its schedule and optional clipping.

    Args:
        config: the `optimizer` section.
        total_steps: the run's optimizer steps (for the schedule).
        clip: the optimizer clips the gradients to `clipnorm` itself; False where the caller
            does (several replicas: `clip_summed_gradients`).
    """
    kwargs = {"learning_rate": learning_rate_schedule(config, total_steps)}
    if config.clipnorm is not None and clip:
        kwargs["global_clipnorm"] = float(config.clipnorm)
    if config.type == "adam":
        return keras.optimizers.Adam(**kwargs)
    if config.type == "adamw":
        return keras.optimizers.AdamW(weight_decay=float(config.weight_decay), **kwargs)
    if config.type == "rmsprop":
        return keras.optimizers.RMSprop(**kwargs)
    raise ValueError(f"optimizer.type={config.type!r} is not supported; allowed: 'adam', 'adamw', 'rmsprop'")


def clip_summed_gradients(grads, clipnorm: float, loss_scale, replicas: int):
    """In a replica context: each replica's share of the replicas' summed gradient, clipped to
    a global norm of `clipnorm`.

    Keras's `global_clipnorm` clips the gradients an optimizer is given, and under
    tf.distribute each replica gives its own before the optimizer sums them, so the sum may
    reach replicas x clipnorm. Here the sum is formed first (an all-reduce), its global norm
    measured without the loss scale, and the sum scaled down to the limit where it exceeds it
    and split evenly, so that the optimizer's own sum is the clipped sum (unchanged, bit for
    bit, under the limit with 2 or 4 replicas).

    Args:
        grads: this replica's gradients (of its loss share x the loss scale); None for a
            variable without one.
        clipnorm: the limit of the summed, unscaled gradient's global norm.
        loss_scale: the factor the loss was multiplied by (`optimizer.scale_loss`; 1 without
            a loss scaler). Non-finite sums stay non-finite, for the scaler to skip the step.
        replicas: the replicas in sync.

    Returns:
        The gradients to hand to `optimizer.apply` on this replica (None kept in place).
    """
    present = [i for i, g in enumerate(grads) if g is not None]
    summed = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM,
                                                           [grads[i] for i in present])
    scale = tf.cast(loss_scale, tf.float32)
    norm = tf.linalg.global_norm([tf.cast(g, tf.float32) / scale for g in summed])
    # Exactly 1 under the limit; NaN for a non-finite norm (as Keras's clipping), so the step stays non-finite.
    factor = tf.minimum(1.0, float(clipnorm) / norm) + (norm - norm)
    shares = list(grads)
    for i, g in zip(present, summed):
        shares[i] = tf.cast(tf.cast(g, tf.float32) * (factor / replicas), grads[i].dtype)
    return shares


def current_learning_rate(optimizer) -> float:
    """The learning rate the optimizer's next step will use (its schedule at `iterations`)."""
    lr = optimizer.learning_rate
    value = float(lr.numpy() if hasattr(lr, "numpy") else lr)
    return value if math.isfinite(value) else float("nan")


def learning_rate_at(optimizer, iteration: int) -> float:
    """The learning rate of the optimizer's step `iteration` (counted from 0, as `iterations`):
    its schedule there, or its fixed rate; a loss scaler's inner optimizer is read through."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    schedule = getattr(inner, "_learning_rate", None)
    if not isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        return current_learning_rate(optimizer)
    value = float(keras.ops.convert_to_numpy(schedule(iteration)))
    return value if math.isfinite(value) else float("nan")
