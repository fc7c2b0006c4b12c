"""Tiled inference: run a denoiser on overlapping tiles and blend them, so memory stays bounded.

The image is covered by a grid of equal tiles of up to `tile` x `tile` pixels starting at
multiples of the model's shift period (`align`), the last row and column ending at the border
(the tiles are up to `align - 1` pixels smaller than asked where that puts the last ones on
the grid, and a runtime that resizes its input does so once). Each tile's output is weighted
by a separable window that is 0 within `margin` pixels of an edge shared with a neighbour (where the tile lacks context), rises as a raised cosine
across the rest of the overlap, and is 1 elsewhere and at the image's own borders. The
weights are normalized per axis, so they sum to exactly 1 at every pixel for any layout.

When a model's receptive radius (the pixels of context one output pixel needs, on each side)
is at most `margin`, every weighted tile output equals the whole-image output and the blend
is exact up to float rounding; otherwise the smooth window hides the seams.

Imports only numpy (and bfcnn.errors, which imports nothing heavy).
"""

from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

from bfcnn.errors import BfcnnError

TileSize = Union[int, Sequence[int]]


class TilingError(BfcnnError):
    """A bad tiling argument or image, or a function that changes the tile's size (a ValueError)."""


def min_tile_size(overlap: int) -> int:
    """The smallest tile for an overlap: twice it (each tile then adds at least as many new
    pixels as it repeats; tile 49 with overlap 48 would compute an image about 2300 times over),
    and larger than it."""
    return max(2 * overlap, overlap + 1)


def is_int(value) -> bool:
    """Whether `value` is a Python or numpy integer (a bool is not, although Python says it is an int)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def as_pair(name: str, value) -> Tuple[int, int]:
    """`(height, width)` from an int (used for both) or a pair of ints, as Python ints.

    Args:
        name: the argument's name, for the error message.
        value: an int, or a sequence of exactly two ints (numpy integers allowed, bools not).

    Raises:
        TilingError: (a ValueError) anything else, e.g. a float, a string or three ints.
    """
    values = ()
    if is_int(value):
        values = (value, value)
    elif not isinstance(value, (str, bytes)):
        try:
            values = tuple(value)
        except TypeError:  # a float or another non-sequence
            pass
    if len(values) != 2 or not all(is_int(v) for v in values):
        raise TilingError(f"{name} must be an int or a pair of ints (height, width), got {value!r}")
    return int(values[0]), int(values[1])


def tile_spans(length: int, tile: int, overlap: int, align: int = 1) -> List[Tuple[int, int]]:
    """(start, size) of the tiles covering `length` pixels: all of one size, at most `tile` and
    fewer than `align` pixels under it (where `tile < length`), starting at multiples of
    `align`, neighbours sharing at least `overlap` pixels, the last tile ending at the border.
    (Tiles too small to give up those pixels keep `tile`, and the last ones are up to
    `align - 1` pixels longer instead.)

    `align` is the model's shift period (`bfcnn.models.shift_period`): a model with a stride or
    a pixel unshuffle gives the same output for an image shifted by a multiple of it only, so
    tiles at such offsets compute what the whole image would. The tile size is chosen so that
    the last tile, which ends at the border, starts on a multiple too; one size keeps a runtime
    that resizes its input (LiteRT) from setting itself up again between tiles.

    Raises:
        TilingError: a step `tile - overlap` shorter than `align` (no aligned tiling keeps the overlap).
    """
    if tile >= length:
        return [(0, length)]
    size = tile - (tile - length) % align  # length - size is a multiple of align
    if size - overlap >= align:  # tiles of one size
        step = (size - overlap) // align * align
        return [(start, size) for start in range(0, length - size, step)] + [(length - size, size)]
    # Tiles too small to shrink so (e.g. 96 with overlap 48 and a period of 40): `tile`, and
    # the last ones up to align - 1 pixels longer to reach the border.
    step = (tile - overlap) // align * align
    if step < 1:
        raise TilingError(f"tiles of {tile} with overlap {overlap} advance {tile - overlap} pixels, less than the "
                          f"model's shift period {align}: use larger tiles or a smaller overlap")
    last = (length - tile) // align * align
    return [(start, tile) for start in range(0, last, step)] + [(last, length - last)]


def tile_starts(length: int, tile: int, overlap: int, align: int = 1) -> List[int]:
    """Start offsets of `tile_spans`' tiles."""
    return [start for start, _ in tile_spans(length, tile, overlap, align)]


def _ramp(overlap: int, margin: int) -> np.ndarray:
    """The window's rising side: `margin` zeros, a raised cosine, then ones (length `overlap`)."""
    ramp = np.ones(overlap, np.float64)
    ramp[:margin] = 0.0
    width = overlap - 2 * margin
    if width > 0:
        t = (np.arange(width) + 0.5) / width
        ramp[margin : margin + width] = np.sin(0.5 * np.pi * t) ** 2
    return ramp


def axis_weights(length: int, tile: int, overlap: int, margin: int, align: int = 1) -> List[np.ndarray]:
    """One 1-D weight vector per tile of `tile_spans` along an axis; together they sum to 1 at every pixel."""
    spans = tile_spans(length, tile, overlap, align)
    ramp = _ramp(overlap, margin)
    weights = []
    for i, (start, size) in enumerate(spans):
        w = np.ones(size, np.float64)
        if i > 0:  # a neighbour before: no context on this side
            w[:overlap] *= ramp
        if i < len(spans) - 1:
            w[size - overlap :] *= ramp[::-1]
        weights.append(w)
    total = np.zeros(length, np.float64)
    for (start, size), w in zip(spans, weights):
        total[start : start + size] += w
    if np.any(total <= 0.0):  # cannot happen when 2 * margin < overlap < tile; kept as a guard
        raise TilingError(f"tiling leaves pixels without weight (tile={tile}, overlap={overlap}, margin={margin})")
    return [w / total[start : start + size] for (start, size), w in zip(spans, weights)]


def _checked_tiling(tile_size: TileSize, overlap: int, margin: Optional[int]) -> Tuple[int, int, int]:
    """(tile height, tile width, margin) of `tiled_apply`'s arguments, checked; margin defaults to overlap // 4.

    Raises:
        TilingError: naming the argument and the rule it breaks.
    """
    tile_h, tile_w = as_pair("tile_size", tile_size)
    if not is_int(overlap) or overlap < 0:
        raise TilingError(f"overlap must be an integer >= 0, got {overlap!r}")
    if min(tile_h, tile_w) < min_tile_size(overlap):
        raise TilingError(f"tile_size {tile_size!r} must be at least twice overlap={overlap} (and larger than it) "
                          "in both directions, or None for the whole image at once")
    margin = overlap // 4 if margin is None else margin
    if not is_int(margin) or margin < 0 or (2 * margin >= overlap and not overlap == margin == 0):
        raise TilingError(f"margin must be an integer with 0 <= 2 * margin < overlap={overlap}, got {margin!r}")
    return tile_h, tile_w, margin


def tiled_apply(
    fn: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    tile_size: Optional[TileSize],
    overlap: int = 32,
    margin: Optional[int] = None,
    dtype=np.float32,
    align: int = 1,
    equal_tiles: bool = False,
) -> np.ndarray:
    """Applies an image-to-image function tile by tile and blends the tiles smoothly.

    Memory beyond the input and the output is one band of tiles: tiles run row by row, and
    the rows no later tile reaches are converted to `dtype` and written out as each row of
    tiles finishes, so a 24-megapixel photograph needs no full-size float32 buffer.

    Args:
        fn: maps a float32 [h, w, C] tile to a [h, w, C'] result (any channel count C').
        image: [H, W, C] of any real dtype (uint8 stays uint8 in memory: each tile is
            converted to float32 as it is cut); any H, W >= 1 (smaller than a tile is fine).
        tile_size: tile height and width (an int or a pair); None or a size covering the
            image runs `fn` once on the whole image.
        overlap: pixels shared by neighbouring tiles, 0 <= overlap <= half the tile size.
        margin: pixels next to a shared edge whose output gets weight 0; default
            `overlap // 4`, so the blending ramp spans the middle half of the overlap.
            The result is exact (to float rounding) when the receptive radius of `fn` is
            at most `margin`. Must satisfy 0 <= 2 * margin < overlap (or 0 when overlap is 0).
        dtype: the result's dtype; an integer dtype gets the blended values rounded (half to
            even) and clipped to its range, e.g. `np.uint8` for a denoised 8-bit photograph.
        align: tiles start at multiples of it (`tile_spans`): `fn`'s shift period, e.g. 2 for a
            model with a 2x2 pixel unshuffle, 4 for a 3-level pyramid
            (`bfcnn.models.shift_period`). With 1 the result of such a model differs from the
            whole image's wherever a tile starts off its grid (by up to 37 levels at single
            pixels for the zoo's models), though the PSNR hardly moves.
        equal_tiles: every tile exactly `tile_size` on an axis longer than it (for `fn` of one
            input size, where `tile_spans` would take fewer pixels): the image is mirrored at
            the bottom and right up to where such tiles, aligned, end (fewer than `align`
            pixels), and the result cropped back.

    Returns:
        [H, W, C'] of `dtype`: the blended result.

    Raises:
        TilingError: (a ValueError) a bad image shape or tiling argument, or `fn` changing the
            tile size.

    Example:
        >>> out = tiled_apply(lambda t: model(t[None])[0].numpy(), noisy, tile_size=256, overlap=32)
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise TilingError(f"tiled_apply needs an image [H, W, C] with H, W >= 1, got shape {image.shape}")
    height, width = image.shape[:2]
    dtype = np.dtype(dtype)
    if tile_size is None:
        return to_dtype(np.array(fn(image.astype(np.float32, copy=False)), np.float32), dtype)  # fn's own array kept
    tile_h, tile_w, margin = _checked_tiling(tile_size, overlap, margin)
    if not is_int(align) or align < 1:
        raise TilingError(f"align must be an integer >= 1, got {align!r}")
    if height <= tile_h and width <= tile_w:
        result = _checked(fn(image.astype(np.float32, copy=False)), image.shape, "the image")
        return to_dtype(result.copy(), dtype)  # fn's own array kept

    if equal_tiles:
        extended = [n if n <= t else t + -(-(n - t) // align) * align for n, t in ((height, tile_h), (width, tile_w))]
        if extended != [height, width]:
            padding = ((0, extended[0] - height), (0, extended[1] - width), (0, 0))
            out = tiled_apply(fn, np.pad(image, padding, mode="reflect"), tile_size, overlap, margin, dtype, align)
            return out[:height, :width]
    rows, columns = tile_spans(height, tile_h, overlap, align), tile_spans(width, tile_w, overlap, align)
    wy, wx = axis_weights(height, tile_h, overlap, margin, align), axis_weights(width, tile_w, overlap, margin, align)
    output = band = None
    for i, ((y, th), weight_y) in enumerate(zip(rows, wy)):
        carried = band[y - rows[i - 1][0]:] if band is not None else None  # rows the previous tiles share
        band = None
        for (x, tw), weight_x in zip(columns, wx):
            tile = image[y : y + th, x : x + tw].astype(np.float32)
            result = _checked(fn(tile), tile.shape, f"the tile at ({y}, {x})")
            if band is None:
                band = np.zeros((th, width, result.shape[-1]), np.float32)
                if carried is not None:
                    band[: len(carried)] = carried
            if output is None:
                output = np.empty((height, width, result.shape[-1]), dtype)
            weight = (weight_y[:, None] * weight_x[None, :]).astype(np.float32)[..., None]
            band[:, x : x + tw] += result * weight
        done = (rows[i + 1][0] if i + 1 < len(rows) else height) - y  # no later tile reaches these rows
        output[y : y + done] = to_dtype(band[:done], dtype)
    return output


# The smallest side an image goes through a model at: the zoo's 3-level pyramids see a side of
# 4 pixels or fewer as a coarsest level of 1 pixel, all zero padding, and return it about a
# third too dark; from 5 pixels up (8 once mirrored to a multiple of 4) they are right.
MIN_SIDE = 8


def min_size_apply(fn: Callable[[np.ndarray], np.ndarray], image: np.ndarray, minimum: int = MIN_SIDE) -> np.ndarray:
    """`fn(image)`, with a side shorter than `minimum` mirrored up to it first (numpy's "reflect",
    repeated as needed; an edge repeat for 1 pixel) and the result cropped back.

    Args:
        fn: maps a float32 [h, w, C] image to a [h, w, C'] result.
        image: [H, W, C], any H, W >= 1.
        minimum: the smallest side `fn` sees (default `MIN_SIDE`).
    """
    height, width = image.shape[:2]
    if height >= minimum and width >= minimum:
        return np.asarray(fn(image))
    padded = np.pad(image, ((0, max(minimum - height, 0)), (0, max(minimum - width, 0)), (0, 0)), mode="reflect")
    return np.asarray(fn(padded))[:height, :width]


def fixed_size_apply(fn: Callable[[np.ndarray], np.ndarray], image: np.ndarray, size: TileSize,
                     overlap: int = 48, align: int = 1) -> np.ndarray:
    """Runs `fn`, which only takes images of exactly `size`, on an image of any size.

    Larger images go through `tiled_apply` in tiles of `size` (the last tile of a row or
    column is moved back inside the image, so tiles are never short where the image is
    large enough); an image, or an axis of it, smaller than `size` is mirror-padded at the
    bottom and right up to it (numpy's "reflect": a thin strip repeated row by row, as
    "symmetric" would, keeps its noise as structure), and the result is cropped back.

    Args:
        fn: maps a float32 [size_h, size_w, C] image to a result of the same height and width.
        image: [H, W, C], any H, W >= 1.
        size: the one input size of `fn` (an int or a pair).
        overlap: as in `tiled_apply`; at most half the smaller side of `size`.
        align: as in `tiled_apply` (the model's shift period); the image is mirrored at the
            bottom and right by fewer than `align` pixels where the aligned tiles end past it.

    Returns:
        float32 [H, W, C'].
    """
    height, width = as_pair("size", size)

    def padded(tile):
        h, w = tile.shape[:2]
        if (h, w) != (height, width):
            tile = np.pad(tile, ((0, height - h), (0, width - w), (0, 0)), mode="reflect")  # as ReflectToMultiple
        return np.asarray(fn(tile))[:h, :w]

    return tiled_apply(padded, image, (height, width), min(overlap, min(height, width) // 2), align=align,
                       equal_tiles=True)


def to_dtype(values: np.ndarray, dtype) -> np.ndarray:
    """float32 `values` as `dtype`; for an integer dtype rounded (half to even) and clipped to its
    range in place (`values` is overwritten), so a full-size image needs no second float buffer."""
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.integer):
        return values.astype(dtype, copy=False)
    values = np.asarray(values, np.float32)
    if not values.flags.writeable:
        values = values.copy()
    info = np.iinfo(dtype)
    np.round(values, out=values)
    np.clip(values, info.min, info.max, out=values)
    return values.astype(dtype)


def _checked(result, shape, what) -> np.ndarray:
    result = np.asarray(result, np.float32)
    if result.ndim != 3 or result.shape[:2] != tuple(shape[:2]):
        raise TilingError(f"fn must return [h, w, C] of the tile's size {tuple(shape[:2])} for {what}, "
                         f"got shape {result.shape}")
    return result
