"""Color through a gray network: the opponent transform, the channel fold and the `opponent` model."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import bfcnn
from bfcnn.errors import ConfigError
from bfcnn.layers.color import OPPONENT, BatchToChannels, ChannelsToBatch, ChromaOffset, OpponentTransform
from bfcnn.models.cost import is_bias_free

TINY_GRAY = {"type": "resnet", "channels": 1, "filters": 8, "blocks": 1}
TINY_OPPONENT = {"type": "opponent", "inner": TINY_GRAY}
TINY_PYRAMID = {"type": "multiscale", "channels": 1, "levels": 2, "filters": 4, "blocks": 1, "encoder_blocks": 1}
TINY_GUIDED = {"type": "opponent", "chroma": "guided", "inner": TINY_PYRAMID}


def rgb(shape=(2, 9, 7, 3), seed=0):
    return np.random.default_rng(seed).uniform(0, 255, shape).astype(np.float32)


def trained_a_little(model, seed=0):
    """Non-trivial weights (batch-norm statistics and kernels away from their initial values)."""
    x = tf.constant(rgb((4, 16, 16, model.input_shape[-1]), seed))
    noisy = x + tf.random.stateless_normal(x.shape, [seed, 1]) * 25
    optimizer = keras.optimizers.Adam(1e-2)
    for _ in range(3):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(noisy, training=True) - x))
        optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
    return model


def test_opponent_transform_matches_its_formula_and_inverts():
    x = rgb()
    y = OpponentTransform()(x).numpy()
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    np.testing.assert_allclose(y[..., 0], (r + g + b) / np.sqrt(3), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(y[..., 1], (r - b) / np.sqrt(2), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(y[..., 2], (r - 2 * g + b) / np.sqrt(6), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(OpponentTransform(inverse=True)(y).numpy(), x, atol=1e-3)


def test_opponent_transform_keeps_white_noise_white():
    """Orthonormal: RGB noise of std sigma has std sigma in every opponent channel, uncorrelated."""
    matrix = np.array(OPPONENT)
    np.testing.assert_allclose(matrix @ matrix.T, np.eye(3), atol=1e-12)
    noise = np.random.default_rng(1).normal(0, 25, (200_000, 3)).astype(np.float32)
    covariance = np.cov(OpponentTransform()(noise[None, None]).numpy()[0, 0].T)
    np.testing.assert_allclose(covariance, 625 * np.eye(3), atol=625 * 0.02)


def test_fold_puts_each_channel_in_the_batch_and_back():
    x = rgb((2, 5, 4, 3))
    folded = ChannelsToBatch()(x).numpy()
    assert folded.shape == (6, 5, 4, 1)
    for c in range(3):
        for b in range(2):
            np.testing.assert_array_equal(folded[c * 2 + b, ..., 0], x[b, ..., c])
    np.testing.assert_array_equal(BatchToChannels(3)(folded).numpy(), x)
    with pytest.raises(ValueError, match="channels must be an integer"):
        BatchToChannels(0)
    unfold = BatchToChannels(3)
    unfold(folded)
    with pytest.raises(ValueError, match=r"needs a batch that is a multiple of 3 .*got 4"):
        unfold(folded[:4])  # was a Split error from inside TensorFlow


def test_chroma_offset_lifts_chrominance_by_the_mean_gray_level_and_scales_with_the_input():
    x = rgb((2, 6, 6, 3))
    opponent = OpponentTransform()(x)
    offset = ChromaOffset(1.5)(opponent).numpy()
    assert offset.shape == (2, 1, 1, 3)
    np.testing.assert_allclose(offset[:, 0, 0, 0], 0)
    np.testing.assert_allclose(offset[:, 0, 0, 1], 1.5 * x.mean(axis=(1, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(offset[:, 0, 0, 2], offset[:, 0, 0, 1])
    np.testing.assert_allclose(ChromaOffset(1.5)(opponent * 3.0).numpy(), 3 * offset, rtol=1e-5)


def assert_homogeneous(model, x):
    for a in (0.25, 3.0):
        np.testing.assert_allclose(model(a * x, training=False).numpy(), a * model(x, training=False).numpy(),
                                   rtol=1e-4, atol=1e-3 * a)


def test_opponent_model_is_the_gray_network_on_each_lifted_opponent_channel():
    model = trained_a_little(bfcnn.build_model({**TINY_OPPONENT, "chroma_offset": 2.0}))
    gray = model.get_layer("gray")
    x = rgb((1, 12, 10, 3), seed=3)
    matrix = np.array(OPPONENT, np.float32)
    opponent = x @ matrix.T
    lift = np.array([0, 2.0, 2.0], np.float32) * x.mean()
    expected = np.concatenate([gray(opponent[..., c:c + 1] + lift[c], training=False).numpy() - lift[c]
                               for c in range(3)], axis=-1) @ matrix
    np.testing.assert_allclose(model(x, training=False).numpy(), expected, atol=2e-3)


def test_opponent_model_is_bias_free_and_homogeneous():
    model = trained_a_little(bfcnn.build_model(TINY_OPPONENT))
    assert is_bias_free(model)
    x = rgb((2, 16, 12, 3), seed=4)
    assert_homogeneous(model, x)


def test_opponent_model_saves_and_loads(tmp_path):
    model = trained_a_little(bfcnn.build_model({**TINY_OPPONENT, "chroma_offset": 1.5}))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", compile=False)
    assert loaded.get_layer("chroma_offset").scale == 1.5
    x = rgb((1, 11, 13, 3), seed=5)
    np.testing.assert_allclose(loaded(x, training=False).numpy(), model(x, training=False).numpy(), atol=1e-4)


@pytest.mark.filterwarnings("error:Skipping nested container")  # see tests/test_train.py
def test_a_gray_models_weights_start_an_opponent_model(tmp_path):
    from bfcnn.training.initial_weights import load_initial_weights

    gray = trained_a_little(bfcnn.build_model(TINY_GRAY))
    gray.save(tmp_path / "gray.keras")
    model = bfcnn.build_model(TINY_OPPONENT)
    load_initial_weights(model, tmp_path / "gray.keras")
    for mine, theirs in zip(model.get_layer("gray").weights, gray.weights):
        np.testing.assert_array_equal(np.array(mine), np.array(theirs))
    other = bfcnn.build_model({"type": "resnet", "channels": 1, "filters": 4, "blocks": 1})
    other.save(tmp_path / "other.keras")
    with pytest.raises(ConfigError, match="does not fit"):
        load_initial_weights(bfcnn.build_model(TINY_OPPONENT), tmp_path / "other.keras")


@pytest.mark.parametrize("config, match", [
    ({"type": "opponent", "channels": 1}, "channels must be 3"),
    ({"type": "opponent", "inner": {**TINY_GRAY, "channels": 3}}, "inner.channels must be 1"),
    ({"type": "opponent", "inner": TINY_OPPONENT}, "not opponent"),
    ({"type": "opponent", "inner": {"type": "resnet", "filterz": 8}}, "model.inner.filterz"),
    ({"type": "opponent", "inner": "resnet"}, "inner must be the model config"),
    ({"type": "opponent", "chroma": "separate", "inner": TINY_PYRAMID}, "allowed: 'shared', 'guided'"),
    ({"type": "opponent", "chroma": "guided", "inner": TINY_GRAY}, "needs a multiscale inner"),
])
def test_bad_opponent_configs_are_named(config, match):
    with pytest.raises(ConfigError, match=match):
        bfcnn.build_model(config)


def test_guided_model_denoises_chrominance_with_the_denoised_luminance_as_guide():
    model = trained_a_little(bfcnn.build_model({**TINY_GUIDED, "chroma_offset": 2.0}))
    gray, chroma = model.get_layer("gray"), model.get_layer("chroma")
    assert chroma.input_shape[-1] == 2 and chroma.output_shape[-1] == 1
    x = rgb((1, 12, 10, 3), seed=3)
    matrix = np.array(OPPONENT, np.float32)
    opponent = x @ matrix.T
    lift = 2.0 * x.mean()
    luminance = gray(opponent[..., :1], training=False).numpy()
    chrominance = [chroma(np.concatenate([opponent[..., c:c + 1] + lift, luminance], -1), training=False).numpy()
                   - lift for c in (1, 2)]
    expected = np.concatenate([luminance] + chrominance, axis=-1) @ matrix
    np.testing.assert_allclose(model(x, training=False).numpy(), expected, atol=2e-3)


def test_guided_model_is_bias_free_homogeneous_and_saves(tmp_path):
    model = trained_a_little(bfcnn.build_model(TINY_GUIDED))
    assert is_bias_free(model)
    x = rgb((2, 16, 12, 3), seed=4)
    assert_homogeneous(model, x)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", compile=False)
    np.testing.assert_allclose(loaded(x, training=False).numpy(), model(x, training=False).numpy(), atol=1e-4)


@pytest.mark.filterwarnings("error:Skipping nested container")  # see tests/test_train.py
def test_a_shared_color_models_weights_start_a_guided_one_that_computes_the_same(tmp_path):
    from bfcnn.training.initial_weights import load_initial_weights

    shared = trained_a_little(bfcnn.build_model({**TINY_GUIDED, "chroma": "shared"}))
    shared.save(tmp_path / "shared.keras")
    guided = bfcnn.build_model(TINY_GUIDED)
    x = rgb((1, 16, 20, 3), seed=6)
    assert np.abs(guided(x, training=False).numpy() - shared(x, training=False).numpy()).max() > 1e-2
    load_initial_weights(guided, tmp_path / "shared.keras")
    np.testing.assert_allclose(guided(x, training=False).numpy(), shared(x, training=False).numpy(), atol=1e-3)
    stems = [w for w in guided.get_layer("chroma").weights if "stem" in w.path and w.shape[2] > 1]
    assert stems and all(np.all(np.array(w)[:, :, -1, :] == 0) for w in stems)  # the guide starts ignored
    # once trained, a guided model's file starts a guided model as it is (no reseeding)
    trained = trained_a_little(guided, seed=2)
    trained.save(tmp_path / "guided.keras")
    again = bfcnn.build_model(TINY_GUIDED)
    load_initial_weights(again, tmp_path / "guided.keras")
    np.testing.assert_allclose(again(x, training=False).numpy(), trained(x, training=False).numpy(), atol=1e-4)


def test_color_from_gray_script_prints_a_row_per_denoiser(tmp_path, capsys):
    from PIL import Image

    from conftest import load_script

    script = load_script("scripts/color_from_gray.py")
    for i in range(2):
        Image.fromarray(rgb((24, 20, 3), seed=i).astype(np.uint8)).save(tmp_path / f"{i}.png")
    trained_a_little(bfcnn.build_model(TINY_GRAY)).save(tmp_path / "gray.keras")
    assert script.main(["--gray", str(tmp_path / "gray.keras"), "--dataset", str(tmp_path), "--sigmas", "25",
                        "--offsets", "1", "2", "--models"]) == 0
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("| ")][1:]
    assert [r[0].strip() for r in rows] == ["noisy", "gray.keras on R, G, B",
                                           "gray.keras in opponent space, chroma lift 1",
                                           "gray.keras in opponent space, chroma lift 2"]
    assert all(0 < float(r[1]) < 100 for r in rows)


def test_a_mixed_precision_opponent_model_runs_in_float32_after_to_float32():
    from bfcnn.models.precision import to_float32

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        mixed = trained_a_little(bfcnn.build_model(TINY_OPPONENT))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert mixed.get_layer("gray").layers[-2].compute_dtype == "bfloat16"
    assert mixed.get_layer("to_opponent").compute_dtype == "float32"  # the transforms never round to bf16
    clean = to_float32(mixed)
    assert {layer.compute_dtype for layer in clean._flatten_layers()} == {"float32"}
    x = rgb((1, 16, 16, 3), seed=6)
    out, reference = clean(x, training=False).numpy(), mixed(x, training=False).numpy()
    # the same weights: apart by bfloat16 rounding only (8 significant bits, a few layers deep)
    assert out.dtype == np.float32 and np.abs(out - reference).max() < 0.02 * np.abs(reference).max()
