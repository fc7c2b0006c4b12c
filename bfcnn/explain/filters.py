"""Adaptive filters, the rows of the Jacobian A(y), and the check `f(y) = A(y) y` (Mohan et al., ICLR 2020)."""

from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np

from bfcnn.errors import BfcnnError
from bfcnn.explain.bias_free import check_linear, output_and_reconstruction
from bfcnn.explain.inputs import check_channel, check_pixel, prepared, sample_pixels

DEFAULT_BATCH_SIZE = 32
# Copies of the image times its pixels per backward pass when `batch_size` is None: the
# activations of every copy are kept for the gradient (about 5 KB per pixel and copy for the
# pyramid flagships), so a 128 x 128 crop gets 32 copies and a 512 x 512 photograph 2.
BATCH_PIXELS = 2**19


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


def check_batch_size(batch_size, y: np.ndarray) -> int:
    """`batch_size`, checked; None: `DEFAULT_BATCH_SIZE`, fewer for a large image (`BATCH_PIXELS`)."""
    if batch_size is None:
        return max(1, min(DEFAULT_BATCH_SIZE, BATCH_PIXELS // (y.shape[0] * y.shape[1])))
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
        raise BfcnnError(f"batch_size must be an integer >= 1 or None, got {batch_size!r}")
    return int(batch_size)


def jacobian_rows(model, y: np.ndarray, targets: np.ndarray, batch_size: int) -> np.ndarray:
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


def _targets(pixels: Sequence, channel, y: np.ndarray) -> np.ndarray:
    """[P, 3] (row, column, channel) of the output values to explain, each checked."""
    height, width, channels = y.shape
    channel = check_channel(channel, channels)
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
    model, y = prepared(model, image, allow_bias)
    targets = _targets(list(pixels), channel, y)
    rows = jacobian_rows(model, y, targets, check_batch_size(batch_size, y))
    if not allow_bias:
        check_linear(model, y, targets, rows)
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
    model, y = prepared(model, image, allow_bias)
    pixels = sample_pixels(y.shape[0], y.shape[1], num_pixels, seed) if pixels is None else list(pixels)
    targets = _targets(pixels, channel, y)
    rows = jacobian_rows(model, y, targets, check_batch_size(batch_size, y))
    f, ay = output_and_reconstruction(model, y, targets, rows)
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
