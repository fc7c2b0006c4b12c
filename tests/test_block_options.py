"""Residual-block options (gates, sparsity, stochastic depth, PReLU, regularizers) keep models bias-free.

Each option is checked on a small built model with non-trivial random weights: f(a*x) = a*f(x)
in inference, bias-freeness, and a .keras round trip. The plain sigmoid gates are the
negative control: they must break homogeneity.
"""

import keras
import numpy as np
import pytest

import bfcnn
from bfcnn.errors import ConfigError
from bfcnn.layers import BiasFreeResidualBlock, BlockGate, SoftThreshold, SqueezeExcite, StochasticDepth
from bfcnn.layers.bias_free import BiasFreeBatchNorm, BiasFreeConvBlock, activation_layer
from bfcnn.models.common import denoiser_head
from bfcnn.models.cost import is_bias_free
from conftest import assert_saving_round_trip, random_images, relative_error

SMALL_RESNET = {"type": "resnet", "channels": 1, "filters": 8, "blocks": 2, "batch_norm": True, "predict": "image"}

OPTIONS = {
    "block_gate": {"gate": "block"},
    "squeeze_excite": {"gate": "squeeze_excite"},
    "sparsity": {"sparsity": 0.3},
    "stochastic_depth": {"stochastic_depth": 0.5},
    "prelu": {"activation": "prelu"},
    "regularizer": {"kernel_regularizer": [{"type": "soft_orthonormal", "weight": 1e-4},
                                           {"type": "center_away", "l2": 1e-4}]},
}


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)  # initial weights independent of the test order


def randomize(model, seed=0):
    """Moves every weight away from its initial value.

    The gates' first layers get positive kernels (their ReLU units stay alive on the
    non-negative stem features) and their second layers kernels of a size that keeps the
    sigmoid away from saturation, so a gate really depends on its input.
    """
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        leaf = weight.path.split("/")[-1]
        shape = tuple(weight.shape)
        layer = weight.path.split("/")[-2] if "/" in weight.path else ""
        if leaf in ("moving_std", "gamma"):
            value = rng.uniform(0.5, 2.0, shape)
        elif leaf == "threshold":
            value = rng.uniform(0.1, 0.6, shape)
        elif leaf == "alpha":
            value = rng.uniform(-0.3, 0.5, shape)
        elif layer in ("hidden", "squeeze"):
            value = rng.uniform(0.2, 1.0, shape)
        elif layer in ("logit", "excite"):
            value = rng.normal(0.0, 1.0, shape)
        else:
            value = np.asarray(weight.numpy()) * rng.uniform(0.8, 1.2, shape)
        weight.assign(value.astype("float32"))
    return model


def homogeneity_errors(model, x):
    y = np.asarray(model(x, training=False))
    return [relative_error(model(a * x, training=False), a * y) for a in (0.1, 7.0)]


# The layer each option must add to every residual block (the regularizer adds losses instead).
OPTION_LAYERS = {"block_gate": BlockGate, "squeeze_excite": SqueezeExcite, "sparsity": SoftThreshold,
                 "stochastic_depth": StochasticDepth, "prelu": keras.layers.PReLU}


def sublayers(layer):
    """Every layer nested in `layer`, depth first."""
    for inner in getattr(layer, "_layers", None) or []:
        yield inner
        yield from sublayers(inner)


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_option_reaches_every_block(option):
    """Homogeneity and saving hold without the option too: this is the check that it was built."""
    model = bfcnn.build_model({**SMALL_RESNET, **OPTIONS[option]})
    blocks = [layer for layer in model.layers if isinstance(layer, BiasFreeResidualBlock)]
    assert len(blocks) == SMALL_RESNET["blocks"]
    if option == "regularizer":
        model(random_images((1, 8, 8, 1), seed=0))
        assert len(model.losses) >= 2 * len(blocks)  # both convolutions of every block
        assert bfcnn.build_model(SMALL_RESNET).losses == []
        return
    for block in blocks:
        assert any(isinstance(inner, OPTION_LAYERS[option]) for inner in sublayers(block)), (option, block.name)
    plain = bfcnn.build_model(SMALL_RESNET)
    assert not any(isinstance(inner, OPTION_LAYERS[option]) for layer in plain.layers for inner in sublayers(layer))


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_option_keeps_the_model_homogeneous_and_saves(option, tmp_path):
    model = randomize(bfcnn.build_model({**SMALL_RESNET, **OPTIONS[option]}))
    x = random_images((2, 20, 20, 1), seed=1)
    errors = homogeneity_errors(model, x)
    assert max(errors) < 1e-5, errors
    assert is_bias_free(model)
    assert_saving_round_trip(model, x, tmp_path)


@pytest.mark.parametrize("gate", ["block", "squeeze_excite"])
def test_plain_sigmoid_gates_break_homogeneity(gate):
    model = randomize(bfcnn.build_model({**SMALL_RESNET, "gate": gate, "scale_invariant_gates": False}))
    errors = homogeneity_errors(model, random_images((2, 20, 20, 1), seed=1))
    assert min(errors) > 1e-3, errors
    assert not is_bias_free(model)


def test_every_option_at_once_in_multiscale(tmp_path):
    config = {"type": "multiscale", "channels": 1, "levels": 2, "filters": 8, "blocks": 1, "encoder_blocks": 1,
              "batch_norm": True, "activation": "prelu", "gate": "squeeze_excite", "sparsity": 0.2,
              "stochastic_depth": 0.3, "kernel_regularizer": "soft_orthogonal"}
    model = randomize(bfcnn.build_model(config))
    x = random_images((2, 20, 20, 1), seed=2)
    assert max(homogeneity_errors(model, x)) < 1e-5
    assert is_bias_free(model)
    assert len(model.losses) > 0
    assert_saving_round_trip(model, x, tmp_path)
    assert model.get_layer("encoder0_block0").stochastic_depth == pytest.approx(0.3)


def test_block_gate_option_in_multiscale_breaks_without_scale_invariance():
    config = {"type": "multiscale", "channels": 1, "levels": 2, "filters": 8, "blocks": 1, "gate": "block",
              "scale_invariant_gates": False, "predict": "image"}
    model = randomize(bfcnn.build_model(config))
    assert min(homogeneity_errors(model, random_images((2, 20, 20, 1), seed=2))) > 1e-3


def test_gates_are_scale_invariant():
    x = keras.ops.convert_to_tensor(random_images((3, 10, 10, 8), seed=3) - 100.0)
    for layer in (SqueezeExcite(reduction=2), BlockGate(reduction=2)):
        gate = (lambda v: layer.gate(v)) if isinstance(layer, SqueezeExcite) else layer
        layer.build(x.shape)
        for w in layer.weights:
            w.assign(np.random.default_rng(0).normal(0, 3, w.shape).astype("float32"))
        g = np.asarray(gate(x))
        assert g.shape == ((3, 1, 1, 8) if isinstance(layer, SqueezeExcite) else (3, 1, 1, 1))
        assert np.all((g > 0) & (g < 1)) and np.std(g) > 1e-3  # gates in (0, 1) that differ
        np.testing.assert_allclose(np.asarray(gate(0.01 * x)), g, atol=1e-6)
        np.testing.assert_allclose(np.asarray(gate(50.0 * x)), g, atol=1e-6)
        assert not np.any(np.isnan(np.asarray(gate(0.0 * x))))


def test_soft_threshold_matches_its_formula():
    x = random_images((2, 6, 6, 3), seed=4) - 128.0
    layer = SoftThreshold(0.5)
    y = np.asarray(layer(x))
    scale = np.sqrt(np.mean(x.astype(np.float64) ** 2, axis=(1, 2), keepdims=True))
    expected = np.sign(x) * np.maximum(np.abs(x) - 0.5 * scale, 0.0)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-4)
    assert 0.2 < np.mean(y == 0) < 0.8  # the threshold sparsifies, but not everything
    np.testing.assert_allclose(np.asarray(SoftThreshold(0.0)(x)), x, rtol=1e-6)



def test_soft_threshold_takes_each_channels_rms_over_the_spatial_axes_of_any_rank():
    """[B, N, C] used to be averaged over N and C, so a loud channel wiped a quiet one out."""
    x = np.stack([np.linspace(-1, 1, 10), 100 * np.linspace(-1, 1, 10)], axis=-1)[None].astype(np.float32)
    y = np.asarray(SoftThreshold(0.5)(x))
    scale = np.sqrt(np.mean(x.astype(np.float64) ** 2, axis=1, keepdims=True))
    np.testing.assert_allclose(y, np.sign(x) * np.maximum(np.abs(x) - 0.5 * scale, 0.0), rtol=1e-5, atol=1e-6)
    assert np.all(np.any(y != 0, axis=1))  # both channels keep their large values
    with pytest.raises(ValueError, match=r"SoftThreshold needs input \[B, \.\.\., C\] with spatial axes.*\(2, 5\)"):
        SoftThreshold(0.5)(np.ones((2, 5), np.float32))


def test_stochastic_depth_drops_whole_branches_per_sample_in_training():
    block = BiasFreeResidualBlock(8, stochastic_depth=0.5)
    x = random_images((32, 6, 6, 8), seed=5) / 255.0
    inference = np.asarray(block(x, training=False))
    np.testing.assert_array_equal(np.asarray(block(x, training=False)), inference)  # deterministic
    branch = inference - x
    assert np.abs(branch).max() > 1e-2
    trained = np.asarray(block(x, training=True))
    dropped = [np.allclose(trained[i], x[i], atol=1e-6) for i in range(32)]
    kept = [np.allclose(trained[i], x[i] + 2.0 * branch[i], atol=1e-5) for i in range(32)]
    assert all(d != k for d, k in zip(dropped, kept))  # each sample: dropped, or kept and scaled by 1/(1-p)
    assert 4 <= sum(dropped) <= 28


def test_stochastic_depth_rates_grow_linearly_with_depth():
    model = bfcnn.build_model({"type": "resnet", "channels": 1, "filters": 8, "blocks": 4, "stochastic_depth": 0.2})
    rates = [model.get_layer(f"block{i}").stochastic_depth for i in range(4)]
    np.testing.assert_allclose(rates, [0.05, 0.1, 0.15, 0.2])
    x = random_images((8, 12, 12, 1), seed=6)
    np.testing.assert_array_equal(np.asarray(model(x, training=False)), np.asarray(model(x, training=False)))
    np.testing.assert_array_equal(np.asarray(StochasticDepth(0.3)(x, training=False)), x)


def test_prelu_is_homogeneous_with_a_learned_slope_per_channel():
    layer = activation_layer("prelu")
    layer.build((None, None, None, 4))
    assert tuple(layer.alpha.shape) == (1, 1, 4)
    layer.alpha.assign(np.array([[[0.3, -0.2, 0.0, 1.5]]], "float32"))
    x = random_images((2, 5, 5, 4), seed=7) - 128.0
    y = np.asarray(layer(x))
    assert relative_error(layer(7.0 * x), 7.0 * y) < 1e-6
    assert relative_error(layer(-1.0 * x), -1.0 * y) > 0.1  # positively homogeneous only, as it should be


def test_regularizer_adds_losses_only_when_configured():
    assert bfcnn.build_model(SMALL_RESNET).losses == []
    model = bfcnn.build_model({**SMALL_RESNET, **OPTIONS["regularizer"]})
    assert len(model.losses) == 1 + 2 * 2  # the stem and two convolutions per block; not the head
    assert all(float(loss) > 0 for loss in model.losses)


def test_defaults_keep_the_weights_and_names_of_older_models():
    model = bfcnn.build_model(SMALL_RESNET)
    names = [w.path for w in model.weights]
    assert all("gate" not in n and "threshold" not in n and "alpha" not in n for n in names)
    config = model.get_layer("block0").get_config()
    for key in ("gate", "scale_invariant_gates", "sparsity", "stochastic_depth", "gate_reduction"):
        config.pop(key)
    # A block config written before the options existed still loads, with the options off.
    clone = BiasFreeResidualBlock.from_config(config)
    assert clone.gate == "none" and clone.sparsity == 0.0 and clone.stochastic_depth == 0.0


@pytest.mark.parametrize("key, value, words", [
    ("gate", "squeeze_excitation", ["did you mean 'squeeze_excite'", "'block'", "'none'"]),
    ("sparsity", -0.1, ["sparsity must be a number >= 0"]),
    ("stochastic_depth", 1.0, ["stochastic_depth must be a number in [0, 1)"]),
    ("scale_invariant_gates", "yes", ["scale_invariant_gates must be a boolean"]),
    ("activation", "gelu", ["'prelu'", "'relu'"]),
])
@pytest.mark.parametrize("model_type", ["resnet", "multiscale"])
def test_bad_options_are_config_errors(model_type, key, value, words):
    with pytest.raises(ConfigError) as error:
        bfcnn.build_model({"type": model_type, "channels": 1, key: value})
    for word in words:
        assert word in str(error.value)


# ---------------------------------------------------------------- no normalization before the output

NORMALIZATIONS = (keras.layers.BatchNormalization, BiasFreeBatchNorm, keras.layers.LayerNormalization,
                  keras.layers.GroupNormalization)


def normalizations_before_output(model):
    """Normalizations reached from the output through linear steps only (sums, casts, linear convs).

    A walk back from the output stops at a nonlinearity (a conv block with an activation)
    or a residual block (it ends with a sum); it goes on through the head convolutions and
    glue operations. Returns (normalizations found, names of the layers where it stopped).
    """
    found, stops, seen = [], [], set()
    stack = list(model.get_layer("output")._inbound_nodes)
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        for parent in node.parent_nodes:
            op = parent.operation
            if isinstance(op, NORMALIZATIONS):
                found.append(op.name)
            elif isinstance(op, BiasFreeConvBlock) and op.activation == "linear":
                if op.norm is not None:
                    found.append(op.name)
                else:
                    stack.append(parent)
            elif isinstance(op, (BiasFreeConvBlock, BiasFreeResidualBlock)):
                stops.append(op.name)
            else:
                stack.append(parent)
    return found, stops


@pytest.mark.parametrize("config", [
    {"type": "resnet", "channels": 1, "filters": 8, "blocks": 2, "batch_norm": True},
    {"type": "multiscale", "channels": 1, "levels": 2, "filters": 8, "blocks": 1, "encoder_blocks": 1,
     "batch_norm": True},
    {"type": "multiscale", "channels": 1, "levels": 2, "filters": 8, "blocks": 0, "batch_norm": True},
    {"type": "n3net", "channels": 1, "stages": 2, "depth": 3, "filters": 8, "k": 2, "embedding_depth": 2,
     "embedding_filters": 8, "patch_size": 4, "stride": 2, "window": 3, "batch_norm": True},
], ids=["resnet", "multiscale", "multiscale_no_blocks", "n3net"])
def test_no_normalization_right_before_the_output(config):
    found, stops = normalizations_before_output(bfcnn.build_model(config))
    assert found == []
    assert stops  # the walk reached the networks' last nonlinear layers


def test_normalization_check_finds_a_normalization_before_the_output():
    inputs = keras.Input((None, None, 1), name="image")
    h = BiasFreeConvBlock(8, name="hidden")(inputs)
    net = BiasFreeBatchNorm(name="late_norm")(keras.layers.Conv2D(1, 3, padding="same", use_bias=False)(h))
    assert normalizations_before_output(keras.Model(inputs, denoiser_head(inputs, net, "noise")))[0] == ["late_norm"]
    net = BiasFreeConvBlock(1, batch_norm=True, activation="linear", name="last")(h)
    assert normalizations_before_output(keras.Model(inputs, denoiser_head(inputs, net, "noise")))[0] == ["last"]
