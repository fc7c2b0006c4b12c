"""Cropping to a size known only at run time, in a form TFLite keeps fast."""

from keras import ops


def crop_to(x, height, width):
    """The top-left `height` x `width` pixels of a [B, H, W, C] tensor.

    A gather along each axis rather than a slice: a slice whose end is computed from a
    shape makes every later layer of a converted model slower in TFLite, while the gather
    does not (`benchmarks/bench_tflite_shapes.py`; docs/inference.md has the figures).
    """
    _check_not_larger(x, height, width)
    x = ops.take(x, ops.arange(height, dtype="int32"), axis=1)
    return ops.take(x, ops.arange(width, dtype="int32"), axis=2)


def _check_not_larger(x, height, width) -> None:
    """A ValueError when the crop is larger than `x` and both are known now (eager calls, or
    static shapes): the gather would fail deep in TensorFlow on a CPU and, on a GPU, fill the
    missing rows with zeros. Sizes known only when the graph runs are not checked (an assert
    op would keep TFLite files from being builtin-only)."""
    have = tuple(x.shape[1:3])
    want = (height, width)
    known = all(isinstance(v, int) for v in have + want)
    if known and (want[0] > have[0] or want[1] > have[1]):
        raise ValueError(f"cannot crop a {have[0]}x{have[1]} tensor to {want[0]}x{want[1]}: the reference "
                         "`like` must be no larger than the input (for UpsampleLike and the pyramid's "
                         "expansion: no larger than twice the coarse level)")
