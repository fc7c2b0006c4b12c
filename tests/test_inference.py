"""`bfcnn.denoise` on numpy arrays and PIL images, and the `python -m bfcnn.denoise` command."""

import numpy as np
import pytest
from PIL import Image

import bfcnn
from bfcnn.errors import BfcnnError
from conftest import seed_everything


@pytest.fixture(scope="module")
def gray_model():
    seed_everything()  # the weights must not depend on which test built them
    return bfcnn.build_model({"type": "resnet", "channels": 1, "filters": 8, "blocks": 1})


@pytest.fixture(scope="module")
def color_model():
    seed_everything()  # the weights must not depend on which test built them
    return bfcnn.build_model({"type": "resnet", "channels": 3, "filters": 8, "blocks": 1})


def _expected(model, pixels):
    return np.asarray(model(pixels[None].astype("float32")))[0]


@pytest.mark.parametrize("shape", [(20, 17), (20, 17, 1)])
def test_gray_layouts_and_dtypes_are_kept(gray_model, shape):
    image = np.random.default_rng(0).integers(0, 256, size=shape).astype(np.uint8)
    out = bfcnn.denoise(image, model=gray_model)
    assert out.shape == image.shape and out.dtype == np.uint8
    pixels = image.reshape(20, 17, 1)
    expected = np.clip(np.round(_expected(gray_model, pixels)), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(out.reshape(20, 17, 1), expected)


def test_float_input_is_returned_unclipped_as_float(gray_model):
    image = np.random.default_rng(1).normal(100, 80, size=(9, 11)).astype(np.float32)
    out = bfcnn.denoise(image, model=gray_model)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, _expected(gray_model, image[..., None])[..., 0], rtol=1e-5, atol=1e-3)


def test_rgba_keeps_alpha(color_model):
    image = np.random.default_rng(2).integers(0, 256, size=(12, 10, 4)).astype(np.uint8)
    out = bfcnn.denoise(image, model=color_model)
    assert out.shape == image.shape
    np.testing.assert_array_equal(out[..., 3], image[..., 3])


def test_sixteen_bit_round_trip(gray_model):
    image = np.random.default_rng(3).integers(0, 65536, size=(8, 8)).astype(np.uint16)
    out = bfcnn.denoise(image, model=gray_model)
    assert out.dtype == np.uint16 and out.shape == image.shape
    # A model that is not homogeneous shows the scale: it sees 0-255 values (65535 -> 255) and
    # its output is scaled back; a bias-free model would hide a wrong scale.
    clipped = bfcnn.denoise(image, model=lambda x: np.minimum(x, 200.0))
    expected = np.round(np.minimum(image / 257.0, 200.0) * 257.0).astype(np.uint16)
    np.testing.assert_array_equal(clipped, expected)


def test_pil_in_pil_out(color_model):
    image = Image.fromarray(np.random.default_rng(4).integers(0, 256, size=(10, 12, 3)).astype(np.uint8))
    out = bfcnn.denoise(image, model=color_model)
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == image.size


def test_color_image_through_gray_model_goes_channel_by_channel(gray_model):
    image = np.random.default_rng(5).integers(0, 256, size=(8, 9, 3)).astype(np.uint8)
    out = bfcnn.denoise(image, model=gray_model)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], bfcnn.denoise(image[..., c], model=gray_model))


@pytest.mark.parametrize("shape", [(4, 4, 2), (4,), (2, 3, 4, 5)])
def test_bad_shapes_are_named(gray_model, shape):
    with pytest.raises(BfcnnError, match="HxW"):
        bfcnn.denoise(np.zeros(shape, np.uint8), model=gray_model)


def test_bad_dtype_is_named(gray_model):
    with pytest.raises(BfcnnError, match="dtype"):
        bfcnn.denoise(np.zeros((4, 4), np.int64), model=gray_model)


def test_module_import_does_not_hide_the_function(gray_model):
    import bfcnn.denoise  # noqa: F401  (the CLI module has the function's name)

    out = bfcnn.denoise(np.zeros((5, 5), np.uint8), model=gray_model)
    assert out.shape == (5, 5)


def test_cli_denoises_many_files_and_reports_bad_ones(gray_model, tmp_path, capsys):
    from bfcnn.denoise import main

    model_path = tmp_path / "m.keras"
    gray_model.save(model_path)
    good = tmp_path / "in" / "a.png"
    good.parent.mkdir()
    Image.fromarray(np.full((16, 20), 128, np.uint8)).save(good)
    # an EXIF-rotated JPEG: stored 20 wide x 16 high, orientation 6 means rotate to 16 x 20
    rotated = Image.fromarray(np.full((16, 20), 90, np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated.save(tmp_path / "in" / "r.jpg", exif=exif)
    (tmp_path / "in" / "broken.png").write_bytes(b"not an image")
    code = main([str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", str(model_path)])
    assert code == 1
    err = capsys.readouterr().err
    assert "broken.png" in err and "FAILED" in err and "1 of 3" in err
    assert Image.open(tmp_path / "out" / "a.png").size == (20, 16)
    assert Image.open(tmp_path / "out" / "r.png").size == (16, 20)


def test_default_tiling_takes_tiles_of_at_least_twice_a_wide_overlap():
    image = np.zeros((1100, 1000), np.uint8)  # above one megapixel: tiled by default
    for overlap, tile in ((48, 512), (300, 600)):
        sizes = []
        out = bfcnn.denoise(image, model=lambda x: sizes.append(x.shape[:2]) or x, overlap=overlap)
        assert out.shape == image.shape
        assert len(sizes) > 1 and max(max(size) for size in sizes) == tile, (overlap, sizes)
    sizes = []
    bfcnn.denoise(image[:1000], model=lambda x: sizes.append(x.shape[:2]) or x)  # one megapixel: whole
    assert sizes == [(1000, 1000)]


def test_pil_photographs_come_back_upright(tmp_path):
    """A phone photograph is stored sideways with an EXIF orientation; its result shows as it did."""
    stored = np.zeros((16, 20), np.uint8)
    stored[:4] = 200  # a bright band along the stored top
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to show
    Image.fromarray(stored).save(tmp_path / "r.jpg", exif=exif, quality=100)
    with Image.open(tmp_path / "r.jpg") as image:
        out = bfcnn.denoise(image, model=lambda x: x)  # the identity: where the band goes is the point
    shown = np.asarray(out)
    assert out.size == (16, 20) and out.getexif().get(0x0112, 1) == 1
    assert shown[:, -4:].mean() > 150 > shown[:, :-4].mean()  # the band is on the right, as displayed


def test_pil_sixteen_bit_and_gray_alpha_keep_their_mode(gray_model):
    rng = np.random.default_rng(6)
    sixteen = rng.integers(0, 65536, size=(9, 7)).astype(np.uint16)
    out = bfcnn.denoise(Image.fromarray(sixteen), model=gray_model)
    assert out.mode == "I;16"
    np.testing.assert_array_equal(np.asarray(out), bfcnn.denoise(sixteen, model=gray_model))
    gray_alpha = rng.integers(0, 256, size=(9, 7, 2)).astype(np.uint8)
    out = bfcnn.denoise(Image.fromarray(gray_alpha), model=gray_model)
    assert out.mode == "LA"
    np.testing.assert_array_equal(np.asarray(out)[..., 0], bfcnn.denoise(gray_alpha[..., 0], model=gray_model))
    np.testing.assert_array_equal(np.asarray(out)[..., 1], gray_alpha[..., 1])


def test_tiled_denoise_matches_the_whole_image(gray_model):
    """The tiny ResNet sees 4 pixels around each output pixel: with a margin (overlap // 4) of 4
    the tiled result is the whole-image one up to float rounding, and well within 0.05 dB."""
    from skimage import data

    clean = data.camera()[:150, :190].astype(np.float32)
    noisy = clean + 25 * np.random.default_rng(7).standard_normal(clean.shape).astype(np.float32)
    whole = bfcnn.denoise(noisy, model=gray_model, tile_size=0)
    tiled = bfcnn.denoise(noisy, model=gray_model, tile_size=64, overlap=16)
    np.testing.assert_allclose(tiled, whole, atol=1e-3, rtol=0)

    def psnr(x):
        return 10 * np.log10(255.0**2 / np.mean((np.clip(np.round(x), 0, 255) - clean) ** 2))

    assert abs(psnr(tiled) - psnr(whole)) < 0.05


def test_cli_keeps_layouts_names_and_checks_arguments(gray_model, tmp_path, capsys):
    from bfcnn.denoise import main

    model_path = tmp_path / "m.keras"
    gray_model.save(model_path)
    rng = np.random.default_rng(8)
    (tmp_path / "in" / "sub").mkdir(parents=True)
    sixteen = rng.integers(0, 65536, size=(6, 5)).astype(np.uint16)
    Image.fromarray(sixteen).save(tmp_path / "in" / "deep.png")
    Image.fromarray(rng.integers(0, 256, size=(6, 5, 2)).astype(np.uint8)).save(tmp_path / "in" / "la.png")
    Image.fromarray(np.full((4, 4), 10, np.uint8)).save(tmp_path / "in" / "same.png")
    Image.fromarray(np.full((4, 4), 200, np.uint8)).save(tmp_path / "in" / "sub" / "same.png")
    assert main([str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", str(model_path)]) == 0
    err = capsys.readouterr().err
    assert "] 4/4 " in err and "[####################]" in err  # the progress bar reaches the end
    with Image.open(tmp_path / "out" / "deep.png") as image:
        assert image.mode == "I;16"
        np.testing.assert_array_equal(np.asarray(image), bfcnn.denoise(sixteen, model=gray_model))
    with Image.open(tmp_path / "out" / "la.png") as image:
        assert image.mode == "LA"
    # Two inputs named same.png: neither output overwrites the other.
    outputs = {p.name: np.asarray(Image.open(p)) for p in (tmp_path / "out").glob("same*.png")}
    assert sorted(outputs) == ["same-2.png", "same.png"] and "same-2.png" in err
    assert not np.array_equal(outputs["same.png"], outputs["same-2.png"])
    with pytest.raises(SystemExit) as caught:
        main([str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--tile-size", "16"])
    assert caught.value.code == 2 and "at least twice the tile overlap (96 pixels), got 16" in capsys.readouterr().err


def test_cli_model_errors_are_named(tmp_path, capsys):
    from bfcnn.denoise import main

    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "broken.keras").write_bytes(b"not a zip archive")
    cases = [("pyramid_gray_mm", "did you mean 'pyramid_gray_m'"),
             (str(tmp_path / "broken.keras"), "not a .keras file"),
             (str(tmp_path / "missing.keras"), "no such file or folder")]
    for model, message in cases:
        assert main([str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--model", model]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_self_ensemble_maps_every_copy_back():
    from bfcnn.inference import self_ensemble

    image = np.random.default_rng(0).normal(size=(5, 7, 3)).astype(np.float32)
    seen = []

    def spy(x):
        seen.append(x.shape)
        return x * 2.0  # equivariant: every copy maps back to 2 * image

    np.testing.assert_allclose(self_ensemble(spy)(image), 2.0 * image, rtol=1e-6)
    assert sorted(seen) == sorted([(5, 7, 3)] * 4 + [(7, 5, 3)] * 4)

    # a function that only sees the top-left pixel: the ensemble averages the 4 corners' values
    def corner(x):
        out = np.zeros_like(x)
        out[0, 0] = x[0, 0]
        return out

    ensembled = self_ensemble(corner)(image)
    assert np.count_nonzero(ensembled[..., 0]) == 4
    for r, c in [(0, 0), (0, 6), (4, 0), (4, 6)]:
        np.testing.assert_allclose(ensembled[r, c], image[r, c] * 2 / 8, rtol=1e-6)


@pytest.mark.parametrize("size, corners", [(2, [(0, 0), (4, 6)]), (4, [(0, 0), (0, 6), (4, 0), (4, 6)])])
def test_smaller_ensembles_keep_the_axes_and_average_their_copies(size, corners):
    from bfcnn.inference import self_ensemble

    image = np.random.default_rng(1).normal(size=(5, 7, 3)).astype(np.float32)
    seen = []

    def corner(x):  # sees only its top-left pixel: each copy brings one corner of the image back
        seen.append(x.shape)
        out = np.zeros_like(x)
        out[0, 0] = x[0, 0]
        return out

    ensembled = self_ensemble(corner, size)(image)
    assert seen == [(5, 7, 3)] * size  # no copy is transposed
    assert np.count_nonzero(ensembled[..., 0]) == len(corners)
    for r, c in corners:
        np.testing.assert_allclose(ensembled[r, c], image[r, c] / size, rtol=1e-6)


def test_ensemble_of_two_is_the_mean_with_the_half_turn(gray_model):
    image = np.random.default_rng(4).uniform(0, 255, size=(12, 9)).astype(np.float32)
    once = bfcnn.denoise(image, model=gray_model)
    turned = np.rot90(bfcnn.denoise(np.rot90(image, 2), model=gray_model), 2)
    np.testing.assert_allclose(bfcnn.denoise(image, model=gray_model, ensemble=2), (once + turned) / 2, atol=1e-3)
    assert not np.allclose(once, turned, atol=1e-3)  # an untrained model is not rotation invariant
    np.testing.assert_array_equal(bfcnn.denoise(image, model=gray_model, ensemble=1), once)
    np.testing.assert_array_equal(bfcnn.denoise(image, model=gray_model, ensemble=8),
                                  bfcnn.denoise(image, model=gray_model, ensemble=True))


@pytest.mark.parametrize("bad", [3, 0, 16, 2.0, "8", None])
def test_a_bad_ensemble_names_the_allowed_values(gray_model, bad):
    with pytest.raises(BfcnnError, match=r"ensemble must be False, True \(8 copies\) or a number of copies, "
                                         r"1, 2, 4 or 8, got"):
        bfcnn.denoise(np.zeros((8, 8), np.uint8), model=gray_model, ensemble=bad)


def test_denoise_with_ensemble_keeps_a_bias_free_model_homogeneous():
    import bfcnn

    model = bfcnn.build_model({"type": "resnet", "channels": 1, "filters": 8, "blocks": 1})
    image = np.random.default_rng(1).uniform(0, 255, size=(12, 9)).astype(np.float32)
    once = bfcnn.denoise(image, model=model, ensemble=True)
    twice = bfcnn.denoise(2.0 * image, model=model, ensemble=True)
    np.testing.assert_allclose(twice, 2.0 * once, rtol=1e-4, atol=1e-3)
    assert not np.allclose(once, bfcnn.denoise(image, model=model), atol=1e-3)


def test_cli_ensemble_writes_the_x8_result(gray_model, tmp_path):
    from bfcnn.denoise import main

    model_path = tmp_path / "m.keras"
    gray_model.save(model_path)
    image = np.random.default_rng(3).integers(0, 256, size=(13, 10), dtype=np.uint8)
    (tmp_path / "in").mkdir()
    Image.fromarray(image).save(tmp_path / "in" / "a.png")
    assert main([str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", str(model_path), "--ensemble"]) == 0
    written = np.asarray(Image.open(tmp_path / "out" / "a.png"))
    np.testing.assert_array_equal(written, bfcnn.denoise(image, model=gray_model, ensemble=True))


def test_cli_ensemble_takes_a_number_of_copies_and_a_bare_flag_before_the_inputs(gray_model, tmp_path):
    from bfcnn.denoise import main

    model_path = tmp_path / "m.keras"
    gray_model.save(model_path)
    image = np.random.default_rng(5).integers(0, 256, size=(11, 14), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "a.png")
    model = ["--model", str(model_path)]
    assert main(["--ensemble", "4", str(tmp_path / "a.png"), "-o", str(tmp_path / "x4")] + model) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "x4" / "a.png")),
                                  bfcnn.denoise(image, model=gray_model, ensemble=4))
    # a bare --ensemble right before an input: 8 copies, and the input is still read as one
    assert main(["--ensemble", str(tmp_path / "a.png"), "-o", str(tmp_path / "x8")] + model) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "x8" / "a.png")),
                                  bfcnn.denoise(image, model=gray_model, ensemble=8))


def test_cli_refuses_an_ensemble_size_it_does_not_have(tmp_path, capsys):
    from bfcnn.denoise import main

    with pytest.raises(SystemExit):
        main([str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--ensemble", "3"])
    assert "argument --ensemble: invalid choice: 3 (choose from 1, 2, 4, 8)" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused(gray_model, bad):
    """A NaN would come back spread over the model's receptive field: refused, with a count."""
    image = np.full((30, 30), 100.0, np.float32)
    image[3, 4] = image[20, 7] = bad
    with pytest.raises(BfcnnError, match=r"2 of the image's 900 values are not finite"):
        bfcnn.denoise(image, model=gray_model)
    with pytest.raises(BfcnnError, match="not finite"):
        bfcnn.denoise(np.full((30, 30, 3), bad), model=lambda t: t)


@pytest.mark.parametrize("kwargs, match", [
    (dict(model=123), r"model must be a zoo name, a path .* or a callable, got int"),
    (dict(tile_size=-5), r"tile_size must be None .*, 0 \(never tile\) or an integer at least twice overlap=48, got -5"),
    (dict(tile_size=8), r"at least twice overlap=48, got 8"),
    (dict(tile_size=95), r"at least twice overlap=48, got 95"),
    (dict(tile_size="abc"), r"tile_size must be None .* got 'abc'"),
    (dict(tile_size=64.5), r"tile_size must be None .* got 64.5"),
    (dict(tile_size=64, overlap=-3), r"overlap must be an integer >= 0, got -3"),
    (dict(image="photo.png"), r"numpy array or a PIL image, got str \(to denoise a file, open it first"),
    (dict(image=None), r"numpy array or a PIL image, got NoneType"),
    (dict(image=[[1, 2], [3, 4]]), r"got int64 \(the dtype numpy gave the array built from the list"),
    (dict(image=[[1.0, 2.0], [3.0]]), r"numpy array or a PIL image, got a list numpy cannot convert"),
])
def test_bad_arguments_name_what_is_allowed(gray_model, kwargs, match):
    kwargs = {"image": np.zeros((60, 60), np.uint8), "model": gray_model, **kwargs}
    with pytest.raises(BfcnnError, match=match):
        bfcnn.denoise(**kwargs)


def test_python_lists_of_floats_and_paths_to_models_work(gray_model, tmp_path):
    image = [[10.0, 20.0, 30.0], [40.0, 50.0, 60.0]]
    np.testing.assert_allclose(bfcnn.denoise(image, model=lambda t: t), image)
    gray_model.save(tmp_path / "m.keras")
    pixels = np.full((6, 6), 100, np.uint8)
    np.testing.assert_array_equal(bfcnn.denoise(pixels, model=tmp_path / "m.keras"),
                                  bfcnn.denoise(pixels, model=gray_model))


@pytest.mark.parametrize("tile_size", [0, 16])
def test_a_model_returning_another_shape_is_named(tile_size):
    with pytest.raises(BfcnnError, match=r"input's shape \((40|16), (40|16), 1\), got shape \((20|8), (40|16), 1\)"):
        bfcnn.denoise(np.zeros((40, 40), np.uint8), model=lambda t: t[::2], tile_size=tile_size, overlap=4)
    with pytest.raises(BfcnnError, match=r"input's shape \(40, 40, 1\), got shape \(40, 40, 3\)"):
        bfcnn.denoise(np.zeros((40, 40), np.uint8), model=lambda t: np.repeat(t, 3, -1), tile_size=0)
    with pytest.raises(BfcnnError, match="returned a str, not an image array"):
        bfcnn.denoise(np.zeros((40, 40), np.uint8), model=lambda t: "oops")


@pytest.mark.parametrize("mode, expected", [("LAB", "RGB"), ("HSV", "RGB"), ("RGBA", "RGBA"), ("RGBa", "RGBA"),
                                            ("PA", "RGBA"), ("L", "L"), ("LA", "LA")])
def test_pil_modes_keep_alpha_only_when_they_have_it(mode, expected):
    """"LAB" has an "A" in its name but no alpha channel: it comes back RGB."""
    image = Image.new(mode, (6, 5))
    assert bfcnn.denoise(image, model=lambda t: t).mode == expected


def test_models_are_freed_after_use():
    """The traced-function cache must not keep a model (and its weights) alive."""
    import gc
    import weakref

    from bfcnn.inference import _RUNNERS

    model = bfcnn.build_model({"type": "resnet", "channels": 1, "filters": 8, "blocks": 1})
    bfcnn.denoise(np.zeros((8, 8), np.uint8), model=model)
    assert model in _RUNNERS
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None


def test_graph_runner_is_the_public_numpy_route_to_a_traced_model(gray_model):
    """bench_tiling runs models through `graph_runner`: [H, W, C] float32 in, numpy array out."""
    from bfcnn.inference import graph_runner
    from bfcnn.tiling import tiled_apply

    run = graph_runner(gray_model)
    pixels = np.random.default_rng(5).uniform(0, 255, (13, 19, 1)).astype(np.float32)
    out = run(pixels)
    assert isinstance(out, np.ndarray) and out.shape == pixels.shape
    np.testing.assert_allclose(out, _expected(gray_model, pixels), rtol=1e-5, atol=1e-3)
    assert tiled_apply(run, pixels, tile_size=8, overlap=4).shape == pixels.shape  # any tile size, no retrace


@pytest.mark.parametrize("shape", [(1, 1), (3, 200), (200, 4)])
def test_a_thin_image_keeps_its_level_through_a_pyramid_model(shape):
    """A side of 4 pixels or fewer reached the 3-level pyramid as a 1-pixel coarsest level and
    came back about a third too dark (85 for a constant 128); it is now mirrored up to 8 first."""
    out = bfcnn.denoise(np.full(shape, 128.0, np.float32), model="pyramid_gray_m")
    assert out.shape == shape and abs(float(out.mean()) - 128.0) < 2.0


def test_tiles_follow_the_models_shift_period():
    """A ResNet with a 2x2 pixel unshuffle sees another grid when shifted by one pixel: tiles start
    at even offsets (odd sizes included), so the tiled result is the whole image's."""
    from bfcnn.models.shift import shift_period

    seed_everything()
    model = bfcnn.build_model({"type": "resnet", "channels": 1, "filters": 8, "blocks": 1, "downsample": 2})
    assert shift_period(model) == 2
    noisy = np.random.default_rng(8).uniform(0, 255, (151, 193)).astype(np.float32)
    whole = bfcnn.denoise(noisy, model=model, tile_size=0)
    tiled = bfcnn.denoise(noisy, model=model, tile_size=64, overlap=32)
    np.testing.assert_allclose(tiled, whole, atol=1e-3, rtol=0)


def test_a_thin_image_is_tiled_by_what_the_model_sees(monkeypatch):
    """A side under 8 pixels is mirrored up to 8: a 2 x 1000 strip is 8000 pixels to the model,
    over a limit of 4096, so it goes in tiles."""
    import bfcnn.inference

    monkeypatch.setattr(bfcnn.inference, "DEFAULT_MAX_PIXELS", 4096)
    sizes = []
    out = bfcnn.denoise(np.zeros((2, 1000), np.uint8), model=lambda x: sizes.append(x.shape[:2]) or x)
    assert out.shape == (2, 1000) and len(sizes) > 1 and max(w for _, w in sizes) == 512
    sizes.clear()
    bfcnn.denoise(np.zeros((2, 500), np.uint8), model=lambda x: sizes.append(x.shape[:2]) or x)
    assert sizes == [(8, 500)]  # 4000 pixels seen: whole


def _png_rgb16(path, pixels):
    """A 48-bit RGB PNG (Pillow reads such files but cannot write them)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    height, width = pixels.shape[:2]
    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(height))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_color_profiles_are_kept_and_16_bit_color_is_named(color_model, tmp_path, capsys):
    """A photograph's ICC profile goes with the result where the result is in its color space
    (RGB, gray), not where it is converted (CMYK comes back RGB); the command line embeds it, and
    says when Pillow decoded 16-bit color to 8 bits."""
    from PIL import ImageCms

    from bfcnn.denoise import main

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    rgb = Image.fromarray(np.random.default_rng(9).integers(0, 256, (16, 20, 3), dtype=np.uint8))
    rgb.info["icc_profile"] = profile
    assert bfcnn.denoise(rgb, model=color_model).info.get("icc_profile") == profile
    cmyk = rgb.convert("CMYK")
    cmyk.info["icc_profile"] = profile
    assert "icc_profile" not in bfcnn.denoise(cmyk, model=color_model).info
    folder = tmp_path / "in"
    folder.mkdir()
    rgb.save(folder / "tagged.png", icc_profile=profile)
    _png_rgb16(folder / "deep.png", np.random.default_rng(10).integers(0, 65536, (12, 10, 3)))
    model_path = tmp_path / "color.keras"
    color_model.save(model_path)
    assert main([str(folder), "-o", str(tmp_path / "out"), "--model", str(model_path)]) == 0
    assert Image.open(tmp_path / "out" / "tagged.png").info.get("icc_profile") == profile
    assert "icc_profile" not in Image.open(tmp_path / "out" / "deep.png").info
    lines = {line.split(": ", 1)[0].split()[-1]: line for line in capsys.readouterr().err.splitlines() if ": ok" in line}
    assert "16-bit color read and written as 8-bit" in lines["deep.png"]
    assert "16-bit" not in lines["tagged.png"]


def test_strength_blends_the_input_and_the_output(gray_model):
    image = np.random.default_rng(4).normal(100, 40, size=(14, 11)).astype(np.float32)
    full = bfcnn.denoise(image, model=gray_model)
    np.testing.assert_array_equal(bfcnn.denoise(image, model=gray_model, strength=1), full)
    np.testing.assert_array_equal(bfcnn.denoise(image, model=gray_model, strength=0), image)
    np.testing.assert_allclose(bfcnn.denoise(image, model=gray_model, strength=0.25), image + 0.25 * (full - image),
                               rtol=1e-6, atol=1e-4)
    # uint8: blended before rounding, so strength 0 gives the input back exactly
    pixels = np.random.default_rng(5).integers(0, 256, size=(14, 11, 3), dtype=np.uint8)
    np.testing.assert_array_equal(bfcnn.denoise(pixels, model=gray_model, strength=0.0), pixels)
    half = bfcnn.denoise(pixels, model=gray_model, strength=0.5)
    whole = bfcnn.denoise(pixels.astype(np.float32), model=gray_model)
    expected = np.clip(np.round(pixels + 0.5 * (whole - pixels)), 0, 255)
    assert np.abs(half.astype(float) - expected).max() <= 1  # ties may round either way in float32


def test_strength_keeps_a_bias_free_model_homogeneous(gray_model):
    image = np.random.default_rng(6).uniform(0, 255, size=(12, 9)).astype(np.float32)
    once = bfcnn.denoise(image, model=gray_model, strength=0.6)
    np.testing.assert_allclose(bfcnn.denoise(3.0 * image, model=gray_model, strength=0.6), 3.0 * once,
                               rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "0.5", True, None])
def test_a_strength_outside_0_to_1_is_refused_by_name(gray_model, bad):
    with pytest.raises(BfcnnError, match=r"strength must be a number from 0 .* to 1 .*, got"):
        bfcnn.denoise(np.zeros((8, 8), np.uint8), model=gray_model, strength=bad)


def _saved_model_and_image(model, folder):
    """(the model saved as folder/m.keras, a random 13x10 uint8 image saved as folder/a.png)."""
    model_path = folder / "m.keras"
    model.save(model_path)
    image = np.random.default_rng(7).integers(0, 256, size=(13, 10), dtype=np.uint8)
    Image.fromarray(image).save(folder / "a.png")
    return model_path, image


def test_cli_strength_is_passed_on_and_checked(gray_model, tmp_path, capsys):
    from bfcnn.denoise import main

    model_path, image = _saved_model_and_image(gray_model, tmp_path)
    assert main([str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--model", str(model_path),
                 "--strength", "0.3"]) == 0
    written = np.asarray(Image.open(tmp_path / "out" / "a.png"))
    np.testing.assert_array_equal(written, bfcnn.denoise(image, model=gray_model, strength=0.3))
    with pytest.raises(SystemExit) as stopped:
        main([str(tmp_path / "a.png"), "-o", str(tmp_path / "out2"), "--strength", "2"])
    assert stopped.value.code == 2 and "--strength: must be from 0 (the input) to 1" in capsys.readouterr().err


def _halves(shape=(150, 190), seed=9):
    """A color image, dark on the left and bright on the right, with noise: tiles of it have
    very different means."""
    image = np.zeros(shape + (3,), np.float32)
    image[:, : shape[1] // 2] = (40, 30, 60)
    image[:, shape[1] // 2 :] = (220, 200, 180)
    return image + 20 * np.random.default_rng(seed).standard_normal(image.shape).astype(np.float32)


@pytest.mark.parametrize("inner, chroma", [({"type": "resnet", "channels": 1, "filters": 8, "blocks": 1}, "shared"),
                                           ({"type": "multiscale", "channels": 1, "filters": 4, "levels": 2, "blocks": 1},
                                            "guided")])
def test_lifted_parts_compute_the_opponent_model(inner, chroma):
    """Cut where the image-wide offset enters, the opponent model's parts give its output."""
    from bfcnn.inference import lifted_parts

    seed_everything()
    model = bfcnn.build_model({"type": "opponent", "inner": inner, "chroma": chroma})
    parts = lifted_parts(model)
    image = _halves((48, 64))
    offset = parts.offset(image)
    np.testing.assert_allclose(offset, [0.0, image.mean(), image.mean()], rtol=1e-5)  # scale 1: Y / sqrt(3)
    lifted = parts.lift(image, offset)
    out = parts.lower(np.asarray(parts.network(lifted[None]))[0], offset)
    expected = _expected(model, image)  # untrained: values up to 10^4, compared on that scale
    np.testing.assert_allclose(out, expected, atol=2e-3 + 1e-6 * np.abs(expected).max(), rtol=0)
    assert lifted_parts(bfcnn.build_model({"type": "resnet", "channels": 3, "filters": 8, "blocks": 1})) is None


def test_tiled_opponent_model_lifts_every_tile_by_the_whole_images_mean():
    """An opponent color model lifts the chrominance by the image's mean gray level: tiles of
    a dark and a bright half must all use the whole image's mean, as the model on the whole
    image does, or each tile's result depends on where it lies."""
    seed_everything()
    model = bfcnn.build_model({"type": "opponent", "inner": {"type": "resnet", "channels": 1, "filters": 8,
                                                             "blocks": 1}})
    noisy = _halves()
    whole = bfcnn.denoise(noisy, model=model, tile_size=0)
    np.testing.assert_allclose(whole, _expected(model, noisy), atol=2e-3, rtol=0)
    for ensemble in (False, 2):
        np.testing.assert_allclose(bfcnn.denoise(noisy, model=model, tile_size=64, overlap=16, ensemble=ensemble),
                                   bfcnn.denoise(noisy, model=model, tile_size=0, ensemble=ensemble),
                                   atol=2e-3, rtol=0)
    gray = noisy.mean(axis=-1)  # a gray image through the color model: as gray RGB, tiled alike
    np.testing.assert_allclose(bfcnn.denoise(gray, model=model, tile_size=64, overlap=16),
                               bfcnn.denoise(gray, model=model, tile_size=0), atol=2e-3, rtol=0)


def test_noise_std_keeps_the_wiener_share_of_the_change():
    """With the noise level given, the change r = input - output is scaled by
    min(1, noise_std^2 / mean(r^2)): a model that returns zeros changes every pixel by itself."""
    rng = np.random.default_rng(10)
    image = rng.uniform(10, 200, (40, 50)).astype(np.float32)
    zero = lambda x: np.zeros_like(x)  # noqa: E731
    kept = 1 - 3.0**2 / np.mean(image.astype(np.float64) ** 2)
    np.testing.assert_allclose(bfcnn.denoise(image, model=zero, noise_std=3.0), image * kept, rtol=1e-5)
    np.testing.assert_allclose(bfcnn.denoise(image, model=zero, noise_std=3.0, strength=0.5),
                               image * (1 - 0.5 * (1 - kept)), rtol=1e-5)
    np.testing.assert_array_equal(bfcnn.denoise(image, model=zero, noise_std=0), image)  # no noise: no change
    assert np.all(bfcnn.denoise(image, model=zero, noise_std=1e4) == 0)  # more noise than change: all of it
    image16 = (image * 257).astype(np.uint16)  # on a 16-bit image the level is on the 16-bit scale
    np.testing.assert_allclose(bfcnn.denoise(image16, model=zero, noise_std=3.0 * 257).astype(np.float64),
                               image16 * kept, atol=1.0)


def test_noise_std_is_one_strength_for_the_whole_image_and_keeps_homogeneity(gray_model):
    from skimage import data

    noisy = data.camera()[:150, :190].astype(np.float32)
    noisy += 10 * np.random.default_rng(11).standard_normal(noisy.shape).astype(np.float32)
    whole = bfcnn.denoise(noisy, model=gray_model, tile_size=0, noise_std=2.0)
    tiled = bfcnn.denoise(noisy, model=gray_model, tile_size=64, overlap=16, noise_std=2.0)
    np.testing.assert_allclose(tiled, whole, atol=1e-3, rtol=0)
    scaled = bfcnn.denoise(3 * noisy, model=gray_model, tile_size=0, noise_std=6.0)
    np.testing.assert_allclose(scaled, 3 * whole, atol=1e-3 * np.abs(scaled).max(), rtol=0)
    blind = bfcnn.denoise(noisy, model=gray_model, tile_size=0)
    assert not np.allclose(whole, blind)  # the tiny untrained model changes the image by more than std 2


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "2", True])
def test_a_bad_noise_std_is_refused_by_name(gray_model, bad):
    with pytest.raises(BfcnnError, match="noise_std must be None"):
        bfcnn.denoise(np.zeros((8, 8), np.uint8), model=gray_model, noise_std=bad)


def test_cli_noise_std_is_passed_on_on_the_0_255_scale_and_checked(gray_model, tmp_path, capsys):
    from bfcnn.denoise import main

    model_path, image = _saved_model_and_image(gray_model, tmp_path)
    Image.fromarray(image.astype(np.uint16) * 257).save(tmp_path / "b.png")  # 16-bit: the same std in 0-255
    assert main([str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(tmp_path / "out"),
                 "--model", str(model_path), "--noise-std", "3"]) == 0
    written = np.asarray(Image.open(tmp_path / "out" / "a.png"))
    np.testing.assert_array_equal(written, bfcnn.denoise(image, model=gray_model, noise_std=3))
    assert not np.array_equal(written, bfcnn.denoise(image, model=gray_model))
    sixteen = np.asarray(Image.open(tmp_path / "out" / "b.png")).astype(np.float64)
    assert np.abs(sixteen / 257 - written).max() <= 1
    for bad in ("-1", "nan", "x"):
        with pytest.raises(SystemExit) as stopped:
            main([str(tmp_path / "a.png"), "-o", str(tmp_path / "out2"), "--noise-std", bad])
        assert stopped.value.code == 2 and "--noise-std: must be" in capsys.readouterr().err


def test_big_endian_sixteen_bit_is_sixteen_bit(gray_model):
    image = np.random.default_rng(12).integers(0, 65536, size=(12, 14), dtype=np.uint16)
    native = bfcnn.denoise(image, model=gray_model)
    swapped = bfcnn.denoise(image.astype(">u2"), model=gray_model)
    assert swapped.dtype == np.dtype(">u2")
    np.testing.assert_array_equal(swapped.astype(np.uint16), native)


def test_values_beyond_float32_and_a_model_returning_nan_are_named(gray_model):
    with pytest.raises(BfcnnError, match="beyond float32's range"):
        bfcnn.denoise(np.full((10, 10), 1e300), model=gray_model)
    with pytest.raises(BfcnnError, match="the model returned 100 non-finite values"):
        bfcnn.denoise(np.zeros((10, 10), np.uint8), model=lambda x: x * np.nan)
