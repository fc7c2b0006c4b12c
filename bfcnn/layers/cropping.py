"""Cropping to a size known only at run time, in a form TFLite keeps fast."""

from keras import ops


def crop_to(x, height, width):
    """The top-left `height` x `width` pixels of a [B, H, W, C] tensor.

    A gather along each axis rather than a slice: a slice whose end is computed from a
    shape makes every later layer of a converted model slower in TFLite, while the gather
    does not (`benchmarks/bench_tflite_shapes.py`; docs/inference.md has the figures).
    """
    x = ops.take(x, ops.arange(height, dtype="int32"), axis=1)
    return ops.take(x, ops.arange(width, dtype="int32"), axis=2)
