"""bfcnn.explain: f(y) = A(y) y for bias-free models (Mohan et al., ICLR 2020), shapes, errors, CLI,
and the non-local block's attention map."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import bfcnn
from bfcnn import explain
from bfcnn.errors import BfcnnError
from bfcnn.layers.non_local import NonLocalBlock


def camera_crop(size=32, top=180, left=220):
    """A real photograph (scikit-image's camera man), cropped small, uint8."""
    from skimage import data

    return data.camera()[top : top + size, left : left + size]


def noisy_crop(size=32, sigma=25.0, seed=0):
    clean = camera_crop(size).astype(np.float32)
    return clean + sigma * np.random.default_rng(seed).standard_normal(clean.shape).astype(np.float32)


def randomize_normalization(model, seed=0):
    """Moving statistics away from 1 / 0, so inference-mode batch norm is not the identity."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        leaf = w.path.split("/")[-1]
        if leaf in ("moving_std", "moving_variance", "gamma"):
            w.assign(rng.uniform(0.5, 2.0, size=w.shape).astype("float32"))
    return model


def tiny(use_bias=False, batch_norm=True, channels=1, seed=0):
    keras.utils.set_random_seed(seed)
    model = bfcnn.build_model({"type": "resnet", "channels": channels, "filters": 8, "blocks": 2,
                               "batch_norm": batch_norm, "use_bias": use_bias})
    randomize_normalization(model, seed)
    if use_bias:
        rng = np.random.default_rng(seed + 1)
        for w in model.weights:
            if w.path.split("/")[-1] in ("bias", "beta"):
                w.assign(rng.normal(0.0, 0.5, size=w.shape).astype("float32"))
    return model


@pytest.mark.parametrize("model_type", ["resnet", "multiscale"])
def test_bias_free_model_is_its_jacobian_times_the_input(model_type):
    if model_type == "resnet":
        model = tiny()
    else:
        keras.utils.set_random_seed(0)
        model = randomize_normalization(bfcnn.build_model(
            {"type": "multiscale", "channels": 1, "levels": 2, "filters": [8, 8], "blocks": 1}))
    assert bfcnn.models.is_bias_free(model)
    result = explain.reconstruction(model, noisy_crop(), num_pixels=24)
    assert result.relative_error < 1e-4
    assert result.pixels.shape == (24, 2) and len({tuple(p) for p in result.pixels}) == 24
    assert np.max(np.abs(result.output)) > 1.0  # not a trivially zero output


def test_with_bias_twin_is_not_its_jacobian_times_the_input():
    model = tiny(use_bias=True)
    assert not bfcnn.models.is_bias_free(model)
    assert explain.reconstruction_error(model, noisy_crop(), num_pixels=24, allow_bias=True) > 1e-2


def test_zoo_model_on_a_real_image():
    model = bfcnn.load_model("pyramid_gray_m")
    error = explain.reconstruction_error(model, noisy_crop(48, sigma=30.0), num_pixels=8, seed=3)
    assert error < 1e-4


def test_model_that_is_not_bias_free_is_refused_with_a_clear_error():
    model = tiny(use_bias=True)
    for call in (lambda: explain.adaptive_filter(model, noisy_crop(16), (3, 4)),
                 lambda: explain.reconstruction_error(model, noisy_crop(16)),
                 lambda: explain.effective_dimensionality(model, noisy_crop(8))):
        with pytest.raises(explain.NotBiasFreeError, match="not bias-free.*bias.*allow_bias=True"):
            call()
    assert issubclass(explain.NotBiasFreeError, BfcnnError)
    assert explain.adaptive_filter(model, noisy_crop(16), (3, 4), allow_bias=True).shape == (16, 16, 1)


def test_non_homogeneous_layer_is_named():
    keras.utils.set_random_seed(0)
    model = bfcnn.build_model({"type": "resnet", "channels": 1, "filters": 8, "blocks": 1,
                               "non_local_after": [0], "non_local_mode": "embedded_gaussian"})
    with pytest.raises(explain.NotBiasFreeError, match="NonLocalBlock"):
        explain.adaptive_filter(model, noisy_crop(8), (1, 1))


def test_rows_agree_with_tensorflow_jacobian():
    model = tiny()
    y = noisy_crop(6)
    x = tf.constant(y[None, ..., None])
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = model(x, training=False)
    expected = tape.jacobian(out, x).numpy().reshape(36, 36)
    np.testing.assert_allclose(explain.jacobian(model, y, batch_size=5), expected, atol=1e-5, rtol=1e-4)
    row = explain.adaptive_filter(model, y, (2, 5))
    np.testing.assert_allclose(row.reshape(-1), expected[2 * 6 + 5], atol=1e-5, rtol=1e-4)


def test_output_shapes():
    gray = tiny()
    y = noisy_crop(20)
    assert explain.adaptive_filter(gray, y, (0, 19)).shape == (20, 20, 1)
    assert explain.adaptive_filter(gray, y[..., None].astype(np.uint8), (0, 0)).dtype == np.float32
    assert explain.adaptive_filters(gray, y, [(0, 0), (5, 6), (19, 19)], batch_size=2).shape == (3, 20, 20, 1)
    assert explain.jacobian(gray, y[:5, :7]).shape == (35, 35)
    color = tiny(channels=3)
    rgb = np.stack([y, y[::-1], y[:, ::-1]], axis=-1)
    assert explain.adaptive_filter(color, rgb, (4, 4), channel=2).shape == (20, 20, 3)
    assert explain.adaptive_filter(color, Image.fromarray(camera_crop(12)), (4, 4)).shape == (12, 12, 3)
    result = explain.effective_dimensionality(gray, y[:6, :5])
    assert result.singular_values.shape == (30,) and result.size == 30
    assert np.all(np.diff(result.singular_values) <= 1e-9)
    assert result.dimension == pytest.approx(float(np.sum(result.singular_values**2)))


def test_effective_dimension_of_a_known_linear_map():
    inputs = keras.Input((None, None, 1))
    model = keras.Model(inputs, keras.layers.Rescaling(0.5)(inputs))
    result = explain.effective_dimensionality(model, noisy_crop(5))
    np.testing.assert_allclose(result.singular_values, 0.5, atol=1e-6)
    assert result.dimension == pytest.approx(0.25 * 25, rel=1e-5)
    assert result.trace == pytest.approx(0.5 * 25, rel=1e-5)


@pytest.mark.parametrize("pixel, match", [
    ((20, 3), r"outside the 20x20 image; allowed: rows 0\.\.19, columns 0\.\.19"),
    ((-1, 3), "outside"),
    ((1.5, 3), "pair of integers"),
    ((1, 2, 3), "pair of integers"),
    ("a", "pair of integers"),
])
def test_bad_pixels_are_rejected(pixel, match):
    with pytest.raises(BfcnnError, match=match):
        explain.adaptive_filter(tiny(), noisy_crop(20), pixel)


def test_bad_images_and_arguments_are_rejected():
    model = tiny()
    with pytest.raises(BfcnnError, match="HxW, HxWx1 or HxWx3"):
        explain.adaptive_filter(model, np.zeros((8, 8, 2)), (0, 0))
    with pytest.raises(BfcnnError, match="model takes 1 channel.*has 3"):
        explain.adaptive_filter(model, np.zeros((8, 8, 3)), (0, 0))
    with pytest.raises(BfcnnError, match="NaN"):
        explain.adaptive_filter(model, np.full((8, 8), np.nan), (0, 0))
    with pytest.raises(BfcnnError, match="dtype"):
        explain.adaptive_filter(model, np.zeros((8, 8), bool), (0, 0))
    with pytest.raises(BfcnnError, match="channel must be an integer in 0..0"):
        explain.adaptive_filter(model, np.zeros((8, 8)), (0, 0), channel=1)
    with pytest.raises(BfcnnError, match="max_inputs=4096"):
        explain.jacobian(model, np.zeros((65, 64)))


def test_filter_spread():
    delta = np.zeros((9, 9))
    delta[4, 4] = 1.0
    assert explain.filter_spread(delta, (4, 4)) == 0.0
    ring = np.zeros((9, 9))
    ring[4, 7] = ring[1, 4] = -2.0
    assert explain.filter_spread(ring, (4, 4)) == pytest.approx(3.0)
    assert explain.effective_support(delta) == pytest.approx(1.0)
    assert explain.effective_support(ring) == pytest.approx(2.0)
    assert explain.effective_support(np.full((3, 4), 0.1)) == pytest.approx(12.0)
    centre = ring.copy()
    centre[4, 4] = 5.0
    assert explain.off_centre_limit(centre, (4, 4)) == pytest.approx(2.0)


@pytest.mark.parametrize("mode", ["embedded_gaussian", "dot_product"])
def test_attention_map_shape_and_rows(mode):
    keras.utils.set_random_seed(0)
    block = NonLocalBlock(mode=mode, return_attention=True)
    x = np.random.default_rng(0).normal(size=(2, 7, 10, 8)).astype("float32")
    z, from_call = block(x)
    attention = np.asarray(block.attention(x))
    assert attention.shape == (2, 70, 4 * 5)
    np.testing.assert_allclose(attention, np.asarray(from_call), atol=1e-6)
    spatial = np.asarray(block.attention(x, spatial=True))
    assert spatial.shape == (2, 7, 10, 4, 5)
    np.testing.assert_array_equal(spatial.reshape(2, 70, 20), attention)
    if mode == "embedded_gaussian":
        assert np.all(attention >= 0)
        np.testing.assert_allclose(attention.sum(axis=-1), 1.0, atol=1e-5)
    full = NonLocalBlock(mode=mode, subsample=False)
    assert np.asarray(full.attention(x)).shape == (2, 70, 70)


def write_inputs(tmp_path, use_bias=False):
    model_path = tmp_path / "tiny.keras"
    tiny(use_bias=use_bias).save(model_path)
    image_path = tmp_path / "camera.png"
    Image.fromarray(camera_crop(24)).save(image_path)
    return model_path, image_path


@pytest.mark.parametrize("backend", ["auto", "pillow"])
def test_cli_writes_the_figures(tmp_path, backend, capsys):
    from bfcnn.explain.__main__ import main

    model_path, image_path = write_inputs(tmp_path)
    out = tmp_path / "out"
    code = main(["--model", str(model_path), str(image_path), "--sigma", "25", "--pixels", "3,4", "20,10",
                 "--sigmas", "10", "50", "--window", "9", "--svd-crop", "6", "-o", str(out), "--backend", backend])
    assert code == 0
    names = ["noisy.png", "filter_1_r3_c4.png", "filter_2_r20_c10.png", "singular_values.png"]
    for name in names:
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width > 50 and image.height > 50
    summary = json.loads((out / "summary.json").read_text())
    assert summary["files"] == names
    assert set(summary["sigmas"]) == {"10", "50"}
    for entry in summary["sigmas"].values():
        assert entry["spectrum"]["size"] == 36
        for f in entry["filters"]:
            assert abs(f["output"] - f["filter_times_input"]) <= 1e-4 * max(abs(f["output"]), 1.0)
    assert "spread px" in capsys.readouterr().out


def test_cli_errors(tmp_path, capsys):
    from bfcnn.explain.__main__ import main

    model_path, image_path = write_inputs(tmp_path, use_bias=True)
    args = ["--model", str(model_path), str(image_path), "--sigmas", "10", "--svd-crop", "0"]
    assert main(args + ["-o", str(tmp_path / "a")]) == 2
    assert "not bias-free" in capsys.readouterr().err
    assert main(args + ["--allow-bias", "-o", str(tmp_path / "b")]) == 0
    assert main(args + ["--allow-bias", "--pixels", "30,1", "-o", str(tmp_path / "c")]) == 2
    assert "outside the 24x24 image" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(args + ["--pixels", "3x4", "-o", str(tmp_path / "d")])
    # a negative pixel is named as one (argparse read "-1,5" as an option)
    assert main(args + ["--allow-bias", "--pixels", "2,2", "-1,5", "-o", str(tmp_path / "e")]) == 2
    assert "pixel (row=-1, column=5) is outside the 24x24 image" in capsys.readouterr().err


@pytest.mark.parametrize("window", [4, 40, 2, 1])
def test_the_window_must_be_odd(tmp_path, capsys, window):
    """The crop is centred on the pixel: an even one (accepted before) has one pixel more on one side."""
    from bfcnn.explain.__main__ import parse_args

    with pytest.raises(SystemExit) as stop:
        parse_args(["photo.png", "-o", str(tmp_path / "o"), "--window", str(window)])
    assert stop.value.code == 2
    assert (f"--window must be an odd number >= 3 (the crop is centred on the pixel, with as many pixels on each "
            f"side), got {window}") in capsys.readouterr().err
    assert parse_args(["photo.png", "-o", str(tmp_path / "o"), "--window", "3"]).window == 3


def test_a_second_panel_may_set_its_own_log_axes(tmp_path):
    from bfcnn.explain import plots

    curves = [{"x": [1, 2, 3], "y": [1, 4, 9], "label": "a"}]
    plots.line_figure(tmp_path / "two.png", curves, "x", "y", backend="pillow",
                      second={"curves": curves, "xlabel": "s", "ylabel": "d", "log_x": True, "log_y": False})
    assert (tmp_path / "two.png").stat().st_size > 0


@pytest.mark.parametrize("hidden", [
    keras.layers.Lambda(lambda t: 2.0 * t + 0.5),  # (a Rescaling with an offset: the layer check sees it)
    keras.layers.Lambda(lambda t: t + 1.0),
])
def test_a_constant_the_layer_check_cannot_see_is_caught_by_f_equals_a_y(hidden):
    """why_not_bias_free reads weight names and layer types; the numbers catch the rest."""
    inputs = keras.Input((None, None, 1))
    model = keras.Model(inputs, hidden(tiny()(inputs)))
    assert explain.why_not_bias_free(model) is None  # the layer check alone lets it through
    y = noisy_crop(16)
    with pytest.raises(explain.NotBiasFreeError, match=r"A\(y\) y is .* adds a constant"):
        explain.adaptive_filter(model, y, (5, 5))
    with pytest.raises(explain.NotBiasFreeError):
        explain.jacobian(model, y[:6, :6])
    explain.adaptive_filter(model, y, (5, 5), allow_bias=True)  # told to, it explains it anyway


def test_cli_checks_everything_before_writing_and_never_replaces_its_input(tmp_path, capsys):
    from bfcnn.explain.__main__ import main

    model_path, image_path = write_inputs(tmp_path)
    args = ["--model", str(model_path), "--sigmas", "10", "--svd-crop", "0"]
    inside = tmp_path / "noisy.png"  # an input named like an output, in the output folder
    inside.write_bytes(image_path.read_bytes())
    before = inside.read_bytes()
    assert main(args + [str(inside), "-o", str(tmp_path)]) == 2
    assert "would replace the input image" in capsys.readouterr().err and inside.read_bytes() == before

    assert main(args + [str(image_path), "--channel", "1", "-o", str(tmp_path / "out")]) == 2
    assert "channel must be an integer in 0..0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # the image with the pixels marked is not written first
    assert main(args + [str(image_path), "--svd-crop", "65", "-o", str(tmp_path / "out")]) == 2
    assert "more than 4096" in capsys.readouterr().err and not (tmp_path / "out").exists()
    (tmp_path / "afile").write_text("x")
    assert main(args + [str(image_path), "-o", str(tmp_path / "afile")]) == 2
    assert "is a file" in capsys.readouterr().err
    for bad in (["--seed", "-1"], ["--sigmas", "10", "10"]):
        with pytest.raises(SystemExit):
            main(args + [str(image_path), "-o", str(tmp_path / "out"), *bad])
    assert main(args + [str(image_path), "-o", str(tmp_path / "out")]) == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".explain-")]  # the work folder is gone


def test_crop_and_colour_range_helpers_check_their_arguments():
    image = np.arange(36.0).reshape(6, 6)
    with pytest.raises(BfcnnError, match="size must be an integer >= 1, got -3"):
        explain.crop_around(image, (2, 2), -3)
    with pytest.raises(BfcnnError, match=r"pixel \(row=5, column=1\) is outside the 3x3 image"):
        explain.off_centre_limit(np.zeros((3, 3)), (5, 1))
    with pytest.raises(BfcnnError, match=r"pixel \(row=-1"):
        explain.off_centre_limit(np.ones((3, 3)), (-1, 0))  # numpy would wrap it to the last row
    assert explain.off_centre_limit(np.diag([9.0, 2.0, 1.0]), (0, 0)) == 2.0


def test_the_default_batch_shrinks_with_the_image():
    """32 copies of a 512 x 512 image per backward pass needed about 38 GB for the flagships."""
    from bfcnn.explain.filters import BATCH_PIXELS, DEFAULT_BATCH_SIZE, check_batch_size

    assert check_batch_size(None, np.zeros((64, 64, 1))) == DEFAULT_BATCH_SIZE
    assert check_batch_size(None, np.zeros((512, 512, 3))) == BATCH_PIXELS // (512 * 512) == 2
    assert check_batch_size(None, np.zeros((4000, 3000, 1))) == 1
    assert check_batch_size(5, np.zeros((4000, 3000, 1))) == 5  # given, it is kept
    with pytest.raises(BfcnnError, match="batch_size must be an integer >= 1 or None, got 0"):
        check_batch_size(0, np.zeros((8, 8, 1)))
