"""bfloat16 inference: `bfcnn.models.precision.to_bfloat16`, `denoise(..., precision=)` and
the command lines' `--precision`."""

import json

import keras
import numpy as np
import pytest

import bfcnn
from bfcnn import evaluate, inference
from bfcnn.errors import BfcnnError
from bfcnn.models.precision import to_bfloat16, to_float32

CONFIGS = {
    "resnet": {"type": "resnet", "channels": 1, "filters": 8, "blocks": 2, "batch_norm": True},
    "multiscale": {"type": "multiscale", "channels": 1, "levels": 2, "filters": 8, "blocks": 1,
                   "encoder_blocks": 1},
    "opponent": {"type": "opponent", "inner": {"type": "multiscale", "channels": 1, "levels": 2, "filters": 8,
                                               "blocks": 1, "encoder_blocks": 1}},
    "n3net": {"type": "n3net", "channels": 1, "stages": 2, "depth": 3, "filters": 8, "k": 2,
              "patch_size": 4, "stride": 2, "window": 3, "embedding_depth": 3, "embedding_filters": 8},
}
# Layers that must never compute in bfloat16: they set the output's precision.
FLOAT32_LAYERS = {"DenoiserOutput", "Rescaling", "OpponentTransform", "ChromaOffset", "LaplacianPyramid",
                  "UpsampleLike", "InputLayer"}


def randomized(model, seed=0):
    """`model` with random weights of the scale He initialization gives (no zero branches)."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.3, w.shape).astype(w.dtype) if w.ndim > 1 else w
                       for w in model.get_weights()])
    return model


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_to_bfloat16_rounds_the_convolutions_only(name):
    model = randomized(bfcnn.build_model(CONFIGS[name]))
    fast = to_bfloat16(model)
    layers = {(type(layer).__name__, layer.compute_dtype) for layer in fast._flatten_layers()}
    assert ("Conv2D", "bfloat16") in layers
    assert not {(n, d) for n, d in layers if n in FLOAT32_LAYERS and d != "float32"}
    assert {layer.compute_dtype for layer in model._flatten_layers()} == {"float32"}  # the original is untouched
    for a, b in zip(model.get_weights(), fast.get_weights()):
        assert b.dtype == a.dtype and np.array_equal(a, b)

    channels = model.input_shape[-1]
    x = np.random.default_rng(1).uniform(0, 255, (1, 24, 20, channels)).astype(np.float32)
    exact, rounded = model(x, training=False).numpy(), fast(x, training=False)
    assert keras.backend.standardize_dtype(rounded.dtype) == "float32"
    rounded = rounded.numpy()
    # apart by bfloat16 rounding only: 8 significant bits, a few layers deep (the N3 block's
    # weights are a softmax of distances, which amplifies the rounding of random weights)
    tolerance = 0.1 if name == "n3net" else 0.02
    assert 0 < np.abs(rounded - exact).max() < tolerance * np.abs(exact).max()
    np.testing.assert_array_equal(to_float32(fast)(x, training=False).numpy(), exact)  # and back, exactly


def test_to_bfloat16_needs_a_functional_model():
    class Doubling(keras.Model):
        def call(self, x):
            return 2 * x

    with pytest.raises(ValueError, match="functional keras.Model"):
        to_bfloat16(Doubling())
    with pytest.raises(ValueError, match="needs a keras.Model, got function"):
        to_bfloat16(lambda x: x)


@pytest.fixture(scope="module")
def gray_model():
    return randomized(bfcnn.build_model(CONFIGS["resnet"]), seed=3)


def test_denoise_in_bfloat16_stays_within_a_few_levels_and_copies_the_model_once(gray_model):
    noisy = np.random.default_rng(2).integers(0, 256, (40, 36), dtype=np.uint8)
    exact = bfcnn.denoise(noisy, model=gray_model)
    rounded = bfcnn.denoise(noisy, model=gray_model, precision="bfloat16")
    assert rounded.dtype == np.uint8 and rounded.shape == noisy.shape
    assert np.abs(rounded.astype(int) - exact).max() <= 4
    floats = noisy.astype(np.float32)
    assert np.abs(bfcnn.denoise(floats, model=gray_model, precision="bfloat16")
                  - bfcnn.denoise(floats, model=gray_model)).max() > 0  # it did run in bfloat16
    copy = inference._BFLOAT16[gray_model]
    bfcnn.denoise(noisy, model=gray_model, precision="bfloat16")
    assert inference._BFLOAT16[gray_model] is copy


def test_the_bfloat16_copy_follows_the_models_weights():
    model = randomized(bfcnn.build_model(CONFIGS["resnet"]), seed=5)
    noisy = np.random.default_rng(6).uniform(0, 255, (24, 24)).astype(np.float32)
    before = bfcnn.denoise(noisy, model=model, precision="bfloat16")
    randomized(model, seed=7)  # as if trained further
    exact, rounded = bfcnn.denoise(noisy, model=model), bfcnn.denoise(noisy, model=model, precision="bfloat16")
    assert np.abs(rounded - before).max() > 1.0  # the copy moved with the weights
    assert 0 < np.abs(rounded - exact).max() < 0.02 * np.abs(exact).max()


@pytest.mark.parametrize("model, precision, message", [
    (None, "fp16", "precision must be one of 'float32', 'bfloat16', got 'fp16'"),
    (lambda x: x, "bfloat16", "precision='bfloat16' needs a Keras model"),
])
def test_denoise_precision_errors(gray_model, model, precision, message):
    with pytest.raises(BfcnnError) as error:
        bfcnn.denoise(np.zeros((8, 8), np.uint8), model=model or gray_model, precision=precision)
    assert message in str(error.value)


def test_evaluate_cli_labels_and_records_the_precision(gray_model, tmp_path, capsys):
    from bfcnn.io import write_image

    path = tmp_path / "tiny.keras"
    gray_model.save(path)
    write_image(tmp_path / "images" / "a.png", np.random.default_rng(4).integers(0, 256, (24, 32, 1), np.uint8))
    out = tmp_path / "r.json"
    code = evaluate.main(["--model", str(path), "--dataset", str(tmp_path / "images"), "--sigma", "25",
                          "--precision", "bfloat16", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "| tiny bfloat16 PSNR |" in captured.out
    assert json.loads(out.read_text())["precision"] == "bfloat16"
