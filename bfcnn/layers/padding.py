"""Mirror padding up to a multiple of a factor, in a form LiteRT sizes ahead.

A network that halves its input `levels - 1` times (a pyramid, stride-2 convolutions) sees
an image whose size is not a multiple of `2 ** (levels - 1)` with a partly empty last row or
column at its coarse levels: zero padding there, which training on patches of even sizes
never shows it. `ReflectToMultiple` mirrors the image into the missing rows and columns
first, so every level's edge looks like an image's edge; `CropLike` takes the result back
to the input's size. `repeat_to_multiple` (the edge repeated) rounds up the pixel unshuffle's
input (`bfcnn.layers.shuffle`). Only pixels are moved, so a model built with them stays
bias-free (`f(a*x) = a*f(x)`).
"""

import keras
from keras import ops

from bfcnn.layers.arguments import check_int


def reflect_to_multiple(x, factor: int, axis: int):
    """`x` [B, H, W, C] extended along `axis` (1 or 2) to the next multiple of `factor` by
    mirroring about its last pixel (`... a b c | b a`, numpy's "reflect" mode), the first pixel
    repeated where the axis is shorter than what is mirrored. Unchanged if the size is already
    a multiple.
    """
    if factor == 1 or (x.shape[axis] is not None and x.shape[axis] % factor == 0):
        return x  # known now (e.g. training patches): nothing to do
    mirrored = ops.maximum(ops.shape(x)[axis] - 2 - ops.arange(factor - 1, dtype="int32"), 0)  # n-2, n-3, ...
    return _extended_to_multiple(x, ops.take(x, mirrored, axis=axis), factor, axis)


def repeat_to_multiple(x, factor: int, axis: int):
    """`x` [B, H, W, C] extended along `axis` (1 or 2) to the next multiple of `factor` by
    repeating its last pixel (numpy's "edge" mode)."""
    if factor == 1:
        return x
    last = x[:, -1:] if axis == 1 else x[:, :, -1:]
    return _extended_to_multiple(x, ops.concatenate([last] * (factor - 1), axis=axis), factor, axis)


def _extended_to_multiple(x, extra, factor: int, axis: int):
    """The first ceil(n / factor) * factor pixels along `axis` of `x` followed by `extra`
    (`factor - 1` pixels).

    Written so that TFLite sizes every tensor when the input is resized (no FLOOR_DIV or
    MINIMUM on a shape, which LiteRT works out only at run time): the number of blocks,
    ceil(n / factor), is read off the shape of a strided slice, and the pixels are gathered.
    `bfcnn.export.tflite.runtime_sized_tensors` lists a converted model's tensors sized at run time.
    """
    extended = ops.concatenate([x, extra], axis=axis)
    corner = x[:, ::factor, :1, :1] if axis == 1 else x[:, :1, ::factor, :1]
    blocks = ops.shape(corner)[axis]
    return ops.take(extended, ops.arange(blocks * factor, dtype="int32"), axis=axis)


@keras.saving.register_keras_serializable(package="bfcnn")
class ReflectToMultiple(keras.layers.Layer):
    """[B, H, W, C] -> [B, ceil(H/f)*f, ceil(W/f)*f, C], the new rows and columns mirrored.

    Args:
        factor: f, e.g. `2 ** (levels - 1)` before a pyramid of `levels` levels.

    Example:
        >>> padded = ReflectToMultiple(4)(x)          # 321 x 481 -> 324 x 484
        >>> y = CropLike()([network(padded), x])      # back to 321 x 481
    """

    def __init__(self, factor=2, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.factor = check_int("factor", factor)
        self.input_spec = keras.InputSpec(ndim=4)

    def call(self, x):
        return reflect_to_multiple(reflect_to_multiple(x, self.factor, 1), self.factor, 2)

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape

        def up(n):
            return None if n is None else -(-n // self.factor) * self.factor

        return (batch, up(height), up(width), channels)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}
