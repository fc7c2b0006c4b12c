"""The LiteRT runner (`bfcnn.lite.TFLiteDenoiser`) and the app-style example `examples/run_tflite.py`."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bfcnn.errors import BfcnnError
from bfcnn.evaluation import psnr, to_uint8
from conftest import load_script, seed_everything

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "run_tflite.py"
# A tiny bias-free ResNet: 4 convolutions of 3x3, so its receptive radius is 4 pixels.
TINY = {"type": "resnet", "channels": 1, "filters": 8, "blocks": 1, "batch_norm": False}
RADIUS = 4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(keras model, path of its float32 .tflite)."""
    import bfcnn
    from bfcnn.export import to_tflite

    seed_everything()  # the weights must not depend on which test built them

    model = bfcnn.build_model(TINY)
    path = tmp_path_factory.mktemp("lite") / "model.tflite"
    path.write_bytes(to_tflite(model))
    return model, path


def keras_out(model, images):
    images = np.asarray(images, np.float32)
    batch = images if images.ndim == 4 else images[None]
    out = np.asarray(model(batch, training=False))
    return out if images.ndim == 4 else out[0]


def noisy_camera(shape=(150, 230), sigma=25.0):
    from skimage import data

    clean = data.camera()[100 : 100 + shape[0], 150 : 150 + shape[1], None]
    noisy = clean + sigma * np.random.default_rng(0).standard_normal(clean.shape)
    return clean, noisy.astype(np.float32)


def load_example():
    return load_script(EXAMPLE)


def test_signature(tiny):
    from bfcnn.lite import TFLiteDenoiser

    denoiser = TFLiteDenoiser(tiny[1], num_threads=1)
    assert denoiser.channels == 1 and denoiser.shape_signature == (1, -1, -1, 1)
    assert denoiser.input_name == "serving_default_image:0"
    assert "channels=1" in repr(denoiser)


@pytest.mark.parametrize("shape", [(37, 53, 1), (1, 1, 1), (3, 200, 1), (200, 3, 1), (2, 16, 9, 1)])
def test_matches_keras_for_any_size(tiny, shape):
    from bfcnn.lite import TFLiteDenoiser

    model, path = tiny
    images = np.random.default_rng(0).uniform(-30, 285, shape).astype(np.float32)
    out = TFLiteDenoiser(path)(images)
    assert out.shape == images.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, keras_out(model, images), atol=1e-3, rtol=0)


def test_denoise_keeps_layout_and_dtype(tiny):
    from bfcnn.lite import TFLiteDenoiser

    model, path = tiny
    denoiser = TFLiteDenoiser(path)
    clean, noisy = noisy_camera((40, 60))
    noisy_uint8 = to_uint8(noisy)[..., 0]  # [H, W] uint8, as a gray PNG reads
    out = denoiser.denoise(noisy_uint8)
    assert out.shape == (40, 60) and out.dtype == np.uint8
    expected = to_uint8(keras_out(model, noisy_uint8[..., None].astype(np.float32)))[..., 0]
    assert np.abs(out.astype(int) - expected).max() <= 1  # float ties at .5 only
    out = denoiser.denoise(noisy.astype(np.float64))
    assert out.dtype == np.float64 and out.shape == noisy.shape


def test_tiled_matches_whole(tiny):
    from bfcnn.lite import TFLiteDenoiser

    model, path = tiny
    denoiser = TFLiteDenoiser(path)
    clean, noisy = noisy_camera()
    whole = denoiser.denoise(noisy)
    exact = denoiser.denoise(noisy, tile_size=64, overlap=4 * RADIUS)  # margin = overlap // 4 = radius
    np.testing.assert_allclose(exact, whole, atol=1e-3, rtol=0)
    # Overlap below the receptive field: outside the 0.05 dB contract, seams differ a little.
    rough = denoiser.denoise(noisy, tile_size=64, overlap=4)
    assert abs(psnr(clean, rough) - psnr(clean, whole)) < 0.1  # 0.018 dB with the seeded weights


def test_denoise_tiles_large_images_by_default(tiny, monkeypatch):
    """tile_size="auto" tiles images larger than AUTO_TILE with tiles of that size; None never tiles."""
    import bfcnn.lite
    from bfcnn.lite import TFLiteDenoiser

    monkeypatch.setattr(bfcnn.lite, "AUTO_TILE", 96)
    denoiser = TFLiteDenoiser(tiny[1])
    sizes = []
    run = denoiser.__call__
    denoiser.__call__ = lambda tile: sizes.append(tile.shape[:2]) or run(tile)
    image = to_uint8(noisy_camera((150, 180))[1])
    tiled = denoiser.denoise(image)
    assert denoiser.shift_period == 1  # no model card beside the file
    assert sizes and set(sizes) == {(96, 96)}
    sizes.clear()
    whole = denoiser.denoise(image, tile_size=None)
    assert sizes == [(150, 180)]
    assert np.abs(tiled.astype(int) - whole.astype(int)).max() <= 2
    sizes.clear()
    denoiser.denoise(image[:64, :50])  # fits one tile: one run
    assert sizes == [(64, 50)]
    with pytest.raises(BfcnnError, match='"auto", None'):
        denoiser.denoise(image, tile_size="big")
    with pytest.raises(BfcnnError, match="tile_size must be an int or a pair"):
        denoiser.denoise(image, tile_size=64.5)


def test_wrong_channels_and_shapes(tiny):
    from bfcnn.lite import TFLiteDenoiser

    denoiser = TFLiteDenoiser(tiny[1])
    with pytest.raises(BfcnnError, match="1 channel"):
        denoiser(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(BfcnnError, match=r"HxW, HxWx1, HxWx3 or HxWx4, got shape \(8, 8, 2\)"):
        denoiser.denoise(np.zeros((8, 8, 2), np.uint8))
    with pytest.raises(BfcnnError, match=r"\[H, W, C\]"):
        denoiser(np.zeros((8,), np.float32))
    with pytest.raises(BfcnnError, match=">= 1"):
        denoiser(np.zeros((0, 8, 1), np.float32))
    with pytest.raises(BfcnnError, match="dtype"):
        denoiser.denoise(np.zeros((8, 8), np.int32))


def test_missing_and_corrupt_model_files(tmp_path):
    from bfcnn.lite import TFLiteDenoiser

    with pytest.raises(BfcnnError, match="not found"):
        TFLiteDenoiser(tmp_path / "missing.tflite")
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(b"not a flatbuffer" * 10)
    with pytest.raises(BfcnnError, match="corrupt.tflite"):
        TFLiteDenoiser(corrupt)
    with pytest.raises(BfcnnError, match="num_threads"):
        TFLiteDenoiser(corrupt, num_threads=0)


def test_denoise_takes_the_arrays_bfcnn_denoise_takes(tiny, tmp_path):
    """uint16, RGBA and color images through a gray file, tile_size 0: as `bfcnn.denoise` does them."""
    import shutil

    import bfcnn
    from bfcnn.lite import TFLiteDenoiser

    model, path = tiny
    denoiser = TFLiteDenoiser(path, num_threads=np.int64(1))
    rng = np.random.default_rng(3)
    for image in (rng.integers(0, 65536, (20, 24), dtype=np.uint16),
                  rng.integers(0, 256, (20, 24, 4), dtype=np.uint8),
                  rng.uniform(0, 255, (20, 24, 3)).astype(np.float32)):
        out = denoiser.denoise(image, tile_size=0)
        expected = bfcnn.denoise(image, model=model, tile_size=0)
        assert out.dtype == image.dtype and out.shape == image.shape
        tolerance = 2 if image.dtype == np.uint16 else 1e-2 if image.dtype == np.float32 else 1
        assert np.abs(out.astype(np.float64) - expected.astype(np.float64)).max() <= tolerance
    rgba = rng.integers(0, 256, (20, 24, 4), dtype=np.uint8)
    np.testing.assert_array_equal(denoiser.denoise(rgba)[..., 3], rgba[..., 3])  # alpha kept
    bad = np.zeros((8, 8), np.float32)
    bad[2, 3] = np.nan
    with pytest.raises(BfcnnError, match="1 of the image's 64 values are not finite"):
        denoiser.denoise(bad)
    # an export folder stands for its model.tflite
    folder = tmp_path / "export"
    folder.mkdir()
    shutil.copy(path, folder / "model.tflite")
    assert TFLiteDenoiser(folder).path == folder / "model.tflite"
    with pytest.raises(BfcnnError, match="is a folder without model.tflite"):
        TFLiteDenoiser(tmp_path)


def test_a_file_that_does_not_return_its_input_shape_is_refused(tmp_path):
    import keras

    from bfcnn.export import to_tflite
    from bfcnn.lite import TFLiteDenoiser

    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs))
    (tmp_path / "pool.tflite").write_bytes(to_tflite(model))
    with pytest.raises(BfcnnError, match="a bfcnn denoiser returns float32 of its input's shape"):
        TFLiteDenoiser(tmp_path / "pool.tflite")


def test_example_denoises_like_an_app(tiny, tmp_path, capsys):
    from bfcnn.lite import TFLiteDenoiser

    example = load_example()
    clean, noisy = noisy_camera((31, 45))
    noisy_uint8 = to_uint8(noisy)[..., 0]
    Image.fromarray(noisy_uint8).save(tmp_path / "noisy.png")
    assert example.main([str(tiny[1]), str(tmp_path / "noisy.png"), str(tmp_path / "out.png"), "--threads", "1"]) == 0
    written = np.asarray(Image.open(tmp_path / "out.png"))
    np.testing.assert_array_equal(written, TFLiteDenoiser(tiny[1]).denoise(noisy_uint8))
    # An RGB photo is converted to the model's gray input, as the app code in docs/mobile.md does.
    Image.fromarray(np.stack([noisy_uint8] * 3, -1)).save(tmp_path / "rgb.jpg")
    assert example.main([str(tiny[1]), str(tmp_path / "rgb.jpg"), str(tmp_path / "out2.png")]) == 0
    assert np.asarray(Image.open(tmp_path / "out2.png")).shape == (31, 45)


def test_example_reads_sixteen_bit_photos_and_refuses_bad_outputs(tiny, tmp_path, capsys):
    from bfcnn.lite import TFLiteDenoiser

    example = load_example()
    _, noisy = noisy_camera((31, 45))
    noisy_uint8 = to_uint8(noisy)[..., 0]
    Image.fromarray(noisy_uint8.astype(np.uint16) * 257).save(tmp_path / "sixteen.png")  # 16-bit PNG
    assert example.main([str(tiny[1]), str(tmp_path / "sixteen.png"), str(tmp_path / "out.png")]) == 0
    written = np.asarray(Image.open(tmp_path / "out.png"))
    np.testing.assert_array_equal(written, TFLiteDenoiser(tiny[1]).denoise(noisy_uint8))  # not clipped white
    capsys.readouterr()
    assert example.main([str(tiny[1]), str(tmp_path / "sixteen.png"), str(tmp_path / "out.xyz")]) == 2
    assert ".xyz is not an image format" in capsys.readouterr().err
    before = (tmp_path / "sixteen.png").read_bytes()
    assert example.main([str(tiny[1]), str(tmp_path / "sixteen.png"), str(tmp_path / "sixteen.png")]) == 2
    assert "is the input photo" in capsys.readouterr().err
    assert (tmp_path / "sixteen.png").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png", "sixteen.png"]  # no temporary file left
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "out.png").stat().st_mode & 0o777 == 0o666 & ~umask  # not private to its writer
    assert example.main([str(tiny[1]), str(tmp_path / "missing.png"), str(tmp_path / "out.png")]) == 2
    assert "cannot read image" in capsys.readouterr().err  # the input is missing, not the output unwritable
    assert example.main([str(tiny[1]), str(tmp_path / "sixteen.png"), str(tmp_path / "no" / "out.png")]) == 2
    assert "no folder" in capsys.readouterr().err


def test_example_tiles_large_photos_like_the_whole_image(tiny):
    """Windows with 24 pixels of context around each core: exact for a receptive radius under 24."""
    example = load_example()
    interpreter = example.load_interpreter(str(tiny[1]))
    noisy_uint8 = to_uint8(noisy_camera((100, 130))[1])
    whole = example.denoise_pixels(interpreter, noisy_uint8, tile=0)
    sizes = []
    run = example.run_window
    example.run_window = lambda it, window: sizes.append(window.shape[:2]) or run(it, window)
    try:
        tiled = example.denoise_pixels(interpreter, noisy_uint8, tile=64)
    finally:
        example.run_window = run
    assert len(sizes) > 4 and set(sizes) == {(64, 64)}  # one size: one resize
    assert np.abs(tiled.astype(int) - whole.astype(int)).max() <= 1  # float ties at .5 only
    assert np.mean(tiled == whole) > 0.999
    for length, core, window in [(100, 16, 64), (7, 3, 5), (130, 16, 64)]:
        spans = example.window_starts(length, core, window)
        assert [s for s, _, _ in spans] == list(range(0, length, core)) and spans[-1][1] == length
        assert all(0 <= x <= start and end <= x + window <= length for start, end, x in spans)
    with pytest.raises(example.RunError, match="twice the context"):
        example.denoise_pixels(interpreter, noisy_uint8, tile=40)


def test_example_keeps_half_of_each_window_of_a_small_file(tiny_fixed, monkeypatch):
    example = load_example()
    fixed = example.load_interpreter(str(tiny_fixed[1]))  # 32 x 48
    windows = []
    run = example.run_window
    monkeypatch.setattr(example, "run_window", lambda it, window: windows.append(window.shape[:2]) or run(it, window))
    example.denoise_pixels(fixed, to_uint8(noisy_camera((100, 130))[1]), tile=0)
    # cores of 16 x 32 (context 8): 7 x 5 windows; with a context of 15 the cores were 2 x 18, 50 x 8 windows
    assert len(windows) == 7 * 5


def test_example_runs_a_file_of_one_size_in_windows_of_that_size(tiny, tiny_fixed):
    """A 32 x 48 file: windows of 32 x 48 (context 8, a quarter of the short side), smaller images
    mirror-padded; the result matches the dynamic file's whole-image output (receptive radius 4 < context)."""
    example = load_example()
    fixed = example.load_interpreter(str(tiny_fixed[1]))
    dynamic = example.load_interpreter(str(tiny[1]))
    assert example.fixed_size(fixed) == (32, 48) and example.fixed_size(dynamic) is None
    for shape in ((100, 130), (20, 30), (32, 48), (70, 9)):
        noisy_uint8 = to_uint8(noisy_camera(shape)[1])
        whole = example.denoise_pixels(dynamic, noisy_uint8, tile=0)
        out = example.denoise_pixels(fixed, noisy_uint8, tile=0)  # the file's size wins over tile=0
        assert out.shape == noisy_uint8.shape
        inner = (slice(0, shape[0] - RADIUS), slice(0, shape[1] - RADIUS))  # mirror padding moves the far edges
        assert np.abs(out[inner].astype(int) - whole[inner].astype(int)).max() <= 1


def test_example_errors(tiny, tmp_path, capsys):
    example = load_example()
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    assert example.main([str(tiny[1]), str(tmp_path / "corrupt.png"), str(tmp_path / "out.png")]) == 2
    assert "cannot read image" in capsys.readouterr().err and not (tmp_path / "out.png").exists()
    assert example.main([str(tmp_path / "corrupt.png"), str(tmp_path / "corrupt.png"), str(tmp_path / "o.png")]) == 2
    assert "cannot load model" in capsys.readouterr().err
    interpreter = example.load_interpreter(str(tiny[1]))
    with pytest.raises(example.RunError, match="1 channel"):
        example.denoise_pixels(interpreter, np.zeros((4, 4, 3), np.uint8))


@pytest.mark.slow
def test_example_as_a_script(tiny, tmp_path):
    """The example runs without TensorFlow or bfcnn, from a plain interpreter."""
    Image.fromarray(np.full((9, 11), 128, np.uint8)).save(tmp_path / "in.png")
    code = ("import runpy, sys; sys.argv = sys.argv[1:]; "
            "runpy.run_path(sys.argv[0], run_name='__main__')")
    # Importing tensorflow or bfcnn would fail: the example must not need them.
    guard = "import sys; sys.modules['tensorflow'] = None; sys.modules['bfcnn'] = None; "
    result = subprocess.run([sys.executable, "-c", guard + code, str(EXAMPLE), str(tiny[1]), str(tmp_path / "in.png"),
                             str(tmp_path / "out.png")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert np.asarray(Image.open(tmp_path / "out.png")).shape == (9, 11)
    result = subprocess.run([sys.executable, str(EXAMPLE), str(tiny[1]), str(tmp_path / "missing.png"),
                             str(tmp_path / "o.png")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "cannot read image" in result.stderr


def test_default_threads_are_every_available_core(tiny, monkeypatch):
    import ai_edge_litert.interpreter as litert

    from bfcnn.lite import TFLiteDenoiser, available_cores

    seen = {}
    real = litert.Interpreter

    def recording(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(litert, "Interpreter", recording)
    TFLiteDenoiser(tiny[1])
    assert seen["num_threads"] == available_cores() >= 1
    TFLiteDenoiser(tiny[1], num_threads=1)
    assert seen["num_threads"] == 1


@pytest.fixture(scope="module")
def tiny_fixed(tiny, tmp_path_factory):
    """(keras model, path of a float32 .tflite that takes [1, 32, 48, 1] only)."""
    from bfcnn.export import to_tflite

    model, _ = tiny
    path = tmp_path_factory.mktemp("lite_fixed") / "model_32x48.tflite"
    path.write_bytes(to_tflite(model, input_size=(32, 48)))
    return model, path


def test_fixed_size_file_takes_any_size_by_tiling_and_padding(tiny_fixed):
    from bfcnn.export import runtime_sized_tensors
    from bfcnn.lite import DEFAULT_OVERLAP, TFLiteDenoiser
    from bfcnn.tiling import fixed_size_apply

    model, path = tiny_fixed
    denoiser = TFLiteDenoiser(path)
    assert denoiser.fixed_size == (32, 48) and denoiser.shape_signature == (1, 32, 48, 1)
    assert runtime_sized_tensors(path.read_bytes()) == []  # sized at its own size
    clean, noisy = noisy_camera((70, 101))
    for image in (noisy, noisy[:32, :48], noisy[:5, :7], noisy[:40, :9], noisy[:1, :1]):
        expected = fixed_size_apply(lambda t: keras_out(model, t), image, (32, 48), DEFAULT_OVERLAP)
        np.testing.assert_allclose(denoiser(image), expected, atol=1e-3, rtol=0)
    # Exactly the whole-image result where the file's size holds the image, and within the
    # tiling contract (overlap 16 > 4 x the receptive radius) on a larger one.
    np.testing.assert_allclose(denoiser(noisy[:32, :48]), keras_out(model, noisy[:32, :48]), atol=1e-3, rtol=0)
    whole = keras_out(model, noisy)
    out = denoiser.denoise(noisy)
    assert out.shape == noisy.shape
    assert abs(psnr(clean, out) - psnr(clean, whole)) < 0.05
    with pytest.raises(ValueError, match="1 channel"):
        denoiser(np.zeros((32, 48, 3), np.float32))


@pytest.mark.parametrize("shape", [(1, 1), (3, 200), (200, 4)])
def test_thin_images_keep_their_level_through_the_shipped_pyramid_file(shape):
    """TFLiteDenoiser and the app example mirror a side under 8 pixels up to 8, as bfcnn.denoise does
    (the 3-level pyramid returned a constant 128 as 85 to 105)."""
    from bfcnn.lite import TFLiteDenoiser
    from bfcnn.zoo import zoo_directory

    path = str(zoo_directory() / "pyramid_gray_m.tflite")
    flat = np.full((*shape, 1), 128.0, np.float32)
    assert abs(float(TFLiteDenoiser(path).denoise(flat).mean()) - 128.0) < 2.0
    example = load_example()
    out = example.denoise_pixels(example.load_interpreter(path), flat.astype(np.uint8))
    assert out.shape == flat.shape and abs(float(out.mean()) - 128.0) < 2.0


def test_the_shift_period_comes_from_the_card_beside_the_file(tiny, tmp_path):
    """`<name>.json` (the zoo's layout) or `model_card.json` (an export's) beside the file sets where
    tiles may start; none, or a card without it, leaves them anywhere; a bad value is named."""
    import json
    import shutil

    from bfcnn.lite import TFLiteDenoiser

    zoo_like = tmp_path / "zoo" / "gray.tflite"
    zoo_like.parent.mkdir()
    shutil.copy(tiny[1], zoo_like)
    assert TFLiteDenoiser(zoo_like).shift_period == 1
    zoo_like.with_suffix(".json").write_text(json.dumps({"name": "gray"}))
    assert TFLiteDenoiser(zoo_like).shift_period == 1
    zoo_like.with_suffix(".json").write_text(json.dumps({"shift_period": 4}))
    assert TFLiteDenoiser(zoo_like).shift_period == 4
    export_like = tmp_path / "export" / "model.tflite"
    export_like.parent.mkdir()
    shutil.copy(tiny[1], export_like)
    (export_like.parent / "model_card.json").write_text(json.dumps({"shift_period": 5}))
    assert TFLiteDenoiser(export_like.parent).shift_period == 5
    with pytest.raises(BfcnnError, match="shift_period must be None or an integer >= 1"):
        TFLiteDenoiser(export_like, shift_period=0)


def test_example_windows_follow_the_models_shift_period(tmp_path):
    """resnet_gray_s (a 2x2 pixel unshuffle) shifted by one pixel computes another result: windows
    at even offsets give the whole image's result, windows anywhere do not; the period comes from
    the card beside the file."""
    import json
    import shutil

    from bfcnn.zoo import zoo_directory

    example = load_example()
    model = tmp_path / "gray.tflite"
    shutil.copy(zoo_directory() / "resnet_gray_s.tflite", model)
    assert example.shift_period(str(model)) == 1
    model.with_suffix(".json").write_text(json.dumps({"shift_period": 2}))
    assert example.shift_period(str(model)) == 2
    interpreter = example.load_interpreter(str(model))
    noisy_uint8 = to_uint8(noisy_camera((100, 131))[1])
    whole = example.denoise_pixels(interpreter, noisy_uint8, tile=0).astype(int)
    aligned = example.denoise_pixels(interpreter, noisy_uint8, tile=64, period=2).astype(int)
    # the odd width is mirrored by a column to put the last windows on the period too: the
    # model's receptive field (13 pixels) away from the right edge, the whole image's result
    inner = (slice(None), slice(0, 131 - 16))
    assert np.abs(aligned[inner] - whole[inner]).max() <= 1  # float ties at .5 only
    anywhere = example.denoise_pixels(interpreter, noisy_uint8, tile=64).astype(int)
    assert np.abs(anywhere[inner] - whole[inner]).max() > 2


def test_denoise_given_a_path_says_to_open_it_first(tiny):
    from bfcnn.lite import TFLiteDenoiser

    with pytest.raises(BfcnnError, match=r"open it first: PIL.Image.open\(path\)"):
        TFLiteDenoiser(tiny[1]).denoise("photo.png")


def test_ensemble_averages_like_bfcnn_denoise(tiny, tiny_fixed):
    import bfcnn
    from bfcnn.errors import BfcnnError
    from bfcnn.lite import TFLiteDenoiser

    model, path = tiny
    denoiser = TFLiteDenoiser(path)
    _, noisy = noisy_camera()
    once = denoiser.denoise(noisy, tile_size=None)
    turned = np.rot90(denoiser.denoise(np.ascontiguousarray(np.rot90(noisy, 2)), tile_size=None), 2)
    np.testing.assert_allclose(denoiser.denoise(noisy, tile_size=None, ensemble=2), (once + turned) / 2,
                               atol=1e-4, rtol=0)
    for copies in (4, True):
        keras = bfcnn.denoise(noisy, model=model, tile_size=0, ensemble=copies)
        np.testing.assert_allclose(denoiser.denoise(noisy, tile_size=None, ensemble=copies), keras, atol=2e-3, rtol=0)
    fixed = TFLiteDenoiser(tiny_fixed[1])  # 32 x 48: the copies of 2 and 4 keep each tile's shape
    small = np.ascontiguousarray(noisy[:32, :48])
    np.testing.assert_allclose(fixed.denoise(small, ensemble=4),
                               bfcnn.denoise(small, model=model, tile_size=0, ensemble=4), atol=2e-3, rtol=0)
    with pytest.raises(BfcnnError, match="ensemble must be False, True"):
        denoiser.denoise(noisy, ensemble=3)


def test_strength_blends_like_bfcnn_denoise_whole_and_in_tiles(tiny):
    import bfcnn
    from bfcnn.errors import BfcnnError
    from bfcnn.lite import TFLiteDenoiser

    model, path = tiny
    denoiser = TFLiteDenoiser(path)
    clean, noisy = noisy_camera()
    noisy_uint8 = to_uint8(noisy)
    np.testing.assert_array_equal(denoiser.denoise(noisy_uint8, strength=0), noisy_uint8)
    for tile_size in (None, 64):
        whole = denoiser.denoise(noisy, tile_size=tile_size, overlap=4 * RADIUS)
        blended = denoiser.denoise(noisy, tile_size=tile_size, overlap=4 * RADIUS, strength=0.4)
        np.testing.assert_allclose(blended, noisy + 0.4 * (whole - noisy), atol=1e-3, rtol=0)
    keras = bfcnn.denoise(noisy_uint8[..., 0], model=model, strength=0.4)
    assert np.abs(denoiser.denoise(noisy_uint8[..., 0], strength=0.4).astype(int) - keras).max() <= 1
    with pytest.raises(BfcnnError, match="strength must be a number from 0"):
        denoiser.denoise(noisy, strength=1.01)


def test_noise_std_cuts_the_change_like_bfcnn_denoise_whole_and_in_tiles(tiny):
    """`noise_std` picks one strength for the whole image, so tiles give what the whole image
    does; it matches `bfcnn.denoise` and is refused when negative."""
    import bfcnn
    from bfcnn.errors import BfcnnError
    from bfcnn.inference import noise_strength
    from bfcnn.lite import TFLiteDenoiser

    model, path = tiny
    denoiser = TFLiteDenoiser(path)
    clean, noisy = noisy_camera()
    whole = denoiser.denoise(noisy, tile_size=None)
    strength = noise_strength(whole, noisy, 5.0)
    assert 0 < strength < 1  # the untrained model changes the image by more than noise of std 5
    for tile_size in (None, 64):
        given = denoiser.denoise(noisy, tile_size=tile_size, overlap=4 * RADIUS, noise_std=5.0, strength=0.5)
        np.testing.assert_allclose(given, noisy + 0.5 * strength * (whole - noisy), atol=1e-3, rtol=0)
    noisy_uint8 = to_uint8(noisy)
    keras = bfcnn.denoise(noisy_uint8[..., 0], model=model, noise_std=5.0)
    lite = denoiser.denoise(noisy_uint8[..., 0], noise_std=5.0)
    assert lite.dtype == np.uint8 and np.abs(lite.astype(int) - keras).max() <= 1
    with pytest.raises(BfcnnError, match="noise_std must be None"):
        denoiser.denoise(noisy, noise_std=-1)


def test_color_tiles_through_the_lifted_file_need_no_tensorflow():
    """What `pip install ai-edge-litert` gives an app: the zoo's color file in tiles, its lift in
    numpy (`bfcnn.opponent_lift`), with neither TensorFlow nor Keras imported."""
    import subprocess
    import sys

    code = ("import sys, numpy as np; from bfcnn.lite import TFLiteDenoiser; import bfcnn.zoo as z; "
            "d = TFLiteDenoiser(str(z.zoo_directory() / 'resnet_color_s.tflite')); "
            "d.denoise(np.full((300, 300, 3), 99, np.uint8), tile_size=128); "
            "print(d._lifted is not None, 'tensorflow' in sys.modules, 'keras' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.split() == ["True", "False", "False"], done.stderr[-800:]


def test_example_lifts_the_windows_of_a_color_file_by_the_whole_photo():
    """The app-style example runs the zoo's color windows through `<name>_lifted.tflite`, lifted by
    the whole photo: the same pixels as the whole photo at once, where the file's own per-window
    lift moves some (a dark and a bright half)."""
    import bfcnn.zoo as zoo
    from skimage import data

    example = load_example()
    photo = data.astronaut()[:200, :260].astype(np.float32)
    photo[:, 130:] = 255 - 0.3 * photo[:, 130:]
    photo = to_uint8(photo + np.random.default_rng(0).normal(0, 15, photo.shape))
    path = str(zoo.zoo_directory() / "resnet_color_s.tflite")
    interpreter, period = example.load_interpreter(path), example.shift_period(path)
    lifted = example.lifted_model(path)
    assert lifted is not None and lifted[1] == 1.0
    whole = example.denoise_pixels(interpreter, photo, tile=0, period=period).astype(int)
    tiled = example.denoise_pixels(interpreter, photo, tile=96, period=period, lifted=lifted)
    assert np.abs(tiled - whole).max() <= 1 and np.mean(tiled == whole) > 0.999  # float ties at .5 only
    own_lift = example.denoise_pixels(interpreter, photo, tile=96, period=period)
    assert np.abs(own_lift - whole).max() > 1
    assert example.lifted_model(str(zoo.zoo_directory() / "resnet_gray_s.tflite")) is None
