"""Layers given a tensor of the wrong rank, channels, order or dtype: a ValueError that
names the layer and the problem, not an error from inside a TensorFlow kernel."""

import keras
import numpy as np
import pytest

from bfcnn.layers import (BiasFreeBatchNorm, CropLike, GaussianPyramid, LaplacianPyramid, NonLocalBlock,
                          OpponentTransform, PixelShuffle, SqueezeExcite, UpsampleLike)


def ones(*shape, dtype="float32"):
    return np.ones(shape, dtype)


def batch_norm_on_other_channels():
    layer = BiasFreeBatchNorm()
    layer(ones(1, 4, 4, 3))
    return layer(ones(1, 4, 4, 5))


@pytest.mark.parametrize("call, words", [
    (batch_norm_on_other_channels, ["bias_free_batch_norm", "axis -1", "value 3", "(1, 4, 4, 5)"]),
    (lambda: GaussianPyramid(2)(ones(4, 4, 1)), ["gaussian_pyramid", "expected ndim=4, found ndim=3"]),
    (lambda: LaplacianPyramid(2)(ones(4, 4, 1)), ["LaplacianPyramid needs a [B, H, W, C] tensor", "(4, 4, 1)"]),
    (lambda: SqueezeExcite()(ones(4, 4, 8)), ["squeeze_excite", "expected ndim=4"]),
    (lambda: PixelShuffle(2)([ones(1, 4, 4, 3), ones(1, 8, 8, 1)]), ["PixelShuffle(factor=2)", "divisible by 4, got 3"]),
    (lambda: OpponentTransform()(ones(1, 4, 4, 4)), ["opponent_transform", "value 3"]),
    (lambda: CropLike()([ones(1, 4, 4, 1), ones(1, 6, 6, 1)]), ["cannot crop a 4x4 tensor to 6x6", "`like`"]),
    (lambda: UpsampleLike()([ones(1, 4, 4, 1), ones(1, 12, 12, 1)]), ["cannot crop a 8x8 tensor to 12x12"]),
    (lambda: LaplacianPyramid(2)([ones(1, 4, 4, 1), ones(1, 8, 8, 1)], inverse=True),
     ["finest first", "[(4, 4), (8, 8)]"]),
])
def test_wrong_inputs_are_named(call, words):
    with pytest.raises(ValueError) as error:
        call()
    for word in words:
        assert word in str(error.value)


PAIRS = [(lambda: PixelShuffle(2), "PixelShuffle(factor=2)"), (UpsampleLike, "UpsampleLike"),
         (CropLike, "CropLike")]


@pytest.mark.parametrize("make, name", PAIRS, ids=[name for _, name in PAIRS])
@pytest.mark.parametrize("inputs, got", [
    (lambda: ones(1, 4, 4, 8), "one tensor of shape (1, 4, 4, 8)"),
    (lambda: keras.Input((None, None, 8)), "one tensor of shape (None, None, None, 8)"),
    (lambda: [ones(1, 4, 4, 8)], "a list of 1"),
    (lambda: [ones(1, 4, 4, 8)] * 3, "a list of 3"),
])
def test_a_layer_of_two_inputs_given_another_number_says_it_takes_x_and_like(make, name, inputs, got):
    """PixelShuffle(2)(x) raised "TypeError: 'int' object is not subscriptable" from its build."""
    with pytest.raises(ValueError) as error:
        make()(inputs())
    assert f"{name} takes a list of two tensors, [x, like] (like: the tensor whose height and width" in str(error.value)
    assert f"got {got}" in str(error.value)


def test_the_right_inputs_still_pass():
    """The checks above refuse only what is wrong: odd sizes, merging, upsampling to 2n-1."""
    bands = LaplacianPyramid(3)(ones(1, 7, 5, 2))
    assert tuple(LaplacianPyramid(3)(bands, inverse=True).shape) == (1, 7, 5, 2)
    assert tuple(UpsampleLike()([ones(1, 4, 3, 1), ones(1, 7, 5, 1)]).shape) == (1, 7, 5, 1)
    assert tuple(PixelShuffle(2)([ones(1, 4, 4, 8), ones(1, 7, 7, 1)]).shape) == (1, 7, 7, 2)
    assert tuple(CropLike()((ones(1, 8, 8, 3), ones(1, 7, 5, 1))).shape) == (1, 7, 5, 3)  # a tuple is a pair too


def test_pyramids_take_integer_images():
    levels = GaussianPyramid(2)(np.full((1, 4, 4, 1), 8, "int32"))
    assert [keras.backend.standardize_dtype(level.dtype) for level in levels] == ["float32", "float32"]
    np.testing.assert_allclose(np.asarray(levels[1]), 8.0, rtol=1e-6)


def test_non_local_attention_is_float32_in_a_functional_model_under_mixed_precision():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        x = keras.Input((None, None, 8))
        z, attention = NonLocalBlock(return_attention=True)(x)
        assert (z.dtype, attention.dtype) == ("bfloat16", "float32")
        model = keras.Model(x, [z, attention])
        assert keras.backend.standardize_dtype(model(ones(1, 4, 4, 8))[1].dtype) == "float32"
    finally:
        keras.mixed_precision.set_global_policy(previous)


def test_n3_branch_names_filters_when_the_channels_differ():
    from bfcnn.layers import N3Branch

    with pytest.raises(ValueError, match=r"N3Branch\(filters=8\) needs inputs of 8 channels .* got 3"):
        N3Branch(8, channels=4, k=1, patch_size=4, stride=2, window=3)(ones(1, 8, 8, 3))


def test_pyramids_merge_exactly_under_a_mixed_policy():
    """The pyramid layers default to float32: bfloat16 bands would not merge back to the input."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        pyramid, up = LaplacianPyramid(3), UpsampleLike()
        assert GaussianPyramid(2).compute_dtype == pyramid.compute_dtype == up.compute_dtype == "float32"
        x = np.random.default_rng(0).uniform(0, 255, (1, 13, 11, 1)).astype(np.float32)
        np.testing.assert_allclose(pyramid(pyramid(x), inverse=True).numpy(), x, atol=1e-3)
    finally:
        keras.mixed_precision.set_global_policy(previous)
