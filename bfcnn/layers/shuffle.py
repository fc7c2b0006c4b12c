"""Reversible down-sampling: pixel unshuffle (space to depth) and pixel shuffle (depth to space).

FFDNet (Zhang, Zuo & Zhang, "FFDNet: Toward a fast and flexible solution for CNN based image
denoising", IEEE TIP 2018) runs its convolutions on the four sub-images of a 2x2 reversible
down-sampling: a quarter of the pixels at four times the channels, so the same layers cost a
quarter of the FLOPs per image pixel and see twice as far. Both operations only move pixels,
so a model built with them stays bias-free (`f(a*x) = a*f(x)`). Pixel shuffle as an
up-sampling layer is from Shi et al., "Real-time single image and video super-resolution using
an efficient sub-pixel convolutional neural network", CVPR 2016.

Sizes need not be multiples of the factor: `PixelUnshuffle` repeats the last row and column
up to the next multiple, and `PixelShuffle` crops back to the size of a reference tensor.
Both map to the builtin TFLite ops SPACE_TO_DEPTH / DEPTH_TO_SPACE (plus a GATHER for the
padding), so the stock LiteRT runtime runs them.
"""

import keras
import tensorflow as tf
from keras import ops

from bfcnn.layers.arguments import check_bool, check_int, check_pair
from bfcnn.layers.cropping import crop_to
from bfcnn.layers.padding import repeat_to_multiple


@keras.saving.register_keras_serializable(package="bfcnn")
class PixelUnshuffle(keras.layers.Layer):
    """[B, H, W, C] -> [B, ceil(H/f), ceil(W/f), f*f*C]; the last row / column is repeated to fill.

    Args:
        factor: the down-sampling factor f (1 leaves the input as it is).
    """

    def __init__(self, factor=2, **kwargs):
        super().__init__(**kwargs)
        self.factor = check_int("factor", factor)
        self.input_spec = keras.InputSpec(ndim=4)  # [B, H, W, C]

    def call(self, x):
        if self.factor == 1:
            return x
        x = repeat_to_multiple(repeat_to_multiple(x, self.factor, 1), self.factor, 2)  # sized ahead in TFLite
        return tf.nn.space_to_depth(x, self.factor)

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        f = self.factor

        def down(n):
            return None if n is None else -(-n // f)

        return (batch, down(height), down(width), None if channels is None else channels * f * f)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package="bfcnn")
class PixelShuffle(keras.layers.Layer):
    """Inverse of `PixelUnshuffle`: `call([x, like])` gives [B, H, W, C] with H, W those of `like`.

    `x` has `f*f*C` channels at `ceil(H/f) x ceil(W/f)`; the rows and columns that
    `PixelUnshuffle` added are cropped away.

    Args:
        factor: the up-sampling factor f.
        crop: False when `like` is known to be exactly f times `x` (inside a model that mirrors
            its input up to a multiple first): the crop, a copy in TFLite, is skipped.
    """

    def __init__(self, factor=2, crop=True, **kwargs):
        super().__init__(**kwargs)
        self.factor = check_int("factor", factor)
        self.crop = check_bool("crop", crop)

    def build(self, input_shape):
        channels = self._pair(input_shape)[0][-1]
        if channels is not None and channels % (self.factor * self.factor):
            raise ValueError(f"PixelShuffle(factor={self.factor}) needs channels divisible by "
                             f"{self.factor * self.factor}, got {channels}")

    def call(self, inputs):
        x, like = self._pair(inputs)
        if self.factor > 1:
            x = tf.nn.depth_to_space(x, self.factor)
        if not self.crop:
            return x
        shape = ops.shape(like)
        return crop_to(x, shape[1], shape[2])

    def compute_output_shape(self, input_shape):
        x_shape, like_shape = self._pair(input_shape)
        channels = x_shape[-1]
        return (*like_shape[:3], None if channels is None else channels // (self.factor * self.factor))

    def get_config(self):
        return {**super().get_config(), "factor": self.factor, "crop": self.crop}

    def _pair(self, inputs) -> tuple:
        return check_pair(f"PixelShuffle(factor={self.factor})", inputs,
                          hint="like: the tensor whose height and width the output takes")
