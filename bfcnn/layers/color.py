"""Color through a gray denoiser: an orthonormal opponent transform and a channels-to-batch fold.

CBM3D (Dabov, Foi, Katkovnik & Egiazarian, "Color image denoising via sparse 3D collaborative
filtering with grouping constraint in luminance-chrominance space", ICIP 2007) denoises a
color image in a luminance-chrominance space, where the three channels are far less
correlated than R, G and B. `OpponentTransform` is the orthonormal version of that change of
basis,

    Y  = (R + G + B) / sqrt(3)
    C1 = (R - B) / sqrt(2)
    C2 = (R - 2G + B) / sqrt(6)

so white Gaussian noise of std sigma in RGB stays white with std sigma in every channel, and
a gray denoiser trained for blind sigma applies to each channel as it is.

Chrominance is centred on zero; a gray network trained on photographs (all values >= 0) does
badly there, so `ChromaOffset` lifts C1 and C2 by a multiple of the image's mean gray level
(Y / sqrt(3), averaged over the image) before the network and the same amount is taken off
after. Every step is linear or scales with the input, so a bias-free gray network makes a
bias-free color model: `f(a*x) = a*f(x)` for a > 0.

All four layers compute in float32 whatever the global precision policy (they hold no
weights and cost a few operations per pixel), so a mixed-precision model does not round the
transformed image to bfloat16 before its first convolution casts it.
"""

import math

import keras
from keras import ops

from bfcnn.layers.arguments import check_bool, check_int, check_number

from bfcnn.opponent_lift import OPPONENT

_S3 = math.sqrt(3.0)


def _float32(kwargs):
    kwargs.setdefault("dtype", "float32")
    return kwargs


@keras.saving.register_keras_serializable(package="bfcnn")
class OpponentTransform(keras.layers.Layer):
    """[B, H, W, 3] RGB -> [B, H, W, 3] (Y, C1, C2), or back with `inverse=True`.

    Args:
        inverse: map (Y, C1, C2) back to RGB.
    """

    def __init__(self, inverse=False, **kwargs):
        super().__init__(**_float32(kwargs))
        self.inverse = check_bool("inverse", inverse)
        self.input_spec = keras.InputSpec(ndim=4, axes={-1: 3})  # [B, H, W, 3]

    def call(self, x):
        matrix = ops.convert_to_tensor(OPPONENT, dtype=x.dtype)
        # A 1x1 convolution (builtin CONV_2D in TFLite, every tensor sized ahead) whose kernel
        # [in, out] is M^T for the forward transform and M for the inverse (M is orthonormal).
        kernel = matrix if self.inverse else ops.transpose(matrix)
        return ops.conv(x, ops.reshape(kernel, (1, 1, 3, 3)), padding="valid")

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "inverse": self.inverse}


@keras.saving.register_keras_serializable(package="bfcnn")
class ChromaOffset(keras.layers.Layer):
    """The offset [B, 1, 1, 3] = (0, s*m, s*m), m the mean of Y / sqrt(3) over each image.

    Add it to an opponent image before a gray network and subtract it after. It scales with
    the input, so the model stays homogeneous.

    Args:
        scale: s, the lift of the chrominance channels in units of the mean gray level.
    """

    def __init__(self, scale=1.0, **kwargs):
        super().__init__(**_float32(kwargs))
        self.scale = check_number("scale", scale, 0.0)

    def call(self, opponent):
        mean_gray = ops.mean(opponent[..., :1], axis=(1, 2), keepdims=True) / _S3
        mask = ops.convert_to_tensor([0.0, self.scale, self.scale], dtype=opponent.dtype)
        return mean_gray * mask

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1, 1, 3)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


@keras.saving.register_keras_serializable(package="bfcnn")
class ChannelsToBatch(keras.layers.Layer):
    """[B, H, W, C] -> [C*B, H, W, 1]: each channel becomes a gray image (channel-major order)."""

    def __init__(self, **kwargs):
        super().__init__(**_float32(kwargs))

    def call(self, x):
        # Slices and a concatenation rather than transpose + reshape: no shape arithmetic, so
        # LiteRT sizes every tensor when the input is resized.
        return ops.concatenate([x[..., c:c + 1] for c in range(x.shape[-1])], axis=0)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        return (None if b is None or c is None else b * c, h, w, 1)


@keras.saving.register_keras_serializable(package="bfcnn")
class BatchToChannels(keras.layers.Layer):
    """[C*B, H, W, 1] -> [B, H, W, C], the inverse of `ChannelsToBatch`.

    Args:
        channels: C.
    """

    def __init__(self, channels=3, **kwargs):
        super().__init__(**_float32(kwargs))
        self.channels = check_int("channels", channels)

    def call(self, x):
        batch = x.shape[0]  # known when eager or static; a graph with a None batch splits as it can
        if batch is not None and batch % self.channels:
            raise ValueError(f"BatchToChannels(channels={self.channels}) needs a batch that is a multiple of "
                             f"{self.channels} (the output of ChannelsToBatch), got {batch}")
        x = ops.cast(x, self.compute_dtype)
        return ops.concatenate(ops.split(x, self.channels, axis=0), axis=-1)

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape
        return (None if b is None else b // self.channels, h, w, self.channels)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}
