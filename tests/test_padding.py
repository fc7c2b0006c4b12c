"""ReflectToMultiple: numpy's mirror padding up to a multiple, any size, TFLite sized ahead; and the
multiscale models that use it denoise the last rows and columns of any size alike."""

import keras
import numpy as np
import pytest

import bfcnn
from bfcnn.layers import CropLike, ReflectToMultiple


def expected_padding(x, factor):
    """x extended at the bottom and right up to a multiple of `factor` by mirroring about the last
    pixel (numpy's "reflect" mode: ... a b c | b a), the first pixel repeated where an axis is
    shorter than what is mirrored."""
    for axis in (1, 2):
        n = x.shape[axis]
        index = list(range(n)) + [max(n - 1 - j, 0) for j in range(1, -n % factor + 1)]
        if n > -n % factor:
            widths = [(0, 0)] * 4
            widths[axis] = (0, -n % factor)
            assert np.array_equal(np.take(x, index, axis=axis), np.pad(x, widths, mode="reflect"))
        x = np.take(x, index, axis=axis)
    return x


@pytest.mark.parametrize("factor", [1, 2, 4, 8])
@pytest.mark.parametrize("size", [(1, 1), (3, 5), (8, 12), (9, 13), (321, 17)])
def test_reflect_to_multiple_is_numpys_reflect_padding(factor, size):
    x = np.random.default_rng(0).normal(size=(2, *size, 3)).astype("float32")
    padded = np.asarray(ReflectToMultiple(factor)(x))
    assert padded.shape[1] % factor == 0 and padded.shape[2] % factor == 0
    np.testing.assert_array_equal(padded, expected_padding(x, factor))
    np.testing.assert_array_equal(np.asarray(CropLike()([padded, x])), x)


def test_reflect_to_multiple_in_a_graph_with_unknown_sizes_and_after_saving(tmp_path):
    inputs = keras.Input((None, None, 1))
    model = keras.Model(inputs, ReflectToMultiple(4, name="pad")(inputs))
    x = np.random.default_rng(1).normal(size=(1, 7, 10, 1)).astype("float32")
    model.save(tmp_path / "pad.keras")
    loaded = keras.models.load_model(tmp_path / "pad.keras")
    assert loaded.get_layer("pad").factor == 4
    np.testing.assert_array_equal(np.asarray(loaded(x)), expected_padding(x, 4))
    assert ReflectToMultiple(4).compute_output_shape((None, 7, None, 1)) == (None, 8, None, 1)
    with pytest.raises(ValueError, match="factor must be an integer >= 1"):
        ReflectToMultiple(0)


def test_a_padded_model_is_sized_ahead_in_tflite():
    from bfcnn.export import runtime_sized_tensors, to_tflite

    inputs = keras.Input((None, None, 1))
    model = keras.Model(inputs, CropLike()([2.0 * ReflectToMultiple(4)(inputs), inputs]))
    content = to_tflite(model)
    assert runtime_sized_tensors(content, (37, 29)) == []


MULTISCALE = {"type": "multiscale", "channels": 1, "levels": 3, "filters": [4, 6, 8], "blocks": 1,
              "encoder_blocks": 1}


@pytest.mark.parametrize("size", [(19, 13), (20, 14), (1, 1), (33, 8)])
def test_multiscale_models_mirror_other_sizes_up_to_a_multiple_of_their_levels(size):
    """The result at any size is that of the mirrored image (a multiple of 4 for 3 levels),
    cropped: the last rows and columns are no longer the edge of a partly empty coarse level."""
    model = bfcnn.build_model(MULTISCALE)
    x = np.random.default_rng(2).uniform(0, 255, (1, *size, 1)).astype("float32")
    padded = expected_padding(x, 4)
    reference = np.asarray(model(padded))[:, : size[0], : size[1]]
    np.testing.assert_allclose(np.asarray(model(x)), reference, rtol=1e-5, atol=1e-3)
    out = np.asarray(model(x))
    assert np.abs(np.asarray(model(3.0 * x)) - 3.0 * out).max() < 1e-5 * np.abs(out).max()


def test_multiscale_models_gather_only_at_the_input_padding_and_output_crop():
    """Every level is exactly half the one above once the input is mirrored to a multiple, so
    the expansions and lifts do not crop: in TFLite such crops are gathers outside XNNPACK that
    copied every full-size feature map."""
    from ai_edge_litert.interpreter import Interpreter

    from bfcnn.export import to_tflite

    model = bfcnn.build_model({**MULTISCALE, "pass_features": True})
    interpreter = Interpreter(model_content=to_tflite(model))
    interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], [1, 37, 29, 1])
    interpreter.allocate_tensors()
    names = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    gathers = [names[op["outputs"][0]] for op in interpreter._get_ops_details() if op["op_name"] == "GATHER"]
    assert len(gathers) == 6  # 2 + 2 for the padding (one mirror and one crop per axis), 2 for the output crop
    assert all("reflect_to_levels" in name or "crop_to_input" in name for name in gathers), gathers
