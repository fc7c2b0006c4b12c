"""The non-local block: identity at init, brute-force agreement, homogeneity, saving, TFLite."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from bfcnn.layers.non_local import NonLocalBlock
from conftest import assert_config_round_trip, assert_saving_round_trip, relative_error

MODES = ["embedded_gaussian", "dot_product"]


def uniform(shape, seed=0, low=-1.0):
    return np.random.default_rng(seed).uniform(low, 1.0, size=shape).astype("float32")


def randomize(block, seed=0):
    """Random weights everywhere, including the normalization's scale (zero at init)."""
    rng = np.random.default_rng(seed)
    for w in block.weights:
        leaf = w.path.split("/")[-1]
        if leaf in ("moving_std", "moving_variance", "gamma"):
            w.assign(rng.uniform(0.5, 2.0, size=w.shape).astype("float32"))
        else:
            w.assign(rng.normal(0.0, 0.5, size=w.shape).astype("float32"))
    return block


def conv1x1(layer, x):
    out = x @ np.asarray(layer.kernel, np.float64)[0, 0]
    return out + np.asarray(layer.bias) if layer.use_bias else out


def max_pool_2x2(x):
    """2x2, stride 2, `same` padding: windows clipped at the bottom and right border."""
    h, w = x.shape[0], x.shape[1]
    out = np.empty(((h + 1) // 2, (w + 1) // 2, x.shape[2]))
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = x[2 * i : 2 * i + 2, 2 * j : 2 * j + 2].max(axis=(0, 1))
    return out


def reference(block, x):
    """Loops over queries and keys, numpy float64, inference mode."""
    x = x.astype(np.float64)
    out = np.empty_like(x)
    norm = block.norm
    for b in range(x.shape[0]):
        theta, phi, g = (conv1x1(layer, x[b]) for layer in (block.theta, block.phi, block.g))
        if block.subsample:
            phi, g = max_pool_2x2(phi), max_pool_2x2(g)
        theta = theta.reshape(-1, theta.shape[-1])
        phi, g = phi.reshape(-1, phi.shape[-1]), g.reshape(-1, g.shape[-1])
        y = np.zeros_like(theta)
        for i in range(theta.shape[0]):
            f = np.array([theta[i] @ phi[j] for j in range(phi.shape[0])])
            if block.mode == "embedded_gaussian":
                a = np.exp(f - f.max())
                a /= a.sum()
            else:
                a = f / phi.shape[0]
            y[i] = sum(a[j] * g[j] for j in range(phi.shape[0]))
        wy = conv1x1(block.w, y.reshape(*x.shape[1:3], -1))
        gamma = np.asarray(norm.gamma, np.float64)
        if block.bias_free:
            wy = wy * gamma / (np.asarray(norm.moving_std, np.float64) + norm.epsilon)
        else:
            std = np.sqrt(np.asarray(norm.moving_variance, np.float64) + norm.epsilon)
            wy = (wy - np.asarray(norm.moving_mean)) / std * gamma + np.asarray(norm.beta)
        out[b] = x[b] + wy
    return out


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bias_free", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_identity_at_init(mode, bias_free, training):
    block = NonLocalBlock(mode=mode, bias_free=bias_free)
    x = uniform((2, 9, 7, 6), seed=1)
    np.testing.assert_array_equal(np.asarray(block(x, training=training)), x)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("subsample,bias_free,size", [(True, True, (7, 5)), (False, True, (6, 6)),
                                                     (True, False, (8, 3)), (True, True, (1, 1))])
def test_matches_brute_force_loops(mode, subsample, bias_free, size):
    block = NonLocalBlock(mode=mode, subsample=subsample, bias_free=bias_free, inter_channels=3)
    x = uniform((2, *size, 4), seed=2)
    block(x)
    randomize(block, seed=3)
    np.testing.assert_allclose(np.asarray(block(x, training=False)), reference(block, x), rtol=1e-4, atol=1e-4)


def test_return_attention():
    block = NonLocalBlock(return_attention=True)
    x = uniform((2, 9, 8, 4), seed=4)
    z, attention = block(x)
    assert z.shape == x.shape and attention.shape == (2, 72, 20)
    np.testing.assert_allclose(np.asarray(attention).sum(-1), 1.0, atol=1e-5)
    z, attention = NonLocalBlock(mode="dot_product", subsample=False, return_attention=True)(x)
    assert attention.shape == (2, 72, 72)



@pytest.mark.parametrize("subsample", [True, False])
def test_spatial_attention_in_a_graph_with_unknown_sizes(subsample):
    """`attention(spatial=True)` read H and W as Python ints, which a tf.function with None sizes lacks."""
    block = NonLocalBlock(subsample=subsample)
    x = uniform((1, 5, 7, 3), seed=14)
    eager = np.asarray(block.attention(x, spatial=True))
    assert eager.shape == (1, 5, 7, *block.key_grid_shape(5, 7))
    graph = tf.function(lambda t: block.attention(t, spatial=True),
                        input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    np.testing.assert_allclose(graph(x).numpy(), eager, atol=1e-6)


def test_dot_product_branch_is_homogeneous_of_degree_three():
    block = NonLocalBlock(mode="dot_product")
    x = uniform((1, 10, 9, 4), seed=5)
    block(x)
    randomize(block, seed=6)
    branch = np.asarray(block(x, training=False)) - x
    for a in (0.5, 2.0, 7.0):
        scaled = np.asarray(block(a * x, training=False)) - a * x
        assert relative_error(scaled, a**3 * branch) < 1e-5, a
    assert not block.homogeneous  # x + a^3 W y: the block as a whole is not degree 1


def test_default_inter_channels_is_half():
    block = NonLocalBlock()
    block(uniform((1, 4, 4, 6)))
    assert block.theta.filters == 3 and block.w.filters == 6
    names = [w.path.split("/")[-1] for w in block.weights]
    assert "bias" not in names and "beta" not in names


def _model(mode, bias_free=True):
    inputs = keras.Input((None, None, 4))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs)
    x = NonLocalBlock(mode=mode, bias_free=bias_free, name="non_local")(x)
    outputs = keras.layers.Conv2D(2, 3, padding="same", use_bias=False)(x)
    model = keras.Model(inputs, outputs)
    randomize(model.get_layer("non_local"), seed=7)
    return model


@pytest.mark.parametrize("mode", MODES)
def test_config_round_trip_and_saving(mode, tmp_path):
    assert_config_round_trip(NonLocalBlock(mode=mode, inter_channels=5, subsample=False, bias_free=False,
                                           return_attention=True))
    assert_saving_round_trip(_model(mode, bias_free=mode == "dot_product"), uniform((1, 7, 9, 4), seed=8), tmp_path)


@pytest.mark.parametrize("mode", MODES)
def test_tflite_builtin_ops_only_matches_keras(mode):
    from ai_edge_litert.interpreter import Interpreter

    model = _model(mode)
    x = uniform((1, 9, 11, 4), seed=9)
    fn = tf.function(lambda images: model(images, training=False))
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [fn.get_concrete_function(tf.TensorSpec(x.shape, tf.float32))])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    interpreter = Interpreter(model_content=converter.convert())
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(out, np.asarray(model(x, training=False)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs,match",
    [(dict(mode="gaussian"), "mode='gaussian' is not supported"),
     (dict(inter_channels=0), "inter_channels must be"),
     (dict(inter_channels=2.5), "inter_channels must be")],
)
def test_bad_arguments_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NonLocalBlock(**kwargs)


def test_embedded_gaussian_is_homogeneous_of_no_degree():
    """The softmax sees logits scaled by a^2, so the branch is neither of degree 1 nor of degree 3."""
    block = NonLocalBlock(mode="embedded_gaussian")
    x = uniform((1, 10, 9, 4), seed=10)
    block(x)
    randomize(block, seed=11)
    branch = np.asarray(block(x, training=False)) - x
    scaled = np.asarray(block(3.0 * x, training=False)) - 3.0 * x
    assert relative_error(scaled, 3.0 * branch) > 1e-2 and relative_error(scaled, 27.0 * branch) > 1e-2


@pytest.mark.parametrize("config,where", [
    ({"type": "resnet", "blocks": 3, "non_local_after": [1], "non_local_mode": "embedded_gaussian"},
     ("block1", "non_local1", "block2")),
    ({"type": "multiscale", "levels": 2, "blocks": 2, "non_local_levels": [1]},
     ("level1_block0", "level1_non_local", "level1_block1")),
])
def test_backbones_take_non_local_blocks_from_the_config(config, where, tmp_path):
    import bfcnn
    from bfcnn.models.cost import is_bias_free
    from conftest import random_images

    model = bfcnn.build_model({**config, "channels": 1, "filters": 8})
    names = [layer.name for layer in model.layers]
    assert [type(layer).__name__ for layer in model.layers].count("NonLocalBlock") == 1
    assert names.index(where[0]) < names.index(where[1]) < names.index(where[2])
    block = model.get_layer(where[1])
    assert block.mode == config.get("non_local_mode", "dot_product") and block.bias_free
    assert not is_bias_free(model)  # a non-local block breaks degree-1 homogeneity
    x = random_images((1, 17, 12, 1))
    plain = np.asarray(model(x, training=False))
    block.norm.gamma.assign(np.full(block.norm.gamma.shape, 0.5, "float32"))
    assert np.max(np.abs(np.asarray(model(x, training=False)) - plain)) > 1e-3  # the block is on the path
    for size in [(1, 1), (2, 9), (16, 16)]:
        assert model(random_images((1, *size, 1))).shape == (1, *size, 1)
    assert_saving_round_trip(model, x, tmp_path)


def test_backbones_reject_a_bad_non_local_mode():
    import bfcnn
    from bfcnn.errors import ConfigError

    for config in ({"type": "resnet", "non_local_after": [0]}, {"type": "multiscale", "non_local_levels": [0]}):
        with pytest.raises(ConfigError, match="mode='softmax' is not supported; allowed"):
            bfcnn.build_model({**config, "non_local_mode": "softmax"})


@pytest.mark.parametrize("config, message", [
    ({"type": "resnet", "blocks": 3, "non_local_after": [3]}, r"non_local_after .*0\.\.2, got \[3\]"),
    ({"type": "multiscale", "levels": 2, "non_local_levels": [2]}, r"non_local_levels .*0\.\.1, got \[2\]"),
])
def test_backbones_reject_a_non_local_position_outside_the_model(config, message):
    import bfcnn

    with pytest.raises(ValueError, match=message):
        bfcnn.build_model(config)


def test_one_non_local_position_may_be_given_alone_and_a_wrong_type_is_named():
    import bfcnn
    from bfcnn.errors import ConfigError
    from bfcnn.models.builder import resolve_model_config

    assert resolve_model_config({"type": "resnet", "non_local_after": 1})["non_local_after"] == [1]
    assert resolve_model_config({"type": "multiscale", "n3_levels": 0})["n3_levels"] == [0]
    with pytest.raises(ConfigError, match=r"model.non_local_after must be a list of integers .*got 'x'"):
        bfcnn.build_model({"type": "resnet", "non_local_after": "x"})
    with pytest.raises(ConfigError, match=r"must be a list of integers .*got \[1.5\]"):
        bfcnn.build_model({"type": "resnet", "non_local_after": [1.5]})
