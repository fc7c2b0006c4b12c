"""Image reading and listing (bfcnn.io): every mode converted, EXIF honoured, clear errors."""

import importlib
import sys

import numpy as np
import pytest
from PIL import Image

from bfcnn.errors import BfcnnError
from bfcnn.io import (IMAGE_EXTENSIONS, ImageReadError, list_images, read_image, resolve_directory,
                      to_uint8_array, write_image)


FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF",
           ".webp": "WEBP"}


def pattern(h, w, c=None, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w) if c is None else (h, w, c), dtype=np.uint8)


def test_gray_png(tmp_path):
    array = pattern(7, 5)
    Image.fromarray(array, mode="L").save(tmp_path / "g.png")
    image = read_image(tmp_path / "g.png")
    assert image.dtype == np.uint8 and image.shape == (7, 5, 1)
    np.testing.assert_array_equal(image[..., 0], array)
    np.testing.assert_array_equal(read_image(tmp_path / "g.png", "rgb"), np.repeat(array[..., None], 3, -1))


def test_rgb_png_and_gray_conversion(tmp_path):
    array = pattern(6, 9, 3)
    Image.fromarray(array, mode="RGB").save(tmp_path / "c.png")
    np.testing.assert_array_equal(read_image(tmp_path / "c.png"), array)
    gray = read_image(tmp_path / "c.png", "gray")
    assert gray.shape == (6, 9, 1)
    np.testing.assert_array_equal(gray[..., 0], np.asarray(Image.fromarray(array).convert("L")))


def test_rgba_drops_alpha_without_compositing(tmp_path):
    rgb = pattern(5, 5, 3)
    alpha = np.zeros((5, 5, 1), np.uint8)  # fully transparent: compositing would give black
    Image.fromarray(np.concatenate([rgb, alpha], -1), mode="RGBA").save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert image.shape == (5, 5, 3)
    np.testing.assert_array_equal(image, rgb)


def test_palette_images(tmp_path):
    gray = pattern(8, 8)
    Image.fromarray(gray, mode="L").convert("P").save(tmp_path / "pg.png")
    image = read_image(tmp_path / "pg.png")
    assert Image.open(tmp_path / "pg.png").mode == "P"
    assert image.shape == (8, 8, 1), "a palette of grays stays gray"
    np.testing.assert_array_equal(image[..., 0], gray)

    color = Image.fromarray(pattern(8, 8, 3)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    color.save(tmp_path / "pc.png")
    image = read_image(tmp_path / "pc.png")
    assert image.shape == (8, 8, 3)
    np.testing.assert_array_equal(image, np.asarray(color.convert("RGB")))


def test_16_bit_png_scaled_to_8_bits(tmp_path):
    values = pattern(6, 4)
    Image.fromarray(values.astype(np.uint16) * 257).save(tmp_path / "d.png")
    assert Image.open(tmp_path / "d.png").mode.startswith("I")
    image = read_image(tmp_path / "d.png")
    assert image.dtype == np.uint8 and image.shape == (6, 4, 1)
    np.testing.assert_array_equal(image[..., 0], values)


def test_exif_orientation_is_honoured(tmp_path):
    array = np.zeros((16, 32, 3), np.uint8)
    array[:8, :8] = 255  # a white block at the top-left corner of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(array).save(tmp_path / "r.jpg", quality=95, exif=exif)
    image = read_image(tmp_path / "r.jpg")
    assert image.shape == (32, 16, 3)
    expected = np.rot90(array, k=-1)  # clockwise: the block ends at the top-right
    assert np.abs(image.astype(int) - expected.astype(int)).mean() < 4
    assert image[:8, 8:].mean() > 200 and image[:8, :8].mean() < 50


def test_unreadable_files_raise_image_read_error_naming_the_path(tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"this is not an image")
    with pytest.raises(ImageReadError, match="junk.png"):
        read_image(junk)
    good = tmp_path / "good.png"
    Image.fromarray(pattern(64, 64, 3)).save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ImageReadError, match="truncated.png"):
        read_image(truncated)
    with pytest.raises(ImageReadError, match="missing.png"):
        read_image(tmp_path / "missing.png")
    assert issubclass(ImageReadError, BfcnnError)
    with pytest.raises(ValueError, match="color"):
        read_image(good, "grey")


def test_list_images_recursive_all_extensions(tmp_path):
    expected = []
    for i, ext in enumerate(IMAGE_EXTENSIONS + (".PNG", ".JPG")):
        folder = tmp_path / f"level{i % 3}" / ("deeper" if i % 2 else "")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"image{i}{ext}"
        Image.fromarray(pattern(4, 4, 3)).save(path, format=FORMATS[ext.lower()])
        expected.append(path)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "folder.png").mkdir()  # a directory with an image suffix is not a file
    found = list_images(tmp_path)
    assert found == sorted(expected)
    for path in found:  # every listed file can be read
        assert read_image(path).shape == (4, 4, 3)


def test_list_images_errors_name_the_path(tmp_path):
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(BfcnnError, match="empty_dir"):
        list_images(empty)
    with pytest.raises(BfcnnError, match="not found.*no_such_dir"):
        list_images(tmp_path / "no_such_dir")
    (tmp_path / "plain.png").write_bytes(b"")
    with pytest.raises(BfcnnError, match="not a directory.*plain.png"):
        list_images(tmp_path / "plain.png")


def test_pkg_directories(tmp_path, monkeypatch):
    package = tmp_path / "bfcnn_test_pkg"
    (package / "images" / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "plain_module.py").write_text("")
    Image.fromarray(pattern(4, 4)).save(package / "images" / "sub" / "a.png")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    assert resolve_directory("pkg:bfcnn_test_pkg/images") == package / "images"
    assert list_images("pkg:bfcnn_test_pkg/images") == [package / "images" / "sub" / "a.png"]
    with pytest.raises(BfcnnError, match="'no_such_package_xyz' is not installed"):
        list_images("pkg:no_such_package_xyz/data")
    with pytest.raises(BfcnnError, match="not installed"):
        resolve_directory("pkg:no_such_package_xyz.sub/data")
    with pytest.raises(BfcnnError, match="not a package"):
        resolve_directory("pkg:bfcnn_test_pkg.plain_module/data")
    sys.modules.pop("bfcnn_test_pkg", None)


def test_pkg_skimage_sample_photos():
    pytest.importorskip("skimage")
    files = list_images("pkg:skimage/data")
    assert any(f.name == "camera.png" for f in files)


def test_write_image_round_trip_and_checks(tmp_path):
    for shape in [(5, 6), (5, 6, 1), (5, 6, 3)]:
        array = pattern(*shape)
        write_image(tmp_path / "out" / "x.png", array)
        np.testing.assert_array_equal(read_image(tmp_path / "out" / "x.png"), array.reshape(5, 6, -1))
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["x.png"]  # no temporary file left
    sixteen = pattern(5, 6).astype(np.uint16) * 257
    write_image(tmp_path / "out16" / "x.png", sixteen)
    np.testing.assert_array_equal(read_image(tmp_path / "out16" / "x.png")[..., 0], sixteen // 257)
    with pytest.raises(ValueError, match="uint8"):
        write_image(tmp_path / "f.png", np.zeros((4, 4), np.float32))
    gray_alpha = np.stack([pattern(5, 6), 255 - pattern(5, 6)], axis=-1)
    write_image(tmp_path / "la" / "x.png", gray_alpha)
    with Image.open(tmp_path / "la" / "x.png") as written:
        assert written.mode == "LA"
        np.testing.assert_array_equal(np.asarray(written), gray_alpha)
    with pytest.raises(ValueError, match="shape"):
        write_image(tmp_path / "f.png", np.zeros((4, 4, 5), np.uint8))


def test_to_uint8_array_modes():
    np.testing.assert_array_equal(to_uint8_array(Image.new("1", (3, 2), 1))[..., 0], np.full((2, 3), 255))
    la = to_uint8_array(Image.fromarray(np.full((2, 2, 2), 77, np.uint8), mode="LA"))
    assert la.shape == (2, 2, 1) and (la == 77).all()
    cmyk = to_uint8_array(Image.new("CMYK", (2, 2), (0, 0, 0, 0)))
    assert cmyk.shape == (2, 2, 3) and (cmyk == 255).all()
    with pytest.raises(ValueError, match="'grey'"):
        to_uint8_array(Image.new("L", (2, 2)), "grey")


def test_float_and_32_bit_images_are_refused_not_flattened(tmp_path):
    """A float TIFF of 0 to 1 came out with 2 gray levels, a 32-bit one of 0 to 4095 with 16."""
    ramp = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    Image.fromarray(ramp).save(tmp_path / "float.tif")
    Image.fromarray(np.round(ramp * 4095).astype(np.int32)).save(tmp_path / "twelve_bit.tif")
    for name, message in [("float.tif", r"mode F \(32-bit float\) images are not supported"),
                          ("twelve_bit.tif", r"mode I \(32-bit integer\) images are not supported")]:
        with pytest.raises(ImageReadError, match=f"{name}.*{message}.*convert to 8- or 16-bit"):
            read_image(tmp_path / name)
        with Image.open(tmp_path / name) as image, pytest.raises(BfcnnError, match=message):
            to_uint8_array(image)  # what bfcnn.denoise reads a PIL image with
    for image in (Image.fromarray(ramp * 255), Image.fromarray(np.zeros((4, 4), np.int32))):  # made in memory
        with pytest.raises(BfcnnError, match="not supported"):
            to_uint8_array(image)


def test_16_bit_pgm_opened_as_mode_i_is_still_read(tmp_path):
    """Pillow opens a 16-bit PGM as mode I: 16-bit samples, scaled to 8 bits as a 16-bit PNG is."""
    values = pattern(6, 4)
    Image.fromarray(values.astype(np.uint16) * 257).save(tmp_path / "d.pgm")
    with Image.open(tmp_path / "d.pgm") as image:
        assert image.mode == "I"
        np.testing.assert_array_equal(to_uint8_array(image)[..., 0], values)
    np.testing.assert_array_equal(read_image(tmp_path / "d.pgm")[..., 0], values)


def test_multi_frame_files_are_refused_naming_the_frame_count(tmp_path):
    frames = [Image.fromarray(np.full((8, 8), 40 * i, np.uint8)) for i in range(3)]
    frames[0].save(tmp_path / "animated.gif", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / "pages.tif", save_all=True, append_images=frames[1:])
    for name in ("animated.gif", "pages.tif"):
        with pytest.raises(ImageReadError, match=f"{name}.*has 3 frames"):
            read_image(tmp_path / name)
    frames[1].save(tmp_path / "still.gif")  # one frame: read as any image
    assert (read_image(tmp_path / "still.gif") == 40).all()


def test_folder_scans_skip_gif_as_documented(tmp_path):
    Image.fromarray(pattern(4, 4)).save(tmp_path / "a.png")
    Image.fromarray(pattern(4, 4)).save(tmp_path / "b.gif")
    assert ".gif" not in IMAGE_EXTENSIONS and list_images(tmp_path) == [tmp_path / "a.png"]
    assert "gif" in list_images.__doc__


def test_write_image_refuses_folders_and_unknown_extensions_before_writing(tmp_path):
    (tmp_path / "folder.png").mkdir()
    for name, message in [("noext", "no file extension; use .png"),
                          ("x.tmp", "unknown image extension '.tmp'; use .png"),
                          ("folder.png", "it is a folder")]:
        with pytest.raises(BfcnnError, match=message):
            write_image(tmp_path / name, pattern(4, 4))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.png"]  # nothing written, no temp file
    write_image(tmp_path / "upper.PNG", pattern(4, 4))
    assert (tmp_path / "upper.PNG").exists()


def test_write_json_takes_numpy_integers_bools_and_arrays(tmp_path):
    import json

    from bfcnn.io import write_json

    write_json(tmp_path / "r.json", {"count": np.int64(3), "ok": np.bool_(True), "small": np.uint8(7),
                                     "scores": np.array([1.5, np.inf]), "grid": np.arange(4).reshape(2, 2),
                                     np.int32(5): [np.float32(0.5)]})
    assert json.loads((tmp_path / "r.json").read_text()) == {
        "count": 3, "ok": True, "small": 7, "scores": [1.5, None], "grid": [[0, 1], [2, 3]], "5": [0.5]}
