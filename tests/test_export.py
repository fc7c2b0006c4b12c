"""Export: every artifact reloaded and compared with Keras, builtin-only TFLite, atomic output, the CLI."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import seed_everything

ROOT = Path(__file__).resolve().parents[1]
TINY_RESNET = {"type": "resnet", "channels": 1, "filters": 8, "blocks": 1}
TINY_MULTISCALE = {"type": "multiscale", "channels": 3, "levels": 2, "filters": 8, "blocks": 1}


def fit_a_few_steps(model, steps=2, seed=0):
    """A couple of optimizer steps, so the weights (and batch-norm statistics) are not the initial ones."""
    import keras

    channels = model.input_shape[-1]
    rng = np.random.default_rng(seed)
    clean = rng.uniform(0, 255, (4 * steps, 24, 24, channels)).astype("float32")
    noisy = clean + 25 * rng.standard_normal(clean.shape).astype("float32")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    model.fit(noisy, clean, batch_size=4, epochs=1, verbose=0)
    return model


def keras_out(model, images):
    return np.asarray(model(np.asarray(images, np.float32), training=False))


def noisy_images(shape, seed=1):
    return np.random.default_rng(seed).uniform(-20, 275, shape).astype("float32")


@pytest.fixture(scope="module")
def resnet_export(tmp_path_factory):
    """A tiny gray ResNet, trained two steps, exported with float32 and fp16 TFLite."""
    seed_everything()  # the weights must not depend on which test built them
    import bfcnn
    from bfcnn.export import export_model

    model = fit_a_few_steps(bfcnn.build_model(TINY_RESNET))
    out = tmp_path_factory.mktemp("export") / "resnet"
    report = export_model(model, out, quantize=("none", "fp16"), config={"model": TINY_RESNET}, name="tiny_resnet",
                          log=None)
    return model, out, report


def test_the_export_folder_is_not_private(resnet_export, tmp_path):
    """The temporary folder it was written in is private (mkdtemp); the placed one has the
    permissions of a folder made by os.mkdir under the same umask (the reference)."""
    _, out, _ = resnet_export
    (tmp_path / "reference").mkdir()
    assert out.stat().st_mode & 0o777 == (tmp_path / "reference").stat().st_mode & 0o777
    (tmp_path / "reference.txt").write_text("x")
    assert (out / "model_card.json").stat().st_mode & 0o777 == (tmp_path / "reference.txt").stat().st_mode & 0o777


def test_round_trip_resnet(resnet_export):
    import keras
    import tensorflow as tf

    from bfcnn.lite import TFLiteDenoiser

    model, out, report = resnet_export
    assert report["passed"] and report["output_directory"] == str(out)
    assert sorted(p.name for p in out.iterdir()) == [
        "model.keras", "model.tflite", "model_card.json", "model_fp16.tflite", "saved_model"]
    images = noisy_images((2, 19, 23, 1))
    expected = keras_out(model, images)
    np.testing.assert_allclose(keras_out(keras.models.load_model(out / "model.keras"), images), expected, atol=1e-4)
    serve = tf.saved_model.load(str(out / "saved_model")).signatures["serving_default"]
    np.testing.assert_allclose(serve(image=tf.constant(images))["denoised"].numpy(), expected, atol=1e-3, rtol=0)
    np.testing.assert_allclose(TFLiteDenoiser(out / "model.tflite")(images), expected, atol=1e-3, rtol=0)
    fp16 = TFLiteDenoiser(out / "model_fp16.tflite")(images)
    assert np.max(np.abs(fp16 - expected)) < 2.0  # half-precision weights: close, not equal
    results = {r["artifact"]: r for r in report["verification"]["results"]}
    assert results["model.tflite"]["max_abs_diff"] <= 1e-3
    assert results["model_fp16.tflite"]["psnr_change"] >= -0.1


def test_model_card(resnet_export):
    model, out, report = resnet_export
    card = json.loads((out / "model_card.json").read_text())
    assert card["name"] == "tiny_resnet" and card["channels"] == 1 and card["value_range"] == [0.0, 255.0]
    assert card["inputs"] == [{"name": "image", "dtype": "float32", "shape": [None, None, None, 1],
                               "value_range": [0.0, 255.0]}]
    assert card["outputs"][0]["name"] == "denoised"
    assert set(card["saved_model"]["signatures"]) == {"serving_default", "denoise_uint8"}
    tflite = card["tflite"]["model.tflite"]
    assert tflite["input"]["name"] == "serving_default_image:0" and tflite["input"]["shape_signature"] == [1, -1, -1, 1]
    assert tflite["signature"] == {"serving_default": {"inputs": ["image"], "outputs": ["denoised"]}}
    assert card["training_config"] == {"model": TINY_RESNET} and card["model_config"] == TINY_RESNET
    assert card["parameters"] == model.count_params() and card["flops_per_pixel"] > 0 and card["bias_free"] is True
    assert all(card["files"][name] > 0 for name in ("model.keras", "model.tflite", "model_fp16.tflite", "saved_model/"))
    assert card["files"]["model_fp16.tflite"] < card["files"]["model.tflite"]
    assert card["verification"]["passed"]


def test_tflite_is_builtin_only(resnet_export):
    from ai_edge_litert import schema_py_generated as schema

    from bfcnn.export import tflite_ops

    builtin = set(vars(schema.BuiltinOperator)) - {"CUSTOM"}
    for name in ("model.tflite", "model_fp16.tflite"):
        ops = tflite_ops((resnet_export[1] / name).read_bytes())
        assert "CONV_2D" in ops and set(ops) <= builtin, ops
        assert not any(op.startswith("Flex") for op in ops)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (1, 3, 200, 1), (1, 200, 3, 1), (1, 17, 31, 1)])
def test_odd_sizes_through_tflite(resnet_export, shape):
    from bfcnn.lite import TFLiteDenoiser

    model, out, _ = resnet_export
    images = noisy_images(shape)
    np.testing.assert_allclose(TFLiteDenoiser(out / "model.tflite")(images), keras_out(model, images), atol=1e-3, rtol=0)


def test_uint8_signature_rounds_half_to_even_and_clips(tmp_path):
    import keras
    import tensorflow as tf

    from bfcnn.export import write_saved_model

    # 2.5 x - 100 covers [-100, 537.5] and hits .5 ties on every odd x.
    model = keras.Sequential([keras.Input((None, None, 1)), keras.layers.Rescaling(2.5, offset=-100.0)])
    write_saved_model(model, tmp_path / "saved_model")
    loaded = tf.saved_model.load(str(tmp_path / "saved_model"))
    pixels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    out = loaded.signatures["denoise_uint8"](image=tf.constant(pixels))["denoised"].numpy()
    assert out.dtype == np.uint8
    expected = np.clip(np.round(2.5 * pixels.astype(np.float64) - 100.0), 0, 255)  # numpy rounds half to even
    np.testing.assert_array_equal(out, expected)
    assert out[0, 2, 11, 0] == 8 and out[0, 2, 9, 0] == 2  # x = 43: 7.5 -> 8; x = 41: 2.5 -> 2
    floats = loaded.signatures["serving_default"](image=tf.constant(pixels.astype(np.float32)))["denoised"].numpy()
    assert floats.min() == -100.0 and floats.max() == 537.5  # the float signature does not clip


def test_failed_verification_leaves_no_output(resnet_export, tmp_path):
    from bfcnn.export import VerificationError, export_model

    model = resnet_export[0]
    with pytest.raises(VerificationError, match="verification failed") as caught:
        export_model(model, tmp_path / "out", to_tflite=False, tolerance=-1.0, log=None)
    assert not caught.value.report["passed"]
    assert list(tmp_path.iterdir()) == []  # neither the output nor the temporary folder
    # A previous export in place survives a failed re-export untouched.
    export_model(model, tmp_path / "out", to_tflite=False, log=None)
    card = (tmp_path / "out" / "model_card.json").read_text()
    with pytest.raises(VerificationError):
        export_model(model, tmp_path / "out", to_tflite=False, tolerance=-1.0, log=None)
    assert (tmp_path / "out" / "model_card.json").read_text() == card
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_quantized_file_beyond_its_margin_fails(resnet_export, tmp_path):
    """A quantized file is held to its PSNR margin: with a margin no file can meet, the export fails."""
    from bfcnn.export import VerificationError, export_model

    with pytest.raises(VerificationError, match="verification failed for model_fp16.tflite;") as caught:
        export_model(resnet_export[0], tmp_path / "out", quantize=("fp16",), psnr_margins={"fp16": -1.0}, log=None)
    (result,) = [r for r in caught.value.report["results"] if r["artifact"] == "model_fp16.tflite"]
    assert not result["passed"] and result["limit"].startswith("PSNR loss <= -1 dB, ")
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_replace_a_folder_that_is_not_an_export(resnet_export, tmp_path):
    from bfcnn.export import ExportError, export_model

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "precious.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not empty"):
        export_model(resnet_export[0], tmp_path / "run", to_tflite=False, log=None)
    assert (tmp_path / "run" / "precious.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_unsupported_op_is_named(tmp_path):
    import keras
    import tensorflow as tf

    from bfcnn.export import UnsupportedOpsError, export_model

    class Bessel(keras.layers.Layer):
        def call(self, x):
            return x + 0.0 * tf.math.bessel_i0e(x)

    inputs = keras.Input((None, None, 1))
    model = keras.Model(inputs, Bessel()(inputs))
    with pytest.raises(UnsupportedOpsError, match="BesselI0e") as caught:
        export_model(model, tmp_path / "out", log=None)
    assert caught.value.ops == ["BesselI0e"]
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments(tmp_path):
    from bfcnn.export import ExportError, export_model

    with pytest.raises(ExportError, match="unknown quantization 'int4'"):
        export_model("unused", tmp_path / "o", quantize=["int4"])
    with pytest.raises(ExportError, match="representative"):
        export_model("unused", tmp_path / "o", quantize=["int8"])
    with pytest.raises(ExportError, match="not found"):
        export_model(str(tmp_path / "missing"), tmp_path / "o")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportError, match="looked for model.keras"):
        export_model(str(tmp_path / "empty"), tmp_path / "o")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def make_checkpoint_run(directory, model):
    """A training run folder as the trainer leaves it mid-training: config.yaml and checkpoints only."""
    import tensorflow as tf
    import yaml

    directory.mkdir(parents=True)
    (directory / "config.yaml").write_text(yaml.safe_dump({"model": TINY_RESNET}))
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model), str(directory / "checkpoints"), 3)
    manager.save(checkpoint_number=2)
    return directory


def test_load_run_folder_from_checkpoint(resnet_export, tmp_path):
    from bfcnn.export import ExportError, load_for_export

    model = resnet_export[0]
    run = make_checkpoint_run(tmp_path / "run", model)
    loaded, config, source = load_for_export(run)
    assert source.endswith("ckpt-2") and config["model"]["filters"] == 8 and config["train"]["steps"] > 0
    images = noisy_images((1, 9, 13, 1))
    np.testing.assert_allclose(keras_out(loaded, images), keras_out(model, images), atol=1e-4)
    with pytest.raises(ExportError, match="model.keras"):
        load_for_export(run, weights="final")
    (run / "config.yaml").rename(tmp_path / "elsewhere.yaml")
    with pytest.raises(ExportError, match="--pipeline-config"):
        load_for_export(run)
    loaded, config, _ = load_for_export(run, pipeline_config=tmp_path / "elsewhere.yaml")
    np.testing.assert_allclose(keras_out(loaded, images), keras_out(model, images), atol=1e-4)


def test_cli_exit_codes(resnet_export, tmp_path, monkeypatch, capsys):
    import bfcnn.export
    from bfcnn.export import main

    run = make_checkpoint_run(tmp_path / "run", resnet_export[0])
    (run / "config.yaml").rename(tmp_path / "pipeline.yaml")
    assert main(["--model-directory", str(tmp_path / "missing"), "--output-directory", str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["--model-directory", str(run), "--output-directory", str(tmp_path / "o"),
                 "--quantize", "int8"]) == 2
    assert "--representative-dir" in capsys.readouterr().err
    # The older flags: a checkpoint directory plus the pipeline config to build the model from.
    assert main(["--checkpoint-directory", str(run), "--pipeline-config", str(tmp_path / "pipeline.yaml"),
                 "--output-directory", str(tmp_path / "o")]) == 0
    card = json.loads((tmp_path / "o" / "model_card.json").read_text())
    assert card["name"] == "run" and card["model_config"]["type"] == "resnet" and card["verification"]["passed"]
    assert "saved_model:denoise_uint8" in capsys.readouterr().out

    real_verify = bfcnn.export.verify

    def failing_verify(*args, **kwargs):
        report = real_verify(*args, **kwargs)
        report["results"][0]["passed"] = report["passed"] = False
        return report

    monkeypatch.setattr(bfcnn.export.exporter, "verify", failing_verify)
    assert main(["--checkpoint-directory", str(run), "--pipeline-config", str(tmp_path / "pipeline.yaml"),
                 "--output-directory", str(tmp_path / "o2")]) == 1
    assert "verification failed" in capsys.readouterr().err and not (tmp_path / "o2").exists()
    with pytest.raises(SystemExit) as exit_info:
        main(["--model-directory", str(run), "--output-directory", str(tmp_path / "o3"), "--quantize", "int4"])
    assert exit_info.value.code == 2


@pytest.mark.slow
def test_cli_subprocess(resnet_export, tmp_path):
    """`python -m bfcnn.export` as a user runs it, on a model.keras folder, with TFLite."""
    model = resnet_export[0]
    (tmp_path / "run").mkdir()
    model.save(tmp_path / "run" / "model.keras")
    command = [sys.executable, "-m", "bfcnn.export", "--model-directory", str(tmp_path / "run"),
               "--output-directory", str(tmp_path / "out"), "--to-tflite"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "model.tflite" in result.stdout and (tmp_path / "out" / "model.tflite").exists()
    result = subprocess.run([sys.executable, "-m", "bfcnn.export", "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and "--checkpoint-directory" in result.stdout


@pytest.mark.slow
def test_round_trip_multiscale(tmp_path):
    import tensorflow as tf

    import bfcnn
    from bfcnn.export import export_model
    from bfcnn.lite import TFLiteDenoiser

    from bfcnn.export import runtime_sized_tensors

    model = fit_a_few_steps(bfcnn.build_model(TINY_MULTISCALE))
    report = export_model(model, tmp_path / "out", log=None)
    assert report["passed"]
    # pads, crops and lifts are written so LiteRT sizes every tensor ahead (XNNPACK keeps them all)
    assert runtime_sized_tensors((tmp_path / "out" / "model.tflite").read_bytes()) == []
    denoiser = TFLiteDenoiser(tmp_path / "out" / "model.tflite")
    for shape in [(1, 1, 1, 3), (1, 3, 200, 3), (1, 33, 17, 3)]:
        images = noisy_images(shape)
        np.testing.assert_allclose(denoiser(images), keras_out(model, images), atol=1e-3, rtol=0)
    serve = tf.saved_model.load(str(tmp_path / "out" / "saved_model")).signatures["serving_default"]
    images = noisy_images((2, 21, 10, 3))
    np.testing.assert_allclose(serve(image=tf.constant(images))["denoised"].numpy(), keras_out(model, images),
                               atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="3 channels"):
        denoiser(np.zeros((8, 8, 1), np.float32))


@pytest.mark.slow
@pytest.mark.parametrize("chroma", ["shared", "guided"])
def test_round_trip_opponent(tmp_path, chroma):
    """A color model made of a gray pyramid network goes to builtin-only TFLite, every tensor sized ahead."""
    import bfcnn
    from bfcnn.export import export_model, runtime_sized_tensors
    from bfcnn.lite import TFLiteDenoiser

    from bfcnn.export import fp32_tolerance

    model = fit_a_few_steps(bfcnn.build_model({"type": "opponent", "chroma": chroma,
                                               "inner": {**TINY_MULTISCALE, "channels": 1}}))
    report = export_model(model, tmp_path / "out", log=None)
    assert report["passed"]
    assert runtime_sized_tensors((tmp_path / "out" / "model.tflite").read_bytes()) == []
    denoiser = TFLiteDenoiser(tmp_path / "out" / "model.tflite")
    for shape in [(1, 1, 1, 3), (1, 3, 40, 3), (1, 33, 17, 3)]:
        images = noisy_images(shape)
        limit, _ = fp32_tolerance(model, images)  # the limit export holds it to (this net's output reaches 1e3)
        np.testing.assert_allclose(denoiser(images), keras_out(model, images), atol=limit, rtol=0)
    # the networks without the image-wide lift, so tiles are lifted by the whole image's mean
    card = json.loads((tmp_path / "out" / "model_card.json").read_text())
    entry = card["tflite"]["model_lifted.tflite"]
    assert entry["chroma_offset"] == 1.0 and entry["max_abs_difference"] >= 0 and "model_lifted.tflite" in card["sha256"]
    assert denoiser.chroma_offset == 1.0
    image = np.zeros((70, 90, 3), np.float32)
    image[:, :45] = (40, 30, 60)
    image[:, 45:] = (220, 200, 180)
    image += 20 * np.random.default_rng(3).standard_normal(image.shape).astype(np.float32)
    keras_tiled = bfcnn.denoise(image, model=model, tile_size=32, overlap=16)  # lifted by the whole image too
    limit, _ = fp32_tolerance(model, image)
    np.testing.assert_allclose(denoiser.denoise(image, tile_size=32, overlap=16), keras_tiled, atol=4 * limit, rtol=0)
    assert export_model(model, tmp_path / "out", log=None)["passed"]  # the lifted file is an export's own


def test_round_trip_unshuffled_resnet(tmp_path):
    """Pixel (un)shuffle goes to builtin SPACE_TO_DEPTH / DEPTH_TO_SPACE and handles odd sizes."""
    import bfcnn
    from bfcnn.export import export_model, runtime_sized_tensors, tflite_ops
    from bfcnn.lite import TFLiteDenoiser

    model = fit_a_few_steps(bfcnn.build_model({"type": "resnet", "channels": 1, "filters": 8, "blocks": 1,
                                               "downsample": 2}))
    report = export_model(model, tmp_path / "out", log=None)
    assert report["passed"]
    ops = tflite_ops((tmp_path / "out" / "model.tflite").read_bytes())
    assert {"SPACE_TO_DEPTH", "DEPTH_TO_SPACE"} <= set(ops) and not any(op.startswith("Flex") for op in ops), ops
    assert runtime_sized_tensors((tmp_path / "out" / "model.tflite").read_bytes()) == []
    assert [r["runtime_sized_tensors"] for r in report["verification"]["results"] if r["artifact"] == "model.tflite"] == [0]
    denoiser = TFLiteDenoiser(tmp_path / "out" / "model.tflite")
    for shape in [(1, 1, 1, 1), (1, 3, 200, 1), (1, 33, 17, 1)]:
        images = noisy_images(shape)
        np.testing.assert_allclose(denoiser(images), keras_out(model, images), atol=1e-3, rtol=0)
    # the card says the model's shift period; the runner's tiles follow it and give the whole image's result
    assert json.loads((tmp_path / "out" / "model_card.json").read_text())["shift_period"] == denoiser.shift_period == 2
    image = noisy_images((1, 101, 133, 1))[0]
    np.testing.assert_allclose(denoiser.denoise(image, tile_size=64, overlap=32), denoiser(image), atol=1e-3, rtol=0)
    assert TFLiteDenoiser(tmp_path / "out" / "model.tflite", shift_period=3).shift_period == 3


@pytest.mark.slow
def test_int8_within_margin_on_photos(tmp_path):
    """A briefly trained gray denoiser: int8 loses less than its stated margin on scikit-image photos."""
    import keras
    from PIL import Image
    from skimage import data

    import bfcnn
    from bfcnn.evaluation import psnr
    from bfcnn.export import PSNR_MARGINS_DB, export_model
    from bfcnn.lite import TFLiteDenoiser

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    train = [data.coins(), data.moon(), data.page(), data.text(), data.brick()]
    patches = np.stack([im[y : y + 32, x : x + 32] for im in train
                        for y, x in zip(rng.integers(0, im.shape[0] - 32, 128), rng.integers(0, im.shape[1] - 32, 128))]
                       )[..., None].astype("float32")
    noisy = patches + rng.uniform(5, 50, (len(patches), 1, 1, 1)) * rng.standard_normal(patches.shape)
    model = bfcnn.build_model({"type": "resnet", "channels": 1, "filters": 16, "blocks": 2, "batch_norm": False})
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="mse")
    model.fit(noisy.astype("float32"), patches, batch_size=16, epochs=10, verbose=0)  # 400 steps: about +4 dB
    (tmp_path / "photos").mkdir()
    for i, image in enumerate(train):
        Image.fromarray(image).save(tmp_path / "photos" / f"{i}.png")
    report = export_model(model, tmp_path / "out", quantize=("none", "int8"), representative_dir=tmp_path / "photos",
                          log=None)
    assert report["passed"]
    fp32, int8 = (TFLiteDenoiser(tmp_path / "out" / name) for name in ("model.tflite", "model_int8.tflite"))
    for photo in (data.camera(), data.astronaut()[..., 1], data.coffee()[..., 0]):  # not used for calibration
        clean = photo[:200, :240, None]
        noisy = (clean + 25 * rng.standard_normal(clean.shape)).astype("float32")
        assert psnr(clean, fp32(noisy)) > psnr(clean, noisy) + 3  # it does denoise
        assert psnr(clean, int8(noisy)) >= psnr(clean, fp32(noisy)) - PSNR_MARGINS_DB["int8"]


NON_LOCAL_MODELS = {
    "resnet_embedded_gaussian": {**TINY_RESNET, "non_local_after": [0], "non_local_mode": "embedded_gaussian"},
    "resnet_dot_product": {**TINY_RESNET, "non_local_after": [0], "non_local_mode": "dot_product"},
    "multiscale_dot_product": {**TINY_MULTISCALE, "non_local_levels": [1], "non_local_mode": "dot_product"},
}


def activate_non_local(model, seed=0):
    """Gives every NonLocalBlock a non-zero output scale (it starts at zero: the block is the
    identity) and shrinks the heads so the model, like a trained denoiser, stays near 0-255.

    Returns the largest change the non-local branches make to the output, on a test image.
    """
    rng = np.random.default_rng(seed)
    blocks = [layer for layer in model._flatten_layers() if type(layer).__name__ == "NonLocalBlock"]
    assert blocks
    for layer in model.layers:
        if layer.name.endswith("head"):
            layer.kernel.assign(layer.kernel * 0.02)
    images = noisy_images((1, 23, 30, model.input_shape[-1]), seed=seed)
    identity = keras_out(model, images)
    for block in blocks:
        block.norm.gamma.assign(rng.uniform(0.5, 1.0, block.norm.gamma.shape).astype("float32"))
    active = keras_out(model, images)
    assert np.max(np.abs(active)) < 600.0
    return float(np.max(np.abs(active - identity)))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(NON_LOCAL_MODELS))
def test_non_local_models_to_builtin_tflite(name):
    """Non-local blocks (batched matmul, max pool, softmax) inside the resnet and multiscale
    backbones convert to builtin ops and match Keras within 1e-4 on the 0-255 scale."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.interpreter import Interpreter

    import bfcnn
    from bfcnn.export import tflite_ops, to_tflite

    config = NON_LOCAL_MODELS[name]
    model = bfcnn.build_model(config)
    assert activate_non_local(model) > 1.0  # the branch really changes the output
    content = to_tflite(model)
    assert "BATCH_MATMUL" in tflite_ops(content)
    assert set(tflite_ops(content)) <= set(vars(schema.BuiltinOperator)) - {"CUSTOM"}
    interpreter = Interpreter(model_content=content)
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    channels = config["channels"]
    for shape in [(1, 1, 1, channels), (1, 3, 200, channels), (1, 37, 29, channels)]:
        images = noisy_images(shape)
        interpreter.resize_tensor_input(inp["index"], list(shape), strict=True)
        interpreter.allocate_tensors()
        interpreter.set_tensor(inp["index"], images)
        interpreter.invoke()
        expected = keras_out(model, images)
        assert np.max(np.abs(interpreter.get_tensor(out["index"]) - expected)) <= 1e-4 * max(
            1.0, np.max(np.abs(expected)) / 255.0)


TINY_N3NET = {"type": "n3net", "channels": 1, "stages": 2, "depth": 2, "filters": 8, "k": 2, "embedding_depth": 1,
              "embedding_filters": 8, "patch_size": 4, "stride": 2, "window": 5}


@pytest.mark.slow
def test_n3net_to_builtin_tflite():
    """N3 blocks (kNN over patch windows, gathers, batched matrix products) convert to builtin ops.

    A tiny untrained N3Net's output reaches ~1,000 and its neighbour weights are sensitive, so
    TFLite matches Keras to a relative 1e-5 (absolute 1e-3 to 2e-3), not to the 1e-3 absolute
    of convolutional models.
    """
    from ai_edge_litert import schema_py_generated as schema

    import bfcnn
    from bfcnn.export import UnsupportedOpsError, tflite_ops, to_tflite
    from bfcnn.layers.n3 import queries_in_one_pass
    from bfcnn.lite import TFLiteDenoiser

    model = bfcnn.build_model(TINY_N3NET)
    content = to_tflite(model)
    assert set(tflite_ops(content)) <= set(vars(schema.BuiltinOperator)) - {"CUSTOM"}
    assert "WHILE" not in tflite_ops(content)  # traced in one pass (queries_in_one_pass)
    with queries_in_one_pass(False):  # the caller's choice stands: the loop, as before
        assert "WHILE" in tflite_ops(to_tflite(model))
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "n3net.tflite"
        path.write_bytes(content)
        denoiser = TFLiteDenoiser(path)
        for shape in [(1, 37, 29, 1), (1, 3, 200, 1), (1, 1, 1, 1)]:
            images = noisy_images(shape)
            expected = keras_out(model, images)
            assert np.max(np.abs(denoiser(images) - expected)) <= 1e-5 * max(np.max(np.abs(expected)), 255.0)
    # LiteRT aborts the process allocating the int8 graph of an N3 block: refused up front.
    with pytest.raises(UnsupportedOpsError, match="int8 graph of its N3 block"):
        to_tflite(model, "int8", [noisy_images((16, 16, 1))])



def test_int8_export_of_an_n3net_is_refused_before_any_work(tmp_path, monkeypatch):
    """The refusal came after the SavedModel, the .keras file and the float32 TFLite (10 s)."""
    from PIL import Image

    import bfcnn
    import bfcnn.export
    from bfcnn.export import UnsupportedOpsError, export_model

    def no_work(*args, **kwargs):
        raise AssertionError("the export started working before refusing int8")

    monkeypatch.setattr(bfcnn.export.exporter, "write_saved_model", no_work)
    monkeypatch.setattr(bfcnn.export.exporter, "_convert", no_work)
    (tmp_path / "photos").mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50), dtype=np.uint8)).save(tmp_path / "photos/a.png")
    with pytest.raises(UnsupportedOpsError, match="int8 graph of its N3 block"):
        export_model(bfcnn.build_model(TINY_N3NET), tmp_path / "out", quantize=["int8"],
                     representative_dir=tmp_path / "photos", log=None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]


@pytest.mark.slow
def test_fixed_size_export_of_an_n3net_is_sized_ahead_and_verified(tmp_path, capsys):
    """`--tflite-size`: every shape known when converting, so the N3 block's loop and run-time
    shapes are gone; verification runs the file the way TFLiteDenoiser does (tiled and padded),
    and so does its reference. int8 stays refused: LiteRT aborts on the block's int8 graph."""
    import bfcnn
    from bfcnn.export import main, runtime_sized_tensors, tflite_ops

    model = fit_a_few_steps(bfcnn.build_model(TINY_N3NET))
    # Shrinks each stage's last convolution so the output stays near 0-255 like a trained denoiser's
    # (as test_round_trip_n3net_and_non_local does): untrained, this net's float32 noise in tiles at
    # the shift period's offsets reached 5.3e-3 against a limit of 4.3e-3 (n3net_gray: 6.4e-4 / 1.3e-3).
    for layer in model.layers:
        if layer.name.endswith(f"conv{TINY_N3NET['depth'] - 1}"):
            layer.conv.kernel.assign(layer.conv.kernel * 0.05)
    model.save(tmp_path / "n3.keras")
    out = tmp_path / "out"
    assert main(["--model-directory", str(tmp_path / "n3.keras"), "--output-directory", str(out),
                 "--quantize", "none", "fp16", "--tflite-size", "96", "112"]) == 0
    card = json.loads((out / "model_card.json").read_text())
    for name in ("model.tflite", "model_fp16.tflite"):
        content = (out / name).read_bytes()
        assert "WHILE" not in tflite_ops(content) and runtime_sized_tensors(content) == []
        assert card["tflite"][name]["input"]["shape_signature"] == [1, 96, 112, 1]
    fp32 = next(r for r in card["verification"]["results"] if r["artifact"] == "model.tflite")
    assert fp32["passed"] and fp32["input_size"] == [96, 112] and fp32["runtime_sized_tensors"] == 0
    assert abs(fp32["psnr_change_whole_image"]) <= 0.2  # the tiles cost nothing measurable
    capsys.readouterr()
    from PIL import Image

    (tmp_path / "photos").mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50), dtype=np.uint8)).save(tmp_path / "photos/a.png")
    assert main(["--model-directory", str(tmp_path / "n3.keras"), "--output-directory", str(tmp_path / "o2"),
                 "--quantize", "int8", "--representative-dir", str(tmp_path / "photos"), "--tflite-size", "96"]) == 2
    assert "int8" in capsys.readouterr().err and not (tmp_path / "o2").exists()
    with pytest.raises(SystemExit) as exit_info:
        main(["--model-directory", str(tmp_path / "n3.keras"), "--output-directory", str(tmp_path / "o2"),
              "--tflite-size", "96", "112", "3"])
    assert exit_info.value.code == 2 and "N or H W" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--model-directory", str(tmp_path / "n3.keras"), "--output-directory", str(tmp_path / "o2"),
              "--tflite-size", "0"])
    assert "--tflite-size 0 is too small: at least 96" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("name", ["n3net", "resnet_embedded_gaussian", "multiscale_dot_product"])
def test_round_trip_n3net_and_non_local(name, tmp_path):
    """Built, trained two steps, exported, every artifact reloaded: outputs match the model."""
    import keras
    import tensorflow as tf

    import bfcnn
    from bfcnn.export import export_model, sample_image
    from bfcnn.lite import TFLiteDenoiser

    config = TINY_N3NET if name == "n3net" else NON_LOCAL_MODELS[name]
    keras.utils.set_random_seed(0)
    model = fit_a_few_steps(bfcnn.build_model(config))
    if name == "n3net":
        # Shrinks each stage's last convolution so the output stays near 0-255 like a trained
        # denoiser's: an untrained one reaches ~1,000, where float32 rounding alone is ~1e-4.
        for layer in model.layers:
            if layer.name.endswith(f"conv{config['depth'] - 1}"):
                layer.conv.kernel.assign(layer.conv.kernel * 0.05)
    else:
        assert activate_non_local(model, seed=1) > 1.0
    channels = config["channels"]
    report = export_model(model, tmp_path / "out", config={"model": config}, image=sample_image(channels, (40, 53)),
                          log=None)
    assert report["passed"]
    out = tmp_path / "out"
    card = report["model_card"]
    assert card["model_config"] == config and card["bias_free"] is False  # N3's log T, non-local: not homogeneous
    images = noisy_images((1, 29, 22, channels), seed=3)
    expected = keras_out(model, images)
    tolerance = 1e-3 * max(1.0, np.max(np.abs(expected)) / 255.0)
    reloaded = keras.models.load_model(out / "model.keras")
    np.testing.assert_allclose(keras_out(reloaded, images), expected, atol=tolerance, rtol=0)
    loaded = tf.saved_model.load(str(out / "saved_model"))
    served = loaded.signatures["serving_default"](image=tf.constant(images))["denoised"].numpy()
    np.testing.assert_allclose(served, expected, atol=tolerance, rtol=0)
    as_uint8 = loaded.signatures["denoise_uint8"](image=tf.constant(np.clip(images, 0, 255).astype(np.uint8)))
    assert as_uint8["denoised"].dtype == tf.uint8
    np.testing.assert_allclose(TFLiteDenoiser(out / "model.tflite")(images), expected, atol=tolerance, rtol=0)


def test_console_scripts_are_the_library_mains():
    """`bfcnn-export` and `bfcnn-denoise` are installed and thin over the library's `main`."""
    from importlib.metadata import PackageNotFoundError, distribution

    import bfcnn.denoise
    import bfcnn.export

    try:
        scripts = {ep.name: ep for ep in distribution("bfcnn").entry_points if ep.group == "console_scripts"}
    except PackageNotFoundError:
        pytest.skip("bfcnn is not installed (pip install -e .)")
    assert scripts["bfcnn-export"].value == "bfcnn.export:main" and scripts["bfcnn-export"].load() is bfcnn.export.main
    assert scripts["bfcnn-denoise"].load() is bfcnn.denoise.main


def test_unknown_model_or_folder_and_damaged_keras_file_are_named(tmp_path, capsys):
    from bfcnn.export import ExportError, export_model, main

    with pytest.raises(ExportError, match=r"'pyramid_gray_mm' is neither an existing file or folder nor a zoo "
                                          r"model, did you mean 'pyramid_gray_m'\?; zoo models: "):
        export_model("pyramid_gray_mm", tmp_path / "o", log=None)
    (tmp_path / "broken.keras").write_bytes(b"not a zip archive")
    assert main(["--model-directory", str(tmp_path / "broken.keras"), "--output-directory", str(tmp_path / "o")]) == 2
    assert "not a .keras file" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.keras"]


def test_fp32_limit_follows_the_models_own_float32_sensitivity():
    """A model that amplifies float32 rounding gets a proportionally wider fp32 limit, up to the cap."""
    import keras

    from bfcnn.export import (FP32_TOLERANCE, FP32_TOLERANCE_CAP, SENSITIVITY_FACTOR, float32_sensitivity,
                              fp32_tolerance)

    noisy = noisy_images((31, 17, 1))
    identity = keras.Sequential([keras.Input((None, None, 1)), keras.layers.Rescaling(1.0)])
    assert 0.0 < float32_sensitivity(identity, noisy) <= 2 * 2 * np.spacing(np.float32(275.0))
    assert fp32_tolerance(identity, noisy) == (FP32_TOLERANCE, float32_sensitivity(identity, noisy))
    assert fp32_tolerance(identity, noisy, tolerance=1e-6)[0] < FP32_TOLERANCE  # a given limit is kept

    gain = keras.Sequential([keras.Input((None, None, 1)), keras.layers.Rescaling(500.0)])
    limit, sensitivity = fp32_tolerance(gain, noisy)
    assert sensitivity > 100 * float32_sensitivity(identity, noisy)
    assert limit == pytest.approx(SENSITIVITY_FACTOR * sensitivity) and limit > FP32_TOLERANCE
    steep = keras.Sequential([keras.Input((None, None, 1)), keras.layers.Rescaling(1e6)])
    assert fp32_tolerance(steep, noisy)[0] == FP32_TOLERANCE_CAP


def test_verification_reports_the_models_float32_sensitivity(resnet_export, tmp_path):
    from bfcnn.export import FP32_TOLERANCE, export_model, format_verification

    report = export_model(resnet_export[0], tmp_path / "out", to_tflite=False, log=None)["verification"]
    # (Wider when the untrained model's output runs beyond 255, in proportion.)
    assert report["fp32_tolerance"] >= max(FP32_TOLERANCE, 2 * report["float32_sensitivity"]) > 0.0
    assert "float32 ulps" in format_verification(report)


def test_runtime_sized_tensors_are_found():
    """A slice whose end is computed from the input's shape is sized only while LiteRT runs."""
    import tensorflow as tf

    from bfcnn.export import runtime_sized_tensors

    def convert(fn):
        f = tf.function(fn, input_signature=[tf.TensorSpec([1, None, None, 1], tf.float32)])
        return tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f).convert()

    def computed_end(x):
        half = tf.shape(x)[1] // 2
        return tf.slice(x, [0, 0, 0, 0], tf.stack([-1, half, -1, -1])) * 2.0

    assert runtime_sized_tensors(convert(lambda x: x[:, 1:] * 2.0)) == []
    assert len(runtime_sized_tensors(convert(computed_end))) >= 2  # the slice and the product after it


def test_a_zip_that_is_not_a_keras_archive_is_named(tmp_path, capsys):
    import zipfile

    from bfcnn.export import main

    with zipfile.ZipFile(tmp_path / "hello.keras", "w") as archive:
        archive.writestr("hello.txt", "hi")
    assert main(["--model-directory", str(tmp_path / "hello.keras"), "--output-directory", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "not a .keras file" in err and "config.json' in the archive" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hello.keras"]


@pytest.mark.parametrize("damage", ["truncated index", "missing data"])
def test_a_damaged_checkpoint_is_named(resnet_export, tmp_path, capsys, damage):
    from bfcnn.export import main

    run = make_checkpoint_run(tmp_path / "run", resnet_export[0])
    if damage == "truncated index":
        (run / "checkpoints" / "ckpt-2.index").write_bytes(b"cut")
    else:
        (run / "checkpoints" / "ckpt-2.data-00000-of-00001").unlink()
    args = ["--model-directory", str(run), "--weights", "checkpoint", "--output-directory", str(tmp_path / "o")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"checkpoint {run / 'checkpoints' / 'ckpt-2'} is damaged" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_unusable_output_directories_are_refused_before_any_work(tmp_path, monkeypatch, capsys):
    """A file in the output path, or a folder of other files: refused before the model is even loaded."""
    import bfcnn.export
    from bfcnn.export import ExportError, export_model, main

    def no_work(*args, **kwargs):
        raise AssertionError("the export started")

    monkeypatch.setattr(bfcnn.export.exporter, "resolve_model", no_work)
    (tmp_path / "file").write_text("")
    assert main(["--model-directory", "anything.keras", "--output-directory", str(tmp_path / "file" / "sub")]) == 2
    assert f"lies under {str(tmp_path / 'file')!r}, which exists and is not a directory" in capsys.readouterr().err
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "precious.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not empty and holds no bfcnn export"):
        export_model("anything.keras", tmp_path / "run", log=None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "run"]


@pytest.mark.parametrize("flags, message", [
    (["--tolerance", "-1"], "--tolerance needs a finite number > 0"),
    (["--tolerance", "nan"], "--tolerance needs a finite number > 0"),
    (["--pipeline-config", "nowhere.yaml"], "--pipeline-config nowhere.yaml: no such file"),
    # it was used only with int8 and otherwise ignored (exit 0)
    (["--representative-dir", "photos"], "--representative-dir photos: the images are used for int8 calibration "
                                         "only; add --quantize int8 or leave it out"),
    (["--representative-dir", "photos", "--quantize", "none", "fp16"], "for int8 calibration only"),
    # "must be an integer >= 1", though the least size is 96
    (["--tflite-size", "0"], "--tflite-size 0 is too small: at least 96 (the file runs in tiles overlapping by 48"),
    (["--tflite-size", "-5", "100"], "--tflite-size -5 x 100 is too small: at least 96"),
    (["--tflite-size", "big"], "argument --tflite-size: must be an integer >= 96, got 'big'"),
])
def test_cli_refuses_bad_arguments_before_any_work(tmp_path, capsys, flags, message):
    from bfcnn.export.__main__ import parse_args

    with pytest.raises(SystemExit) as stop:
        parse_args(["--model-directory", "resnet_gray_s", "--output-directory", str(tmp_path / "o"), *flags])
    assert stop.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_refuses_to_replace_an_export_that_holds_other_files(resnet_export, tmp_path):
    """Replacing a previous export replaces the whole folder: files it did not write are refused, kept."""
    import shutil

    from bfcnn.export import ExportError, export_model

    out = tmp_path / "out"
    shutil.copytree(resnet_export[1], out)
    (out / "NOTES.txt").write_text("keep me")
    (out / "android").mkdir()
    with pytest.raises(ExportError, match=r"other files \(NOTES.txt, android\), which replacing it would delete"):
        export_model(resnet_export[0], out, to_tflite=False, log=None)
    assert (out / "NOTES.txt").read_text() == "keep me" and (out / "android").is_dir()
    assert (out / "model.tflite").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_float32_tflite_always_comes_with_quantized_files_and_empty_quantize_is_refused(monkeypatch, tmp_path):
    import bfcnn.export
    from bfcnn.export import ExportError, export_model, main

    modes = []

    def record(model, mode, samples, input_size=None):
        modes.append(mode)
        raise ExportError("stop here")

    monkeypatch.setattr(bfcnn.export.exporter, "_convert", record)
    model = bfcnn.export.resolve_model("resnet_gray_s", None, "auto", None)[0]
    with pytest.raises(ExportError, match="stop here"):
        export_model(model, tmp_path / "o", quantize=("fp16",), verify_artifacts=False, log=None)
    assert modes == ["none"]  # model.tflite first, then model_fp16.tflite
    with pytest.raises(ExportError, match="quantize is empty; give one or more of"):
        export_model(model, tmp_path / "o", quantize=(), log=None)
    # --tflite-size alone asks for TFLite files, as --quantize does
    calls = []
    monkeypatch.setattr(bfcnn.export.exporter, "export_model", lambda *args, **kwargs: calls.append(kwargs))
    assert main(["--model-directory", "resnet_gray_s", "--output-directory", str(tmp_path / "o"),
                 "--tflite-size", "96"]) == 0
    assert calls[0]["to_tflite"] and calls[0]["tflite_size"] == (96, 96)
    assert not (tmp_path / "o").exists()


def test_tflite_export_without_litert_is_refused_before_any_work(monkeypatch, tmp_path):
    import bfcnn.export
    from bfcnn.export import ExportError, export_model

    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)  # import fails
    monkeypatch.setattr(bfcnn.export.exporter, "resolve_model", lambda *args: pytest.fail("the export started"))
    with pytest.raises(ExportError, match="TFLite export needs the LiteRT runtime.*pip install ai-edge-litert"):
        export_model("resnet_gray_s", tmp_path / "o", log=None)
    assert not (tmp_path / "o").exists()


def test_zoo_models_export_with_their_training_config(tmp_path):
    """A zoo entry's card holds the pipeline config it was trained with; the export card gets it."""
    from bfcnn.export import resolve_model
    from bfcnn.zoo import model_info

    _, config, source = resolve_model("resnet_gray_s", None, "auto", None)
    assert source == "zoo:resnet_gray_s" and config["model"] == model_info("resnet_gray_s")["architecture"]


def test_only_a_runs_own_config_is_read_beside_a_keras_file(resnet_export, tmp_path):
    """config.yaml beside model.keras is the run's; beside another .keras file it may be anything's."""
    from bfcnn.export import load_for_export

    model = resnet_export[0]
    folder = tmp_path / "downloads"
    folder.mkdir()
    model.save(folder / "model_v2.keras")
    (folder / "config.yaml").write_text('version: "3"\n')  # not a pipeline config at all
    _, config, _ = load_for_export(folder / "model_v2.keras")
    assert config is None
    run = make_checkpoint_run(tmp_path / "run", model)
    model.save(run / "model.keras")
    model.save(run / "averaged.keras")  # as python -m bfcnn.average writes it
    for name in ("model.keras", "averaged.keras"):
        _, config, _ = load_for_export(run / name)
        assert config["model"]["type"] == "resnet"


# --- review findings (round 2) -------------------------------------------------------------


def test_a_uint8_signature_that_truncates_fails_verification(resnet_export, tmp_path, monkeypatch):
    """max|diff| <= 1 let a flooring `denoise_uint8` pass (half the pixels off by one); now a pixel
    may differ from the rounded float signature only next to a .5 tie."""
    import tensorflow as tf

    from bfcnn.export import verify, write_saved_model

    model = resnet_export[0]
    monkeypatch.setattr(tf, "round", tf.floor)  # the bug: truncation instead of round half to even
    write_saved_model(model, tmp_path / "floor" / "saved_model")
    monkeypatch.undo()
    report = verify(tmp_path / "floor", model, image=sample_image_small())
    (uint8,) = [r for r in report["results"] if r["artifact"] == "saved_model:denoise_uint8"]
    assert uint8["max_abs_diff"] == 1.0 and uint8["pixels_differing_off_tie"] > 100 and not uint8["passed"]
    assert [r["passed"] for r in report["results"] if r["artifact"] != "saved_model:denoise_uint8"] == [True]
    # the real export's uint8 signature: equal to the rounded float signature
    (real,) = [r for r in resnet_export[2]["verification"]["results"] if r["artifact"] == "saved_model:denoise_uint8"]
    assert real["passed"] and real["pixels_differing_off_tie"] == 0


def sample_image_small(channels=1):
    from bfcnn.export import sample_image

    return sample_image(channels, (40, 53))


def test_a_quantized_file_that_does_not_denoise_fails(resnet_export, tmp_path):
    """A PSNR change against the clean image alone passed a file returning its input when the
    Keras model is poor; the quantized output must also lie close to the Keras output."""
    import keras

    from bfcnn.export import FIDELITY_FLOORS_DB, PSNR_MARGINS_DB, to_tflite, verify

    model, out, report = resnet_export
    identity = keras.models.load_model(out / "model.keras")
    for weight in identity.weights:
        weight.assign(np.zeros(weight.shape, "float32"))  # a residual net with zero weights returns its input
    image = sample_image_small()
    assert np.abs(keras_out(identity, image[1][None])[0] - image[1]).max() == 0.0
    (tmp_path / "q").mkdir()
    (tmp_path / "q" / "model_dynamic.tflite").write_bytes(to_tflite(identity, "none"))
    (result,) = verify(tmp_path / "q", model, image=image)["results"]
    assert result["psnr_change"] >= -PSNR_MARGINS_DB["dynamic"]  # what alone let it pass
    assert result["psnr_vs_keras"] < FIDELITY_FLOORS_DB["dynamic"] and not result["passed"]
    # a real fp16 file is far above its floor
    (fp16,) = [r for r in report["verification"]["results"] if r["artifact"] == "model_fp16.tflite"]
    assert fp16["passed"] and fp16["psnr_vs_keras"] >= FIDELITY_FLOORS_DB["fp16"] + 10


@pytest.mark.parametrize("where", ["/proc/bfcnn-no/such", "/sys/bfcnn-no-such"])
def test_an_unwritable_output_is_an_error_not_a_traceback(resnet_export, where, capsys):
    from bfcnn.export import main

    if not Path("/" + where.split("/")[1]).is_dir():
        pytest.skip(f"no /{where.split('/')[1]} here")
    args = ["--model-directory", str(resnet_export[1]), "--output-directory", where]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"error: cannot write the export to {where!r}" in err and "Traceback" not in err
    assert not Path(where).exists()


def test_an_output_found_unwritable_is_refused_before_any_work(tmp_path, monkeypatch):
    import bfcnn.export
    from bfcnn.export import ExportError, export_model

    monkeypatch.setattr(bfcnn.export.exporter, "output_problem", lambda path, folder: f"{path.parent} is not writable")
    monkeypatch.setattr(bfcnn.export.exporter, "resolve_model", lambda *args: pytest.fail("the export started"))
    with pytest.raises(ExportError, match=r"cannot write the export to .*: .* is not writable"):
        export_model("anything.keras", tmp_path / "o", log=None)


def test_a_tflite_size_below_the_least_is_refused(tmp_path, monkeypatch, capsys):
    import bfcnn.export
    from bfcnn.export import MIN_FIXED_SIZE, ExportError, export_model
    from bfcnn.export.__main__ import parse_args
    from bfcnn.lite import DEFAULT_OVERLAP
    from bfcnn.tiling import min_tile_size

    assert MIN_FIXED_SIZE == min_tile_size(DEFAULT_OVERLAP) == 96
    with pytest.raises(SystemExit) as stop:
        parse_args(["--model-directory", "resnet_gray_s", "--output-directory", str(tmp_path / "o"),
                    "--tflite-size", "3", "5"])
    assert stop.value.code == 2 and "--tflite-size 3 x 5 is too small: at least 96" in capsys.readouterr().err
    args = parse_args(["--model-directory", "m", "--output-directory", "o", "--tflite-size", "96"])
    assert args.tflite_size == (96, 96)
    monkeypatch.setattr(bfcnn.export.exporter, "resolve_model", lambda *args: pytest.fail("the export started"))
    for size in (1, (3, 5), (96, 95)):
        with pytest.raises(ExportError, match="too small.*give 96 or more"):
            export_model("anything.keras", tmp_path / "o", tflite_size=size, log=None)
    assert list(tmp_path.iterdir()) == []


def test_a_file_of_one_size_is_held_to_the_whole_image_keras_output(resnet_export, tmp_path):
    """The reference of a fixed-size file is Keras in the same tiles, which tiny tiles spoil alike:
    verification now also compares the file with whole-image Keras."""
    import keras

    from bfcnn.export import FIXED_SIZE_MARGIN_DB, to_tflite, verify

    # a 5 x 5 mean filter: a (poor) denoiser whose zero padding spoils tiles of 3 x 5
    blur = keras.Sequential([keras.Input((None, None, 1)), keras.layers.Conv2D(
        1, 5, padding="same", use_bias=False, kernel_initializer=keras.initializers.Constant(1 / 25))])
    (tmp_path / "small").mkdir()
    (tmp_path / "small" / "model.tflite").write_bytes(to_tflite(blur, input_size=(3, 5)))
    (result,) = verify(tmp_path / "small", blur, image=sample_image_small())["results"]
    assert result["max_abs_diff"] <= 1e-3  # it matches Keras in the same tiles
    assert result["psnr_change_whole_image"] < -FIXED_SIZE_MARGIN_DB and not result["passed"]


def test_sigterm_during_export_removes_the_temporary_folder_and_stale_ones(resnet_export, tmp_path, monkeypatch):
    """SIGTERM ended the process without `finally`, leaving `.out.tmp-*` beside the output; now it
    is an exit (status 143) after the clean-up, and the next export removes what a kill left."""
    import os
    import signal
    import time

    import bfcnn.export
    from bfcnn.export import export_model

    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        pytest.skip("the test runner handles SIGTERM itself")
    (tmp_path / ".out.tmp-abc_1234").mkdir()  # as a killed export leaves it
    (tmp_path / ".out.tmp-abc_1234" / "model.keras").write_text("x")
    keep = [".out.tmp-short", ".other.tmp-abc_1234", ".out.old-abc_1234"]
    for name in keep:
        (tmp_path / name).mkdir()

    def terminated(model, path):
        Path(path).mkdir()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)  # the handler raises here
        pytest.fail("SIGTERM did not stop the export")

    monkeypatch.setattr(bfcnn.export.exporter, "write_saved_model", terminated)
    with pytest.raises(SystemExit) as stop:
        export_model(resnet_export[0], tmp_path / "out", to_tflite=False, log=None)
    assert stop.value.code == 128 + signal.SIGTERM
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


@pytest.mark.slow
def test_sigterm_to_the_command_leaves_nothing(resnet_export, tmp_path):
    import signal
    import time

    command = [sys.executable, "-m", "bfcnn.export", "--model-directory", str(resnet_export[1]),
               "--output-directory", str(tmp_path / "out"), "--quantize", "none", "fp16"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for _ in range(1200):
        if list(tmp_path.glob(".out.tmp-*/saved_model")) or process.poll() is not None:
            break
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert list(tmp_path.iterdir()) == []


def test_a_dynamic_file_that_quantizes_nothing_is_counted_and_warned_about(resnet_export, tmp_path, capsys):
    import bfcnn
    from bfcnn.export import export_model, int8_weight_tensors, to_tflite

    report = export_model(resnet_export[0], tmp_path / "out", quantize=("dynamic",), verify_artifacts=False, log=None)
    tflite = report["model_card"]["tflite"]
    assert tflite["model_dynamic.tflite"]["quantization"] == "dynamic"
    assert tflite["model_dynamic.tflite"]["int8_weight_tensors"] == tflite["model.tflite"]["int8_weight_tensors"] == 0
    assert "warning: model_dynamic.tflite holds no int8 weights" in capsys.readouterr().err
    larger = bfcnn.build_model({**TINY_RESNET, "filters": 16})  # 16 x 16 x 9 weights: quantized
    assert int8_weight_tensors(to_tflite(larger, "dynamic")) > 0


def test_a_folder_named_like_a_zoo_model_is_warned_about(tmp_path, monkeypatch, capsys):
    from bfcnn.export import resolve_model

    monkeypatch.chdir(tmp_path)
    (tmp_path / "resnet_gray_s").mkdir()
    _, _, source = resolve_model("resnet_gray_s", None, "auto", None)
    err = capsys.readouterr().err
    assert source == "zoo:resnet_gray_s"
    assert "warning: 'resnet_gray_s' is both a zoo model and a file or folder here" in err and "./resnet_gray_s" in err
    with pytest.raises(Exception, match="no model"):  # ./name is the folder (an empty one here)
        resolve_model("./resnet_gray_s", None, "auto", None)


def test_card_name_and_sha256_of_a_runs_model_keras(resnet_export, tmp_path):
    from bfcnn.export import export_model
    from bfcnn.io import sha256

    (tmp_path / "myrun").mkdir()
    resnet_export[0].save(tmp_path / "myrun" / "model.keras")
    card = export_model(str(tmp_path / "myrun" / "model.keras"), tmp_path / "out", to_tflite=False,
                        verify_artifacts=False, log=None)["model_card"]
    assert card["name"] == "myrun"  # the run's name, as for the folder itself
    assert card["sha256"]["model.keras"] == sha256(tmp_path / "out" / "model.keras")
    assert "saved_model" not in card["sha256"] and card["files"]["saved_model/"] > 0


def test_a_zoo_file_given_by_path_gets_its_cards_training_config(tmp_path):
    import json as json_module
    import shutil

    from bfcnn.export import resolve_model
    from bfcnn.zoo import model_info

    _, config, _ = resolve_model(str(ROOT / "pretrained" / "resnet_gray_s.keras"), None, "auto", None)
    assert config is not None and config["model"] == model_info("resnet_gray_s")["architecture"]
    for suffix in (".keras", ".json"):
        shutil.copy(ROOT / "pretrained" / f"resnet_gray_s{suffix}", tmp_path / f"resnet_gray_s{suffix}")
    card = json_module.loads((tmp_path / "resnet_gray_s.json").read_text())
    card["files"]["keras"]["sha256"] = "0" * 64  # a card that does not describe this file
    (tmp_path / "resnet_gray_s.json").write_text(json_module.dumps(card))
    assert resolve_model(str(tmp_path / "resnet_gray_s.keras"), None, "auto", None)[1] is None


def test_weights_with_a_keras_file_is_refused_and_an_unused_representative_dir_is_warned_about(
        resnet_export, tmp_path, monkeypatch, capsys):
    """An unused representative_dir: a warning from `export_model`, an argument error from the
    command line (test_cli_refuses_bad_arguments_before_any_work)."""
    import bfcnn.export
    from bfcnn.export import main

    resnet_export[0].save(tmp_path / "some.keras")
    assert main(["--model-directory", str(tmp_path / "some.keras"), "--output-directory", str(tmp_path / "o"),
                 "--weights", "best"]) == 2
    assert "weights='best' (--weights) picks a file of a training run folder" in capsys.readouterr().err
    assert main(["--model-directory", "resnet_gray_s", "--output-directory", str(tmp_path / "o"),
                 "--weights", "final"]) == 2
    assert "is a zoo model" in capsys.readouterr().err

    def stop(*args):
        raise bfcnn.export.ExportError("stopped")

    monkeypatch.setattr(bfcnn.export.exporter, "resolve_model", stop)
    with pytest.raises(bfcnn.export.ExportError, match="stopped"):
        bfcnn.export.export_model("m.keras", tmp_path / "o", to_tflite=True, representative_dir=tmp_path, log=None)
    assert "warning: the representative images" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["some.keras"]


def test_an_interrupted_replacement_puts_the_previous_export_back(resnet_export, tmp_path, monkeypatch):
    import os
    import shutil

    from bfcnn.export.placing import place

    out, new = tmp_path / "out", tmp_path / ".out.tmp-abcd1234"
    shutil.copytree(resnet_export[1], out)
    shutil.copytree(resnet_export[1], new)
    (new / "model_card.json").write_text("{}")
    previous = (out / "model_card.json").read_text()
    real_replace, calls = os.replace, []

    def interrupted(source, target):
        calls.append(source)
        if len(calls) == 2:  # Ctrl-C between moving the old export aside and the new one in
            raise KeyboardInterrupt
        return real_replace(source, target)

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        place(new, out)
    monkeypatch.undo()
    assert (out / "model_card.json").read_text() == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.tmp-abcd1234", "out"]  # no .out.old-*
