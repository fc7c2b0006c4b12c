"""`export_model`, which writes an export into a temporary folder, verifies it and moves it into
place, and `main`, its command line."""

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Union

from bfcnn.errors import allowed
from bfcnn.export.card import file_sizes, json_default, model_card, tflite_entry
from bfcnn.export.errors import ExportError, VerificationError
from bfcnn.export.loading import RUN_FILES, resolve_model, warn
from bfcnn.export.placing import check_output, place, remove_stale_temporaries, sigterm_as_exit
from bfcnn.export.saved_model import write_saved_model
from bfcnn.export.signature import model_channels
from bfcnn.export.tflite import (LIFTED_FILE, MIN_FIXED_SIZE, QUANTIZATIONS, TFLITE_FILES, check_int8_supported,
                                 lifted_tflite, representative_images, to_tflite)
from bfcnn.export.verification import format_verification, verify
from bfcnn.io import output_problem, sha256


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The `bfcnn-export` / `python -m bfcnn.export` command; returns the exit status."""
    from bfcnn.export.__main__ import main as _main

    return _main(argv)


_convert = to_tflite  # export_model's `to_tflite` argument shadows the function


def _require_litert() -> None:
    try:
        import ai_edge_litert.interpreter  # noqa: F401  (checks the files' ops, runs them to verify)
    except ImportError as error:
        raise ExportError("TFLite export needs the LiteRT runtime (ai_edge_litert) to check and verify the "
                          "files: pip install ai-edge-litert (or bfcnn[lite])") from error


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
    check_output(out)
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
    with sigterm_as_exit():  # so that `finally` removes the temporary folder on SIGTERM too
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(out, log)
            tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
            log(f"exporting {source} -> {out}")
            write_saved_model(model, tmp / "saved_model")
            model.save(tmp / "model.keras")
            tflite = {}
            for mode in modes:
                log(f"converting to TFLite ({mode})")
                path = tmp / TFLITE_FILES[mode]
                path.write_bytes(_convert(model, mode, samples, input_size=tflite_size))
                tflite[TFLITE_FILES[mode]] = entry = tflite_entry(path, mode)
                if mode == "dynamic" and entry["int8_weight_tensors"] == 0:
                    warn(f"{TFLITE_FILES[mode]} holds no int8 weights: the converter quantizes only weights of "
                         "1,024 elements or more, and this model has none, so the file is a float32 copy")
            lifted = lifted_tflite(model, tflite_size, tolerance) if "none" in modes else None
            if lifted is not None:  # a color model: its networks, for tiles lifted by the whole image
                log(f"converting the color model's networks to TFLite ({LIFTED_FILE})")
                (tmp / LIFTED_FILE).write_bytes(lifted[0])
                tflite[LIFTED_FILE] = {**lifted[1], "sha256": sha256(tmp / LIFTED_FILE)}
            card = model_card(model, name, config, source, tflite)
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
            card["files"] = file_sizes(tmp)  # bytes per file; saved_model/ is the sum of its files
            # the .tflite files' checksums are in their entries already; model.keras is the one file left
            checksums = {"model.keras": sha256(tmp / "model.keras"), **{n: e["sha256"] for n, e in tflite.items()}}
            card["sha256"] = dict(sorted(checksums.items()))
            (tmp / "model_card.json").write_text(json.dumps(card, indent=2, default=json_default))
            place(tmp, out)
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
