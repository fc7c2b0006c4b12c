"""What a model costs: parameters, FLOPs per pixel, and whether it is bias-free."""

from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from bfcnn.layers.bias_free import BiasFreeBatchNorm
from bfcnn.layers.n3 import N3Block


def count_parameters(model: keras.Model) -> int:
    """Number of trainable and non-trainable weights' scalars."""
    return int(model.count_params())


DEFAULT_SIZE = 64  # a multiple of every pyramid's 2^levels, so per-level costs scale exactly
N3_SIZE = 256  # models with N3 blocks: their search windows are not clipped by the image at this size


def flops_per_pixel(model: keras.Model, size: Optional[int] = None) -> float:
    """Floating-point operations per input pixel for one forward pass (a multiply-add is 2).

    Counted by TensorFlow's graph profiler on a `size` x `size` input, divided by size^2:
    `DEFAULT_SIZE` by default, `N3_SIZE` for a model with N3 blocks, whose matching is
    then traced in one chunk (the profiler counts nothing inside a `tf.while_loop`, which
    their chunked inference uses) and whose search windows lie inside the image.
    """
    chunked = [layer for layer in model._flatten_layers() if isinstance(layer, N3Block)]
    if size is None:
        size = N3_SIZE if chunked else DEFAULT_SIZE
    saved = [layer.inference_chunk for layer in chunked]
    try:  # every chunk size is put back, whatever fails
        for layer in chunked:
            layer.inference_chunk = 2**31 - 1
        return _profiled_flops(model, size)
    finally:
        for layer, chunk in zip(chunked, saved):
            layer.inference_chunk = chunk


def _profiled_flops(model: keras.Model, size: int) -> float:
    channels = model.input_shape[-1]
    spec = tf.TensorSpec([1, size, size, channels], tf.float32)
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    from tensorflow.python.framework.convert_to_constants import (  # no public equivalent
        convert_variables_to_constants_v2,
    )

    graph = convert_variables_to_constants_v2(concrete).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder(
        tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    ).with_empty_output().build()
    # The v1 profiler (TensorFlow's only FLOP counter) warns about its own deprecated internals.
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        profile = tf.compat.v1.profiler.profile(graph=graph, run_meta=tf.compat.v1.RunMetadata(),
                                                cmd="op", options=options)
    finally:
        logger.setLevel(level)
    return float(profile.total_float_ops) / float(size * size)


# Activation functions with f(a x) = a f(x) for a > 0, by the name Keras gives them.
HOMOGENEOUS_ACTIVATIONS = ("linear", "relu", "leaky_relu")
# Keras normalizations that subtract a mean or divide by a norm (degree 0, not 1).
_NORMALIZATIONS = (keras.layers.BatchNormalization, keras.layers.LayerNormalization,
                   keras.layers.GroupNormalization, keras.layers.UnitNormalization, keras.layers.Normalization)


def is_bias_free(model: keras.Model) -> bool:
    """True when no weight is an additive constant and nothing else breaks `f(a*x) = a*f(x)`.

    Checked on the built model's layers and weights, not declared, and not by running it: a
    bias or beta weight, a Keras normalization other than BiasFreeBatchNorm (batch, layer,
    group, unit, or feature-wise `Normalization`), a `Rescaling` with an offset, an activation
    that is not positively homogeneous (anything but linear, relu and leaky_relu; PReLU layers
    are fine), or a layer marking itself `homogeneous = False` (e.g. sigmoid gates) makes it
    False. `why_not_bias_free` says which. A custom layer that adds a constant without a
    weight is not seen: `bfcnn.explain` checks `f(y) = A(y) y` numerically as well.
    """
    return why_not_bias_free(model) is None


def why_not_bias_free(model: keras.Model) -> Optional[str]:
    """None for a bias-free model, else the first weight or layer that breaks it, in words."""
    for weight in model.weights:
        leaf = weight.path.split("/")[-1]
        if leaf in ("bias", "beta") or leaf.startswith("bias"):
            return f"it has an additive constant, weight {weight.path!r}"
    for layer in _all_layers(model):
        if isinstance(layer, _NORMALIZATIONS) and not isinstance(layer, BiasFreeBatchNorm):
            return f"layer {layer.name!r} is a {type(layer).__name__}, which is not homogeneous"
        if isinstance(layer, keras.layers.Rescaling) and np.any(np.asarray(layer.offset) != 0):
            return f"layer {layer.name!r} is a Rescaling with offset {layer.offset!r}"
        activation = getattr(layer, "activation", None)
        name = getattr(activation, "__name__", None)
        if callable(activation) and name is not None and name not in HOMOGENEOUS_ACTIVATIONS:
            return (f"layer {layer.name!r} has activation {name!r}; homogeneous ones: "
                    f"{', '.join(HOMOGENEOUS_ACTIVATIONS)}")
        if isinstance(layer, keras.layers.ReLU) and (layer.max_value is not None or layer.threshold != 0):
            return f"layer {layer.name!r} is a ReLU with max_value or threshold, which is not homogeneous"
        if getattr(layer, "homogeneous", True) is False:
            return f"layer {layer.name!r} ({type(layer).__name__}) is not homogeneous"
    return None


def _all_layers(layer):
    yield layer
    for sub in getattr(layer, "_layers", []) or []:
        yield from _all_layers(sub)


def describe(model: keras.Model) -> dict:
    """A summary for benchmarks and model cards: parameters, FLOPs per pixel, bias-free."""
    return {
        "parameters": count_parameters(model),
        "flops_per_pixel": flops_per_pixel(model),
        "bias_free": is_bias_free(model),
    }
