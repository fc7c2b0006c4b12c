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

The parts live in small modules: `loading` (finding the model), `saved_model`, `tflite`
(conversion and what a converted file holds), `verification`, `signature` (input and output
names, value range) and `errors`; this module writes the folder and its model card, and
re-exports the public names.
"""

import datetime
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import numpy as np

from bfcnn.errors import allowed
from bfcnn.export.errors import ExportError, UnsupportedOpsError, VerificationError
from bfcnn.export.loading import WEIGHTS, load_for_export, resolve_model
from bfcnn.export.saved_model import write_saved_model
from bfcnn.export.signature import INPUT_NAME, OUTPUT_NAME, VALUE_RANGE, model_channels
from bfcnn.export.tflite import (CONTROL_FLOW_OPS, QUANTIZATIONS, TFLITE_FILES, check_int8_supported,
                                 representative_images, runtime_sized_tensors, tflite_ops, to_tflite)
from bfcnn.export.verification import (FP32_TOLERANCE, FP32_TOLERANCE_CAP, PSNR_MARGINS_DB, SENSITIVITY_FACTOR,
                                       SENSITIVITY_ULPS, SMALL_TEST_SIZE, TEST_SIGMA, TEST_SIZE,
                                       float32_sensitivity, format_verification, fp32_tolerance, sample_image,
                                       verify)
from bfcnn.io import existing_ancestor, sha256, usual_mode

# what an export folder holds; replacing one that holds anything else is refused
EXPORT_FILES = frozenset({"saved_model", "model.keras", "model_card.json", *TFLITE_FILES.values()})

__all__ = [
    "CONTROL_FLOW_OPS",
    "ExportError",
    "INPUT_NAME",
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


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The `bfcnn-export` / `python -m bfcnn.export` command; returns the exit status."""
    from bfcnn.export.__main__ import main as _main

    return _main(argv)


_convert = to_tflite  # export_model's `to_tflite` argument shadows the function


def _file_sizes(directory: Path) -> Dict[str, int]:
    sizes = {}
    for entry in sorted(directory.iterdir()):
        if entry.is_dir():
            sizes[entry.name + "/"] = sum(f.stat().st_size for f in entry.rglob("*") if f.is_file())
        else:
            sizes[entry.name] = entry.stat().st_size
    return sizes


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
        "bytes": path.stat().st_size,
        "sha256": sha256(path),
    }


def _model_card(model, name, config, source, tflite: Dict[str, dict]) -> Dict[str, Any]:
    import keras
    import tensorflow as tf

    import bfcnn
    from bfcnn.models.cost import count_parameters, flops_per_pixel, is_bias_free
    from bfcnn.models.shift import shift_period

    channels = model_channels(model)
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
        "shift_period": shift_period(model),
        "shift_period_note": "tiles start at multiples of it (bfcnn.tiling.tile_spans): a shift by it moves the "
                             "output alike, a smaller one may not",
        "bfcnn_version": bfcnn.__version__,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _check_output(out: Path) -> None:
    """Refuses an output path that is a file, lies under a file, or is a folder holding other files
    than a previous export (checked before the export work, and again before the move)."""
    existing = existing_ancestor(out)
    if not existing.is_dir():
        where = "exists" if existing == out else f"lies under {str(existing)!r}, which exists"
        raise ExportError(f"output path {str(out)!r} {where} and is not a directory")
    if existing != out or not any(out.iterdir()):
        return
    if not (out / "model_card.json").exists():
        raise ExportError(f"output directory {str(out)!r} is not empty and holds no bfcnn export; "
                          "choose a new or empty folder")
    foreign = sorted(entry.name for entry in out.iterdir() if entry.name not in EXPORT_FILES)
    if foreign:  # replacing the folder would delete them
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ExportError(f"output directory {str(out)!r} holds a previous export and other files ({shown}), "
                          "which replacing it would delete; move them or choose another folder")


def _require_litert() -> None:
    try:
        import ai_edge_litert.interpreter  # noqa: F401  (checks the files' ops, runs them to verify)
    except ImportError as error:
        raise ExportError("TFLite export needs the LiteRT runtime (ai_edge_litert) to check and verify the "
                          "files: pip install ai-edge-litert (or bfcnn[lite])") from error


def _place(tmp: Path, out: Path) -> None:
    """Moves the finished temporary folder to `out`, replacing a previous export there."""
    os.chmod(tmp, usual_mode(directory=True))  # mkdtemp made it private
    _check_output(out)
    if out.exists():
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
    tflite_size=None,
    log=print,
) -> Dict[str, Any]:
    """Exports a denoiser to SavedModel, `.keras` and TFLite, verifies it, then moves it into place.

    Args:
        model_or_path: a keras.Model, a `.keras` file, a training run or export folder
            (see `load_for_export`), or a zoo name.
        output_directory: the export folder; created, or replaced if it holds a previous
            export (a non-empty folder without `model_card.json`, or one holding files an export
            does not write, is refused).
        to_tflite: write TFLite files: `model.tflite` (float32) always, plus one per
            quantization asked for.
        quantize: one or more of `none`, `fp16`, `dynamic`, `int8` (`none` is `model.tflite`).
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
        tflite_size: None (TFLite files take any size), or an int or (height, width): every
            TFLite file takes only that size, sized ahead for speed (see `to_tflite`);
            `bfcnn.lite.TFLiteDenoiser` tiles and pads other sizes.
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
    modes = _tflite_modes(quantize, to_tflite, representative_dir)
    out = Path(output_directory).expanduser().absolute()
    _check_output(out)

    model, config, source = resolve_model(model_or_path, config, weights, pipeline_config)
    if name is None:
        stem = Path(os.fspath(model_or_path)).name if isinstance(model_or_path, (str, os.PathLike)) else ""
        name = stem.removesuffix(".keras") if stem not in ("", "model.keras", "best.keras") else model.name
    samples = None
    if "int8" in modes:
        check_int8_supported(model)  # before any file is written or converted
        samples = representative_images(representative_dir, model_channels(model))

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
            path.write_bytes(_convert(model, mode, samples, input_size=tflite_size))
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


def _tflite_modes(quantize, to_tflite: bool, representative_dir) -> list:
    """The TFLite files to write, in `QUANTIZATIONS` order, after checking the arguments asking
    for them (and that the LiteRT runtime, which checks and verifies them, is installed)."""
    modes = [quantize] if isinstance(quantize, str) else list(quantize)
    bad = [q for q in modes if q not in QUANTIZATIONS]
    if bad:
        raise ExportError(f"unknown quantization {bad[0]!r}; allowed: {allowed(QUANTIZATIONS)}")
    if not modes and to_tflite:
        raise ExportError(f"quantize is empty; give one or more of {allowed(QUANTIZATIONS)}")
    # model.tflite (float32) always comes with the quantized files: the reference they are checked against
    modes = [q for q in QUANTIZATIONS if q in modes or q == "none"] if to_tflite else []
    if modes:
        _require_litert()
    if "int8" in modes and representative_dir is None:
        raise ExportError("int8 quantization needs --representative-dir DIR (representative_dir): photos like "
                          "the ones the model will denoise, e.g. its training set")
    return modes


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
