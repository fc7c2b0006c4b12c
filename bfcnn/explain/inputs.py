"""The model and the image made ready for `bfcnn.explain`, and the checks of its pixel, channel and crop arguments."""

from typing import List, Optional, Tuple

import numpy as np

from bfcnn.errors import BfcnnError
from bfcnn.explain.bias_free import require_bias_free


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


def _as_model(model):
    if isinstance(model, str):
        from bfcnn.zoo import load_model

        return load_model(model)
    from bfcnn.models.precision import to_float32

    # Gradients through bfloat16 layers are too coarse for a 1e-4 check.
    return to_float32(model)


def check_channel(channel, channels: int) -> int:
    if not isinstance(channel, (int, np.integer)) or isinstance(channel, bool) or not 0 <= channel < channels:
        raise BfcnnError(f"channel must be an integer in 0..{channels - 1} (the model's output channels), "
                         f"got {channel!r}")
    return int(channel)


def prepared(model, image, allow_bias: bool):
    """The model (a zoo name loaded) checked for bias-freedom, and the image as its input."""
    model = _as_model(model)
    require_bias_free(model, allow_bias)
    return model, as_model_input(image, _model_channels(model))


def sample_pixels(height: int, width: int, count: int, seed: int = 0) -> List[Tuple[int, int]]:
    """`count` distinct pixels drawn at random (all of them when the image has fewer)."""
    if not isinstance(count, (int, np.integer)) or isinstance(count, bool) or count < 1:
        raise BfcnnError(f"count must be an integer >= 1, got {count!r}")
    total = height * width
    chosen = np.random.default_rng(seed).choice(total, size=min(int(count), total), replace=False)
    return [(int(i // width), int(i % width)) for i in np.sort(chosen)]


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
