"""Gaussian and Laplacian pyramids (Burt & Adelson, IEEE Trans. Communications 1983).

"The Laplacian pyramid as a compact image code": blur with the binomial kernel
[1, 4, 6, 4, 1] / 16 (their 5-tap generating kernel with a = 3/8) and keep every second pixel to go one level down; the detail band
of a level is the level minus the expanded coarser level, so merging the bands back
reconstructs the image exactly, whatever filter the expansion uses. Borders are
reflected; sizes need not be powers of two (a level of n pixels has ceil(n/2) below it).
Each expansion crops its result to the finer level's size; a model that mirrors its input up to
a multiple of 2^(levels - 1) first (`bfcnn.layers.padding.ReflectToMultiple`) can skip those
crops (`exact_halves=True`, `crop=False`), which in TFLite are gathers outside the XNNPACK
delegate that copy every full-size feature map.
All of it is linear and has no constant, so pyramids keep a model bias-free.

The pyramid layers compute in float32 whatever the global precision policy (pass `dtype` to
change it): under `mixed_bfloat16` a bfloat16 pyramid would round every band to 8 significant
bits, and the merged image would no longer equal the input.
"""

import keras
import tensorflow as tf
from keras import ops

from bfcnn.layers.arguments import check_bool, check_int, check_pair
from bfcnn.layers.cropping import crop_to

_LIKE = "like: the tensor whose height and width the output takes"

BINOMIAL_5 = (1.0 / 16, 4.0 / 16, 6.0 / 16, 4.0 / 16, 1.0 / 16)


def _slice(x, axis, start, stop):
    """`x[..., start:stop, ...]` on `axis` of a 4-D tensor (constant bounds: static in TFLite)."""
    index = [slice(None)] * 4
    index[axis] = slice(start, stop)
    return x[tuple(index)]


def _reflect_pad_axis(x, pad, axis):
    """Reflect-pads one axis of `x` by `pad` with constant slices only (see `reflect_pad`)."""
    # head[i] is pixel i, or the last pixel where the axis is shorter; tail[-1 - i] is
    # pixel n-1-i, or the first pixel. Both are at least pad + 1 long for any n >= 1.
    head = ops.concatenate([_slice(x, axis, 0, pad + 1)] + [_slice(x, axis, -1, None)] * pad, axis=axis)
    tail = ops.concatenate([_slice(x, axis, 0, 1)] * pad + [_slice(x, axis, -pad - 1, None)], axis=axis)
    left = [_slice(head, axis, i, i + 1) for i in range(pad, 0, -1)]
    right = [_slice(tail, axis, -2 - i, -1 - i) for i in range(pad)]
    return ops.concatenate(left + [x] + right, axis=axis)


def reflect_pad(x, pad):
    """Reflect-pads the two spatial axes of a [B, H, W, C] tensor by `pad` pixels.

    Pixel -i is pixel i and pixel n-1+i is pixel n-1-i (as `tf.pad(mode="REFLECT")`) for
    axes of at least pad + 1 pixels; shorter axes (a 2-pixel axis with pad 2, a 1-pixel
    axis) repeat their edge pixel where the reflection would leave the axis, so every model
    accepts any H, W >= 1. Built from constant slices and concatenations only, so TFLite
    knows every shape once the input is resized and the XNNPACK delegate keeps the graph.
    """
    return _reflect_pad_axis(_reflect_pad_axis(x, pad, 1), pad, 2)


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


def _pad_for_upsample(x, axis):
    """One pixel more on each side of `axis`: pixel 1 reflected on the left (pixel 0 when the
    axis has one pixel), the last pixel repeated on the right; constant slices only."""
    second_or_first = _slice(_slice(x, axis, 0, 2), axis, -1, None)
    return ops.concatenate([second_or_first, x, _slice(x, axis, -1, None)], axis=axis)


def upsample(x, like, crop=True):
    """Expands `x` by two to the size of `like` (to twice its own size with `crop=False`, for
    a `like` known to be exactly that): zero insertion then the binomial blur times 2
    per axis, computed as its four polyphase components at the coarse size and interleaved by
    a depth-to-space (no multiplications by inserted zeros, static shapes for TFLite).

    Along an axis, output pixel 2i is (x[i-1] + 6 x[i] + x[i+1]) / 8 and pixel 2i+1 is
    (x[i] + x[i+1]) / 2, with x[-1] = x[1] (reflection) and x[n] = x[n-1] (the edge). For an
    even output size that is what blurring the zero-inserted signal with reflected borders
    gives; for an odd one (2n - 1) the last pixel is (x[n-2] + 7 x[n-1]) / 8 where that blur
    gives (2 x[n-2] + 6 x[n-1]) / 8. Reconstruction stays exact either way: `merge` adds back
    the same expansion that the Laplacian band subtracted.
    """
    channels = x.shape[-1]
    x = _pad_for_upsample(_pad_for_upsample(x, 1), 2)
    even = ops.convert_to_tensor([1.0 / 8, 6.0 / 8, 1.0 / 8], dtype=x.dtype)
    odd = ops.convert_to_tensor([0.0, 0.5, 0.5], dtype=x.dtype)

    def along(t, taps, axis):
        shape = (3, 1, 1, 1) if axis == 1 else (1, 3, 1, 1)
        kernel = ops.tile(ops.reshape(taps, shape), (1, 1, channels, 1))
        return ops.depthwise_conv(t, kernel, padding="valid")

    rows = [along(x, even, 1), along(x, odd, 1)]
    phases = [along(r, taps, 2) for r in rows for taps in (even, odd)]
    x = tf.nn.depth_to_space(ops.concatenate(phases, axis=-1), 2)
    if not crop:
        return x
    target = ops.shape(like)
    return crop_to(x, target[1], target[2])


@keras.saving.register_keras_serializable(package="bfcnn")
class GaussianPyramid(keras.layers.Layer):
    """Splits an image into `levels` successively blurred and halved copies (the Gaussian
    pyramid of Burt & Adelson, 1983; module docstring).

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
        kwargs.setdefault("dtype", "float32")  # see the module docstring
        super().__init__(**kwargs)
        self.levels = check_int("levels", levels)
        self.input_spec = keras.InputSpec(ndim=4)  # [B, H, W, C]: a clear error for another rank

    def call(self, inputs):
        out = [ops.cast(inputs, self.compute_dtype)]  # integer images too
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
    """Splits an image into detail bands plus a low-pass residual, and merges them back (the
    Laplacian pyramid of Burt & Adelson, 1983; module docstring).

    `call(x)` on [B, H, W, C] returns `[L_0, ..., L_{levels-2}, G_{levels-1}]` with
    `L_i = G_i - upsample(G_{i+1})`; `call(bands, inverse=True)` (or `merge(bands)`)
    rebuilds the image coarse to fine, `G_i = L_i + upsample(G_{i+1})`, which equals the
    input up to float rounding for any size. A constant image has all-zero bands.

    Args:
        levels: number of levels, >= 1 (1 returns `[x]`).
        exact_halves: True when the input's height and width are multiples of 2^(levels - 1),
            as `ReflectToMultiple` makes them: every level is then exactly half the one above
            and the expansions skip their crop (module docstring). A ValueError for other sizes
            where they are known when the layer is called; a graph with sizes known only at run
            time fails there with a shape mismatch.

    Example:
        >>> pyramid = LaplacianPyramid(levels=3)
        >>> x = keras.ops.ones((1, 17, 9, 1))
        >>> bands = pyramid(x)
        >>> x_again = pyramid(bands, inverse=True)
    """

    def __init__(self, levels=3, exact_halves=False, **kwargs):
        kwargs.setdefault("dtype", "float32")  # see the module docstring
        super().__init__(**kwargs)
        self.levels = check_int("levels", levels)
        self.exact_halves = bool(exact_halves)

    def call(self, inputs, inverse=False):
        if inverse:
            return self.merge(inputs)
        if len(inputs.shape) != 4:  # no input_spec: the inverse takes a list of bands
            raise ValueError(f"LaplacianPyramid needs a [B, H, W, C] tensor, got shape {tuple(inputs.shape)} "
                             "(to merge bands, call it with inverse=True)")
        if self.exact_halves:
            _check_multiple(inputs.shape, 2 ** (self.levels - 1))
        gaussian = [ops.cast(inputs, self.compute_dtype)]
        for _ in range(self.levels - 1):
            gaussian.append(downsample(gaussian[-1]))
        crop = not self.exact_halves
        bands = [g - upsample(coarse, g, crop) for g, coarse in zip(gaussian[:-1], gaussian[1:])]
        return bands + [gaussian[-1]]

    def merge(self, bands):
        """Rebuilds the image from `[L_0, ..., L_{n-2}, G_{n-1}]`, coarse to fine."""
        if len(bands) != self.levels:
            raise ValueError(f"LaplacianPyramid(levels={self.levels}) cannot merge {len(bands)} bands")
        _check_band_sizes(bands)
        image = bands[-1]
        for band in reversed(bands[:-1]):
            image = band + upsample(image, band, not self.exact_halves)
        return image

    def compute_output_shape(self, input_shape):
        if isinstance(input_shape, (list, tuple)) and input_shape and isinstance(input_shape[0], (list, tuple)):
            return input_shape[0]
        return GaussianPyramid(self.levels).compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "levels": self.levels, "exact_halves": self.exact_halves}


def _check_multiple(shape, multiple: int) -> None:
    """A ValueError unless the spatial sizes in `shape` that are known now are multiples of `multiple`."""
    sizes = tuple(shape[1:3])
    if any(isinstance(n, int) and n % multiple for n in sizes):
        raise ValueError(f"exact_halves=True needs height and width multiples of {multiple} (mirror the image "
                         f"up with bfcnn.layers.ReflectToMultiple({multiple}) first), got {sizes}")


def _check_band_sizes(bands) -> None:
    """A ValueError unless each band is ceil(n/2) of the one before it (finest first), where
    the sizes are known now."""
    sizes = [tuple(band.shape[1:3]) for band in bands]
    for finer, coarser in zip(sizes[:-1], sizes[1:]):
        for n, m in zip(finer, coarser):
            if isinstance(n, int) and isinstance(m, int) and m != (n + 1) // 2:
                raise ValueError("LaplacianPyramid.merge needs the bands finest first, each ceil(n/2) of the one "
                                 f"before (what the pyramid returns); got spatial sizes {sizes}")


@keras.saving.register_keras_serializable(package="bfcnn")
class UpsampleLike(keras.layers.Layer):
    """Expands `x` by two to the spatial size of `like` with the pyramid's filter.

    `call([x, like])`; the channels of `x` are kept. Used to carry a coarse level's
    result (image or features) up to the next finer level.

    Args:
        crop: False when `like` is known to be exactly twice `x` (a level of a pyramid with
            `exact_halves=True`): the crop, a copy in TFLite, is skipped.
    """

    def __init__(self, crop=True, **kwargs):
        kwargs.setdefault("dtype", "float32")  # see the module docstring
        super().__init__(**kwargs)
        self.crop = check_bool("crop", crop)

    def call(self, inputs):
        x, like = check_pair("UpsampleLike", inputs, hint=_LIKE)
        return upsample(x, like, self.crop)

    def compute_output_shape(self, input_shape):
        x_shape, like_shape = check_pair("UpsampleLike", input_shape, hint=_LIKE)
        return (*like_shape[:3], x_shape[-1])

    def get_config(self):
        return {**super().get_config(), "crop": self.crop}


@keras.saving.register_keras_serializable(package="bfcnn")
class CropLike(keras.layers.Layer):
    """Crops `x` to the spatial size of `like`: `call([x, like])` (undoes the round-up of odd sizes)."""

    def call(self, inputs):
        x, like = check_pair("CropLike", inputs, hint=_LIKE)
        shape = ops.shape(like)
        return crop_to(x, shape[1], shape[2])

    def compute_output_shape(self, input_shape):
        x_shape, like_shape = check_pair("CropLike", input_shape, hint=_LIKE)
        return (*like_shape[:3], x_shape[-1])
