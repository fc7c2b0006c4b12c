"""Cropping to a size known only at run time, in a form TFLite keeps fast."""

from keras import ops


def crop_to(x, height, width):
    """The top-left `height` x `width` pixels of a [B, H, W, C] tensor.

    A gather along each axis rather than a slice: a slice whose end is computed from a
    shape made every later layer of a converted model slower (measured 1.3 to 1.6x on this
    CPU; `benchmarks/bench_inference.py`), while TFLite keeps the gather on its fast path.
    """
    x = ops.take(x, ops.arange(height, dtype="int32"), axis=1)
    return ops.take(x, ops.arange(width, dtype="int32"), axis=2)
