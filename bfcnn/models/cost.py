"""What a model costs: parameters, FLOPs per pixel, and whether it is bias-free."""

from typing import Optional

import keras
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


def is_bias_free(model: keras.Model) -> bool:
    """True when no weight is an additive constant and every normalization is BiasFreeBatchNorm.

    Checked on the built model, not declared: a bias, beta or a standard (mean-subtracting)
    batch norm anywhere makes it False, as does a layer marking itself `homogeneous = False`
    (e.g. sigmoid gates). `why_not_bias_free` says which.
    """
    return why_not_bias_free(model) is None


def why_not_bias_free(model: keras.Model) -> Optional[str]:
    """None for a bias-free model, else the first weight or layer that breaks it, in words."""
    for weight in model.weights:
        leaf = weight.path.split("/")[-1]
        if leaf in ("bias", "beta") or leaf.startswith("bias"):
            return f"it has an additive constant, weight {weight.path!r}"
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization) and not isinstance(layer, BiasFreeBatchNorm):
            return f"layer {layer.name!r} is a mean-subtracting BatchNormalization"
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
