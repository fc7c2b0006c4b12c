"""The model zoo: every entry is tested through the registry (timm style)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import bfcnn
from bfcnn.errors import BfcnnError, UnknownModelError
from bfcnn.zoo import DEFAULT_MODEL, sha256, zoo_directory
from conftest import relative_error

ROOT = Path(__file__).resolve().parents[1]
ZOO = bfcnn.list_models()
CARD_KEYS = {"name", "description", "architecture", "channels", "training", "parameters", "flops_per_pixel",
             "files", "validation", "bias_free"}


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(UnknownModelError, match="unknown model 'no_such_model'") as info:
        bfcnn.load_model("no_such_model")
    for name in ZOO:
        assert name in str(info.value)


def test_the_package_ships_the_zoo():
    """A skip would hide a zoo lost from the package: every test below needs its models."""
    assert {"n3net_gray", "pyramid_color_m", "pyramid_gray_m", "resnet_color_s", "resnet_gray_s"} <= set(ZOO)
    assert DEFAULT_MODEL in ZOO
    for name in ZOO:
        assert "tflite" in bfcnn.model_info(name)["files"], name


def test_close_names_are_suggested():
    name = ZOO[0]
    with pytest.raises(UnknownModelError, match=f"did you mean '{name}'"):
        bfcnn.model_info(name[:-1] + "x")


def test_list_models_filters_by_wildcard():
    assert bfcnn.list_models("*") == ZOO
    assert all("gray" in n for n in bfcnn.list_models("*gray*"))
    assert bfcnn.list_models("nothing_matches_*") == []


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(BfcnnError, match="no such file or folder"):
        bfcnn.load_model(str(tmp_path / "missing.keras"))
    with pytest.raises(BfcnnError, match="no model.keras"):
        bfcnn.load_model(str(tmp_path))


@pytest.mark.parametrize("name", ["/tmp/no_such_bfcnn_model", "./x.keras", "~/no_such_bfcnn.keras", "x.tflite",
                                  "models/x", "x.h5", ".hidden"])
def test_path_like_names_are_reported_as_missing_paths(name):
    """Not "unknown model": a name that looks like a path is one; the zoo names follow as a hint."""
    with pytest.raises(BfcnnError, match=r"no such file or folder: '.*'") as caught:
        bfcnn.load_model(name)
    assert not isinstance(caught.value, UnknownModelError)
    assert name in str(caught.value) and all(n in str(caught.value) for n in ZOO)


def test_files_that_are_not_keras_models_are_named(tmp_path, monkeypatch):
    import zipfile

    from PIL import Image

    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "gray.png")
    monkeypatch.chdir(tmp_path)
    for name in ("gray.png", str(tmp_path / "gray.png")):  # a bare existing file name is a path too
        with pytest.raises(BfcnnError, match="not a .keras file or model folder"):
            bfcnn.load_model(name)
    with zipfile.ZipFile(tmp_path / "other.keras", "w") as archive:  # a zip, but no config.json in it
        archive.writestr("readme.txt", "not a model")
    with pytest.raises(BfcnnError, match="not a .keras file or model folder"):
        bfcnn.load_model(tmp_path / "other.keras")
    (tmp_path / "m.tflite").write_bytes(b"TFL3")
    with pytest.raises(BfcnnError, match=r"TFLite file.*bfcnn\.lite\.TFLiteDenoiser"):
        bfcnn.load_model(str(tmp_path / "m.tflite"))


def test_a_zoo_name_wins_over_a_folder_of_that_name(tmp_path, monkeypatch):
    """A run folder named like a zoo model (runs are often named so) does not replace the zoo model."""
    from bfcnn.export import resolve_model

    bfcnn.build_model({"type": "resnet", "channels": 1, "filters": 4, "blocks": 1}).save(tmp_path / "model.keras")
    (tmp_path / "resnet_gray_s").mkdir()
    (tmp_path / "model.keras").rename(tmp_path / "resnet_gray_s" / "model.keras")
    monkeypatch.chdir(tmp_path)
    zoo = bfcnn.load_model("resnet_gray_s")
    assert zoo.count_params() == bfcnn.model_info("resnet_gray_s")["parameters"]
    assert bfcnn.load_model("./resnet_gray_s").count_params() < zoo.count_params()  # the folder, named as one
    assert bfcnn.load_model(Path("resnet_gray_s")).count_params() < zoo.count_params()  # a Path is a path
    assert resolve_model("resnet_gray_s", None, "auto", None)[2] == "zoo:resnet_gray_s"


def test_load_model_is_annotated_as_taking_path_likes(tmp_path):
    import typing

    from bfcnn.zoo import load_model

    accepted = typing.get_args(typing.get_type_hints(load_model)["name_or_path"])
    assert str in accepted and os.PathLike in accepted
    with pytest.raises(BfcnnError, match="no such file or folder"):
        load_model(tmp_path / "missing.keras")  # a Path, as annotated


def test_which_load_errors_come_before_keras_is_imported(tmp_path):
    """As documented: path errors before Keras is imported; a zip without a Keras model only after."""
    import zipfile

    with zipfile.ZipFile(tmp_path / "other.keras", "w") as archive:
        archive.writestr("readme.txt", "not a model")
    script = (
        "import sys, bfcnn\n"
        "from bfcnn.errors import BfcnnError\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        bfcnn.load_model(path)\n"
        "    except BfcnnError as error:\n"
        "        print(type(error).__name__, 'keras' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", script, str(tmp_path / "missing.keras"), str(tmp_path / "x.tflite"),
                          str(tmp_path / "other.keras")], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split("\n")[:3] == ["BfcnnError False", "BfcnnError False", "BfcnnError True"]
    doc = " ".join(bfcnn.zoo.load_model.__doc__.split())
    assert "Raised before Keras is imported, except for a zip archive that is not a Keras model" in doc


def test_default_is_the_color_flagship():
    assert bfcnn.load_model().input_shape[-1] == 3


@pytest.mark.parametrize("name", ZOO)
def test_card_is_complete_and_checksums_match(name):
    card = bfcnn.model_info(name)
    assert CARD_KEYS <= set(card), CARD_KEYS - set(card)
    assert card["name"] == name
    for kind, entry in card["files"].items():
        assert sha256(zoo_directory() / entry["path"]) == entry["sha256"], kind
    assert card["parameters"] > 0 and card["flops_per_pixel"] > 0


@pytest.mark.parametrize("name", [n for n in ZOO if n.endswith("_s")])
def test_small_models_stay_under_100k_parameters(name):
    """The `_s` entries are the phone models: at most 100,000 parameters, counted on the loaded model."""
    assert bfcnn.load_model(name).count_params() <= 100_000


@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_meets_the_contract_and_denoises(name, sample_gray, sample_rgb):
    model = bfcnn.load_model(name)
    card = bfcnn.model_info(name)
    channels = card["channels"]
    assert model.input_shape == (None, None, None, channels)
    assert model.count_params() == card["parameters"]
    clean = (sample_gray[100:196, 100:228, None] if channels == 1 else sample_rgb[100:196, 100:228]).astype("float32")
    noisy = clean + 25.0 * np.random.default_rng(0).standard_normal(clean.shape).astype("float32")
    out = np.asarray(model(noisy[None]))[0]
    assert out.shape == clean.shape
    assert np.mean((out - clean) ** 2) < 0.5 * np.mean((noisy - clean) ** 2)
    if card["bias_free"]:
        assert relative_error(model(2.0 * noisy[None]), 2.0 * out[None]) < 1e-5


@pytest.mark.parametrize("name", ZOO)
def test_zoo_tflite_matches_keras(name, sample_gray, sample_rgb):
    from bfcnn.lite import TFLiteDenoiser

    card = bfcnn.model_info(name)
    lite = TFLiteDenoiser(str(zoo_directory() / card["files"]["tflite"]["path"]))
    image = (sample_gray[:64, :80, None] if card["channels"] == 1 else sample_rgb[:64, :80]).astype("float32")
    expected = np.asarray(bfcnn.load_model(name)(image[None]))[0]
    assert np.max(np.abs(lite(image) - expected)) < 1e-2


@pytest.mark.parametrize("name", [n for n in ZOO if bfcnn.model_info(n)["channels"] == 3])
def test_zoo_color_tflite_tiles_are_lifted_by_the_whole_image(name, sample_rgb):
    """A color entry ships its networks without the lift (`<name>_lifted.tflite`): TFLite tiles of
    a dark and a bright half follow Keras tiles, both lifted by the whole image's mean."""
    from bfcnn.lite import TFLiteDenoiser

    card = bfcnn.model_info(name)
    lite = TFLiteDenoiser(str(zoo_directory() / card["files"]["tflite"]["path"]))
    assert lite.chroma_offset == card["architecture"]["chroma_offset"]
    image = sample_rgb[:96, :160].astype("float32")
    image[:, 80:] = 255 - image[:, 80:] * 0.3  # a bright half: tiles of very different means
    lite_tiles = lite.denoise(image, tile_size=96, overlap=48)
    keras_tiles = bfcnn.denoise(image, model=name, tile_size=96, overlap=48)
    assert np.max(np.abs(lite_tiles - keras_tiles)) < 1e-2


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_exports_and_passes_verification(name, tmp_path):
    """What a user does with a zoo model: SavedModel + builtin-ops TFLite, every artifact verified."""
    from bfcnn.export import export_model

    result = export_model(name, tmp_path / "out", to_tflite=True, log=None)
    assert result["passed"]
    tflite = [r for r in result["verification"]["results"] if r["artifact"] == "model.tflite"]
    assert tflite and tflite[0]["max_abs_diff"] <= result["verification"]["fp32_tolerance"]


def test_corrupt_zoo_file_is_detected(tmp_path, monkeypatch):
    import shutil

    import bfcnn.zoo as zoo

    name = ZOO[0]
    card = bfcnn.model_info(name)
    for entry in card["files"].values():
        shutil.copy(zoo_directory() / entry["path"], tmp_path / entry["path"])
    (tmp_path / f"{name}.json").write_text(json.dumps(card))
    with open(tmp_path / card["files"]["keras"]["path"], "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02\x03")
    monkeypatch.setattr(zoo, "zoo_directory", lambda: tmp_path)
    zoo._cards.cache_clear()
    try:
        with pytest.raises(BfcnnError, match="sha256"):
            bfcnn.load_model(name)
    finally:
        zoo._cards.cache_clear()


def test_a_corrupt_lifted_file_is_detected_with_the_tflite_file(tmp_path, monkeypatch):
    """A color model's `_lifted.tflite`, which TFLiteDenoiser loads beside its TFLite file for
    tiles, is checked when the TFLite file is asked for."""
    import shutil

    import bfcnn.zoo as zoo
    from bfcnn.zoo import model_file

    name = next(n for n in ZOO if "tflite_lifted" in bfcnn.model_info(n)["files"])
    card = bfcnn.model_info(name)
    for entry in card["files"].values():
        shutil.copy(zoo_directory() / entry["path"], tmp_path / entry["path"])
    (tmp_path / f"{name}.json").write_text(json.dumps(card))
    monkeypatch.setattr(zoo, "zoo_directory", lambda: tmp_path)
    zoo._cards.cache_clear()
    try:
        assert model_file(name, "tflite") == tmp_path / card["files"]["tflite"]["path"]
        with open(tmp_path / card["files"]["tflite_lifted"]["path"], "r+b") as f:
            f.seek(100)
            f.write(b"\x00\x01\x02\x03")
        with pytest.raises(BfcnnError, match="sha256"):
            model_file(name, "tflite")
        assert model_file(name, "keras")  # the other files are unaffected
    finally:
        zoo._cards.cache_clear()


@pytest.mark.slow
def test_wheel_ships_the_zoo(tmp_path):
    """Build the wheel, install it outside the source tree, load every zoo model there."""
    wheel_dir = tmp_path / "wheel"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
                            str(wheel_dir), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    wheels = list(wheel_dir.glob("bfcnn-*.whl"))
    assert len(wheels) == 1
    target = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target),
                              str(wheels[0])], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-2000:]
    script = (
        "import bfcnn, sys\n"
        "assert bfcnn.__file__.startswith(sys.argv[1]), bfcnn.__file__\n"
        "names = bfcnn.list_models()\n"
        "assert names == sys.argv[2].split(',') if sys.argv[2] else names == [], names\n"
        "for n in names:\n"
        "    bfcnn.load_model(n)\n"
        "print('LOADED', len(names))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target), "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = subprocess.run([sys.executable, "-c", script, str(target), ",".join(ZOO)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"LOADED {len(ZOO)}" in run.stdout


def test_load_model_names_what_it_takes_when_given_something_else():
    import bfcnn
    from bfcnn.errors import BfcnnError

    for wrong in (3, 2.5, ["pyramid_gray_m"]):
        with pytest.raises(BfcnnError, match="load_model takes a zoo name .*pyramid_gray_m"):
            bfcnn.load_model(wrong)


@pytest.mark.parametrize("name", ["", "  "])
def test_an_empty_model_name_is_named_as_empty(name):
    """Path("") is the working directory: it was reported as a folder without model.keras."""
    with pytest.raises(BfcnnError, match="the model name is empty") as caught:
        bfcnn.load_model(name)
    assert all(n in str(caught.value) for n in ZOO) and "folder ''" not in str(caught.value)


def test_list_models_checks_its_pattern():
    assert bfcnn.list_models(None) == ZOO
    for pattern in (5, ["*"], b"*"):
        with pytest.raises(BfcnnError, match=r"list_models takes a shell-style wildcard such as '\*_gray_\*'"):
            bfcnn.list_models(pattern)
