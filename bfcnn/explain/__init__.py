"""A bias-free denoiser as a per-pixel adaptive filter (Mohan et al., "Robust and interpretable
blind image denoising via bias-free convolutional neural networks", ICLR 2020).

A network made of convolutions, ReLUs and bias-free normalizations is piecewise linear
with no additive constant, so at every input `y` its output is `f(y) = A(y) y`, where
`A(y)` is its Jacobian at `y`. Row `i` of `A(y)` is the set of weights the network
averages the noisy pixels with to produce output pixel `i`: an adaptive filter that can be
drawn. Its singular values show the subspace the network projects the noisy image onto;
the paper finds that this subspace shrinks as the noise grows.

    >>> import bfcnn, bfcnn.explain
    >>> model = bfcnn.load_model("pyramid_gray_m")
    >>> weights = bfcnn.explain.adaptive_filter(model, noisy, pixel=(100, 120))   # [H, W, 1]
    >>> bfcnn.explain.reconstruction_error(model, noisy)                          # ~1e-7

Everything here works for models with biases too (`allow_bias=True`), but then
`f(y) = A(y) y + b(y)` and the rows of A are not the whole story; without the flag such a
model is refused with `NotBiasFreeError`.
"""

from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np

from bfcnn.errors import BfcnnError

# The full Jacobian of an H x W x C crop has (H W C)^2 entries; above this many input
# values its SVD takes minutes, so `jacobian` refuses unless told otherwise.
MAX_JACOBIAN_INPUTS = 4096
DEFAULT_BATCH_SIZE = 32
# Copies of the image times its pixels per backward pass when `batch_size` is None: the
# activations of every copy are kept for the gradient (about 5 KB per pixel and copy for the
# pyramid flagships), so a 128 x 128 crop gets 32 copies and a 512 x 512 photograph 2.
BATCH_PIXELS = 2**19
# |f(y) - A(y) y| allowed at a pixel of a model taken for bias-free, on the 0-255 scale (plus
# 1e-4 of |f(y)|): float32 rounding gives up to about 2e-3 on the zoo's models (1e-6 to 8e-4
# on the gray ones at sigma 0 to 100); an offset of half a gray level in one layer gives 0.5.
LINEARITY_TOLERANCE = 0.01


class NotBiasFreeError(BfcnnError):
    """The model has additive constants (or non-homogeneous layers): `f(y) = A(y) y` fails."""


@dataclass(frozen=True)
class Reconstruction:
    """`f(y)` against `A(y) y` at a set of output pixels.

    Attributes:
        pixels: [P, 2] (row, column) of the pixels checked.
        output: [P] the model's output `f(y)` there (channel `channel`).
        reconstruction: [P] `sum(A(y)[pixel] * y)`, the row of the Jacobian applied to y.
        relative_error: `||output - reconstruction||_2 / ||output||_2`.
        max_abs_error: largest `|output - reconstruction|`, on the 0-255 scale.
    """

    pixels: np.ndarray
    output: np.ndarray
    reconstruction: np.ndarray
    relative_error: float
    max_abs_error: float


@dataclass(frozen=True)
class EffectiveDimension:
    """The spectrum of `A(y)` on a crop and the dimension of the subspace it projects onto.

    Attributes:
        singular_values: all singular values of the (H W C) x (H W C) Jacobian, descending.
        dimension: `sum(singular_values ** 2)` = `||A||_F^2` = `trace(A A^T)`: the
            rank of A when A is an orthogonal projection, which Mohan et al. find A close to
            (singular values near 0 or 1, A nearly symmetric); the definition this module
            reports and plots.
        trace: `trace(A)`, the divergence of the denoiser (Stein's degrees of freedom);
            equals `dimension` for an orthogonal projection, so their gap measures how far
            A is from one.
        size: number of input values, H W C (the largest possible dimension).
    """

    singular_values: np.ndarray
    dimension: float
    trace: float
    size: int


def _model_channels(model) -> Optional[int]:
    try:
        channels = model.input_shape[-1]
    except (AttributeError, IndexError, TypeError, ValueError):
        return None
    return int(channels) if channels else None


def as_model_input(image, channels: Optional[int] = None) -> np.ndarray:
    """An image as float32 [H, W, C] on the 0-255 scale, with the model's number of channels.

    Args:
        image: a numpy array HxW, HxWx1 or HxWx3 (uint8, uint16 or float on the 0-255
            scale; noisy floats outside [0, 255] are kept as they are) or a PIL image.
        channels: the model's input channels; a gray image given to a 3-channel model is
            repeated on the three channels. None keeps the image's channels.

    Raises:
        BfcnnError: a wrong shape or dtype, an empty image, non-finite values, or a color
            image given to a gray model (the message says how to convert it).
    """
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover (Pillow is a dependency)
        Image = None
    if Image is not None and isinstance(image, Image.Image):
        from bfcnn.io import to_uint8_array

        image = to_uint8_array(image)
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3):
        raise BfcnnError(f"image must be HxW, HxWx1 or HxWx3, got shape {np.shape(image)}")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise BfcnnError(f"image is empty: shape {np.shape(image)}")
    if array.dtype == np.uint16:
        array = array.astype(np.float32) * (255.0 / 65535.0)
    elif array.dtype != np.uint8 and not np.issubdtype(array.dtype, np.floating):
        raise BfcnnError(f"image dtype must be uint8, uint16 or float (0-255 scale), got {array.dtype}")
    array = array.astype(np.float32)
    if not np.all(np.isfinite(array)):
        raise BfcnnError("image has NaN or infinite values")
    if channels is not None and channels != array.shape[-1]:
        if array.shape[-1] == 1:
            array = np.repeat(array, channels, axis=-1)
        else:
            raise BfcnnError(
                f"the model takes {channels} channel(s) but the image has {array.shape[-1]}; "
                "convert it first, e.g. bfcnn.io.read_image(path, color='gray')"
            )
    return array


def check_pixel(pixel, height: int, width: int) -> Tuple[int, int]:
    """`pixel` as an integer (row, column) inside an image of `height` x `width`.

    Raises:
        BfcnnError: not a pair of integers, or outside the image (names the valid range).
    """
    try:
        row, col = pixel
    except (TypeError, ValueError):
        raise BfcnnError(f"pixel must be a (row, column) pair of integers, got {pixel!r}") from None
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (row, col)):
        raise BfcnnError(f"pixel must be a (row, column) pair of integers, got {pixel!r}")
    if not (0 <= row < height and 0 <= col < width):
        raise BfcnnError(
            f"pixel (row={row}, column={col}) is outside the {height}x{width} image; "
            f"allowed: rows 0..{height - 1}, columns 0..{width - 1}"
        )
    return int(row), int(col)


def why_not_bias_free(model) -> Optional[str]:
    """None for a bias-free model (`bfcnn.models.is_bias_free`), else what breaks it."""
    from bfcnn.models.cost import why_not_bias_free as _why

    return _why(model)


def require_bias_free(model, allow_bias: bool = False) -> None:
    """Raises NotBiasFreeError unless the model is bias-free or `allow_bias` is True."""
    if allow_bias:
        return
    reason = why_not_bias_free(model)
    if reason is not None:
        raise NotBiasFreeError(
            f"model {getattr(model, 'name', '?')!r} is not bias-free: {reason}. Its Jacobian rows "
            "are not the whole filter (f(y) = A(y) y + b(y)); pass allow_bias=True (--allow-bias on the command "
            "line) to explain it anyway"
        )


def _as_model(model):
    if isinstance(model, str):
        from bfcnn.zoo import load_model

        return load_model(model)
    from bfcnn.models.precision import to_float32

    # Gradients through bfloat16 layers are too coarse for a 1e-4 check.
    return to_float32(model)


def _check_channel(channel, channels: int) -> int:
    if not isinstance(channel, (int, np.integer)) or isinstance(channel, bool) or not 0 <= channel < channels:
        raise BfcnnError(f"channel must be an integer in 0..{channels - 1} (the model's output channels), "
                         f"got {channel!r}")
    return int(channel)


def _check_batch_size(batch_size, y: np.ndarray) -> int:
    """`batch_size`, checked; None: `DEFAULT_BATCH_SIZE`, fewer for a large image (`BATCH_PIXELS`)."""
    if batch_size is None:
        return max(1, min(DEFAULT_BATCH_SIZE, BATCH_PIXELS // (y.shape[0] * y.shape[1])))
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
        raise BfcnnError(f"batch_size must be an integer >= 1 or None, got {batch_size!r}")
    return int(batch_size)


def _jacobian_rows(model, y: np.ndarray, targets: np.ndarray, batch_size: int) -> np.ndarray:
    """Rows of the Jacobian of `model` at `y` [H, W, C] for `targets` [P, 3] (row, col, channel).

    The image is repeated along the batch, one copy per target; the sum over the batch of
    each copy's target output has, as its gradient with respect to the batch, each target's
    row in its own batch entry: one backward pass for `batch_size` rows. This needs the
    images of a batch to be independent, which holds in inference mode.
    """
    import tensorflow as tf

    rows = np.empty((len(targets),) + y.shape, np.float32)
    for start in range(0, len(targets), batch_size):
        chunk = targets[start : start + batch_size]
        batch = tf.constant(np.broadcast_to(y, (len(chunk),) + y.shape))
        index = np.concatenate([np.arange(len(chunk))[:, None], chunk], axis=1).astype(np.int32)
        with tf.GradientTape() as tape:
            tape.watch(batch)
            out = tf.cast(model(batch, training=False), tf.float32)
            picked = tf.reduce_sum(tf.gather_nd(out, index))
        gradient = tape.gradient(picked, batch)
        if gradient is None:
            raise BfcnnError("the model's output does not depend on its input (no gradient)")
        rows[start : start + len(chunk)] = gradient.numpy()
    return rows


def _output_and_reconstruction(model, y: np.ndarray, targets: np.ndarray, rows: np.ndarray):
    """`f(y)` and `A(y) y` at `targets` [P, 3], in float64."""
    import tensorflow as tf

    output = tf.cast(model(tf.constant(y[None]), training=False), tf.float32).numpy()[0]
    f = output[targets[:, 0], targets[:, 1], targets[:, 2]].astype(np.float64)
    return f, np.einsum("phwc,hwc->p", rows.astype(np.float64), y.astype(np.float64))


def _check_linear(model, y: np.ndarray, targets: np.ndarray, rows: np.ndarray) -> None:
    """NotBiasFreeError when `f(y) = A(y) y` fails at the targets: a constant the layer check
    (`why_not_bias_free`, which reads weight names and layer types) cannot see, such as a
    Rescaling offset, a Normalization layer or a Lambda adding a number."""
    f, ay = _output_and_reconstruction(model, y, targets, rows)
    excess = np.abs(f - ay) - 1e-4 * np.abs(f)
    worst = int(np.argmax(excess))
    if excess[worst] > LINEARITY_TOLERANCE:
        row, col, channel = (int(v) for v in targets[worst])
        raise NotBiasFreeError(
            f"model {getattr(model, 'name', '?')!r} is not bias-free at this image: at pixel ({row}, {col}) "
            f"channel {channel} its output is {f[worst]:.4g} but A(y) y is {ay[worst]:.4g}, so some layer adds "
            "a constant or is not homogeneous; pass allow_bias=True (--allow-bias) to explain it anyway")


def _prepared(model, image, allow_bias: bool):
    """The model (a zoo name loaded) checked for bias-freedom, and the image as its input."""
    model = _as_model(model)
    require_bias_free(model, allow_bias)
    return model, as_model_input(image, _model_channels(model))


def _targets(pixels: Sequence, channel, y: np.ndarray) -> np.ndarray:
    """[P, 3] (row, column, channel) of the output values to explain, each checked."""
    height, width, channels = y.shape
    channel = _check_channel(channel, channels)
    if not pixels:
        raise BfcnnError("pixels is empty: give at least one (row, column)")
    checked = [check_pixel(p, height, width) for p in pixels]
    return np.array([(r, c, channel) for r, c in checked], np.int64).reshape(-1, 3)


def adaptive_filters(model, image, pixels: Iterable, channel: int = 0, allow_bias: bool = False,
                     batch_size: Optional[int] = None) -> np.ndarray:
    """The adaptive filters of several output pixels: rows of the Jacobian A(y), [P, H, W, C].

    See `adaptive_filter`; rows are computed `batch_size` at a time (memory grows with it and with
    the image size; None picks up to 32 by the image's size, `BATCH_PIXELS`).
    Unless `allow_bias`, `f(y) = A(y) y` is also checked at the pixels (one more forward pass).
    """
    model, y = _prepared(model, image, allow_bias)
    targets = _targets(list(pixels), channel, y)
    rows = _jacobian_rows(model, y, targets, _check_batch_size(batch_size, y))
    if not allow_bias:
        _check_linear(model, y, targets, rows)
    return rows


def adaptive_filter(model, image, pixel, channel: int = 0, allow_bias: bool = False) -> np.ndarray:
    """The adaptive filter of one output pixel: its row of the Jacobian A(y), as a weight map.

    For a bias-free network `f(y) = A(y) y` (Mohan et al., ICLR 2020), so the output
    at `pixel` is exactly `sum(weights * y)`: the weights the network gives every noisy
    input value, computed with one backward pass (`tf.GradientTape`).

    Args:
        model: a keras.Model (mixed-precision models are run in float32) or a zoo name.
        image: the noisy image y, a numpy array HxW / HxWxC (uint8 or float on the 0-255
            scale, not clipped) or a PIL image; a gray image given to a color model is
            repeated on its three channels.
        pixel: (row, column) of the output pixel.
        channel: the output channel (0 for gray models; 0, 1, 2 for R, G, B).
        allow_bias: explain a model that is not bias-free anyway (its filter then misses
            the constant part b(y) of `f(y) = A(y) y + b(y)`).

    Returns:
        float32 [H, W, C]: the weight of every input value in output `pixel`, `channel`.

    Raises:
        NotBiasFreeError: `allow_bias` is False and the model is not bias-free, by its layers
            (`why_not_bias_free`) or because `f(y)` and `A(y) y` differ at the pixel by more
            than `LINEARITY_TOLERANCE` (a constant hidden in a layer).
        BfcnnError: a bad image, a pixel outside the image, or a bad channel.

    Example:
        >>> weights = adaptive_filter(model, noisy, (100, 120))
        >>> float((weights * noisy[..., None]).sum())   # == model(noisy[None, ..., None])[0, 100, 120, 0]
    """
    return adaptive_filters(model, image, [pixel], channel=channel, allow_bias=allow_bias)[0]


def sample_pixels(height: int, width: int, count: int, seed: int = 0) -> List[Tuple[int, int]]:
    """`count` distinct pixels drawn at random (all of them when the image has fewer)."""
    if not isinstance(count, (int, np.integer)) or isinstance(count, bool) or count < 1:
        raise BfcnnError(f"count must be an integer >= 1, got {count!r}")
    total = height * width
    chosen = np.random.default_rng(seed).choice(total, size=min(int(count), total), replace=False)
    return [(int(i // width), int(i % width)) for i in np.sort(chosen)]


def reconstruction(model, image, pixels: Optional[Iterable] = None, num_pixels: int = 32, seed: int = 0,
                   channel: int = 0, allow_bias: bool = False,
                   batch_size: Optional[int] = None) -> Reconstruction:
    """Compares the model's output `f(y)` with `A(y) y` at a set of pixels.

    For a bias-free piecewise-linear network the two agree to float rounding (Mohan et al.,
    ICLR 2020); a network with biases adds `b(y)` and they differ.

    Args:
        model, image, channel, allow_bias: as in `adaptive_filter`.
        pixels: the (row, column) pixels to check; None draws `num_pixels` at random
            (`seed`), never the same one twice.

    Returns:
        A `Reconstruction` with both values per pixel and the relative error.
    """
    model, y = _prepared(model, image, allow_bias)
    pixels = sample_pixels(y.shape[0], y.shape[1], num_pixels, seed) if pixels is None else list(pixels)
    targets = _targets(pixels, channel, y)
    rows = _jacobian_rows(model, y, targets, _check_batch_size(batch_size, y))
    f, ay = _output_and_reconstruction(model, y, targets, rows)
    difference = f - ay
    relative = float(np.linalg.norm(difference) / max(np.linalg.norm(f), 1e-12))
    return Reconstruction(pixels=targets[:, :2].copy(), output=f, reconstruction=ay,
                          relative_error=relative, max_abs_error=float(np.max(np.abs(difference))))


def reconstruction_error(model, image, **kwargs) -> float:
    """`||f(y) - A(y) y|| / ||f(y)||` over a set of pixels; see `reconstruction` for the arguments.

    Below 1e-4 for a bias-free model in float32; of the order of the biases' share of the
    output for a model with biases.

    Example:
        >>> reconstruction_error(bfcnn.load_model("pyramid_gray_m"), noisy) < 1e-4
        True
    """
    return reconstruction(model, image, **kwargs).relative_error


def jacobian(model, image, allow_bias: bool = False, batch_size: Optional[int] = None,
             max_inputs: int = MAX_JACOBIAN_INPUTS) -> np.ndarray:
    """The full Jacobian A(y) of the model at a small image, [H W C, H W C].

    Row `i` is output value `i` (pixels in row-major order, channels last) as a function of
    the input values in the same order. The crop is the model's whole input, so its border
    is the image border.

    Raises:
        BfcnnError: the image has more than `max_inputs` values (the cost grows with the
            square); crop it or raise the limit.
    """
    model, y = _prepared(model, image, allow_bias)
    height, width, channels = y.shape
    if height * width * channels > max_inputs:
        raise BfcnnError(
            f"a {height}x{width}x{channels} image has {height * width * channels} values, more than "
            f"max_inputs={max_inputs}; crop it (e.g. 24x24) or pass a larger max_inputs"
        )
    grid = np.stack(np.meshgrid(np.arange(height), np.arange(width), np.arange(channels), indexing="ij"), -1)
    targets = grid.reshape(-1, 3)
    rows = _jacobian_rows(model, y, targets, _check_batch_size(batch_size, y))
    if not allow_bias:
        _check_linear(model, y, targets, rows)
    return rows.reshape(height * width * channels, -1)


def effective_dimensionality(model, image_crop, allow_bias: bool = False,
                             batch_size: Optional[int] = None,
                             max_inputs: int = MAX_JACOBIAN_INPUTS) -> EffectiveDimension:
    """Singular values of A(y) on a small crop and the effective dimension of its range.

    Mohan et al. (ICLR 2020) find A(y) nearly symmetric with singular values
    near 0 or 1: the network approximately projects the noisy image onto a subspace that
    adapts to the image, and the subspace shrinks as the noise grows. Its dimension is
    taken as `sum(s_i ** 2)` (the squared Frobenius norm of A, the rank of a projection);
    `trace(A)` is reported too. See `EffectiveDimension`.

    Args:
        model, allow_bias: as in `adaptive_filter`.
        image_crop: a small noisy image (at most `max_inputs` values, e.g. 24x24 gray).

    Example:
        >>> effective_dimensionality(model, noisy[:24, :24]).dimension
    """
    a = jacobian(model, image_crop, allow_bias=allow_bias, batch_size=batch_size, max_inputs=max_inputs)
    a = a.astype(np.float64)
    singular_values = np.linalg.svd(a, compute_uv=False)
    return EffectiveDimension(singular_values=singular_values, dimension=float(np.sum(singular_values**2)),
                              trace=float(np.trace(a)), size=int(a.shape[0]))


def filter_spread(weights: np.ndarray, pixel) -> float:
    """The RMS distance in pixels from `pixel` of a filter's weight, `sqrt(sum w^2 d^2 / sum w^2)`.

    A one-number width of an adaptive filter: it grows as the filter averages over a
    larger neighbourhood (as the noise grows, Mohan et al., ICLR 2020).
    """
    w = np.asarray(weights, np.float64)
    if w.ndim == 3:
        w = np.sqrt(np.sum(w**2, axis=-1))
    if w.ndim != 2:
        raise BfcnnError(f"weights must be [H, W] or [H, W, C], got shape {np.shape(weights)}")
    row, col = check_pixel(pixel, *w.shape)
    rr, cc = np.meshgrid(np.arange(w.shape[0]) - row, np.arange(w.shape[1]) - col, indexing="ij")
    energy = w**2
    total = energy.sum()
    return float(np.sqrt(np.sum(energy * (rr**2 + cc**2)) / total)) if total > 0 else 0.0


def effective_support(weights: np.ndarray) -> float:
    """How many pixels a filter averages over: `(sum |w|)^2 / sum w^2`.

    1 for a single nonzero weight, n for n equal weights; unlike `filter_spread` it does not
    depend on where the weights are, only on how evenly they are spread.
    """
    w = np.abs(np.asarray(weights, np.float64))
    energy = np.sum(w**2)
    return float(np.sum(w) ** 2 / energy) if energy > 0 else 0.0


def off_centre_limit(weights: np.ndarray, position) -> float:
    """The largest |weight| of a 2-D map leaving out `position`: a color range that shows the
    surround (the centre weight, usually the largest, is then drawn saturated)."""
    w = np.abs(np.asarray(weights, np.float64)).copy()
    if w.ndim != 2:
        raise BfcnnError(f"weights must be a 2-D map, got shape {w.shape}")
    w[check_pixel(position, *w.shape)] = 0.0
    return float(w.max()) if w.max() > 0 else float(np.max(np.abs(weights)) or 1.0)


def crop_around(array: np.ndarray, pixel, size: int) -> Tuple[np.ndarray, Tuple[int, int]]:
    """The `size` x `size` window of `array` centred on `pixel` (shifted to stay inside when
    possible, smaller when the image is), and the pixel's position inside it."""
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
        raise BfcnnError(f"size must be an integer >= 1, got {size!r}")
    height, width = array.shape[:2]
    row, col = check_pixel(pixel, height, width)
    top = int(np.clip(row - size // 2, 0, max(height - size, 0)))
    left = int(np.clip(col - size // 2, 0, max(width - size, 0)))
    return array[top : top + size, left : left + size], (row - top, col - left)


def main(argv=None) -> int:
    """`python -m bfcnn.explain`; see `bfcnn/explain/__main__.py`."""
    from bfcnn.explain.__main__ import main as _main

    return _main(argv)


__all__ = [
    "EffectiveDimension",
    "NotBiasFreeError",
    "Reconstruction",
    "adaptive_filter",
    "adaptive_filters",
    "as_model_input",
    "crop_around",
    "effective_dimensionality",
    "effective_support",
    "filter_spread",
    "jacobian",
    "off_centre_limit",
    "reconstruction",
    "reconstruction_error",
    "require_bias_free",
    "sample_pixels",
]
