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

The parts live in small modules: `loading` (finding the model), `saved_model`, `tflite`
(conversion and what a converted file holds), `verification`, `signature` (input and output
names, value range) and `errors`; this module writes the folder and its model card, and
re-exports the public names.
"""

import contextlib
import datetime
import json
import os
import re
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import numpy as np

from bfcnn.errors import allowed
from bfcnn.export.errors import ExportError, UnsupportedOpsError, VerificationError
from bfcnn.export.loading import RUN_FILES, WEIGHTS, load_for_export, resolve_model, warn
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
from bfcnn.io import existing_ancestor, output_problem, sha256, usual_mode

# what an export folder holds; replacing one that holds anything else is refused
EXPORT_FILES = frozenset({"saved_model", "model.keras", "model_card.json", *TFLITE_FILES.values()})

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
    import hashlib

    from ai_edge_litert.interpreter import Interpreter

    content = path.read_bytes()  # read once: the ops, the int8 weights and the checksum come from it
    interpreter = Interpreter(model_content=content)
    signature = interpreter.get_signature_list()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    return {
        "quantization": quantize,
        "signature": signature,
        "input": {"name": inp["name"], "signature_name": INPUT_NAME, "dtype": np.dtype(inp["dtype"]).name,
                  "shape_signature": [int(d) for d in inp["shape_signature"]]},
        "output": {"name": out["name"], "signature_name": OUTPUT_NAME, "dtype": np.dtype(out["dtype"]).name,
                   "shape_signature": [int(d) for d in out["shape_signature"]]},
        "ops": tflite_ops(content),
        # constant int8 tensors: 0 in a `dynamic` file means the converter quantized nothing
        "int8_weight_tensors": int8_weight_tensors(content),
        "bytes": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
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
    """Moves the finished temporary folder to `out`, replacing a previous export there; the previous
    export is put back if the move fails or is interrupted (Ctrl-C, SIGTERM) half way."""
    os.chmod(tmp, usual_mode(directory=True))  # mkdtemp made it private
    _check_output(out)
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        try:
            os.replace(out, old / out.name)
            os.replace(tmp, out)
        except BaseException:  # an OSError, or KeyboardInterrupt / SystemExit between the two moves
            if not out.exists() and (old / out.name).exists():
                os.replace(old / out.name, out)
            raise
        finally:
            if out.exists():  # the new export, or the previous one put back: `old` holds nothing needed
                shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def _remove_stale_temporaries(out: Path, log) -> None:
    """Removes `.<name>.tmp-XXXXXXXX` folders an export to `out` that was killed left beside it
    (only folders of exactly that pattern: mkdtemp's prefix and 8 random characters)."""
    pattern = re.compile(re.escape(f".{out.name}.tmp-") + r"[a-z0-9_]{8}")
    try:
        entries = list(out.parent.iterdir())
    except OSError:
        return
    for entry in entries:
        if pattern.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink():
            log(f"removing {entry}, left by an export that was killed")
            shutil.rmtree(entry, ignore_errors=True)


@contextlib.contextmanager
def _sigterm_as_exit():
    """Turns SIGTERM into `SystemExit(128 + 15)` while the export runs, so its temporary folder is
    removed (`finally` blocks run) before the process ends; a second SIGTERM ends it at once.
    Only in the main thread (Python delivers signals there) and only where SIGTERM has its
    default action (a caller's own handler or an ignored SIGTERM is left alone)."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def handler(signum, frame):
        signal.signal(signum, signal.SIG_DFL)  # a second one: as without this handler
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _default_name(model_or_path, model, source: str) -> str:
    """The card's name: a zoo model's name; a `.keras` file's stem, or for a run's `model.keras` /
    `best.keras` its folder's name; a folder's name; else the Keras model's name."""
    if not isinstance(model_or_path, (str, os.PathLike)):
        return model.name
    text = os.fspath(model_or_path)
    if source.startswith("zoo:"):
        return text
    path = Path(os.path.abspath(Path(text).expanduser()))
    if path.is_file() or path.suffix == ".keras":
        name = path.parent.name if path.name in RUN_FILES else path.stem
    else:
        name = path.name
    return name or model.name


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
    fidelity_floors: Optional[Mapping[str, float]] = None,
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
        name: the model's name in the card; default a zoo model's name, a `.keras` file's
            stem (its folder's name for a run's `model.keras` / `best.keras`), a folder's
            name, or for a keras.Model its `name`.
        pipeline_config: a pipeline YAML to build the model when restoring a checkpoint.
        weights: which weights of a run folder: `auto`, `final`, `best`, `checkpoint`.
        verify_artifacts: reload and compare every artifact (False skips the checks).
        psnr_margins: overrides of `PSNR_MARGINS_DB`.
        fidelity_floors: overrides of `FIDELITY_FLOORS_DB` (a quantized file's least PSNR
            against the Keras output).
        tolerance: the largest max|diff| of a float32 artifact, 0-255 scale; None: as `verify`.
        image: (clean uint8, noisy float32) for verification; default `sample_image`.
        num_threads: LiteRT threads for verification.
        tflite_size: None (TFLite files take any size), or an int or (height, width), each
            at least `MIN_FIXED_SIZE`: every TFLite file takes only that size, sized ahead for
            speed (see `to_tflite`); `bfcnn.lite.TFLiteDenoiser` tiles and pads other sizes,
            and verification holds the tiled result to the whole-image Keras output
            (`FIXED_SIZE_MARGIN_DB`).
        log: where progress lines go (None for silence).

    Returns:
        {"output_directory", "passed", "model_card", "verification"}.

    Raises:
        VerificationError: an artifact is out of tolerance; nothing is written (`.report`
            holds the numbers).
        UnsupportedOpsError: the model needs a non-builtin TFLite op (named).
        ExportError: bad arguments, nothing loadable at the path, or an output folder that
            cannot be written.

    Example:
        >>> report = export_model("runs/x", "out/x", quantize=["none", "fp16"])
        >>> print(format_verification(report["verification"]))
    """
    log = log or (lambda *args: None)
    modes = _tflite_modes(quantize, to_tflite, representative_dir)
    if representative_dir is not None and "int8" not in modes:
        warn(f"the representative images ({representative_dir}) are used for int8 calibration only, and no int8 "
             "file was asked for (--quantize int8): ignored")
    if tflite_size is not None:
        tflite_size = _check_tflite_size(tflite_size)
    out = Path(output_directory).expanduser().absolute()
    _check_output(out)
    problem = output_problem(out, folder=True) or (output_problem(out.parent, folder=True) if out.exists() else None)
    if problem:
        raise ExportError(f"cannot write the export to {str(out)!r}: {problem}")

    model, config, source = resolve_model(model_or_path, config, weights, pipeline_config)
    if name is None:
        name = _default_name(model_or_path, model, source)
    samples = None
    if "int8" in modes:
        check_int8_supported(model)  # before any file is written or converted
        samples = representative_images(representative_dir, model_channels(model))

    tmp = None
    with _sigterm_as_exit():  # so that `finally` removes the temporary folder on SIGTERM too
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            _remove_stale_temporaries(out, log)
            tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
            log(f"exporting {source} -> {out}")
            write_saved_model(model, tmp / "saved_model")
            model.save(tmp / "model.keras")
            tflite = {}
            for mode in modes:
                log(f"converting to TFLite ({mode})")
                path = tmp / TFLITE_FILES[mode]
                path.write_bytes(_convert(model, mode, samples, input_size=tflite_size))
                tflite[TFLITE_FILES[mode]] = entry = _tflite_entry(path, mode)
                if mode == "dynamic" and entry["int8_weight_tensors"] == 0:
                    warn(f"{TFLITE_FILES[mode]} holds no int8 weights: the converter quantizes only weights of "
                         "1,024 elements or more, and this model has none, so the file is a float32 copy")
            card = _model_card(model, name, config, source, tflite)
            report = None
            if verify_artifacts:
                log("verifying the artifacts")
                report = verify(tmp, model, image, tolerance, psnr_margins, num_threads, fidelity_floors)
                card["verification"] = report
                log(format_verification(report))
                if not report["passed"]:
                    failed = [r["artifact"] for r in report["results"] if not r["passed"]]
                    raise VerificationError(f"export verification failed for {', '.join(failed)}; "
                                            f"nothing was written to {str(out)!r}", report)
            card["files"] = _file_sizes(tmp)  # bytes per file; saved_model/ is the sum of its files
            # the .tflite files' checksums are in their entries already; model.keras is the one file left
            checksums = {"model.keras": sha256(tmp / "model.keras"), **{n: e["sha256"] for n, e in tflite.items()}}
            card["sha256"] = dict(sorted(checksums.items()))
            (tmp / "model_card.json").write_text(json.dumps(card, indent=2, default=_json_default))
            _place(tmp, out)
        except OSError as error:  # a folder that cannot be written (read-only, /sys, /proc), a full disk
            raise ExportError(f"cannot write the export to {str(out)!r}: {error}") from error
        finally:
            if tmp is not None and tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    log(f"wrote {out}")
    return {"output_directory": str(out), "passed": report is None or report["passed"], "model_card": card,
            "verification": report}


def _check_tflite_size(tflite_size):
    """(height, width) of `tflite_size`; ExportError for a bad value or one under `MIN_FIXED_SIZE`."""
    from bfcnn.export.tflite import _fixed_size
    from bfcnn.lite import DEFAULT_OVERLAP

    height, width = _fixed_size(tflite_size)
    if min(height, width) < MIN_FIXED_SIZE:
        raise ExportError(f"tflite_size {height} x {width} is too small: a file of one input size runs in tiles "
                          f"overlapping by {DEFAULT_OVERLAP} pixels, which need a side of at least {MIN_FIXED_SIZE} "
                          f"(twice the overlap); give {MIN_FIXED_SIZE} or more, or no size (files of any size)")
    return height, width


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
