"""Exporting a denoiser to SavedModel, `.keras` and builtin-only TFLite, verified before it is kept.

`export_model` writes, into a temporary folder next to the output folder:

    saved_model/        tf.saved_model with two signatures, batch / height / width dynamic:
                        `serving_default`  image float32 [B, H, W, C] 0-255 -> denoised float32
                        `denoise_uint8`    image uint8 [B, H, W, C] -> denoised uint8 (rounded, clipped)
    model.keras         the float32 Keras model
    model.tflite        float32; input `image` float32 [1, H, W, C] 0-255 (H, W set with
                        `resize_tensor_input`), output `denoised` float32 of the same shape
    model_fp16.tflite, model_dynamic.tflite, model_int8.tflite   per requested quantization,
                        with the same float32 signature (they quantize inside)
    model_card.json     name, channels, value range, signatures, training config, parameters,
                        FLOPs per pixel, bias-free, file sizes and sha256, verification results

then reloads every artifact, runs it on a test photograph with sigma 25 noise, compares it
with the Keras model, and moves the folder into place only if all checks pass.
TFLite files contain builtin operators only (no Select TF / Flex ops), so the stock LiteRT
runtime on Android and iOS runs them; an op without a builtin kernel is named in the error.

TensorFlow is imported on first use, so `python -m bfcnn.export --help` is instant.
"""

import datetime
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from bfcnn.errors import BfcnnError, allowed
from bfcnn.evaluation import psnr, to_uint8

QUANTIZATIONS = ("none", "fp16", "dynamic", "int8")
TFLITE_FILES = {
    "none": "model.tflite",
    "fp16": "model_fp16.tflite",
    "dynamic": "model_dynamic.tflite",
    "int8": "model_int8.tflite",
}
# Float32 artifacts must reproduce the Keras output to this many levels of the 0-255 scale:
# far below the 0.5 that could flip a rounded pixel, above float32 reordering noise
# (XNNPACK vs TensorFlow: 1.7e-4 and 2.3e-4 measured on the gray and color flagships).
FP32_TOLERANCE = 1e-3
# Some models amplify float32 rounding: the learned temperature of an N3 block makes its
# neighbour weights a steep function of patch distances, so moving each input value of
# n3net_gray by one float32 rounding step (relative 1e-7) moves its output by 2.2e-3 on the
# 0-255 scale (camera, sigma 50). No float32 runtime can match such a model closer than its
# own rounding noise, so the fp32 limit is the larger of FP32_TOLERANCE and
# SENSITIVITY_FACTOR times that noise (`float32_sensitivity`), and never above
# FP32_TOLERANCE_CAP (a fifth of the 0.5 that flips a rounded pixel; a broken conversion
# is off by whole levels).
SENSITIVITY_ULPS = 2
SENSITIVITY_FACTOR = 2.0
FP32_TOLERANCE_CAP = 0.1
# The most PSNR (dB) a quantized file may lose against the Keras model on the test image
# (camera / astronaut, sigma 25). Measured on the gray and color flagships (3-level pyramids,
# 3,000 / 5,000 training steps; gray / color) over 5 / 4 scikit-image photos x sigma 15 / 25 / 50:
#   fp16     half-precision weights          change within +-0.004 dB
#   dynamic  int8 weights, float activations mean -0.003 / -0.02, worst -0.06 dB
#   int8     int8 weights and activations    mean -0.40 / -0.55, worst -1.3 dB (moon, sigma 15:
#            fixed activation ranges quantize a small residual coarsely); -0.24 / -0.35 dB
#            on the gray / color test image
# The margins leave room for other architectures and longer-trained weights while still
# catching a broken conversion (a wrong calibration costs several dB).
PSNR_MARGINS_DB = {"fp16": 0.1, "dynamic": 0.5, "int8": 1.5}
TEST_SIGMA = 25.0
TEST_SIZE = (191, 255)  # odd on purpose: exercises the odd-size paths of every pyramid
SMALL_TEST_SIZE = (95, 127)  # for models with global (non-local) attention
INPUT_NAME = "image"
OUTPUT_NAME = "denoised"
VALUE_RANGE = (0.0, 255.0)
WEIGHTS = ("auto", "final", "best", "checkpoint")
CONTROL_FLOW_OPS = {"WHILE", "IF", "CALL_ONCE"}

__all__ = [
    "ExportError",
    "FP32_TOLERANCE",
    "FP32_TOLERANCE_CAP",
    "float32_sensitivity",
    "fp32_tolerance",
    "PSNR_MARGINS_DB",
    "QUANTIZATIONS",
    "TFLITE_FILES",
    "UnsupportedOpsError",
    "VerificationError",
    "export_model",
    "format_verification",
    "load_for_export",
    "main",
    "representative_images",
    "sample_image",
    "tflite_ops",
    "to_tflite",
    "verify",
    "write_saved_model",
]


class ExportError(BfcnnError):
    """The model cannot be exported as asked (bad input, missing files, conversion failure)."""


class UnsupportedOpsError(ExportError):
    """The model uses operations that builtin-only TFLite cannot run; `.ops` names them."""

    def __init__(self, message: str, ops: Sequence[str] = ()):
        super().__init__(message)
        self.ops = list(ops)


class VerificationError(ExportError):
    """An exported artifact differs from the Keras model by more than its tolerance; `.report` has the numbers."""

    def __init__(self, message: str, report: Optional[dict] = None):
        super().__init__(message)
        self.report = report or {}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The `bfcnn-export` / `python -m bfcnn.export` command; returns the exit status."""
    from bfcnn.export.__main__ import main as _main

    return _main(argv)


# ----------------------------------------------------------------------------- loading


def _register_layers() -> None:
    """Imports every model module so their custom layers deserialize from `.keras` files."""
    import importlib

    import bfcnn.layers  # noqa: F401
    from bfcnn.models.builder import MODEL_TYPES

    for target in MODEL_TYPES.values():
        try:
            importlib.import_module(target.split(":")[0])
        except ImportError:  # a model type whose module is not there cannot be in the file either
            pass


def _float32(model):
    """The model computing in float32 (a mixed-precision model keeps float32 weights)."""
    from bfcnn.models.precision import to_float32

    return to_float32(model)


def _load_keras(path: Path):
    import zipfile

    import keras

    _register_layers()
    if Path(path).is_file() and not zipfile.is_zipfile(path):
        # Keras would report "File not found" for a file that exists but is damaged.
        raise ExportError(f"cannot load model {str(path)!r}: not a .keras file (a .keras file is a zip "
                          "archive; this one is corrupt, truncated or of another format)")
    try:
        return keras.models.load_model(path, compile=False)
    except (ValueError, OSError, TypeError) as error:
        raise ExportError(f"cannot load model {str(path)!r}: {error}") from error


def _build_float32(model_config: Mapping):
    import keras

    from bfcnn.models.builder import build_model

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        return build_model(model_config)
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _restore_checkpoint(model_config: Mapping, checkpoint_dir: Path):
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(str(checkpoint_dir))
    if latest is None:
        raise ExportError(f"no tf.train checkpoint in {str(checkpoint_dir)!r}")
    model = _build_float32(model_config)
    status = tf.train.Checkpoint(model=model).restore(latest).expect_partial()
    try:
        status.assert_existing_objects_matched()
    except AssertionError as error:
        raise ExportError(f"checkpoint {latest} does not hold this model's weights ({model_config}): "
                          f"{str(error).splitlines()[0]}") from error
    return model, latest


def load_for_export(model_directory, pipeline_config=None, weights: str = "auto"):
    """The model, its training config and a description of where it came from.

    Args:
        model_directory: a training run folder (`model.keras`, `best.keras`, `checkpoints/`,
            `config.yaml`), an export folder, or a `.keras` file.
        pipeline_config: a pipeline YAML; default the run's own `config.yaml`. Needed to
            restore a tf.train checkpoint when the folder has no `model.keras`.
        weights: `auto` (`model.keras`, else the latest checkpoint, else `best.keras`),
            `final` (`model.keras`), `best` (`best.keras`) or `checkpoint` (the latest
            tf.train checkpoint in `checkpoints/` or the folder itself).

    Returns:
        (float32 keras.Model, training config dict or None, source string).

    Raises:
        ExportError: nothing loadable was found; the message lists what was looked for.
        ConfigError: the pipeline config is invalid.
    """
    from bfcnn.config import config_to_dict, load_config

    if weights not in WEIGHTS:
        raise ExportError(f"weights={weights!r} is not supported; allowed: {allowed(WEIGHTS)}")
    path = Path(model_directory).expanduser()
    if not path.exists():
        raise ExportError(f"model directory not found: {str(path)!r}")
    config_dict = None
    config_file = Path(pipeline_config) if pipeline_config else None
    if config_file is None:
        for candidate in (path / "config.yaml", path.parent / "config.yaml") if path.is_file() else (
                path / "config.yaml",):
            if candidate.exists():
                config_file = candidate
                break
    if config_file is not None:
        config_dict = config_to_dict(load_config(config_file))
    elif (path / "model_card.json").exists():
        config_dict = json.loads((path / "model_card.json").read_text()).get("training_config")

    if path.is_file():
        if path.suffix != ".keras":
            raise ExportError(f"{str(path)!r} is not a .keras file or a model directory")
        return _float32(_load_keras(path)), config_dict, str(path)

    checkpoint_dir = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    has_checkpoint = (checkpoint_dir / "checkpoint").exists()
    order = {"auto": ["final", "checkpoint", "best"], "final": ["final"], "best": ["best"],
             "checkpoint": ["checkpoint"]}[weights]
    for kind in order:
        if kind in ("final", "best"):
            file = path / ("model.keras" if kind == "final" else "best.keras")
            if file.exists():
                return _float32(_load_keras(file)), config_dict, str(file)
        elif has_checkpoint:
            if not (config_dict or {}).get("model"):
                raise ExportError(f"{str(path)!r} has checkpoints but no config.yaml: give --pipeline-config "
                                  "so the model can be built before its weights are restored")
            model, latest = _restore_checkpoint(config_dict["model"], checkpoint_dir)
            return model, config_dict, latest
    looked = {"final": "model.keras", "best": "best.keras", "checkpoint": "checkpoints/ (tf.train)"}
    raise ExportError(f"no model in {str(path)!r}: looked for {', '.join(looked[k] for k in order)}")


def _resolve_model(model_or_path, config, weights, pipeline_config):
    """(model, training config, source) from a keras.Model, a path or a zoo name."""
    if not isinstance(model_or_path, (str, os.PathLike)):  # a keras.Model (checked without importing Keras)
        return _float32(model_or_path), config, "<in-memory model>"
    text = os.fspath(model_or_path)
    if Path(text).expanduser().exists() or text.endswith(".keras") or os.sep in text:
        model, found_config, source = load_for_export(text, pipeline_config, weights)
        return model, config if config is not None else found_config, source
    from bfcnn.errors import UnknownModelError, did_you_mean
    from bfcnn.zoo import list_models, load_model, model_info

    try:
        card = model_info(text)
    except UnknownModelError as error:  # as likely a mistyped folder as a mistyped name: say both
        names = list_models()
        raise ExportError(f"{text!r} is neither an existing file or folder nor a zoo model"
                          f"{did_you_mean(text, names)}; zoo models: {', '.join(names) or '(none)'}") from error
    return load_model(text), config if config is not None else card.get("training_config"), f"zoo:{text}"


# ----------------------------------------------------------------------------- writing


def _channels(model) -> int:
    return int(model.input_shape[-1])


def write_saved_model(model, path) -> None:
    """Writes a SavedModel with the `serving_default` (float32) and `denoise_uint8` signatures.

    Both take `image` [B, H, W, C] with B, H and W dynamic and return `denoised`.
    """
    import keras
    import tensorflow as tf

    channels = _channels(model)

    def serve_float(image):
        return {OUTPUT_NAME: model(image, training=False)}

    def serve_uint8(image):
        out = model(tf.cast(image, tf.float32), training=False)
        # tf.round rounds half to even, as numpy does in bfcnn.evaluation.to_uint8.
        return {OUTPUT_NAME: tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), tf.uint8)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve_float,
                         input_signature=[tf.TensorSpec([None, None, None, channels], tf.float32, INPUT_NAME)])
    archive.add_endpoint("denoise_uint8", serve_uint8,
                         input_signature=[tf.TensorSpec([None, None, None, channels], tf.uint8, INPUT_NAME)])
    archive.write_out(str(path), verbose=False)


_OP_PATTERNS = (
    re.compile(r"'tf\.(\w+)' op is neither a custom op nor a flex op"),
    re.compile(r"^\s*tf\.(\w+)\(", re.MULTILINE),
    re.compile(r"'tf\.(\w+)' op is not supported"),
)
_OP_LIST = re.compile(r"(?:Custom|Flex|TF Select|Select TF) ops: ([\w, ]+)")


def _ops_in_error(message: str) -> List[str]:
    ops = set()
    for pattern in _OP_PATTERNS:
        ops.update(pattern.findall(message))
    for listed in _OP_LIST.findall(message):
        ops.update(name.strip().removeprefix("Flex") for name in listed.split(",") if name.strip())
    if not ops:  # errors without the summary still locate the failing op: loc(fused["Op:", ...
        ops.update(re.findall(r"error: loc\(callsite\(fused\[\"(\w+):", message))
    return sorted(ops)


def tflite_ops(content: bytes) -> List[str]:
    """The operator names in a TFLite flatbuffer: builtin names (`CONV_2D`) or custom codes (`FlexFoo`)."""
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.Model.GetRootAs(content, 0)
    ops = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())  # small codes are stored twice
        if builtin == schema.BuiltinOperator.CUSTOM:
            ops.append((code.CustomCode() or b"CUSTOM").decode())
        else:
            ops.append(names.get(builtin, f"BUILTIN_{builtin}"))
    return sorted(set(ops))


def runtime_sized_tensors(content: bytes, size: Tuple[int, int] = (37, 29)) -> List[str]:
    """Names of the tensors of a TFLite model that LiteRT sizes only while it runs.

    LiteRT works out every tensor's shape when the input is resized, except where a shape
    depends on a value it computes during the run (a FLOOR_DIV on a shape, a WHILE loop, a
    slice with a computed end): such tensors are dynamic, and the XNNPACK delegate leaves
    them and every later layer to the slower builtin kernels (docs/inference.md measures
    it). Zero names means the whole graph is sized ahead. Found by resizing the input to
    the odd `size`, reading each tensor's shape, running the model, and listing the tensors
    whose shape changed.
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content)
    (inp,) = interpreter.get_input_details()
    shape = [1, *size, int(inp["shape_signature"][-1])]
    interpreter.resize_tensor_input(inp["index"], shape)
    interpreter.allocate_tensors()
    before = {d["index"]: (d["name"], tuple(d["shape"])) for d in interpreter.get_tensor_details()}
    interpreter.set_tensor(inp["index"], np.zeros(shape, inp["dtype"]))
    interpreter.invoke()
    after = {d["index"]: tuple(d["shape"]) for d in interpreter.get_tensor_details()}
    return [name for index, (name, dims) in before.items() if after.get(index, dims) != dims]


def _check_builtin_only(content: bytes) -> List[str]:
    from ai_edge_litert import schema_py_generated as schema

    ops = tflite_ops(content)
    builtin_names = {k for k in vars(schema.BuiltinOperator) if not k.startswith("_")} - {"CUSTOM"}
    custom = [op for op in ops if op not in builtin_names]
    if custom:
        raise UnsupportedOpsError(
            f"the TFLite model needs non-builtin ops {', '.join(custom)}; the stock LiteRT runtime cannot run it",
            custom)
    return ops


def to_tflite(model, quantize: str = "none", representative_images: Optional[Iterable[np.ndarray]] = None) -> bytes:
    """Converts a denoiser to a builtin-only TFLite flatbuffer with a dynamic [1, H, W, C] input.

    Args:
        model: a float32 keras.Model (0-255 in and out).
        quantize: `none` (float32), `fp16` (half-precision weights), `dynamic` (int8 weights,
            activations quantized at run time) or `int8` (full integer: weights and
            activations, ranges calibrated on `representative_images`; input and output
            stay float32 so the signature is the same for every file).
        representative_images: float32 [H, W, C] or [1, H, W, C] noisy images on the 0-255
            scale, like those the model will see; required for `int8`.

    Returns:
        The `.tflite` file's bytes. Signature `serving_default`: input `image`
        float32 [1, H, W, C], output `denoised`; resize the input with `resize_tensor_input`.

    Raises:
        UnsupportedOpsError: an operation has no builtin TFLite kernel (named in the message).
        ExportError: a bad `quantize` value, missing representative images, or another
            conversion failure.
    """
    import keras
    import tensorflow as tf

    if quantize not in QUANTIZATIONS:
        raise ExportError(f"quantize={quantize!r} is not supported; allowed: {allowed(QUANTIZATIONS)}")
    samples = None
    if quantize == "int8":
        samples = [np.asarray(x, np.float32) for x in (representative_images or [])]
        samples = [x[None] if x.ndim == 3 else x for x in samples]
        if not samples:
            raise ExportError("int8 quantization needs representative images (--representative-dir DIR: "
                              "photos like the ones the model will denoise, e.g. its training set)")
    channels = _channels(model)
    with tempfile.TemporaryDirectory(prefix="bfcnn-tflite-") as tmp:
        # Through a SavedModel written by Keras' ExportArchive, which tracks the Keras 3
        # variables so the converter freezes them into constants.
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serving_default", lambda image: {OUTPUT_NAME: model(image, training=False)},
                             input_signature=[tf.TensorSpec([1, None, None, channels], tf.float32, INPUT_NAME)])
        archive.write_out(tmp, verbose=False)
        if quantize == "int8":
            # TFLite's calibrator aborts the whole process (SIGABRT, not an exception) on
            # control flow such as the N3 block's WHILE loop: look at the float graph first.
            loops = sorted(set(tflite_ops(_convert_saved_model(tmp, "none", None, model.name))) & CONTROL_FLOW_OPS)
            if loops:
                raise UnsupportedOpsError(
                    f"cannot quantize {model.name!r} to int8: its graph has control flow ({', '.join(loops)}), "
                    "which TFLite's int8 calibrator cannot run; use fp16 or dynamic", loops)
        content = _convert_saved_model(tmp, quantize, samples, model.name)
    _check_builtin_only(content)
    return bytes(content)


def _convert_saved_model(directory, quantize: str, samples, name: str) -> bytes:
    """The TFLite conversion of a SavedModel folder, with the op names in any error."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(directory))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize == "int8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.representative_dataset = lambda: ([x] for x in samples)
    try:
        return converter.convert()
    except Exception as error:  # ConverterError and friends; re-raised with the op names
        message = str(error)
        ops = _ops_in_error(message)
        if ops:
            raise UnsupportedOpsError(
                f"cannot convert {name!r} to builtin-only TFLite ({quantize}): no builtin kernel for "
                f"{', '.join(ops)}", ops) from error
        raise ExportError(f"TFLite conversion ({quantize}) of {name!r} failed: "
                          f"{message.strip().splitlines()[-1] if message.strip() else type(error).__name__}"
                          ) from error


_convert = to_tflite  # export_model's `to_tflite` argument shadows the function


# ----------------------------------------------------------------------------- test data


def sample_image(channels: int, size=TEST_SIZE, sigma: float = TEST_SIGMA, seed: int = 0):
    """A clean uint8 photograph [H, W, C] and its noisy float32 copy (sigma `sigma`, not clipped).

    scikit-image's `camera` (gray) or `astronaut` (RGB), resized so the short side is
    `max(size)` and center-cropped to `size`; a smooth synthetic image when scikit-image is
    not installed.
    """
    from PIL import Image

    height, width = size
    try:
        from skimage import data

        photo = data.camera() if channels == 1 else data.astronaut()
        image = Image.fromarray(photo)
        scale = max(height, width) / min(image.size)
        image = image.resize((max(width, round(image.size[0] * scale)), max(height, round(image.size[1] * scale))),
                             Image.LANCZOS)
        left, top = (image.size[0] - width) // 2, (image.size[1] - height) // 2
        clean = np.asarray(image.crop((left, top, left + width, top + height)), np.uint8)
        clean = clean.reshape(height, width, channels)
    except ImportError:
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        base = 128 + 80 * np.sin(x / 17.0) * np.cos(y / 23.0) + 40 * ((x // 32 + y // 32) % 2)
        clean = np.clip(np.round(np.stack([base] * channels, -1)), 0, 255).astype(np.uint8)
    rng = np.random.default_rng(seed)
    noisy = (clean.astype(np.float32) + sigma * rng.standard_normal(clean.shape)).astype(np.float32)
    return clean, noisy


def representative_images(directory, channels: int, count: int = 24, size: int = 128,
                          sigma_range=(0.0, 60.0), seed: int = 0) -> List[np.ndarray]:
    """Noisy float32 crops [size, size, C] (smaller images whole) for int8 calibration.

    Crops come from image files spread evenly over the sorted list (cycling when there are
    fewer than `count`), each with Gaussian noise of a random sigma in `sigma_range`,
    because the model's inputs are noisy images.

    Raises:
        BfcnnError: the directory is missing or holds no image.
    """
    from bfcnn.io import list_images, read_image

    files = list_images(directory)
    rng = np.random.default_rng(seed)
    color = "gray" if channels == 1 else "rgb"
    images = []
    for i in range(count):
        clean = read_image(files[(i * len(files)) // count if len(files) >= count else i % len(files)],
                           color).astype(np.float32)
        h, w = clean.shape[:2]
        top, left = rng.integers(0, max(h - size, 0) + 1), rng.integers(0, max(w - size, 0) + 1)
        crop = clean[top : top + size, left : left + size]
        sigma = rng.uniform(*sigma_range)
        images.append((crop + sigma * rng.standard_normal(crop.shape)).astype(np.float32))
    return images


# ----------------------------------------------------------------------------- verification


def float32_sensitivity(model, noisy, seed: int = 0, reference=None) -> float:
    """How far the model's output moves when its input moves by float32 rounding.

    Each value of `noisy` ([H, W, C] or [1, H, W, C], 0-255) is moved up or down (at random,
    seeded) by `SENSITIVITY_ULPS` units in the last place; the result is the max |change| of
    the output, on the output's scale. A plain convolutional denoiser gives ~1e-5 to 4e-4;
    a model with a sharp soft selection (an N3 block) gives ~1e-3. `reference`: the model's
    output on `noisy`, if already computed.
    """
    x = np.asarray(noisy, np.float32)
    x = x[None] if x.ndim == 3 else x
    signs = np.random.default_rng(seed).choice(np.array([-1.0, 1.0], np.float32), x.shape)
    perturbed = (x + signs * SENSITIVITY_ULPS * np.spacing(np.abs(x))).astype(np.float32)
    if reference is None:
        reference = model(x, training=False)
    reference = np.asarray(reference, np.float64).reshape(x.shape[:-1] + (-1,))
    return float(np.max(np.abs(np.asarray(model(perturbed, training=False), np.float64) - reference)))


def fp32_tolerance(model, noisy, tolerance: float = FP32_TOLERANCE,
                   cap: float = FP32_TOLERANCE_CAP, reference=None) -> Tuple[float, float]:
    """The limit a float32 artifact must meet on `noisy`, and the model's float32 sensitivity.

    The limit is `max(tolerance, min(cap, SENSITIVITY_FACTOR * sensitivity))`: a model
    more sensitive than `cap / SENSITIVITY_FACTOR` gets no more room than `cap`.
    """
    sensitivity = float32_sensitivity(model, noisy, reference=reference)
    return max(tolerance, min(cap, SENSITIVITY_FACTOR * sensitivity)), sensitivity


def _compare(name, kind, out, reference, clean, reference_psnr, limit) -> Dict[str, Any]:
    out = np.asarray(out, np.float32).reshape(reference.shape)
    result = {
        "artifact": name,
        "kind": kind,
        "max_abs_diff": float(np.max(np.abs(out.astype(np.float64) - reference))),
        "psnr": psnr(clean, out),
    }
    result["psnr_change"] = result["psnr"] - reference_psnr
    if kind == "fp32":
        result["limit"] = f"max|diff| <= {limit:.3g}"
        result["passed"] = bool(result["max_abs_diff"] <= limit)
    else:
        result["limit"] = f"PSNR loss <= {limit:g} dB"
        result["passed"] = bool(result["psnr_change"] >= -limit)
    return result


def verify(output_directory, model=None, image=None, tolerance: Optional[float] = None,
           psnr_margins: Optional[Mapping[str, float]] = None, num_threads: Optional[int] = None) -> Dict[str, Any]:
    """Reloads every artifact of an export folder and compares it with the Keras model.

    Args:
        output_directory: an export folder (or the temporary one `export_model` writes).
        model: the reference keras.Model; default the folder's own `model.keras`.
        image: (clean uint8 [H, W, C], noisy float32 [H, W, C]); default `sample_image` at
            `TEST_SIZE` (`SMALL_TEST_SIZE` for models with non-local blocks).
        tolerance: the largest max|diff| a float32 artifact may show, on the 0-255 scale
            (multiplied by max|output| / 255 when the Keras output exceeds 255). None:
            `FP32_TOLERANCE`, or more for a model that amplifies float32 rounding
            (`fp32_tolerance`); a number is used as it is.
        psnr_margins: the largest PSNR loss (dB) per quantization; default `PSNR_MARGINS_DB`.
        num_threads: LiteRT threads.

    Returns:
        {"passed", "reference_psnr", "noisy_psnr", "image_shape", "sigma", "results": [...]},
        one result per artifact with max_abs_diff, psnr, psnr_change, limit and passed.
        The uint8 signature is checked against the rounded and clipped Keras output
        (max difference <= 1, which only a float tie at .5 can cause).
    """
    import tensorflow as tf

    from bfcnn.lite import TFLiteDenoiser

    directory = Path(output_directory)
    margins = {**PSNR_MARGINS_DB, **(psnr_margins or {})}
    if model is None:
        model = _float32(_load_keras(directory / "model.keras"))
    channels = _channels(model)
    if image is None:
        global_attention = any(type(layer).__name__ == "NonLocalBlock" for layer in model._flatten_layers())
        # Non-local blocks hold an (H W) x (H W / 4) attention matrix: 2.4 GB at the full test size.
        image = sample_image(channels, size=SMALL_TEST_SIZE if global_attention else TEST_SIZE)
        default_image = True
    else:
        default_image = False
    clean, noisy = image
    if noisy.shape[-1] != channels:
        raise ExportError(f"the test image has {noisy.shape[-1]} channels, the model takes {channels}")
    reference = np.asarray(model(noisy[None], training=False), np.float64)[0]
    reference_psnr = psnr(clean, reference)
    small = noisy[:13, :7]  # a second, odd size: the input really is dynamic
    small_reference = np.asarray(model(small[None], training=False), np.float64)[0]
    # float32 errors are relative: an output beyond the 0-255 scale (an untrained model) widens
    # the tolerance in proportion; a trained denoiser's output is on the scale and keeps it.
    peak = float(max(np.max(np.abs(reference)), np.max(np.abs(small_reference))))
    scale = max(1.0, peak / VALUE_RANGE[1])
    if tolerance is None:
        tolerance, sensitivity = fp32_tolerance(model, noisy, FP32_TOLERANCE * scale, FP32_TOLERANCE_CAP * scale,
                                                reference=reference)
    else:
        tolerance, sensitivity = tolerance * scale, float32_sensitivity(model, noisy, reference=reference)
    results = []

    def add(result, small_out=None):
        if small_out is not None and result["kind"] == "fp32":
            diff = float(np.max(np.abs(np.asarray(small_out, np.float64).reshape(small_reference.shape)
                                       - small_reference)))
            result["max_abs_diff_13x7"] = diff
            result["passed"] = result["passed"] and diff <= tolerance
        results.append(result)

    keras_file = directory / "model.keras"
    if keras_file.exists():
        reloaded = _load_keras(keras_file)
        add(_compare("model.keras", "fp32", reloaded(noisy[None], training=False), reference, clean,
                     reference_psnr, tolerance), reloaded(small[None], training=False))

    saved = directory / "saved_model"
    if saved.exists():
        loaded = tf.saved_model.load(str(saved))
        serve = loaded.signatures["serving_default"]
        batch = np.stack([noisy, noisy[::-1, ::-1]])
        out = serve(image=tf.constant(batch))[OUTPUT_NAME].numpy()
        # Compared with the Keras model on the same batch: batched and single-image runs may
        # round differently, which N3 blocks amplify (1.6e-3 seen on a tiny N3Net's output).
        batch_reference = np.asarray(model(batch, training=False), np.float64)
        result = _compare("saved_model:serving_default", "fp32", out[0], batch_reference[0], clean, reference_psnr,
                          tolerance)
        result["max_abs_diff_batch"] = float(np.max(np.abs(out[1] - batch_reference[1])))
        result["passed"] = result["passed"] and result["max_abs_diff_batch"] <= tolerance
        add(result, serve(image=tf.constant(small[None]))[OUTPUT_NAME].numpy())

        noisy_uint8 = to_uint8(noisy)
        expected = to_uint8(np.asarray(model(noisy_uint8[None].astype(np.float32), training=False))[0])
        out8 = loaded.signatures["denoise_uint8"](image=tf.constant(noisy_uint8[None]))[OUTPUT_NAME].numpy()[0]
        diff = np.abs(out8.astype(np.int16) - expected.astype(np.int16))
        results.append({
            "artifact": "saved_model:denoise_uint8",
            "kind": "uint8",
            "dtype": str(out8.dtype),
            "max_abs_diff": float(diff.max()),
            "pixels_differing": int(np.count_nonzero(diff)),
            "psnr": psnr(clean, out8),
            "psnr_change": psnr(clean, out8) - psnr(clean, expected),
            "limit": "uint8 max|diff| <= 1 (rounding)",
            "passed": bool(out8.dtype == np.uint8 and diff.max() <= 1),
        })

    for quantize, filename in TFLITE_FILES.items():
        path = directory / filename
        if not path.exists():
            continue
        runner = TFLiteDenoiser(path, num_threads=num_threads)
        kind = "fp32" if quantize == "none" else quantize
        result = _compare(filename, kind, runner(noisy), reference, clean, reference_psnr,
                          tolerance if quantize == "none" else margins[quantize])
        result["ops"] = tflite_ops(path.read_bytes())
        result["runtime_sized_tensors"] = len(runtime_sized_tensors(path.read_bytes()))
        add(result, runner(small))
    if not results:
        raise ExportError(f"nothing to verify in {str(directory)!r}: no model.keras, saved_model or .tflite file")
    return {
        "passed": all(r["passed"] for r in results),
        "sigma": TEST_SIGMA if default_image else None,
        "image_shape": list(noisy.shape),
        "noisy_psnr": psnr(clean, noisy),
        "reference_psnr": reference_psnr,
        "float32_sensitivity": sensitivity,
        "fp32_tolerance": tolerance,
        "results": results,
    }


def format_verification(report: Mapping[str, Any]) -> str:
    """The verification results as a text table."""
    lines = [f"verification on a {'x'.join(map(str, report['image_shape']))} test image: noisy "
             f"{report['noisy_psnr']:.2f} dB, Keras {report['reference_psnr']:.2f} dB",
             f"  Keras output moves by {report['float32_sensitivity']:.1e} when the input moves by "
             f"{SENSITIVITY_ULPS} float32 ulps; fp32 limit {report['fp32_tolerance']:.2g}",
             f"  {'artifact':<30} {'max|diff|':>10} {'PSNR':>8} {'change':>8}  {'limit':<34} ok"]
    for r in report["results"]:
        lines.append(f"  {r['artifact']:<30} {r['max_abs_diff']:>10.2e} {r['psnr']:>8.2f} {r['psnr_change']:>+8.3f}"
                     f"  {r['limit']:<34} {'yes' if r['passed'] else 'NO'}")
    dynamic = [r for r in report["results"] if r.get("runtime_sized_tensors")]
    for r in dynamic:
        lines.append(f"  note: {r['artifact']} has {r['runtime_sized_tensors']} tensors sized only at run time; "
                     "XNNPACK leaves them to slower kernels (bfcnn.export.runtime_sized_tensors lists them)")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- export


def _file_sizes(directory: Path) -> Dict[str, int]:
    sizes = {}
    for entry in sorted(directory.iterdir()):
        if entry.is_dir():
            sizes[entry.name + "/"] = sum(f.stat().st_size for f in entry.rglob("*") if f.is_file())
        else:
            sizes[entry.name] = entry.stat().st_size
    return sizes


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tflite_entry(path: Path, quantize: str) -> Dict[str, Any]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    signature = interpreter.get_signature_list()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    return {
        "quantization": quantize,
        "signature": signature,
        "input": {"name": inp["name"], "signature_name": INPUT_NAME, "dtype": np.dtype(inp["dtype"]).name,
                  "shape_signature": [int(d) for d in inp["shape_signature"]]},
        "output": {"name": out["name"], "signature_name": OUTPUT_NAME, "dtype": np.dtype(out["dtype"]).name,
                   "shape_signature": [int(d) for d in out["shape_signature"]]},
        "ops": tflite_ops(path.read_bytes()),
        "runtime_sized_tensors": len(runtime_sized_tensors(path.read_bytes())),
        "bytes": path.stat().st_size,
        "sha256": _sha256(path),
    }


def _model_card(model, name, config, source, tflite: Dict[str, dict]) -> Dict[str, Any]:
    import keras
    import tensorflow as tf

    import bfcnn
    from bfcnn.models.cost import count_parameters, flops_per_pixel, is_bias_free

    channels = _channels(model)
    image_spec = {"dtype": "float32", "shape": [None, None, None, channels], "value_range": list(VALUE_RANGE)}
    return {
        "name": name,
        "format_version": 1,
        "channels": channels,
        "color": "gray" if channels == 1 else "rgb",
        "value_range": list(VALUE_RANGE),
        "value_range_note": "0-255 scale in and out; noisy input values outside [0, 255] are valid",
        "inputs": [{"name": INPUT_NAME, **image_spec}],
        "outputs": [{"name": OUTPUT_NAME, **image_spec}],
        "saved_model": {
            "path": "saved_model",
            "signatures": {
                "serving_default": {"inputs": {INPUT_NAME: image_spec}, "outputs": {OUTPUT_NAME: image_spec}},
                "denoise_uint8": {
                    "inputs": {INPUT_NAME: {"dtype": "uint8", "shape": [None, None, None, channels]}},
                    "outputs": {OUTPUT_NAME: {"dtype": "uint8", "shape": [None, None, None, channels],
                                              "note": "rounded (half to even) and clipped to [0, 255]"}},
                },
            },
        },
        "tflite": tflite,
        "model_config": config.get("model") if config else None,
        "training_config": config,
        "source": source,
        "parameters": count_parameters(model),
        "flops_per_pixel": flops_per_pixel(model),
        "bias_free": is_bias_free(model),
        "bfcnn_version": bfcnn.__version__,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _place(tmp: Path, out: Path) -> None:
    """Moves the finished temporary folder to `out`, replacing a previous export there."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp made it private
    if out.exists():
        if not out.is_dir():
            raise ExportError(f"output path {str(out)!r} exists and is not a directory")
        if any(out.iterdir()) and not (out / "model_card.json").exists():
            raise ExportError(f"output directory {str(out)!r} is not empty and holds no bfcnn export; "
                              "choose a new or empty folder")
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / out.name)
        try:
            os.replace(tmp, out)
        except OSError:
            os.replace(old / out.name, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def export_model(
    model_or_path,
    output_directory,
    to_tflite: bool = True,
    quantize: Union[str, Sequence[str]] = ("none",),
    representative_dir=None,
    config: Optional[Mapping] = None,
    name: Optional[str] = None,
    *,
    pipeline_config=None,
    weights: str = "auto",
    verify_artifacts: bool = True,
    psnr_margins: Optional[Mapping[str, float]] = None,
    tolerance: Optional[float] = None,
    image=None,
    num_threads: Optional[int] = None,
    log=print,
) -> Dict[str, Any]:
    """Exports a denoiser to SavedModel, `.keras` and TFLite, verifies it, then moves it into place.

    Args:
        model_or_path: a keras.Model, a `.keras` file, a training run or export folder
            (see `load_for_export`), or a zoo name.
        output_directory: the export folder; created, or replaced if it holds a previous
            export (a non-empty folder without `model_card.json` is refused).
        to_tflite: write TFLite files (`model.tflite` plus one per quantization).
        quantize: one or more of `none`, `fp16`, `dynamic`, `int8`.
        representative_dir: images for int8 calibration (required for `int8`).
        config: the training config (plain dict) for the model card; default the run's.
        name: the model's name in the card; default the folder's or the model's name.
        pipeline_config: a pipeline YAML to build the model when restoring a checkpoint.
        weights: which weights of a run folder: `auto`, `final`, `best`, `checkpoint`.
        verify_artifacts: reload and compare every artifact (False skips the checks).
        psnr_margins: overrides of `PSNR_MARGINS_DB`.
        tolerance: the largest max|diff| of a float32 artifact, 0-255 scale; None: as `verify`.
        image: (clean uint8, noisy float32) for verification; default `sample_image`.
        num_threads: LiteRT threads for verification.
        log: where progress lines go (None for silence).

    Returns:
        {"output_directory", "passed", "model_card", "verification"}.

    Raises:
        VerificationError: an artifact is out of tolerance; nothing is written (`.report`
            holds the numbers).
        UnsupportedOpsError: the model needs a non-builtin TFLite op (named).
        ExportError: bad arguments, or nothing loadable at the path.

    Example:
        >>> report = export_model("runs/x", "out/x", quantize=["none", "fp16"])
        >>> print(format_verification(report["verification"]))
    """
    log = log or (lambda *args: None)
    modes = [quantize] if isinstance(quantize, str) else list(quantize)
    bad = [q for q in modes if q not in QUANTIZATIONS]
    if bad:
        raise ExportError(f"unknown quantization {bad[0]!r}; allowed: {allowed(QUANTIZATIONS)}")
    if not to_tflite:
        modes = []
    modes = [q for q in QUANTIZATIONS if q in modes]
    if "int8" in modes and representative_dir is None:
        raise ExportError("int8 quantization needs --representative-dir DIR (representative_dir): photos like "
                          "the ones the model will denoise, e.g. its training set")
    out = Path(output_directory).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise ExportError(f"output path {str(out)!r} exists and is not a directory")

    model, config, source = _resolve_model(model_or_path, config, weights, pipeline_config)
    if name is None:
        stem = Path(os.fspath(model_or_path)).name if isinstance(model_or_path, (str, os.PathLike)) else ""
        name = stem.removesuffix(".keras") if stem not in ("", "model.keras", "best.keras") else model.name
    samples = None
    if "int8" in modes:
        samples = representative_images(representative_dir, _channels(model))

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        log(f"exporting {source} -> {out}")
        write_saved_model(model, tmp / "saved_model")
        model.save(tmp / "model.keras")
        tflite = {}
        for mode in modes:
            log(f"converting to TFLite ({mode})")
            path = tmp / TFLITE_FILES[mode]
            path.write_bytes(_convert(model, mode, samples))
            tflite[TFLITE_FILES[mode]] = _tflite_entry(path, mode)
        card = _model_card(model, name, config, source, tflite)
        report = None
        if verify_artifacts:
            log("verifying the artifacts")
            report = verify(tmp, model, image, tolerance, psnr_margins, num_threads)
            card["verification"] = report
            log(format_verification(report))
            if not report["passed"]:
                failed = [r["artifact"] for r in report["results"] if not r["passed"]]
                raise VerificationError(f"export verification failed for {', '.join(failed)}; "
                                        f"nothing was written to {str(out)!r}", report)
        card["files"] = _file_sizes(tmp)  # bytes per file; saved_model/ is the sum of its files
        (tmp / "model_card.json").write_text(json.dumps(card, indent=2, default=_json_default))
        _place(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log(f"wrote {out}")
    return {"output_directory": str(out), "passed": report is None or report["passed"], "model_card": card,
            "verification": report}


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
