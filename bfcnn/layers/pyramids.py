"""Gaussian and Laplacian pyramids (Burt & Adelson, IEEE Trans. Communications 1983).

"The Laplacian pyramid as a compact image code": blur with the binomial kernel
[1, 4, 6, 4, 1] / 16 and keep every second pixel to go one level down; the detail band
of a level is the level minus the expanded coarser level, so merging the bands back
reconstructs the image exactly, whatever filter the expansion uses. Borders are
reflected; sizes need not be powers of two (a level of n pixels has ceil(n/2) below it).
All of it is linear and has no constant, so pyramids keep a model bias-free.
"""

import keras
from keras import ops

BINOMIAL_5 = (1.0 / 16, 4.0 / 16, 6.0 / 16, 4.0 / 16, 1.0 / 16)


def _reflect_indices(n, pad):
    """Indices of a reflect-padded axis of length n; valid for any n >= 1 and any pad."""
    idx = ops.arange(-pad, n + pad, dtype="int32")
    period = ops.maximum(2 * (n - 1), 1)
    idx = ops.mod(idx, period)
    return ops.where(idx > n - 1, period - idx, idx)


def reflect_pad(x, pad):
    """Reflect-pads the two spatial axes of a [B, H, W, C] tensor by `pad` pixels.

    Unlike `tf.pad(mode="REFLECT")` this works for images smaller than the padding
    (a 1-pixel axis is repeated), so every model accepts any H, W >= 1.
    """
    shape = ops.shape(x)
    x = ops.take(x, _reflect_indices(shape[1], pad), axis=1)
    return ops.take(x, _reflect_indices(shape[2], pad), axis=2)


def _separable_blur(x, taps, strides=1):
    """Depthwise blur with the 1-D kernel `taps` along H then W, 'valid' padding."""
    channels = x.shape[-1]
    k = ops.convert_to_tensor(taps, dtype=x.dtype)
    kh = ops.tile(ops.reshape(k, (len(taps), 1, 1, 1)), (1, 1, channels, 1))
    kw = ops.tile(ops.reshape(k, (1, len(taps), 1, 1)), (1, 1, channels, 1))
    x = ops.depthwise_conv(x, kh, strides=(strides, 1), padding="valid")
    return ops.depthwise_conv(x, kw, strides=(1, strides), padding="valid")


def downsample(x):
    """Blurs with the binomial kernel and keeps every second pixel: H, W -> ceil(H/2), ceil(W/2)."""
    return _separable_blur(reflect_pad(x, 2), BINOMIAL_5, strides=2)


def upsample(x, like):
    """Expands `x` by two (zero insertion, binomial blur times 2 per axis) to the size of `like`."""
    shape = ops.shape(x)
    batch, height, width, channels = shape[0], shape[1], shape[2], x.shape[-1]
    zeros = ops.zeros_like(x)
    x = ops.reshape(ops.stack([x, zeros], axis=3), (batch, height, 2 * width, channels))
    zeros = ops.zeros_like(x)
    x = ops.reshape(ops.stack([x, zeros], axis=2), (batch, 2 * height, 2 * width, channels))
    x = _separable_blur(reflect_pad(x, 2), [2.0 * t for t in BINOMIAL_5])
    target = ops.shape(like)
    return x[:, : target[1], : target[2], :]


def _check_levels(levels):
    if not isinstance(levels, int) or isinstance(levels, bool) or levels < 1:
        raise ValueError(f"levels must be an integer >= 1, got {levels!r}")


@keras.saving.register_keras_serializable(package="bfcnn")
class GaussianPyramid(keras.layers.Layer):
    """Splits an image into `levels` successively blurred and halved copies.

    `call(x)` returns `[G_0 = x, G_1, ..., G_{levels-1}]`; `G_{i+1}` has `ceil(n/2)` pixels
    per axis when `G_i` has `n`. A Gaussian pyramid is redundant: `merge` returns its
    finest level, which is the image itself.

    Args:
        levels: number of levels, >= 1 (1 returns `[x]`).

    Example:
        >>> g0, g1, g2 = GaussianPyramid(levels=3)(keras.ops.ones((1, 17, 9, 1)))
        >>> tuple(g2.shape)
        (1, 5, 3, 1)
    """

    def __init__(self, levels=3, **kwargs):
        super().__init__(**kwargs)
        _check_levels(levels)
        self.levels = levels

    def call(self, inputs):
        out = [inputs]
        for _ in range(self.levels - 1):
            out.append(downsample(out[-1]))
        return out

    def merge(self, levels):
        """The image from its Gaussian pyramid: the finest level."""
        return levels[0]

    def compute_output_shape(self, input_shape):
        shapes, (b, h, w, c) = [], input_shape
        for _ in range(self.levels):
            shapes.append((b, h, w, c))
            h = None if h is None else (h + 1) // 2
            w = None if w is None else (w + 1) // 2
        return shapes

    def get_config(self):
        return {**super().get_config(), "levels": self.levels}


@keras.saving.register_keras_serializable(package="bfcnn")
class LaplacianPyramid(keras.layers.Layer):
    """Splits an image into detail bands plus a low-pass residual, and merges them back.

    `call(x)` returns `[L_0, ..., L_{levels-2}, G_{levels-1}]` with
    `L_i = G_i - upsample(G_{i+1})`; `call(bands, inverse=True)` (or `merge(bands)`)
    rebuilds the image coarse to fine, `G_i = L_i + upsample(G_{i+1})`, which equals the
    input up to float rounding for any size. A constant image has all-zero bands.

    Args:
        levels: number of levels, >= 1 (1 returns `[x]`).

    Example:
        >>> pyramid = LaplacianPyramid(levels=3)
        >>> bands = pyramid(x)
        >>> x_again = pyramid(bands, inverse=True)
    """

    def __init__(self, levels=3, **kwargs):
        super().__init__(**kwargs)
        _check_levels(levels)
        self.levels = levels

    def call(self, inputs, inverse=False):
        if inverse:
            return self.merge(inputs)
        gaussian = [inputs]
        for _ in range(self.levels - 1):
            gaussian.append(downsample(gaussian[-1]))
        bands = [g - upsample(coarse, g) for g, coarse in zip(gaussian[:-1], gaussian[1:])]
        return bands + [gaussian[-1]]

    def merge(self, bands):
        """Rebuilds the image from `[L_0, ..., L_{n-2}, G_{n-1}]`, coarse to fine."""
        if len(bands) != self.levels:
            raise ValueError(f"LaplacianPyramid(levels={self.levels}) cannot merge {len(bands)} bands")
        image = bands[-1]
        for band in reversed(bands[:-1]):
            image = band + upsample(image, band)
        return image

    def compute_output_shape(self, input_shape):
        if isinstance(input_shape, (list, tuple)) and input_shape and isinstance(input_shape[0], (list, tuple)):
            return input_shape[0]
        return GaussianPyramid(self.levels).compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "levels": self.levels}


@keras.saving.register_keras_serializable(package="bfcnn")
class UpsampleLike(keras.layers.Layer):
    """Expands `x` by two to the spatial size of `like` with the pyramid's filter.

    `call([x, like])`; the channels of `x` are kept. Used to carry a coarse level's
    result (image or features) up to the next finer level.
    """

    def call(self, inputs):
        x, like = inputs
        return upsample(x, like)

    def compute_output_shape(self, input_shape):
        x_shape, like_shape = input_shape
        return (*like_shape[:3], x_shape[-1])


@keras.saving.register_keras_serializable(package="bfcnn")
class CropLike(keras.layers.Layer):
    """Crops `x` to the spatial size of `like`: `call([x, like])` (undoes the round-up of odd sizes)."""

    def call(self, inputs):
        x, like = inputs
        shape = ops.shape(like)
        return x[:, : shape[1], : shape[2], :]

    def compute_output_shape(self, input_shape):
        return (*input_shape[1][:3], input_shape[0][-1])
