"""Tiled inference: run a denoiser on overlapping tiles and blend them, so memory stays bounded.

The image is covered by a grid of equal tiles (`min(tile, H)` x `min(tile, W)`, the last row
and column shifted back to end at the border, so a runtime that resizes its input does so
once). Each tile's output is weighted by a separable window that is 0 within `margin` pixels
of an edge shared with a neighbour (where the tile lacks context), rises as a raised cosine
across the rest of the overlap, and is 1 elsewhere and at the image's own borders. The
weights are normalized per axis, so they sum to exactly 1 at every pixel for any layout.

When a model's receptive radius (the pixels of context one output pixel needs, on each side)
is at most `margin`, every weighted tile output equals the whole-image output and the blend
is exact up to float rounding; otherwise the smooth window hides the seams.

Imports only numpy.
"""

from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

TileSize = Union[int, Sequence[int]]


def _pair(name: str, value) -> Tuple[int, int]:
    values = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(values) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        raise ValueError(f"{name} must be an int or a pair of ints (height, width), got {value!r}")
    return int(values[0]), int(values[1])


def tile_starts(length: int, tile: int, overlap: int) -> List[int]:
    """Start offsets of tiles of size `min(tile, length)` covering `length` pixels.

    Neighbours share at least `overlap` pixels; the last tile ends at the border.
    """
    tile = min(tile, length)
    if tile >= length:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def _ramp(overlap: int, margin: int) -> np.ndarray:
    """The window's rising side: `margin` zeros, a raised cosine, then ones (length `overlap`)."""
    ramp = np.ones(overlap, np.float64)
    ramp[:margin] = 0.0
    width = overlap - 2 * margin
    if width > 0:
        t = (np.arange(width) + 0.5) / width
        ramp[margin : margin + width] = np.sin(0.5 * np.pi * t) ** 2
    return ramp


def axis_weights(length: int, tile: int, overlap: int, margin: int) -> List[np.ndarray]:
    """One 1-D weight vector per tile along an axis; together they sum to 1 at every pixel."""
    starts = tile_starts(length, tile, overlap)
    tile = min(tile, length)
    ramp = _ramp(overlap, margin)
    weights = []
    for i, start in enumerate(starts):
        w = np.ones(tile, np.float64)
        if i > 0:  # a neighbour before: no context on this side
            w[:overlap] *= ramp
        if i < len(starts) - 1:
            w[tile - overlap :] *= ramp[::-1]
        weights.append(w)
    total = np.zeros(length, np.float64)
    for start, w in zip(starts, weights):
        total[start : start + tile] += w
    if np.any(total <= 0.0):  # cannot happen when 2 * margin < overlap < tile; kept as a guard
        raise ValueError(f"tiling leaves pixels without weight (tile={tile}, overlap={overlap}, margin={margin})")
    return [w / total[start : start + tile] for start, w in zip(starts, weights)]


def tiled_apply(
    fn: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    tile_size: Optional[TileSize],
    overlap: int = 32,
    margin: Optional[int] = None,
) -> np.ndarray:
    """Applies an image-to-image function tile by tile and blends the tiles smoothly.

    Args:
        fn: maps a float32 [h, w, C] tile to a [h, w, C'] result (any channel count C').
        image: float32 [H, W, C]; any H, W >= 1 (smaller than a tile is fine).
        tile_size: tile height and width (an int or a pair); None or a size covering the
            image runs `fn` once on the whole image.
        overlap: pixels shared by neighbouring tiles, 0 <= overlap < tile size.
        margin: pixels next to a shared edge whose output gets weight 0; default
            `overlap // 4`, so the blending ramp spans the middle half of the overlap.
            The result is exact (to float rounding) when the receptive radius of `fn` is
            at most `margin`. Must satisfy 0 <= 2 * margin < overlap (or 0 when overlap is 0).

    Returns:
        float32 [H, W, C']: the blended result.

    Raises:
        ValueError: a bad image shape or tiling argument, or `fn` changing the tile size.

    Example:
        >>> out = tiled_apply(lambda t: model(t[None])[0].numpy(), noisy, tile_size=256, overlap=32)
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"tiled_apply needs an image [H, W, C] with H, W >= 1, got shape {image.shape}")
    image = image.astype(np.float32, copy=False)
    height, width = image.shape[:2]
    if tile_size is None:
        return np.asarray(fn(image), np.float32)
    tile_h, tile_w = _pair("tile_size", tile_size)
    if not isinstance(overlap, (int, np.integer)) or isinstance(overlap, bool) or overlap < 0:
        raise ValueError(f"overlap must be an integer >= 0, got {overlap!r}")
    if min(tile_h, tile_w) <= overlap:
        raise ValueError(f"tile_size {tile_size!r} must be larger than overlap={overlap} in both directions")
    margin = overlap // 4 if margin is None else margin
    if (not isinstance(margin, (int, np.integer)) or margin < 0
            or (2 * margin >= overlap and not overlap == margin == 0)):
        raise ValueError(f"margin must be an integer with 0 <= 2 * margin < overlap={overlap}, got {margin!r}")
    if height <= tile_h and width <= tile_w:
        return _checked(fn(image), image.shape, "the image")

    ys, xs = tile_starts(height, tile_h, overlap), tile_starts(width, tile_w, overlap)
    wy, wx = axis_weights(height, tile_h, overlap, margin), axis_weights(width, tile_w, overlap, margin)
    th, tw = min(tile_h, height), min(tile_w, width)
    output = None
    for y, weight_y in zip(ys, wy):
        for x, weight_x in zip(xs, wx):
            tile = image[y : y + th, x : x + tw]
            result = _checked(fn(tile), tile.shape, f"the tile at ({y}, {x})")
            if output is None:
                output = np.zeros((height, width, result.shape[-1]), np.float32)
            weight = (weight_y[:, None] * weight_x[None, :]).astype(np.float32)[..., None]
            output[y : y + th, x : x + tw] += result * weight
    return output


def _checked(result, shape, what) -> np.ndarray:
    result = np.asarray(result, np.float32)
    if result.ndim != 3 or result.shape[:2] != tuple(shape[:2]):
        raise ValueError(f"fn must return [h, w, C] of the tile's size {tuple(shape[:2])} for {what}, "
                         f"got shape {result.shape}")
    return result
