"""Every builder variant: the model contract of DESIGN.md, bias-freeness and saving."""

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import bfcnn
from bfcnn.errors import ConfigError
from bfcnn.models import describe, flops_per_pixel, is_bias_free
from conftest import assert_saving_round_trip, random_images, relative_error, seed_everything

TINY = {"filters": 8, "blocks": 1}
VARIANTS = {
    "resnet_bn_noise": {"type": "resnet", "channels": 1, "batch_norm": True, **TINY},
    "resnet_image_color": {"type": "resnet", "channels": 3, "batch_norm": False, "predict": "image", **TINY},
    "resnet_leaky": {"type": "resnet", "channels": 1, "activation": "leaky_relu", **TINY},
    "resnet_unshuffle_color": {"type": "resnet", "channels": 3, "downsample": 2, **TINY},
    "multiscale_laplacian": {"type": "multiscale", "channels": 1, "levels": 3, "filters": [8, 8, 12], "blocks": 1,
                             "batch_norm": True},
    "multiscale_gaussian_shared": {"type": "multiscale", "channels": 3, "pyramid": "gaussian", "shared": True,
                                   "filters": 8, "blocks": 1, "predict": "image"},
    "multiscale_unet": {"type": "multiscale", "channels": 1, "levels": 3, "filters": [8, 8, 12], "blocks": 1,
                        "encoder_blocks": [1, 1, 0]},
    "multiscale_no_features": {"type": "multiscale", "channels": 1, "levels": 2, "filters": 8, "blocks": 1,
                               "pass_features": False},
}


def _trained_like(model, seed=0):
    """Moves batch-norm statistics away from 1 so inference is not trivially the identity."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        if w.path.endswith("moving_std") or w.path.endswith("gamma"):
            w.assign(rng.uniform(0.5, 2.0, size=w.shape).astype("float32"))
    return model


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def built(request):
    seed_everything()  # the weights must not depend on which test built them
    config = VARIANTS[request.param]
    return config, _trained_like(bfcnn.build_model(config))



def _all_layers(layer):
    for inner in getattr(layer, "_layers", None) or []:
        yield inner
        yield from _all_layers(inner)


def test_the_config_reaches_the_built_model(built):
    """Each variant's options are in the graph: homogeneity and saving hold without them too."""
    from bfcnn.layers import BiasFreeBatchNorm, GaussianPyramid, PixelUnshuffle

    import inspect

    from bfcnn.models.multiscale import build_multiscale
    from bfcnn.models.resnet import build_resnet

    config, model = built
    builder = build_resnet if config["type"] == "resnet" else build_multiscale
    settings = {name: p.default for name, p in inspect.signature(builder).parameters.items()}
    settings.update(config)
    layers = list(_all_layers(model))
    kinds = {type(layer) for layer in layers}
    names = [layer.name for layer in layers]
    assert (BiasFreeBatchNorm in kinds) == settings["batch_norm"]
    assert (keras.layers.LeakyReLU in kinds) == (settings["activation"] == "leaky_relu")
    if config["type"] == "resnet":
        assert (PixelUnshuffle in kinds) == (settings["downsample"] > 1)
        assert model.get_layer("output").predict == settings["predict"]
    else:
        assert (GaussianPyramid in kinds) == (settings["pyramid"] == "gaussian")
        assert any(name.endswith("_lift") for name in names) == settings["pass_features"]
        assert any(name.startswith("encoder") for name in names) == any(np.atleast_1d(settings["encoder_blocks"]))
        assert any(name.startswith("shared_") for name in names) == settings["shared"]
        heads = [layer for layer in layers if layer.name.endswith("_head")]
        assert heads and all(h.filters == settings["channels"] for h in heads)


def test_output_shape_equals_input_shape(built):
    config, model = built
    for size in [(1, 1), (17, 9), (30, 33)]:
        x = random_images((2, *size, config["channels"]))
        assert model(x).shape == x.shape
        assert model(x).dtype == tf.float32


def test_homogeneous_in_inference_mode(built):
    config, model = built
    x = random_images((1, 24, 19, config["channels"]), seed=5)
    y = np.asarray(model(x, training=False))
    assert np.max(np.abs(y)) > 1.0
    for a, tol in [(2.0, 1e-6), (0.5, 1e-6), (3.0, 1e-5), (0.3, 1e-5), (10.0, 1e-5)]:
        assert relative_error(model(a * x, training=False), a * y) < tol, a
    zero = np.asarray(model(np.zeros_like(x), training=False))
    assert np.all(zero == 0.0)


def test_has_no_additive_weights(built):
    _, model = built
    names = [w.path.split("/")[-1] for w in model.weights]
    assert "bias" not in names and "beta" not in names and "moving_mean" not in names
    assert is_bias_free(model)


def test_jacobian_times_input_equals_output(built):
    """Euler's theorem for degree-1 homogeneous f: J(x) x = f(x) (forward-mode JVP)."""
    config, model = built
    x = tf.constant(random_images((1, 16, 16, config["channels"]), seed=6))
    with tf.autodiff.ForwardAccumulator(primals=x, tangents=x) as accumulator:
        y = model(x, training=False)
    assert relative_error(accumulator.jvp(y), y) < 1e-4


def test_saving_round_trip(built, tmp_path):
    config, model = built
    assert_saving_round_trip(model, random_images((1, 13, 11, config["channels"])), tmp_path)


def test_wrong_channel_count_is_a_clear_error(built):
    config, model = built
    wrong = 3 if config["channels"] == 1 else 1
    with pytest.raises(ValueError, match="expected"):
        model(random_images((1, 8, 8, wrong)))


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_with_bias_twin_fails_the_homogeneity_check(name):
    """Negative control: the check above bites once biases are non-zero, as after training."""
    config = {**VARIANTS[name], "use_bias": True}
    model = bfcnn.build_model(config)
    rng = np.random.default_rng(0)
    for w in model.weights:
        leaf = w.path.split("/")[-1]
        if leaf in ("bias", "beta", "moving_mean"):
            w.assign(rng.normal(0.0, 0.1, size=w.shape).astype("float32"))
    assert not is_bias_free(model)
    x = random_images((1, 24, 19, config["channels"]), seed=5)
    assert relative_error(model(2.0 * x), 2.0 * np.asarray(model(x))) > 1e-3



@pytest.mark.parametrize("layer, words", [
    (lambda: keras.layers.LayerNormalization(center=False), "LayerNormalization"),
    (lambda: keras.layers.GroupNormalization(groups=2, center=False), "GroupNormalization"),
    (lambda: keras.layers.Rescaling(1.0, offset=0.5), "Rescaling with offset"),
    (lambda: keras.layers.Activation("sigmoid"), "activation 'sigmoid'"),
    (lambda: keras.layers.Conv2D(4, 3, padding="same", use_bias=False, activation="tanh"), "activation 'tanh'"),
    (lambda: keras.layers.ReLU(max_value=6.0), "max_value"),
])
def test_is_bias_free_sees_layers_without_a_bias_weight_that_break_homogeneity(layer, words):
    """Each of these passed the check by weight names alone, and each breaks f(2y) = 2f(y)."""
    from bfcnn.models.cost import why_not_bias_free

    inputs = keras.Input((None, None, 1))
    hidden = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs)
    model = keras.Model(inputs, layer()(hidden))
    x = np.random.default_rng(0).uniform(0.0, 255.0, (1, 6, 6, 1)).astype("float32")
    assert np.abs(np.asarray(model(2 * x)) - 2 * np.asarray(model(x))).max() > 1e-3  # really not homogeneous
    assert not is_bias_free(model)
    assert words in why_not_bias_free(model)
    plain = keras.Model(inputs, keras.layers.LeakyReLU()(keras.layers.ReLU()(hidden)))
    assert is_bias_free(plain)


def test_flops_per_pixel_matches_hand_count():
    model = bfcnn.build_model({"type": "resnet", "channels": 1, "filters": 8, "blocks": 2, "batch_norm": False})
    convs = [9 * 1 * 8] + [9 * 8 * 8] * 4 + [9 * 8 * 1]  # stem, 2 blocks x 2, head
    expected = 2 * sum(convs)
    assert abs(flops_per_pixel(model) - expected) / expected < 0.05


def test_n3_flops_count_the_matching_whatever_the_inference_chunk():
    """The profiler counts nothing inside a tf.while_loop: an N3 model's matching, which runs in
    chunks in inference, must still be counted, and the model's own chunk size kept."""
    from bfcnn.layers.n3 import N3Block

    model = bfcnn.build_model({"type": "n3net", "channels": 1, "stages": 2, "depth": 2, "filters": 8, "k": 2,
                               "embedding_channels": 4, "embedding_depth": 1, "embedding_filters": 8,
                               "patch_size": 6, "stride": 3, "window": 5})
    (block,) = [layer for layer in model._flatten_layers() if isinstance(layer, N3Block)]
    whole = flops_per_pixel(model)
    block.inference_chunk = 16  # many chunks: a while loop in the traced graph
    assert flops_per_pixel(model) == whole and block.inference_chunk == 16
    with pytest.raises(ValueError):  # a failed count puts the chunk size back too
        flops_per_pixel(model, size=-1)
    assert block.inference_chunk == 16


def test_multiscale_is_cheaper_per_pixel_than_a_full_resolution_twin():
    pyramid = bfcnn.build_model({"type": "multiscale", "levels": 3, "filters": 16, "blocks": 2})
    flat = bfcnn.build_model({"type": "resnet", "filters": 16, "blocks": 6})
    assert describe(pyramid)["flops_per_pixel"] < 0.6 * describe(flat)["flops_per_pixel"]


def test_a_default_of_none_given_explicitly_is_the_default():
    """`model_defaults` lists `filters: None` for multiscale; writing it back builds the same model."""
    from bfcnn.models import model_defaults

    assert model_defaults("multiscale")["filters"] is None
    given = bfcnn.build_model({"type": "multiscale", "channels": 1, "levels": 2, "filters": None})
    default = bfcnn.build_model({"type": "multiscale", "channels": 1, "levels": 2})
    assert given.count_params() == default.count_params()


def test_build_model_defaults_work_from_type_and_channels_only():
    for model_type in ("resnet", "multiscale"):
        model = bfcnn.build_model({"type": model_type, "channels": 3})
        assert model.input_shape == (None, None, None, 3)


@pytest.mark.parametrize(
    "config, message",
    [
        ({"type": "resnt"}, r"unknown model type 'resnt', did you mean 'resnet'\?; allowed: .*'multiscale'"),
        ({"type": "resnet", "filter": 8}, r"unknown key 'model.filter'.*did you mean 'filters'"),
        ({"type": "resnet", "blocks": "four"}, r"model.blocks must be an integer"),
        ({"type": "resnet", "channels": 2}, r"channels must be 1 \(gray\) or 3"),
        ({"type": "multiscale", "pyramid": "wavelet"}, r"pyramid='wavelet'.*allowed"),
        ({"channels": 1}, r"needs a 'type'"),
        ({"type": ["resnet"]}, r"model.type must be a string, one of .*'resnet'"),
        ({"type": "resnet", "blocks": -1}, r"blocks must be an integer >= 0, got -1"),
        ({"type": "multiscale", "levels": 3, "encoder_blocks": [0, 0, 2]},
         r"encoder_blocks\[2\] must be 0: the coarsest level has no encoder blocks"),
        ({"type": "multiscale", "levels": 1, "encoder_blocks": 3}, r"encoder_blocks needs levels >= 2"),
        ({"type": "multiscale", "levels": 3, "shared": True, "filters": 8, "non_local_levels": [1]},
         r"non_local_levels needs shared=False"),
        ({"type": "multiscale", "n3": {"channels": 0}}, r"n3\.channels must be an integer >= 1, got 0"),
        ({"type": "opponent", "chroma_offset": -1}, r"chroma_offset must be a number >= 0, got -1"),
        ({"type": "multiscale", "levels": 3, "blocks": [1, 0, 1], "n3_levels": [1]},
         r"name level\(s\) \[1\], which have blocks=0"),
    ],
)
def test_bad_configs_name_the_problem(config, message):
    with pytest.raises(ConfigError, match=message):
        bfcnn.build_model(config)


PIPELINES = sorted((Path(__file__).resolve().parents[1] / "pipelines").glob("*.yaml"))


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.stem)
def test_every_pipeline_model_builds_and_runs(path):
    from bfcnn.config import load_config

    config = load_config(path)
    model = bfcnn.build_model(config.model)
    x = random_images((1, 37, 41, config.model.get("channels", 1)))
    assert model(x).shape == x.shape


@pytest.mark.parametrize("levels, shared", [(1, False), (2, False), (4, False), (2, True)])
def test_multiscale_default_filters_follow_the_number_of_levels(levels, shared):
    model = bfcnn.build_model({"type": "multiscale", "levels": levels, "blocks": 1, "shared": shared})
    stems = sorted(layer.name for layer in model.layers if layer.name.endswith("_stem"))
    widths = [model.get_layer(name).filters for name in stems]
    expected = [32] if shared else [32 * 2**level for level in range(levels)]
    assert widths == expected, (stems, widths)


def test_lift_is_the_transposed_convolution_it_replaced():
    """1x1 convolution + depth-to-space with the converted kernel = the 2x2 stride-2 transposed convolution."""
    import keras

    from bfcnn.models.multiscale import lift_kernel_from_transposed

    x = random_images((2, 5, 7, 6), seed=4)
    transposed = keras.layers.Conv2DTranspose(3, 2, strides=2, use_bias=False)
    expected = np.asarray(transposed(x))
    lift = keras.layers.Conv2D(12, 1, use_bias=False)
    lift.build((None, None, None, 6))
    lift.set_weights([lift_kernel_from_transposed(transposed.get_weights()[0])])
    np.testing.assert_allclose(np.asarray(tf.nn.depth_to_space(lift(x), 2)), expected, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match=r"\[2, 2, F, C\]"):
        lift_kernel_from_transposed(np.zeros((3, 3, 2, 2)))


def test_legacy_multiscale_weights_move_into_todays_graph():
    """A model saved with Conv2DTranspose lifts (tests/data, made by the previous builder) computes the same."""
    import keras

    from bfcnn.models import build_model
    from bfcnn.models.multiscale import copy_legacy_weights

    data = Path(__file__).parent / "data"
    legacy = keras.models.load_model(data / "legacy_multiscale.keras")
    saved = np.load(data / "legacy_multiscale.npz")
    assert any(isinstance(layer, keras.layers.Conv2DTranspose) for layer in legacy.layers)
    config = {"type": "multiscale", "channels": 1, "levels": 3, "filters": [4, 8, 8], "blocks": 1,
              "encoder_blocks": 1}
    np.testing.assert_allclose(np.asarray(legacy(saved["noisy"], training=False)), saved["denoised"],
                               rtol=1e-5, atol=1e-3)  # the file computes what it did
    model = copy_legacy_weights(build_model(config), legacy)
    assert not any(isinstance(layer, keras.layers.Conv2DTranspose) for layer in model.layers)
    # On a size that is a multiple of 4 (today's graph mirrors other sizes up to one first, the
    # saved one did not), the same function:
    noisy = np.random.default_rng(0).uniform(0, 255, (1, 16, 20, 1)).astype("float32")
    np.testing.assert_allclose(np.asarray(model(noisy, training=False)), np.asarray(legacy(noisy, training=False)),
                               rtol=1e-5, atol=1e-3)
    with pytest.raises(ValueError, match="not the same architecture"):
        copy_legacy_weights(build_model({**config, "filters": [4, 8, 16]}), legacy)


@pytest.mark.parametrize("pyramid", ["laplacian", "gaussian"])
def test_a_guided_multiscale_model_reads_its_guide_and_grafts_from_an_unguided_one(pyramid):
    """`guide_channels`: one more input channel, the same output channels; zero guide kernels = the plain model."""
    from bfcnn.models.transfer import graft_weights

    config = {"type": "multiscale", "channels": 1, "pyramid": pyramid, "levels": 3, "filters": [4, 6, 8],
              "blocks": 1, "encoder_blocks": 1}
    plain = _trained_like(bfcnn.build_model(config))
    guided = bfcnn.build_model({**config, "guide_channels": 1})
    assert guided.input_shape[-1] == 2 and guided.output_shape[-1] == 1
    assert graft_weights(guided, plain) == []
    x = random_images((2, 20, 24, 1), seed=1)
    guide = random_images((2, 20, 24, 1), seed=2)
    both = np.concatenate([x, guide], -1)
    assert relative_error(np.asarray(guided(both, training=False)), np.asarray(plain(x, training=False))) < 1e-5
    for w in guided.weights:  # once the guide's kernels are not zero, the guide changes the output
        if "stem" in w.path and w.shape[2] > 1:
            w.assign(np.asarray(w) + 0.1)
    changed = np.concatenate([x, guide[::-1]], -1)
    assert relative_error(np.asarray(guided(changed, training=False)), np.asarray(guided(both, training=False))) > 1e-3
    assert is_bias_free(guided)
    assert relative_error(np.asarray(guided(3 * both, training=False)),
                          3 * np.asarray(guided(both, training=False))) < 1e-5
    with pytest.raises(ValueError, match="do not fit"):
        graft_weights(plain, guided)  # a plain model cannot hold the guide's weights
