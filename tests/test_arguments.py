"""The shared argument checks of the layers and builders (bfcnn.layers.arguments)."""

import json

import keras
import numpy as np
import pytest

from bfcnn.layers import (BiasFreeBatchNorm, BiasFreeConvBlock, BiasFreeResidualBlock, CenterAway, ChromaOffset,
                          GaussianPyramid, N3Block, N3Branch, NonLocalBlock, RegularizerSum, SoftOrthogonal)
from bfcnn.layers.arguments import check_bool, check_choice, check_int, check_number
from bfcnn.models.resnet import build_resnet


@pytest.mark.parametrize("value", [3, np.int64(3), np.int32(3), np.uint8(3)])
def test_check_int_accepts_python_and_numpy_integers_and_returns_an_int(value):
    checked = check_int("filters", value)
    assert checked == 3 and type(checked) is int


@pytest.mark.parametrize("value", [True, 2.0, "3", None, 0, -1, np.float32(2)])
def test_check_int_names_the_argument_the_minimum_and_the_value(value):
    with pytest.raises(ValueError) as error:
        check_int("filters", value)
    assert str(error.value) == f"filters must be an integer >= 1, got {value!r}"


def test_check_int_minimum_and_hint():
    assert check_int("guide_channels", 0, 0) == 0
    with pytest.raises(ValueError, match=r"^window must be an integer >= 2 \(the search window\), got 1$"):
        check_int("window", 1, 2, hint="the search window")


@pytest.mark.parametrize("value, low, high, strict, message", [
    (-0.5, 0.0, None, False, "rate must be a number >= 0, got -0.5"),
    (0.0, 0.0, None, True, "rate must be a number > 0, got 0.0"),
    (1.0, 0.0, 1.0, False, "rate must be a number in [0, 1), got 1.0"),
    (float("nan"), 0.0, None, False, "rate must be a number >= 0, got nan"),
    (True, 0.0, None, False, "rate must be a number >= 0, got True"),
    ("0.1", 0.0, None, False, "rate must be a number >= 0, got '0.1'"),
])
def test_check_number_rejects(value, low, high, strict, message):
    with pytest.raises(ValueError) as error:
        check_number("rate", value, low, high, strict=strict)
    assert str(error.value) == message


def test_check_number_returns_a_float_for_numpy_scalars_and_ints():
    for value in (np.float32(0.25), np.int64(0), 0):
        checked = check_number("rate", value, 0.0, 1.0)
        assert type(checked) is float and checked == float(value)


def test_check_choice_lists_the_options():
    check_choice("mode", "a", ("a", "b"))
    with pytest.raises(ValueError, match=r"^mode='c' is not supported; allowed: 'a', 'b'$"):
        check_choice("mode", "c", ("a", "b"))


@pytest.mark.parametrize("layer", [
    lambda: BiasFreeConvBlock(np.int64(8), kernel_size=np.int64(3)),
    lambda: GaussianPyramid(levels=np.int64(2)),
    lambda: NonLocalBlock(inter_channels=np.int64(4)),
    lambda: N3Block(k=np.int64(2), patch_size=np.int64(4), stride=np.int64(2), window=np.int64(5)),
    lambda: BiasFreeResidualBlock(np.int64(8), kernel_size=np.int64(3)),
    lambda: N3Branch(np.int64(8), k=np.int64(2), patch_size=4, stride=2, window=3),
])
def test_layers_built_from_numpy_integers_keep_a_json_config(layer):
    """A size read from an array is accepted and stored as an int, so the config serializes."""
    config = layer().get_config()
    json.dumps(config)  # np.int64 is not JSON serializable: this raised before the values were converted


def test_a_builder_error_names_the_argument():
    with pytest.raises(ValueError, match=r"^downsample must be an integer >= 1, got 0$"):
        build_resnet(channels=1, downsample=0)


@pytest.mark.parametrize("make, message", [
    (lambda: BiasFreeBatchNorm(momentum="a"), "momentum must be a number in [0, 1), got 'a'"),
    (lambda: BiasFreeBatchNorm(momentum=None), "momentum must be a number in [0, 1), got None"),
    (lambda: BiasFreeBatchNorm(epsilon="1e-3"), "epsilon must be a number > 0, got '1e-3'"),
    (lambda: N3Block(epsilon=None), "epsilon must be a number > 0, got None"),
    (lambda: ChromaOffset(scale="a"), "scale must be a number >= 0, got 'a'"),
])
def test_number_arguments_are_checked_not_converted(make, message):
    """float('a') used to raise numpy's / Python's own message, and float('1e-3') passed."""
    with pytest.raises(ValueError) as error:
        make()
    assert message in str(error.value)


def test_a_regularizer_may_be_given_by_its_config_name():
    block = BiasFreeConvBlock(4, kernel_regularizer="soft_orthogonal")
    assert isinstance(block.kernel_regularizer, SoftOrthogonal)
    assert [type(r) for r in RegularizerSum(["soft_orthogonal", "center_away"]).regularizers] == [
        SoftOrthogonal, CenterAway]
    assert [type(r) for r in RegularizerSum(SoftOrthogonal()).regularizers] == [SoftOrthogonal]
    assert [type(r) for r in RegularizerSum(r for r in ["soft_orthogonal"]).regularizers] == [SoftOrthogonal]
    assert isinstance(BiasFreeConvBlock(4, kernel_regularizer="L2").kernel_regularizer, keras.regularizers.L2)
    with pytest.raises(ValueError, match="unknown kernel_regularizer type 'soft_orthogonl'.*did you mean"):
        BiasFreeConvBlock(4, kernel_regularizer="soft_orthogonl")
    total = RegularizerSum([SoftOrthogonal(), CenterAway(l2=1.0)])
    again = RegularizerSum.from_config(total.get_config())
    kernel = np.random.default_rng(0).normal(size=(3, 3, 2, 4)).astype("float32")
    assert float(again(kernel)) == pytest.approx(float(total(kernel)))


def test_check_bool_refuses_what_bool_would_turn_into_true():
    assert check_bool("scale", np.bool_(False)) is False
    for value in ("no", 1, None):
        with pytest.raises(ValueError, match=f"^scale must be True or False, got {value!r}$"):
            check_bool("scale", value)
    with pytest.raises(ValueError, match="subsample must be True or False, got 'no'"):
        NonLocalBlock(subsample="no")
    with pytest.raises(ValueError, match="scale_invariant_gates must be True or False, got 'no'"):
        build_resnet(channels=1, gate="block", scale_invariant_gates="no")


@pytest.mark.parametrize("text, message", [("0", "got 0"), ("-2", "got -2"), ("x", "got 'x'"), ("1.5", "got '1.5'")])
def test_positive_int_of_the_command_lines_names_the_value(text, message):
    import argparse

    from bfcnn.cli import positive_int

    assert positive_int("7") == 7
    with pytest.raises(argparse.ArgumentTypeError, match=f"^must be an integer >= 1, {message}$"):
        positive_int(text)
