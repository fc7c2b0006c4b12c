"""Tiled inference: weights that sum to 1, exact results for local operators, clear errors."""

import numpy as np
import pytest

from bfcnn.errors import BfcnnError
from bfcnn.tiling import TilingError, as_pair, axis_weights, is_int, tile_spans, tile_starts, tiled_apply


def box_filter(image, radius):
    """A (2r+1)^2 mean filter with reflected borders: a 'model' whose receptive radius is r."""
    padded = np.pad(image, ((radius, radius), (radius, radius), (0, 0)), mode="symmetric")
    out = np.zeros_like(image, dtype=np.float64)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            out += padded[dy : dy + image.shape[0], dx : dx + image.shape[1]]
    return (out / (2 * radius + 1) ** 2).astype(np.float32)


@pytest.mark.parametrize("length,tile,overlap,margin", [
    (1, 8, 2, 0), (7, 8, 2, 0), (8, 8, 2, 0), (9, 8, 2, 0), (100, 16, 8, 2), (100, 16, 8, 3),
    (64, 16, 0, 0), (33, 10, 9, 4), (1000, 128, 32, 8),
])
def test_axis_weights_sum_to_one(length, tile, overlap, margin):
    starts = tile_starts(length, tile, overlap)
    weights = axis_weights(length, tile, overlap, margin)
    size = min(tile, length)
    total = np.zeros(length)
    for start, w in zip(starts, weights):
        assert len(w) == size and np.all(w >= 0)
        total[start : start + size] += w
    np.testing.assert_allclose(total, 1.0, atol=1e-12)
    assert starts[0] == 0 and starts[-1] + size == length
    assert all(b - a <= size - overlap for a, b in zip(starts, starts[1:]))  # neighbours share >= overlap


def test_weights_are_zero_next_to_shared_edges():
    weights = axis_weights(100, 32, 16, 4)
    assert np.all(weights[0][-4:] == 0) and weights[0][0] == 1  # the image border keeps full weight
    assert np.all(weights[1][:4] == 0) and np.all(weights[1][-4:] == 0)
    assert np.all(weights[-1][:4] == 0) and weights[-1][-1] == 1


@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 200, 1), (200, 3, 3), (37, 53, 3), (64, 64, 1), (65, 129, 2)])
def test_identity_is_reproduced_for_any_layout(shape):
    image = np.random.default_rng(0).uniform(-20, 280, shape).astype(np.float32)
    out = tiled_apply(lambda tile: tile, image, tile_size=16, overlap=6)
    np.testing.assert_allclose(out, image, atol=1e-4)


def test_exact_when_receptive_radius_fits_the_margin():
    image = np.random.default_rng(1).uniform(0, 255, (97, 143, 3)).astype(np.float32)
    radius = 3
    whole = box_filter(image, radius)
    calls = []

    def fn(tile):
        calls.append(tile.shape)
        return box_filter(tile, radius)

    tiled = tiled_apply(fn, image, tile_size=(40, 48), overlap=12, margin=radius)
    assert len(calls) > 4 and len(set(calls)) == 1  # several tiles, all the same size
    np.testing.assert_allclose(tiled, whole, atol=1e-3)


def test_close_when_receptive_radius_exceeds_the_margin():
    rng = np.random.default_rng(2)
    clean = np.kron(rng.uniform(40, 215, (12, 16, 1)), np.ones((16, 16, 1))).astype(np.float32)
    noisy = clean + 25 * rng.standard_normal(clean.shape).astype(np.float32)
    whole = box_filter(noisy, 6)
    tiled = tiled_apply(lambda t: box_filter(t, 6), noisy, tile_size=64, overlap=16)  # margin 4 < 6

    def psnr(a):
        return 10 * np.log10(255.0**2 / np.mean((np.clip(np.round(a), 0, 255) - clean) ** 2))

    assert not np.allclose(tiled, whole, atol=1e-3)  # the seams do differ...
    assert abs(psnr(tiled) - psnr(whole)) < 0.05  # ...but not visibly


def test_image_smaller_than_tile_and_none_run_once():
    image = np.ones((5, 7, 1), np.float32)
    for tile_size in (None, 8, (5, 7)):
        calls = []
        tiled_apply(lambda t: calls.append(t.shape) or t * 2, image, tile_size=tile_size, overlap=2)
        assert calls == [(5, 7, 1)]


def test_output_channels_may_differ():
    image = np.random.default_rng(3).uniform(0, 1, (50, 70, 3)).astype(np.float32)
    out = tiled_apply(lambda t: t.mean(axis=-1, keepdims=True), image, tile_size=24, overlap=8)
    np.testing.assert_allclose(out, image.mean(axis=-1, keepdims=True), atol=1e-5)


@pytest.mark.parametrize("kwargs,match", [
    (dict(tile_size=8, overlap=8), "at least twice overlap=8"),
    (dict(tile_size=(16, 15), overlap=8), "at least twice overlap=8"),
    (dict(tile_size=8, overlap=-1), "overlap"),
    (dict(tile_size=16, overlap=8, margin=4), "margin"),
    (dict(tile_size=16, overlap=0, margin=1), "margin"),
    (dict(tile_size=(8, 8, 8), overlap=2), "tile_size"),
    (dict(tile_size="big", overlap=2), "tile_size"),
    (dict(tile_size=16.5, overlap=2), "tile_size must be an int or a pair"),
    (dict(tile_size=True, overlap=2), "tile_size must be an int or a pair"),
    (dict(tile_size=(16, 16.0), overlap=2), "tile_size must be an int or a pair"),
])
def test_bad_arguments(kwargs, match):
    """A bfcnn error that old `except ValueError` code still catches."""
    with pytest.raises(TilingError, match=match) as caught:
        tiled_apply(lambda t: t, np.zeros((40, 40, 1), np.float32), **kwargs)
    assert isinstance(caught.value, BfcnnError) and isinstance(caught.value, ValueError)


def test_bad_image_and_bad_fn():
    with pytest.raises(ValueError, match=r"\[H, W, C\]"):
        tiled_apply(lambda t: t, np.zeros((40, 40), np.float32), tile_size=16)
    with pytest.raises(ValueError, match=r"\[H, W, C\]"):
        tiled_apply(lambda t: t, np.zeros((0, 40, 1), np.float32), tile_size=16)
    with pytest.raises(TilingError, match=r"tile's size \(16, 16\).*got shape \(15, 16, 1\)"):
        tiled_apply(lambda t: t[:-1], np.zeros((40, 40, 1), np.float32), tile_size=16, overlap=4)


def test_integer_images_are_converted_tile_by_tile():
    """A uint8 image is cut and converted per tile (no float32 copy of the whole image) with the same result."""
    image = np.random.default_rng(3).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    dtypes = []

    def blur(tile):
        dtypes.append(tile.dtype)
        return (tile + np.roll(tile, 1, axis=0) + np.roll(tile, 1, axis=1)) / 3.0

    from_uint8 = tiled_apply(blur, image, tile_size=32, overlap=8)
    assert set(dtypes) == {np.dtype(np.float32)} and len(dtypes) > 1
    np.testing.assert_array_equal(from_uint8, tiled_apply(blur, image.astype(np.float32), tile_size=32, overlap=8))


@pytest.mark.parametrize("shape, tile, overlap", [((100, 37, 2), 16, 4), ((33, 120, 1), (20, 50), 8), ((9, 9, 3), 4, 1)])
def test_band_by_band_output_matches_a_full_size_accumulation(shape, tile, overlap):
    """Rows are written out as each row of tiles finishes; the sums are those of one full-size buffer."""
    image = np.random.default_rng(4).uniform(-20, 280, shape).astype(np.float32)

    def fn(t):
        return np.tanh(t / 100.0) * 120.0 + 100.0 + t[..., :1] * 0.1

    tile_h, tile_w = (tile, tile) if isinstance(tile, int) else tile
    ys, xs = tile_starts(shape[0], tile_h, overlap), tile_starts(shape[1], tile_w, overlap)
    wy, wx = axis_weights(shape[0], tile_h, overlap, overlap // 4), axis_weights(shape[1], tile_w, overlap, overlap // 4)
    expected = np.zeros(shape, np.float32)
    for y, a in zip(ys, wy):
        for x, b in zip(xs, wx):
            piece = image[y : y + len(a), x : x + len(b)]
            expected[y : y + len(a), x : x + len(b)] += fn(piece) * (a[:, None] * b[None, :]).astype(np.float32)[..., None]
    np.testing.assert_array_equal(tiled_apply(fn, image, tile, overlap), expected)
    as_uint8 = tiled_apply(fn, image, tile, overlap, dtype=np.uint8)
    assert as_uint8.dtype == np.uint8
    np.testing.assert_array_equal(as_uint8, np.clip(np.round(expected), 0, 255).astype(np.uint8))


@pytest.mark.parametrize("shape", [(20, 30, 2), (8, 12, 2), (5, 30, 1), (1, 1, 1), (9, 13, 1)])
def test_fixed_size_apply_only_calls_fn_at_its_size(shape):
    from bfcnn.tiling import fixed_size_apply

    seen = []

    def fn(tile):
        seen.append(tile.shape[:2])
        return 2 * tile + tile[::-1]  # not pointwise: padding rows come back as values

    image = np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32)
    out = fixed_size_apply(fn, image, (8, 12), overlap=4)
    assert out.shape == shape and set(seen) == {(8, 12)}
    if shape[:2] == (8, 12):
        np.testing.assert_allclose(out, fn(image))
    # A pointwise map comes back exactly, whatever the tiling and padding.
    np.testing.assert_allclose(fixed_size_apply(lambda t: 3 * t, image, (8, 12), overlap=4), 3 * image, rtol=1e-6)
    with pytest.raises(TilingError, match="size"):
        fixed_size_apply(fn, image, (8, 12, 3))


def test_public_argument_helpers():
    """`is_int` and `as_pair` are public: bfcnn.inference and bfcnn.export.tflite use them."""
    assert is_int(3) and is_int(np.int64(3)) and is_int(np.uint8(0))
    assert not any(is_int(v) for v in (True, np.bool_(True), 3.0, "3", None))
    assert as_pair("size", 5) == (5, 5)
    assert as_pair("size", (4, np.int32(6))) == (4, 6) and as_pair("size", [2, 3]) == (2, 3)
    assert all(type(v) is int for v in as_pair("size", np.array([7, 8])))
    for bad in (2.5, "64", b"64", (1, 2, 3), (1.0, 2), (True, 2), None):
        with pytest.raises(TilingError, match=r"size must be an int or a pair of ints \(height, width\)"):
            as_pair("size", bad)


@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 20, 2), (20, 5, 1), (8, 8, 1), (30, 40, 3)])
def test_min_size_apply_mirrors_a_short_side_up_to_the_minimum(shape):
    """The zoo's pyramids return a side of 4 pixels or fewer about a third too dark."""
    from bfcnn.tiling import MIN_SIDE, min_size_apply

    seen = []

    def fn(image):
        seen.append(image)
        return 2 * image + image[::-1]  # not pointwise: the mirrored rows come back as values

    image = np.random.default_rng(1).uniform(0, 255, shape).astype(np.float32)
    out = min_size_apply(fn, image)
    (given,) = seen
    assert out.shape == shape
    assert given.shape[:2] == (max(shape[0], MIN_SIDE), max(shape[1], MIN_SIDE))
    widths = ((0, given.shape[0] - shape[0]), (0, given.shape[1] - shape[1]), (0, 0))
    np.testing.assert_array_equal(given, np.pad(image, widths, mode="reflect"))
    np.testing.assert_allclose(out, fn(given)[: shape[0], : shape[1]])


def test_fixed_size_apply_mirrors_with_reflect_not_symmetric():
    """"symmetric" repeats a thin strip row by row, noise included, which the model keeps."""
    from bfcnn.tiling import fixed_size_apply

    seen = []
    image = np.arange(3 * 5, dtype=np.float32).reshape(3, 5, 1)
    fixed_size_apply(lambda t: seen.append(t) or t, image, (8, 8), overlap=0)
    np.testing.assert_array_equal(seen[0], np.pad(image, ((0, 5), (0, 3), (0, 0)), mode="reflect"))


def block_detail(image, period):
    """Each pixel minus the mean of its period x period block, blocks anchored at (0, 0) (the last
    ones cut short): a 'model' with a receptive radius under `period` that gives the same
    output for a shifted image only when the shift is a multiple of `period`, like a pixel unshuffle."""
    out = np.empty_like(image, dtype=np.float32)
    for y in range(0, image.shape[0], period):
        for x in range(0, image.shape[1], period):
            block = image[y : y + period, x : x + period]
            out[y : y + period, x : x + period] = block - block.mean(axis=(0, 1))
    return out


@pytest.mark.parametrize("length,tile,overlap,align", [
    (100, 16, 8, 2), (101, 16, 8, 4), (1000, 256, 48, 5), (1051, 512, 48, 4), (300, 96, 48, 40), (43, 40, 10, 8),
])
def test_tile_spans_start_on_the_period_and_end_at_the_border(length, tile, overlap, align):
    spans = tile_spans(length, tile, overlap, align)
    assert spans[0][0] == 0 and sum(spans[-1]) == length
    assert all(start % align == 0 for start, _ in spans)
    if min(tile, length) - (tile - length) % align - overlap >= align or tile >= length:
        assert len({size for _, size in spans}) == 1  # one size: a resizing runtime sets up once
        assert min(tile, length) - align < spans[0][1] <= min(tile, length)
    else:  # too small to shrink: tiles of `tile`, the last ones longer
        assert all(size == tile for _, size in spans[:-1]) and tile <= spans[-1][1] < tile + align
    assert all(a + size_a - b >= overlap for (a, size_a), (b, _) in zip(spans, spans[1:]))
    total = np.zeros(length)
    for (start, size), w in zip(spans, axis_weights(length, tile, overlap, overlap // 4, align)):
        assert len(w) == size
        total[start : start + size] += w
    np.testing.assert_allclose(total, 1.0, atol=1e-12)


def test_tiles_on_the_period_reproduce_a_shift_variant_model():
    """Tiles starting off a model's grid compute another result than the whole image; aligned
    ones reproduce it exactly (odd sizes, where the last tiles end off the grid, included)."""
    image = np.random.default_rng(3).uniform(0, 255, (101, 131, 1)).astype(np.float32)
    whole = block_detail(image, 4)
    aligned = tiled_apply(lambda t: block_detail(t, 4), image, tile_size=32, overlap=15, align=4)
    np.testing.assert_allclose(aligned, whole, atol=1e-3)
    unaligned = tiled_apply(lambda t: block_detail(t, 4), image, tile_size=32, overlap=15)
    assert np.abs(unaligned - whole).max() > 1.0
    with pytest.raises(TilingError, match="shift period 40"):
        tiled_apply(lambda t: t, image, tile_size=32, overlap=15, align=40)
    with pytest.raises(TilingError, match="align must be an integer >= 1"):
        tiled_apply(lambda t: t, image, tile_size=32, overlap=15, align=0)


def test_equal_tiles_feed_a_fixed_size_function_exactly_its_size():
    """A function of one input size gets exactly that size, aligned, even where the aligned tiles
    end past the image (mirrored there and cropped back)."""
    from bfcnn.tiling import fixed_size_apply

    image = np.random.default_rng(4).uniform(0, 255, (101, 131, 1)).astype(np.float32)
    sizes = []

    def fixed(tile):
        sizes.append(tile.shape[:2])
        assert tile.shape[:2] == (32, 40)
        return block_detail(tile, 4)

    out = fixed_size_apply(fixed, image, (32, 40), overlap=15, align=4)
    assert out.shape == image.shape and set(sizes) == {(32, 40)}
    # away from the mirrored bottom and right edges, the whole image's result
    np.testing.assert_allclose(out[:96, :128], block_detail(image, 4)[:96, :128], atol=1e-3)
