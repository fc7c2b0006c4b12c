"""PixelUnshuffle / PixelShuffle: exact inverses at any size, the layout of space-to-depth, saving."""

import keras
import numpy as np
import pytest

from bfcnn.layers import PixelShuffle, PixelUnshuffle


@pytest.mark.parametrize("factor", [1, 2, 3])
@pytest.mark.parametrize("size", [(1, 1), (4, 6), (5, 7), (9, 2)])
def test_shuffle_undoes_unshuffle_at_any_size(factor, size):
    x = np.random.default_rng(0).normal(size=(2, *size, 3)).astype("float32")
    down = PixelUnshuffle(factor)(x)
    assert tuple(down.shape) == (2, -(-size[0] // factor), -(-size[1] // factor), 3 * factor * factor)
    np.testing.assert_array_equal(PixelShuffle(factor)([down, x]).numpy(), x)


def test_unshuffle_layout_and_edge_padding():
    x = np.arange(15, dtype="float32").reshape(1, 3, 5, 1)  # rows 0..2, columns 0..4
    down = PixelUnshuffle(2)(x).numpy()
    assert down.shape == (1, 2, 3, 4)
    # output pixel (i, j) holds the 2x2 block at (2i, 2j) in row-major order
    np.testing.assert_array_equal(down[0, 0, 0], [0, 1, 5, 6])
    # the missing column 5 and row 3 repeat column 4 and row 2
    np.testing.assert_array_equal(down[0, 0, 2], [4, 4, 9, 9])
    np.testing.assert_array_equal(down[0, 1, 2], [14, 14, 14, 14])
    np.testing.assert_array_equal(down[0, 1, 0], [10, 11, 10, 11])


def test_bad_factor_is_named():
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="factor must be an integer >= 1"):
            PixelUnshuffle(bad)


def test_crop_must_be_a_bool():
    """`bool("no")` is True: the string turned the crop on."""
    from bfcnn.layers import UpsampleLike

    for layer in (PixelShuffle, UpsampleLike):
        for bad in ("no", "False", 0, None):
            with pytest.raises(ValueError, match=f"crop must be True or False, got {bad!r}"):
                layer(crop=bad)
        assert layer(crop=False).crop is False and layer(crop=np.bool_(True)).crop is True


def test_unshuffled_model_saves_and_loads(tmp_path):
    inputs = keras.Input((None, None, 1))
    x = PixelUnshuffle(2)(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(x)
    outputs = PixelShuffle(2)([x, inputs])
    model = keras.Model(inputs, outputs)
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras")
    x = np.random.default_rng(1).normal(size=(1, 7, 9, 1)).astype("float32")
    assert again(x).shape == (1, 7, 9, 1)
    np.testing.assert_array_equal(again(x).numpy(), model(x).numpy())
