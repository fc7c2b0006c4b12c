"""Bias-free building blocks and pyramids."""

import keras
import numpy as np
import pytest

from bfcnn.layers import (
    BiasFreeBatchNorm,
    BiasFreeConvBlock,
    BiasFreeResidualBlock,
    GaussianPyramid,
    LaplacianPyramid,
)
from conftest import assert_config_round_trip, assert_saving_round_trip, random_images


def test_batch_norm_training_divides_by_batch_std_without_mean():
    x = random_images((4, 6, 5, 3), seed=1) - 100.0
    layer = BiasFreeBatchNorm(momentum=0.5, epsilon=1e-3)
    y = np.asarray(layer(x, training=True))
    std = x.reshape(-1, 3).std(axis=0)
    np.testing.assert_allclose(y, x / (std + 1e-3), rtol=1e-5)
    # the moving std moved halfway from 1 to the batch std
    np.testing.assert_allclose(np.asarray(layer.moving_std), 0.5 + 0.5 * std, rtol=1e-5)
    assert [w.path.split("/")[-1] for w in layer.weights] == ["gamma", "moving_std"]


def test_batch_norm_inference_uses_moving_std_and_is_linear():
    x = random_images((2, 4, 4, 2), seed=2)
    layer = BiasFreeBatchNorm()
    layer.build(x.shape)
    layer.moving_std.assign(np.array([2.0, 4.0], "float32"))
    layer.gamma.assign(np.array([3.0, 1.0], "float32"))
    y = np.asarray(layer(x, training=False))
    np.testing.assert_allclose(y, x * np.array([3.0 / 2.001, 1.0 / 4.001]), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(layer(3 * x)), 3 * y, rtol=1e-6)


@pytest.mark.parametrize("bad", [dict(momentum=1.0), dict(epsilon=0.0)])
def test_batch_norm_rejects_bad_arguments(bad):
    with pytest.raises(ValueError, match=list(bad)[0]):
        BiasFreeBatchNorm(**bad)


LAYERS = [
    lambda: BiasFreeBatchNorm(momentum=0.9),
    lambda: BiasFreeConvBlock(4, kernel_size=3, batch_norm=True, activation="leaky_relu"),
    lambda: BiasFreeResidualBlock(4, batch_norm=True),
    lambda: GaussianPyramid(levels=3),
    lambda: LaplacianPyramid(levels=2),
]


@pytest.mark.parametrize("make", LAYERS, ids=lambda f: f().__class__.__name__)
def test_layer_config_call_and_saving(make, tmp_path):
    layer = make()
    assert_config_round_trip(layer)
    inputs = keras.Input((None, None, 4))
    outputs = layer(inputs)
    if isinstance(outputs, (list, tuple)):  # pyramids: keep the coarsest level
        outputs = outputs[-1]
    model = keras.Model(inputs, outputs)
    x = random_images((2, 9, 7, 4))
    eager = np.asarray(model(x))
    assert eager.shape[0] == 2 and eager.shape[-1] == 4
    assert_saving_round_trip(model, x, tmp_path)
    if model.trainable_weights:  # one fit step changes the weights
        before = [np.asarray(w).copy() for w in model.trainable_weights]
        model.compile(optimizer="sgd", loss="mse")
        model.fit(x, np.asarray(model(x)) + 1.0, epochs=1, verbose=0)
        assert any(not np.allclose(b, np.asarray(w)) for b, w in zip(before, model.trainable_weights))


def test_blocks_have_no_bias_unless_asked():
    block = BiasFreeResidualBlock(4, batch_norm=True)
    block.build((None, None, None, 4))
    names = [w.path.split("/")[-1] for w in block.weights]
    assert "bias" not in names and "beta" not in names
    twin = BiasFreeResidualBlock(4, batch_norm=True, use_bias=True)
    twin.build((None, None, None, 4))
    assert "bias" in [w.path.split("/")[-1] for w in twin.weights]


def test_residual_block_checks_channels():
    with pytest.raises(ValueError, match="filters=8"):
        BiasFreeResidualBlock(8)(np.zeros((1, 4, 4, 3), "float32"))


def test_activation_is_checked():
    with pytest.raises(ValueError, match="allowed"):
        BiasFreeConvBlock(4, activation="sigmoid")


@pytest.mark.parametrize("size", [(64, 64), (63, 65), (17, 9), (1, 1), (2, 3)])
@pytest.mark.parametrize("channels", [1, 3])
def test_laplacian_pyramid_reconstructs_exactly(size, channels):
    x = random_images((2, *size, channels), seed=3)
    pyramid = LaplacianPyramid(levels=3)
    bands = pyramid(x)
    expected = [size]
    for _ in range(2):
        expected.append(tuple((s + 1) // 2 for s in expected[-1]))
    assert [tuple(b.shape[1:3]) for b in bands] == expected
    np.testing.assert_allclose(np.asarray(pyramid(bands, inverse=True)), x, atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.asarray(pyramid.merge(bands)), x, atol=1e-4, rtol=0)



def test_conv_block_config_is_json_and_its_gamma_initializer_is_checked():
    """The block kept the initializer object in its config (json.dumps failed) and never
    checked it when batch_norm was off."""
    import json

    block = BiasFreeConvBlock(4, batch_norm=True, gamma_initializer=keras.initializers.Constant(0.5))
    config = json.loads(json.dumps(block.get_config()))
    block2 = BiasFreeConvBlock.from_config(config)
    block2.build((None, 6, 6, 2))
    np.testing.assert_allclose(np.asarray(block2.norm.gamma), 0.5)
    with pytest.raises(ValueError, match="nope"):
        BiasFreeConvBlock(4, batch_norm=False, gamma_initializer="nope")


@pytest.mark.parametrize("make", [BiasFreeBatchNorm, lambda **kw: BiasFreeConvBlock(4, batch_norm=True, **kw)])
@pytest.mark.parametrize("bad", ["onez", 3])
def test_a_bad_gamma_initializer_names_the_argument_and_the_allowed_values(make, bad):
    """Keras said only "Could not interpret initializer identifier: onez"."""
    with pytest.raises(ValueError, match=rf"gamma_initializer must be a Keras initializer: a name such as 'ones', "
                                         rf"'zeros', .*keras.initializers.Initializer; got {bad!r}"):
        make(gamma_initializer=bad)


def test_laplacian_pyramid_detail_bands_of_a_constant_are_zero():
    bands = LaplacianPyramid(levels=3)(np.full((1, 21, 18, 1), 42.0, "float32"))
    for band in bands[:-1]:
        assert np.max(np.abs(np.asarray(band))) < 1e-4
    np.testing.assert_allclose(np.asarray(bands[-1]), 42.0, rtol=1e-6)


def test_laplacian_detail_band_is_not_trivial():
    bands = LaplacianPyramid(levels=2)(random_images((1, 16, 16, 1)))
    assert np.std(np.asarray(bands[0])) > 10.0


def test_gaussian_pyramid_blurs_and_halves():
    x = random_images((1, 33, 20, 1), seed=4)
    levels = GaussianPyramid(levels=3)(x)
    assert [tuple(g.shape[1:3]) for g in levels] == [(33, 20), (17, 10), (9, 5)]
    # blurring lowers the variance of noise and keeps the mean
    assert np.std(np.asarray(levels[1])) < 0.6 * np.std(x)
    assert abs(float(np.mean(levels[2])) - float(np.mean(x))) < 5.0
    np.testing.assert_array_equal(np.asarray(GaussianPyramid(3).merge(levels)), x)


def test_pyramid_levels_are_checked():
    with pytest.raises(ValueError, match="levels"):
        LaplacianPyramid(levels=0)


def _numpy_reflect(n, pad):
    """Reflect-101 indices of an n-pixel axis padded by `pad` (numpy reference)."""
    idx = np.mod(np.arange(-pad, n + pad), max(2 * (n - 1), 1))
    return np.where(idx > n - 1, 2 * (n - 1) - idx, idx)


@pytest.mark.parametrize("height, width", [(3, 3), (4, 7), (9, 5), (16, 16)])
def test_reflect_pad_is_numpy_reflect_for_axes_longer_than_the_pad(height, width):
    from bfcnn.layers.pyramids import reflect_pad

    x = random_images((2, height, width, 3))
    expected = np.pad(x, [(0, 0), (2, 2), (2, 2), (0, 0)], mode="reflect")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(reflect_pad(x, 2)), expected)


@pytest.mark.parametrize("n", [1, 2])
def test_reflect_pad_of_short_axes_stays_inside_the_image(n):
    from bfcnn.layers.pyramids import reflect_pad

    x = np.arange(n * 3, dtype=np.float32).reshape(1, n, 3, 1)
    y = keras.ops.convert_to_numpy(reflect_pad(x, 2))
    assert y.shape == (1, n + 4, 7, 1)
    assert set(np.unique(y)) <= set(np.unique(x))
    np.testing.assert_array_equal(y[:, 2:-2, 2:-2], x)


def _numpy_upsample(x, height, width):
    """Zero insertion, reflect padding and the separable [1, 4, 6, 4, 1] / 8 blur (reference)."""
    b, h, w, c = x.shape
    z = np.zeros((b, 2 * h, 2 * w, c), np.float64)
    z[:, ::2, ::2] = x
    z = z[:, _numpy_reflect(2 * h, 2)][:, :, _numpy_reflect(2 * w, 2)]
    taps = np.array([1, 4, 6, 4, 1], np.float64) / 8
    z = sum(t * z[:, i:i + 2 * h] for i, t in enumerate(taps))
    z = sum(t * z[:, :, i:i + 2 * w] for i, t in enumerate(taps))
    return z[:, :height, :width]


@pytest.mark.parametrize("height, width", [(1, 1), (1, 5), (2, 3), (3, 3), (5, 8), (17, 9)])
@pytest.mark.parametrize("odd", [False, True])
def test_polyphase_upsample_equals_zero_insertion_and_blur(height, width, odd):
    from bfcnn.layers.pyramids import upsample

    x = random_images((2, height, width, 3))
    th, tw = 2 * height - int(odd and height > 1), 2 * width - int(odd and width > 1)
    out = keras.ops.convert_to_numpy(upsample(x, np.zeros((2, th, tw, 3), np.float32)))
    np.testing.assert_allclose(out, _numpy_upsample(x, th, tw), atol=1e-4)


def test_upsample_keeps_a_constant():
    from bfcnn.layers.pyramids import upsample

    out = keras.ops.convert_to_numpy(upsample(np.full((1, 3, 2, 1), 5.0, np.float32), np.zeros((1, 5, 4, 1))))
    np.testing.assert_allclose(out, 5.0, atol=1e-5)


def test_exact_halves_skips_the_crops_and_gives_the_same_bands():
    """At a multiple of 2^(levels-1) the expansions' crops keep everything: skipping them
    (`exact_halves`, `crop=False`) changes no value; other sizes are refused where known."""
    from bfcnn.layers import PixelShuffle, UpsampleLike

    x = random_images((2, 24, 16, 2), seed=7)
    cropped, exact = LaplacianPyramid(levels=4), LaplacianPyramid(levels=4, exact_halves=True)
    for a, b in zip(cropped(x), exact(x)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_allclose(np.asarray(exact.merge(exact(x))), x, atol=1e-4, rtol=0)
    assert LaplacianPyramid.from_config(exact.get_config()).exact_halves
    with pytest.raises(ValueError, match="multiples of 8"):
        exact(random_images((1, 24, 12, 1)))
    coarse = random_images((1, 5, 4, 3), seed=8)
    like = np.zeros((1, 10, 8, 3), "float32")
    np.testing.assert_array_equal(np.asarray(UpsampleLike(crop=False)([coarse, like])),
                                  np.asarray(UpsampleLike()([coarse, like])))
    assert not UpsampleLike.from_config(UpsampleLike(crop=False).get_config()).crop
    features = random_images((1, 5, 4, 12), seed=9)
    np.testing.assert_array_equal(np.asarray(PixelShuffle(2, crop=False)([features, like])),
                                  np.asarray(PixelShuffle(2)([features, like])))
    assert not PixelShuffle.from_config(PixelShuffle(2, crop=False).get_config()).crop
    # the crop is what makes odd sizes work
    assert UpsampleLike(crop=False)([coarse, like[:, :9]]).shape[1] == 10
