"""TFLite conversion with builtin operators only, and what a converted file holds.

Builtin operators only (no Select TF / Flex ops), so the stock LiteRT runtime on Android and
iOS runs the files; an op without a builtin kernel is named in the error.
"""

import re
import tempfile
from typing import Iterable, List, Optional, Tuple

import numpy as np

from bfcnn.errors import allowed
from bfcnn.export.errors import ExportError, UnsupportedOpsError
from bfcnn.export.signature import INPUT_NAME, OUTPUT_NAME, model_channels

QUANTIZATIONS = ("none", "fp16", "dynamic", "int8")
TFLITE_FILES = {
    "none": "model.tflite",
    "fp16": "model_fp16.tflite",
    "dynamic": "model_dynamic.tflite",
    "int8": "model_int8.tflite",
}
# The networks of an opponent color model without its image-wide lift, beside `model.tflite`:
# `bfcnn.lite.TFLiteDenoiser` runs tiles through it, lifted by the whole image's mean.
LIFTED_SUFFIX = "_lifted"
LIFTED_FILE = TFLITE_FILES["none"].replace(".tflite", LIFTED_SUFFIX + ".tflite")  # model_lifted.tflite
CONTROL_FLOW_OPS = {"WHILE", "IF", "CALL_ONCE"}


def _min_fixed_size() -> int:
    from bfcnn.lite import DEFAULT_OVERLAP
    from bfcnn.tiling import min_tile_size

    return min_tile_size(DEFAULT_OVERLAP)


# The least side of a file of one input size that `export_model` writes (`--tflite-size`): such a
# file runs in tiles overlapping by `bfcnn.lite.DEFAULT_OVERLAP`, and a tile must be twice that
# (`bfcnn.tiling.min_tile_size`); smaller tiles cost quality at every seam and run many times over.
MIN_FIXED_SIZE = _min_fixed_size()


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


def runtime_sized_tensors(content: bytes, size: Optional[Tuple[int, int]] = None) -> List[str]:
    """Names of the tensors of a TFLite model that LiteRT sizes only while it runs.

    LiteRT works out every tensor's shape when the input is resized, except where a shape
    depends on a value it computes during the run (a FLOOR_DIV on a shape, a WHILE loop, a
    slice with a computed end): such tensors are dynamic, and the XNNPACK delegate leaves
    them and every later layer to the slower builtin kernels (docs/inference.md measures
    it). Zero names means the whole graph is sized ahead. Found by resizing the input to
    `size` (default: an odd 37 x 29, or the file's own size if it has a fixed one), reading
    each tensor's shape, running the model, and listing the tensors whose shape changed.
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content)
    (inp,) = interpreter.get_input_details()
    signature = [int(d) for d in inp["shape_signature"]]
    if size is None:
        size = signature[1:3] if min(signature[1:3]) > 0 else (37, 29)
    shape = [1, *size, signature[-1]]
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


def to_tflite(model, quantize: str = "none", representative_images: Optional[Iterable[np.ndarray]] = None,
              input_size: Optional[Tuple[int, int]] = None) -> bytes:
    """Converts a denoiser to a builtin-only TFLite flatbuffer with a dynamic [1, H, W, C] input.

    Args:
        model: a float32 keras.Model (0-255 in and out).
        quantize: `none` (float32), `fp16` (half-precision weights), `dynamic` (int8 weights,
            activations quantized at run time) or `int8` (full integer: weights and
            activations, ranges calibrated on `representative_images`; input and output
            stay float32 so the signature is the same for every file).
        representative_images: float32 [H, W, C] or [1, H, W, C] noisy images on the 0-255
            scale, like those the model will see; required for `int8`.
        input_size: (H, W) for a file that takes only images of that size (tiles of one
            size, camera frames): every shape is then known when converting, so LiteRT sizes
            the whole graph ahead and XNNPACK can take all of it. None: any size. Either way an
            N3 block is converted without its loop over chunks of queries
            (`bfcnn.layers.n3.queries_in_one_pass`; enter `queries_in_one_pass(False)` around
            this call to keep it).

    Returns:
        The `.tflite` file's bytes. Signature `serving_default`: input `image`
        float32 [1, H, W, C], output `denoised`; resize the input with `resize_tensor_input`
        (not for a file of fixed `input_size`).

    Raises:
        UnsupportedOpsError: an operation has no builtin TFLite kernel (named in the message).
        ExportError: a bad `quantize` value, missing representative images, or another
            conversion failure.
    """
    import keras
    import tensorflow as tf

    from bfcnn.layers.n3 import queries_in_one_pass

    if quantize not in QUANTIZATIONS:
        raise ExportError(f"quantize={quantize!r} is not supported; allowed: {allowed(QUANTIZATIONS)}")
    samples = None
    if quantize == "int8":
        samples = [np.asarray(x, np.float32) for x in (representative_images or [])]
        samples = [x[None] if x.ndim == 3 else x for x in samples]
        if not samples:
            raise ExportError("int8 quantization needs representative images (--representative-dir DIR: "
                              "photos like the ones the model will denoise, e.g. its training set)")
        check_int8_supported(model)  # before the SavedModel is written
    channels = model_channels(model)
    height, width = (None, None) if input_size is None else _fixed_size(input_size)
    if samples and input_size is not None:
        samples = [_fit(x, height, width) for x in samples]
    with tempfile.TemporaryDirectory(prefix="bfcnn-tflite-") as tmp:
        # Through a SavedModel written by Keras' ExportArchive, which tracks the Keras 3
        # variables so the converter freezes them into constants. N3 blocks are traced without
        # their loop over chunks of queries unless the caller chose otherwise: LiteRT runners
        # tile large images, and the loop made LiteRT slower.
        archive = keras.export.ExportArchive()
        archive.track(model)
        with queries_in_one_pass(override=False):
            archive.add_endpoint("serving_default", lambda image: {OUTPUT_NAME: model(image, training=False)},
                                 input_signature=[tf.TensorSpec([1, height, width, channels], tf.float32, INPUT_NAME)])
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


def check_int8_supported(model) -> None:
    """Refuses, before any conversion, a model whose int8 TFLite graph LiteRT cannot run.

    Raises:
        UnsupportedOpsError: the model has an N3 block. Without its loop over chunks of
            queries (as `to_tflite` converts it) the block calibrates, but LiteRT then aborts the
            process (SIGABRT) allocating its int8 graph; with the loop, the WHILE stops the
            calibrator.
    """
    if any(type(layer).__name__ == "N3Block" for layer in model._flatten_layers()):
        raise UnsupportedOpsError(
            f"cannot quantize {model.name!r} to int8: LiteRT cannot run the int8 graph of its N3 "
            "block (it aborts allocating it); use fp16 or dynamic", ["N3Block"])


def _fixed_size(input_size) -> Tuple[int, int]:
    from bfcnn.tiling import as_pair

    try:
        height, width = as_pair("input_size", input_size)
    except (TypeError, ValueError) as error:
        raise ExportError(f"{error}, or None") from error
    if min(height, width) < 1:
        raise ExportError(f"input_size must be >= 1 in both directions, got {input_size!r}")
    return height, width


def _fit(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """[1, h, w, C] cropped or mirror-padded (bottom, right) to [1, height, width, C]."""
    image = image[:, :height, :width]
    pad = ((0, 0), (0, height - image.shape[1]), (0, width - image.shape[2]), (0, 0))
    return np.pad(image, pad, mode="symmetric")


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


def int8_weight_tensors(content: bytes) -> int:
    """The number of constant int8 tensors (quantized weights) in a TFLite flatbuffer.

    A `dynamic` file of a small model may hold none: the converter leaves weights of fewer
    than 1,024 elements in float32, so such a file is a float32 copy.
    """
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(content, 0)
    count = 0
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        for t in range(subgraph.TensorsLength()):
            tensor = subgraph.Tensors(t)
            if tensor.Type() != schema.TensorType.INT8 or tensor.Buffer() <= 0:
                continue
            buffer = model.Buffers(tensor.Buffer())
            if buffer.DataLength() > 0 or buffer.Size() > 0:  # inline data, or stored after the flatbuffer
                count += 1
    return count




def lifted_tflite(model, input_size: Optional[Tuple[int, int]] = None, tolerance: Optional[float] = None):
    """(bytes, entry) of the TFLite file of an opponent color model's networks, or None for other models.

    The file takes and returns lifted opponent channels, float32 [1, H, W, 3]
    (`bfcnn.opponent_lift`); the entry records the lift's scale for `TFLiteDenoiser` and the
    file's largest difference from the Keras networks on the export's sample image (0-255 scale).

    Raises:
        ExportError: the file differs from the Keras networks by more than `tolerance` (None:
            the float32 limit export verification sets, `fp32_tolerance`), scaled up for
            outputs beyond the 0-255 scale as verification scales it.
    """
    from bfcnn.models.opponent import LiftedParts, is_opponent

    if not is_opponent(model):
        return None
    parts = LiftedParts(model)
    data = to_tflite(parts.network, "none", input_size=input_size)
    entry = {"chroma_offset": parts.scale}
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # the runtime is optional here: the file is written unchecked
        return data, entry
    from bfcnn.export.verification import FP32_TOLERANCE, FP32_TOLERANCE_CAP, fp32_tolerance, sample_image

    _, noisy = sample_image(3, size=input_size) if input_size else sample_image(3)
    lifted = parts.lift(noisy, parts.offset(noisy))[None]
    reference = parts.network(lifted, training=False).numpy()
    scale = max(1.0, float(np.abs(reference).max()) / 255.0)  # an untrained model's outputs run past 255
    if tolerance is None:
        tolerance, _ = fp32_tolerance(parts.network, lifted, FP32_TOLERANCE * scale, FP32_TOLERANCE_CAP * scale,
                                      reference=reference)
    else:
        tolerance *= scale
    interpreter = Interpreter(model_content=data)
    index = interpreter.get_input_details()[0]["index"]
    if input_size is None:
        interpreter.resize_tensor_input(index, list(lifted.shape), strict=True)
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, lifted)
    interpreter.invoke()
    out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    difference = float(np.abs(out - reference).max())
    if difference > tolerance:
        raise ExportError(f"the color model's networks in TFLite differ from Keras by {difference:.2e} on the "
                          f"0-255 scale, above {tolerance:g}")
    entry["max_abs_difference"] = difference
    return data, entry
