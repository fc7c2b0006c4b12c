"""`bfcnn.denoise`: denoise numpy arrays and PIL images with any bfcnn model, tiled when large."""

import functools
import os
import weakref
from typing import Optional, Union

import numpy as np

from bfcnn.errors import BfcnnError
from bfcnn.tiling import MIN_SIDE, is_int, min_size_apply, min_tile_size, tiled_apply, to_dtype

# Images above this many pixels are denoised tile by tile, so memory stays bounded.
DEFAULT_MAX_PIXELS = 1024 * 1024
DEFAULT_TILE = 512
DEFAULT_OVERLAP = 48

# model -> its traced function; the function reaches the model through a weak reference only,
# so the cache never keeps a model alive.
_RUNNERS = weakref.WeakKeyDictionary()
_BFLOAT16 = weakref.WeakKeyDictionary()  # model -> its bfloat16 copy (which does not refer back to it)
_LIFTED = weakref.WeakKeyDictionary()  # opponent model -> its LiftedParts (whose network does not refer back)
PRECISIONS = ("float32", "bfloat16")
FLOAT32_MAX = float(np.finfo(np.float32).max)
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B")
_ALPHA_MODES = ("RGBA", "RGBa", "PA")  # LA and La are handled on their own


def graph_runner(model):
    """A fast numpy function float32 [H, W, C] -> [H, W, C] running a Keras model in graph mode.

    The model is wrapped in a `tf.function` traced once per model (for any H and W: the
    spatial dimensions are left unknown) and cached without keeping the model alive. This is
    the function `denoise` runs on each image or tile; pass it to `bfcnn.tiling.tiled_apply`
    to tile a model yourself. The image is on the 0-255 scale, C the model's input channels.

    Example:
        >>> run = graph_runner(model)
        >>> out = tiled_apply(run, noisy, tile_size=256, overlap=48)
    """
    import tensorflow as tf

    if model not in _RUNNERS:
        channels = model.input_shape[-1]
        model_ref = weakref.ref(model)  # a strong reference here would keep the key alive forever
        _RUNNERS[model] = tf.function(
            lambda x: model_ref()(x, training=False),
            input_signature=[tf.TensorSpec([1, None, None, channels], tf.float32)],
        )
    function = _RUNNERS[model]
    return lambda image: function(image[None])[0].numpy()


def _same_shape(function):
    """`function`, checked to return an array of its input's shape (a model must not resize)."""

    def checked(pixels: np.ndarray) -> np.ndarray:
        result = function(pixels)
        try:
            result = np.asarray(result, np.float32)
        except (TypeError, ValueError) as error:
            raise BfcnnError(f"the model returned a {type(result).__name__}, not an image array") from error
        if result.shape != pixels.shape:
            raise BfcnnError(f"the model must return an array of its input's shape {pixels.shape}, "
                             f"got shape {result.shape}")
        if result.size and not (np.isfinite(result.min()) and np.isfinite(result.max())):  # no full-size copy
            bad = result.size - np.count_nonzero(np.isfinite(result))
            raise BfcnnError(f"the model returned {bad} non-finite values (NaN or inf) of {result.size}: its "
                             "weights or its input's scale are wrong (images are denoised on the 0-255 scale)")
        return result

    return checked


def _dihedral(image: np.ndarray, k: int) -> np.ndarray:
    """The k-th of the 8 rotations / flips of an [H, W, C] array (k = 0 is the identity)."""
    return np.rot90(image if k < 4 else image[:, ::-1], k % 4, axes=(0, 1))


def _undo_dihedral(image: np.ndarray, k: int) -> np.ndarray:
    image = np.rot90(image, -(k % 4), axes=(0, 1))
    return image if k < 4 else image[:, ::-1]


# The dihedral copies (`_dihedral`'s k) that each ensemble size averages. 2 and 4 are the
# subgroups that keep the image's axes (no transposition): {identity, rotation by 180} and
# those two with the horizontal and vertical flips; 8 is the whole group.
ENSEMBLE_SIZES = {2: (0, 2), 4: (0, 2, 4, 6), 8: tuple(range(8))}


def check_ensemble(ensemble) -> int:
    """How many dihedral copies `ensemble` asks for: 1 (none) for False, 8 for True, else 1, 2, 4 or 8.

    Raises BfcnnError naming the allowed values for anything else.
    """
    if isinstance(ensemble, (bool, np.bool_)):
        return 8 if ensemble else 1
    if is_int(ensemble) and (ensemble == 1 or ensemble in ENSEMBLE_SIZES):
        return int(ensemble)
    raise BfcnnError(f"ensemble must be False, True (8 copies) or a number of copies, 1, 2, 4 or 8, got {ensemble!r}")


def self_ensemble(function, size: int = 8):
    """`function` averaged over `size` rotations and flips of its input (the "x8" of Lim et al. 2017).

    Denoises each dihedral copy of the image (`ENSEMBLE_SIZES[size]`: 8 for all rotations and
    flips, 4 for those that keep the axes, 2 for the identity and the rotation by 180 degrees),
    maps each result back and returns the mean: `size` times the time for a typically small
    PSNR gain, most of which 2 and 4 copies already give (`python -m bfcnn.evaluate
    --ensemble 2 4 8` measures it). The mean of homogeneous functions is homogeneous, so a
    bias-free model stays bias-free. `function` maps float32 [H, W, C] to the same.
    """
    if size not in ENSEMBLE_SIZES:
        raise BfcnnError(f"an ensemble averages 2, 4 or 8 copies, got {size!r}")
    copies = ENSEMBLE_SIZES[size]

    def ensembled(image: np.ndarray) -> np.ndarray:
        total = None
        for k in copies:
            out = _undo_dihedral(np.asarray(function(np.ascontiguousarray(_dihedral(image, k))), np.float64), k)
            total = out if total is None else total + out
        return (total / len(copies)).astype(np.float32)

    return ensembled


def _as_model(model):
    if model is None or isinstance(model, (str, os.PathLike)):
        from bfcnn.zoo import load_model

        return load_model(model or "default")
    if not callable(model):
        raise BfcnnError("model must be a zoo name, a path to a .keras file or model folder, a keras.Model "
                         f"or a callable, got {type(model).__name__}")
    return model


def in_precision(model, precision: str):
    """`model` for precision="float32"; for "bfloat16" its copy computing in bfloat16
    (`bfcnn.models.precision.to_bfloat16`), built once per model and given the model's current
    weights at each call. BfcnnError for a model that cannot be copied (a plain callable, a
    subclassed model)."""
    if precision == "float32":
        return model
    if not hasattr(model, "get_config"):
        raise BfcnnError("precision='bfloat16' needs a Keras model (a zoo name, a .keras file or a "
                         f"keras.Model), got a {type(model).__name__}")
    if model not in _BFLOAT16:
        from bfcnn.models.precision import to_bfloat16

        try:
            _BFLOAT16[model] = to_bfloat16(model)
        except ValueError as error:
            raise BfcnnError(f"precision='bfloat16': {error}") from None
    else:  # the model may have been trained or loaded into since: the copy follows it
        for target, source in zip(_BFLOAT16[model].weights, model.weights):  # same order: one config
            target.assign(source)
    return _BFLOAT16[model]


def _check_tiling(tile_size, overlap) -> None:
    if not is_int(overlap) or overlap < 0:
        raise BfcnnError(f"overlap must be an integer >= 0, got {overlap!r}")
    if tile_size is not None and (not is_int(tile_size) or (tile_size != 0 and tile_size < min_tile_size(overlap))):
        raise BfcnnError(f"tile_size must be None (tile only images above one megapixel), 0 (never tile) "
                         f"or an integer at least twice overlap={overlap}, got {tile_size!r}")


def as_array(image) -> np.ndarray:
    """`image` (not a PIL image) as a numpy array, or a BfcnnError saying what is expected."""
    expected = "image must be a numpy array or a PIL image"
    if image is None or isinstance(image, (str, bytes, os.PathLike)):
        hint = " (to denoise a file, open it first: PIL.Image.open(path))" if image is not None else ""
        raise BfcnnError(f"{expected}, got {type(image).__name__}{hint}")
    try:
        array = np.asarray(image)
    except (TypeError, ValueError) as error:  # e.g. a ragged list
        raise BfcnnError(f"{expected}, got a {type(image).__name__} numpy cannot convert: {error}") from error
    if array.dtype == object:
        raise BfcnnError(f"{expected}, got {type(image).__name__}")
    return array


def _model_channels(model) -> Optional[int]:
    shape = getattr(model, "input_shape", None)
    return shape[-1] if shape else None


def denoise(image, model="default", tile_size: Optional[int] = None, overlap: int = DEFAULT_OVERLAP,
            ensemble: Union[bool, int] = False, precision: str = "float32", strength: float = 1.0,
            noise_std: Optional[float] = None):
    """Denoises an image with a bfcnn model; returns the same type, dtype and layout.

    Args:
        image: a numpy array `HxW`, `HxWx1`, `HxWx3` or `HxWx4` (alpha is kept as it is),
            uint8, uint16 (16-bit PNG) or float (on the 0-255 scale, all values finite),
            or a PIL image (turned upright by its EXIF orientation, as photographs from
            phones need; 16-bit gray and gray-with-alpha images keep their mode; other
            modes come back as L, RGB or RGBA). Any size: a side under 8 pixels is mirrored
            up to 8 before the model sees it (`bfcnn.tiling.min_size_apply`), and cropped back.
        model: a zoo name, a path to a `.keras` file or model folder, a keras.Model, or any
            callable taking float32 [H, W, C] (0-255) and returning the same shape. A gray
            image through a color model is denoised as gray RGB; a color image through a
            gray model channel by channel.
        tile_size: denoise in tiles of this size, an integer at least twice `overlap`; `None`
            tiles only images above one megapixel (tiles of 512 with the overlap below),
            0 never tiles.
        overlap: overlap of neighbouring tiles (an integer >= 0), blended smoothly; tiles give
            the whole image's result (to float rounding) where the blend's margin, overlap // 4,
            covers the model's receptive field radius, and differ a little at the seams below
            that (docs/inference.md, "Tiled inference"). An opponent color model is lifted by
            the whole image's mean in every tile (`lifted_parts`).
        ensemble: average the model over rotations and flips of each tile (`self_ensemble`):
            True or 8 for all 8 (8x slower, usually a little better), 4 or 2 for fewer copies
            (4x / 2x slower, most of the gain: docs/inference.md, "Self-ensemble"); False or 1
            for one pass (default).
        precision: `float32` (default, what the model cards measure) or `bfloat16`: the
            convolutions compute in bfloat16 (`bfcnn.models.precision.to_bfloat16`): for
            the zoo's models 1.6 to 1.9x faster on a CPU with AVX512-BF16, for 0.01 to 0.02
            dB (docs/inference.md); may be slower on a CPU without bfloat16 instructions, where
            they are emulated. Keras models only.
        strength: how much of the model's change to keep, from 0 (the input) to 1 (default, the
            model's output): the result is `input + strength * (output - input)`, before rounding.
            Below 1 it keeps more texture and grain, for photographs that are nearly clean, where a
            blind model removes fine texture with the noise (README, "Noise-level table";
            docs/inference.md, "Strength"). The blend keeps a bias-free model's
            `f(a*x) = a*f(x)`.
        noise_std: None (default: blind), or the standard deviation of the image's noise when
            it is known, on the image's scale (0-255 for uint8 and float, 0-65535 for uint16):
            the model's change is then cut to what noise of that level explains, a strength of
            `min(1, noise_std^2 / mean((input - output)^2))` (`noise_strength`), on top of
            `strength`. It keeps the texture a blind model takes for faint noise (README,
            "Noise-level table"; docs/inference.md, "Known noise level") and changes nothing
            where the model removes no more than that much.

    Returns:
        The denoised image, like the input (uint8 rounded and clipped, floats unclipped).

    Raises:
        BfcnnError: an unsupported image type, shape or dtype, NaN or infinite values, a bad
            model, tile_size, overlap, ensemble, precision, strength or noise_std, or a model
            returning another shape; names what is allowed.

    Example:
        >>> clean = bfcnn.denoise(noisy_uint8, model="pyramid_gray_m")
    """
    from PIL import Image

    _check_tiling(tile_size, overlap)
    if precision not in PRECISIONS:
        raise BfcnnError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
    check_strength(strength)
    check_noise_std(noise_std)
    copies = check_ensemble(ensemble)
    options = dict(model=model, tile_size=tile_size, overlap=overlap, ensemble=copies, precision=precision,
                   strength=strength, noise_std=noise_std)
    if isinstance(image, Image.Image):
        return _denoise_pil(image, options)
    array = as_array(image)
    pixels, alpha, scale = _to_pixels(array, image)
    model = in_precision(_as_model(model), precision)
    wanted = _model_channels(model)
    tiles = effective_tile_size(pixels.shape[0], pixels.shape[1], tile_size, overlap)
    parts = lifted_parts(model) if tiles else None
    function = _same_shape(graph_runner(parts.network if parts else model) if hasattr(model, "input_shape")
                           else model)
    if copies > 1:
        function = self_ensemble(function, copies)
    if parts is None:
        out = _through_model(function, pixels, wanted, tile_size, overlap, _shift_period(model))
    else:  # the image-wide offset from the whole image, only the networks in tiles
        def tiled(rgb):  # lift and lower are per pixel: tile by tile, with the whole image's offset
            offset = parts.offset(rgb)
            return _apply(lambda tile: parts.lower(function(parts.lift(tile, offset)), offset), rgb, tiles,
                          overlap, _shift_period(model))

        out = np.asarray(channel_matched(tiled, wanted, pixels.shape[-1])(pixels), np.float32)
    if noise_std is not None:
        strength = strength * noise_strength(out, pixels, noise_std * scale)
    return _from_pixels(blend(out, pixels, strength), array, alpha, scale)


def check_noise_std(noise_std) -> None:
    """Raises BfcnnError unless `noise_std` is None or a finite number >= 0."""
    if noise_std is None:
        return
    if isinstance(noise_std, bool) or not isinstance(noise_std, (int, float, np.integer, np.floating)) or \
            not np.isfinite(noise_std) or noise_std < 0:
        raise BfcnnError("noise_std must be None (blind) or the noise's standard deviation, a finite number >= 0 "
                         f"on the image's scale (0-255 for uint8 and float images), got {noise_std!r}")


def mean_square(a: np.ndarray, rows: int = 256) -> float:
    """The mean of `a`'s squares, summed in float64 a band of `rows` rows at a time (no full-size copy)."""
    total = sum(float(np.square(a[top:top + rows], dtype=np.float64).sum()) for top in range(0, a.shape[0], rows))
    return total / max(a.size, 1)


def noise_strength(out: np.ndarray, pixels: np.ndarray, noise_std: float) -> float:
    """The strength that cuts a denoiser's change to what noise of std `noise_std` explains.

    A denoiser's change r = y - f(y) is the noise it removed plus whatever signal it took with
    it. With noise n of std sigma uncorrelated with the signal removed, the linear least-squares
    (Wiener) estimate of n from r is r * sigma^2 / E[r^2]: keep that fraction of the change,
    1 where the change is no larger than the noise. On the image's pixels and its denoised
    `out`, both on the same scale as `noise_std`; the mean runs over the whole image.
    """
    change = mean_square(pixels - out)  # the difference is one full-size temporary
    return 1.0 if change <= noise_std**2 else float(noise_std**2 / change)


def lifted_parts(model):
    """`bfcnn.models.opponent.LiftedParts` of an opponent color model (cached), else None.

    `denoise` tiles such a model through them, so every tile is lifted by the mean gray level
    of the whole image, as the model run on the whole image would lift it.
    """
    from bfcnn.models.opponent import LiftedParts, is_opponent

    if not is_opponent(model):
        return None
    if model not in _LIFTED:
        _LIFTED[model] = LiftedParts(model)
    return _LIFTED[model]


def check_strength(strength) -> None:
    """Raises BfcnnError unless `strength` is a number from 0 to 1."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float, np.integer, np.floating)) or \
            not 0 <= strength <= 1:
        raise BfcnnError(f"strength must be a number from 0 (the input) to 1 (the model's output), got {strength!r}")


def blend(out: np.ndarray, pixels: np.ndarray, strength: float) -> np.ndarray:
    """`pixels + strength * (out - pixels)`, computed in `out` (no full-size copy); `out` for 1."""
    if strength != 1:
        out -= pixels
        out *= np.float32(strength)
        out += pixels
    return out


def _shift_period(model) -> int:
    """The shift period tiles are aligned to (`bfcnn.models.shift.shift_period`); 1 for a plain callable."""
    import keras

    if not isinstance(model, keras.Model):
        return 1
    from bfcnn.models.shift import shift_period

    return shift_period(model)


def _denoise_pil(image, options: dict):
    """`denoise` for a PIL image: turned upright by its EXIF orientation first (the result has
    no orientation tag, so it shows as the input did); 16-bit gray and gray with alpha keep
    their mode, alpha is kept, everything else comes back as L or RGB. The ICC color profile
    is kept (in `info["icc_profile"]`) where the result is in the input's color space."""
    from bfcnn.io import PROFILE_KEEPING_MODES

    result = _denoise_pil_pixels(image, options)
    profile = image.info.get("icc_profile")
    if profile and image.mode in PROFILE_KEEPING_MODES:
        result.info["icc_profile"] = profile
    return result


def _denoise_pil_pixels(image, options: dict):
    """`_denoise_pil` without the color profile."""
    from PIL import Image, ImageOps

    from bfcnn.io import EXIF_ORIENTATION, to_uint8_array

    if image.getexif().get(EXIF_ORIENTATION, 1) != 1:
        image = ImageOps.exif_transpose(image)
    if image.mode in SIXTEEN_BIT_MODES:  # 16-bit gray stays 16-bit
        array = np.asarray(image).astype(np.uint16)
    elif image.mode in ("LA", "La"):  # gray with alpha stays gray with alpha
        array = np.asarray(image.convert("LA"))
        gray = denoise(array[..., 0], **options)
        return Image.fromarray(np.stack([gray, array[..., 1]], axis=-1))  # uint8 HxWx2: LA
    elif image.mode in _ALPHA_MODES or (image.mode == "P" and "transparency" in image.info):
        array = np.asarray(image.convert("RGBA"))
    else:
        array = to_uint8_array(image)
        array = array[..., 0] if array.shape[-1] == 1 else array
    return Image.fromarray(denoise(array, **options))


def checked_scale(array: np.ndarray, image=None) -> float:
    """Checks an image array as `denoise` takes it; returns the factor that takes it to 0-255.

    `array` must be HxW, HxWx1, HxWx3 or HxWx4, not empty, uint8 (factor 1), uint16 (255 /
    65535) or float with finite values (factor 1). `image` is what the caller passed, for the
    error messages. Raises BfcnnError naming the problem and what is allowed.
    """
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (1, 3, 4)):
        raise BfcnnError(f"image must be HxW, HxWx1, HxWx3 or HxWx4, got shape {array.shape}")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise BfcnnError(f"image is empty: shape {array.shape}")
    dtype = array.dtype.newbyteorder("=")  # a big-endian uint16 (from some TIFF readers) is a uint16
    if dtype == np.uint16:
        return 255.0 / 65535.0
    if not (dtype == np.uint8 or np.issubdtype(dtype, np.floating)):
        source = "" if image is None or isinstance(image, np.ndarray) else (
            f" (the dtype numpy gave the array built from the {type(image).__name__}: pass "
            "np.asarray(image, np.uint8) for 0-255 integers)")
        raise BfcnnError(f"image dtype must be uint8, uint16 or float, got {dtype}{source}")
    # min and max are NaN or infinite exactly when some value is, and need no full-size copy
    if np.issubdtype(dtype, np.floating) and not (np.isfinite(array.min()) and np.isfinite(array.max())):
        bad = array.size - np.count_nonzero(np.isfinite(array))
        raise BfcnnError(f"{bad} of the image's {array.size} values are not finite (NaN or inf); the model would "
                         "spread each over its neighbours: replace them first, e.g. with np.nan_to_num")
    if dtype.itemsize > 4 and max(-float(array.min()), float(array.max())) > FLOAT32_MAX:
        raise BfcnnError(f"the image's values reach {max(-float(array.min()), float(array.max())):.3g}, beyond "
                         f"float32's range ({FLOAT32_MAX:.3g}), which the model computes in: expected the 0-255 scale")
    return 1.0


def channel_matched(function, wanted: Optional[int], channels: int):
    """`function` (a model taking `wanted` channels) for images of `channels` channels: a color
    image through a gray model channel by channel, a gray one through a color model as gray RGB
    (the mean of its three outputs); `function` itself when they agree or `wanted` is None."""
    if wanted is None or wanted == channels:
        return function
    if wanted == 1:
        return lambda x: np.concatenate([function(x[..., c : c + 1]) for c in range(x.shape[-1])], axis=-1)
    return lambda x: np.asarray(function(np.repeat(x, wanted, axis=-1))).mean(axis=-1, keepdims=True)


def _to_pixels(array: np.ndarray, image):
    """The checked image as float32 [H, W, C] on the 0-255 scale without its alpha channel.

    Returns (pixels, alpha or None, the factor that took the values to 0-255). `image` is what
    the caller passed, for the error messages.
    """
    scale = checked_scale(array, image)
    pixels = array.astype(np.float32)
    if scale != 1.0:
        pixels *= scale  # in place: a 24-megapixel photograph is 288 MB per float32 copy
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.shape[-1] == 4:
        return pixels[..., :3], array[..., 3:], scale
    return pixels, None, scale


def _through_model(function, pixels: np.ndarray, wanted: Optional[int], tile_size, overlap,
                   align: int = 1) -> np.ndarray:
    """`function` on the pixels, matching the model's `wanted` channels (`channel_matched`), tiles
    aligned to `align` pixels (the model's shift period)."""
    return _apply(channel_matched(function, wanted, pixels.shape[-1]), pixels, tile_size, overlap, align)


def _from_pixels(out: np.ndarray, array: np.ndarray, alpha, scale: float) -> np.ndarray:
    """The denoised float32 pixels back in the input `array`'s dtype and layout, alpha restored."""
    dtype = array.dtype
    if dtype == np.uint8:
        out = to_dtype(out, np.uint8)
    elif dtype.newbyteorder("=") == np.uint16:
        out /= scale
        out = to_dtype(out, np.uint16).astype(dtype, copy=False)  # in the input's byte order
    else:
        out = out.astype(dtype)
    if alpha is not None:
        out = np.concatenate([out, alpha.astype(out.dtype)], axis=-1)
    if array.ndim == 2:
        out = out[..., 0]
    return out


def effective_tile_size(height: int, width: int, tile_size, overlap: int) -> int:
    """The tile size `denoise` uses on an image of `height` x `width`, 0 for the whole image.

    `tile_size` None means tiles of 512 (or larger for a wide overlap: a tile holds at least
    twice it) above one megapixel; an image no larger than the tile is not tiled.
    """
    if tile_size is None:
        # what the model sees: a side under MIN_SIDE is mirrored up to it (a 1 x 10^6 strip is 8 x 10^6)
        seen = max(height, MIN_SIDE) * max(width, MIN_SIDE)
        tile_size = max(DEFAULT_TILE, min_tile_size(overlap)) if seen > DEFAULT_MAX_PIXELS else 0
    if not tile_size or (height <= tile_size and width <= tile_size):
        return 0
    return int(tile_size)


def _apply(function, pixels: np.ndarray, tile_size, overlap, align: int = 1) -> np.ndarray:
    tile_size = effective_tile_size(pixels.shape[0], pixels.shape[1], tile_size, overlap)
    at_least_min_side = functools.partial(min_size_apply, function)  # a side under MIN_SIDE mirrored up to it
    if not tile_size:
        return np.array(at_least_min_side(pixels), np.float32)  # a copy: the result is rounded in place later
    return tiled_apply(at_least_min_side, pixels, tile_size, overlap, align=align)
