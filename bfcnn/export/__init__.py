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
    model_lifted.tflite for a color (opponent) model: its networks without the image-wide
                        chrominance lift, float32, which `bfcnn.lite.TFLiteDenoiser` runs
                        tiles through with the whole image's lift (`bfcnn.opponent_lift`)
    model_card.json     name, channels, value range, signatures, training config, parameters,
                        FLOPs per pixel, bias-free, verification results; `files`: bytes per
                        file (saved_model/ as the sum of its files), `sha256`: per file
                        (model.keras and each .tflite; saved_model/ is a folder and has its
                        size only); each `.tflite` entry also counts its int8 weight tensors

then reloads every artifact, runs it on a test photograph with sigma 25 noise, compares it
with the Keras model, and moves the folder into place only if all checks pass. The temporary
folder is removed on any failure, Ctrl-C and SIGTERM included (SIGTERM is turned into
`SystemExit(143)` while the export runs in the main thread); one left by a killed export
(`.<name>.tmp-*` beside the output) is removed by the next export to the same output.
TFLite files contain builtin operators only (no Select TF / Flex ops), so the stock LiteRT
runtime on Android and iOS runs them; an op without a builtin kernel is named in the error.

TensorFlow is imported on first use, so `python -m bfcnn.export --help` is instant.

The parts live in small modules: `exporter` (`export_model`, and `main`, which runs the
command line of `__main__`), `card` (the model card and its `.tflite` entries), `placing` (the output
folder checked, the finished folder moved into place, stale temporaries, SIGTERM), `loading`
(finding the model), `saved_model`, `tflite` (conversion and what a converted file holds),
`verification`, `signature` (input and output names, value range) and `errors`; this module
re-exports the public names.
"""

from bfcnn.export.errors import ExportError, UnsupportedOpsError, VerificationError
from bfcnn.export.exporter import export_model, main
from bfcnn.export.loading import RUN_FILES, WEIGHTS, load_for_export, resolve_model, warn
from bfcnn.export.placing import EXPORT_FILES
from bfcnn.export.saved_model import write_saved_model
from bfcnn.export.signature import INPUT_NAME, OUTPUT_NAME, VALUE_RANGE, model_channels
from bfcnn.export.tflite import (CONTROL_FLOW_OPS, MIN_FIXED_SIZE, QUANTIZATIONS, TFLITE_FILES,
                                 check_int8_supported, int8_weight_tensors, representative_images,
                                 runtime_sized_tensors, tflite_ops, to_tflite)
from bfcnn.export.verification import (FIDELITY_FLOORS_DB, FIXED_SIZE_MARGIN_DB, FP32_TOLERANCE,
                                       FP32_TOLERANCE_CAP, PSNR_MARGINS_DB, SENSITIVITY_FACTOR,
                                       SENSITIVITY_ULPS, SMALL_TEST_SIZE, TEST_SIGMA, TEST_SIZE,
                                       float32_sensitivity, format_verification, fp32_tolerance, sample_image,
                                       verify)

__all__ = [
    "CONTROL_FLOW_OPS",
    "ExportError",
    "FIDELITY_FLOORS_DB",
    "FIXED_SIZE_MARGIN_DB",
    "INPUT_NAME",
    "MIN_FIXED_SIZE",
    "OUTPUT_NAME",
    "FP32_TOLERANCE",
    "FP32_TOLERANCE_CAP",
    "float32_sensitivity",
    "fp32_tolerance",
    "PSNR_MARGINS_DB",
    "QUANTIZATIONS",
    "SENSITIVITY_FACTOR",
    "SENSITIVITY_ULPS",
    "SMALL_TEST_SIZE",
    "TEST_SIGMA",
    "TEST_SIZE",
    "TFLITE_FILES",
    "UnsupportedOpsError",
    "VALUE_RANGE",
    "VerificationError",
    "WEIGHTS",
    "export_model",
    "format_verification",
    "int8_weight_tensors",
    "load_for_export",
    "main",
    "representative_images",
    "runtime_sized_tensors",
    "sample_image",
    "tflite_ops",
    "to_tflite",
    "verify",
    "write_saved_model",
]
