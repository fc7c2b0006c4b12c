"""Verification of an export: every artifact reloaded, run on a test photograph, compared with Keras."""

from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

from bfcnn.evaluation import psnr, to_uint8
from bfcnn.export.errors import ExportError
from bfcnn.export.loading import as_float32, load_keras
from bfcnn.export.signature import OUTPUT_NAME, VALUE_RANGE, model_channels
from bfcnn.export.tflite import TFLITE_FILES, runtime_sized_tensors, tflite_ops

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
# A PSNR change against the clean image alone passes a file that does not denoise at all when
# the Keras model is poor (an identity file gained 10.5 dB over an early model's output), so a
# quantized file's output must also lie this close to the Keras output: the lowest PSNR (dB) of
# it against the Keras output (peak 255, or the Keras output's peak beyond 255). Measured on the
# test image (sigma 15 / 25 / 50) for the five zoo models and for tiny test models trained two
# steps (outputs up to 1,800): lowest seen, zoo / tiny:
#   fp16     67.8 (resnet_color_s) / 71.3
#   dynamic  43.5 (resnet_gray_s, sigma 50) / 38.8
#   int8     35.2 (pyramid_color_m) / 34.0
# A file returning its noisy input scores 14.4 to 21.1 dB against the zoo models (the noise)
# and 7.7 to 14.6 against the tiny ones; the floors sit 6 (int8, dynamic) to 18 dB (fp16) under
# the worst real file, and at least 7 dB above such a file.
FIDELITY_FLOORS_DB = {"fp16": 50.0, "dynamic": 32.0, "int8": 28.0}
# A file of one input size runs in tiles (`bfcnn.lite`): it may lose at most this much PSNR
# against the whole-image Keras output (plus its quantization margin). Tiles of 96 (the least
# allowed, `MIN_FIXED_SIZE`) to 256 with overlap 48 changed the zoo models' PSNR on the test image
# by -0.005 to +0.055 dB (sigma 15 / 25 / 50; tiles of 64: down to -0.021 dB); tiles of 3 x 5
# lost 7.3 dB on a tiny model.
FIXED_SIZE_MARGIN_DB = 0.2
TEST_SIGMA = 25.0
TEST_SIZE = (191, 255)  # odd on purpose: exercises the odd-size paths of every pyramid
SMALL_TEST_SIZE = (95, 127)  # for models with global (non-local) attention


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
           psnr_margins: Optional[Mapping[str, float]] = None, num_threads: Optional[int] = None,
           fidelity_floors: Optional[Mapping[str, float]] = None) -> Dict[str, Any]:
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
        fidelity_floors: the lowest PSNR (dB) of a quantized file's output against the Keras
            output, per quantization; default `FIDELITY_FLOORS_DB`.

    Returns:
        {"passed", "reference_psnr", "noisy_psnr", "image_shape", "sigma", "results": [...]},
        one result per artifact with max_abs_diff, psnr, psnr_change, limit and passed.
        The uint8 signature is checked against the float signature's output on the same
        uint8 input, rounded half to even and clipped: a pixel may differ (by one level) only
        where that float output lies within the fp32 limit of a .5 tie.
    """
    directory = Path(output_directory)
    margins = {**PSNR_MARGINS_DB, **(psnr_margins or {})}
    floors = {**FIDELITY_FLOORS_DB, **(fidelity_floors or {})}
    if model is None:
        model = as_float32(load_keras(directory / "model.keras"))
    channels = model_channels(model)
    default_image = image is None
    if default_image:
        global_attention = any(type(layer).__name__ == "NonLocalBlock" for layer in model._flatten_layers())
        # Non-local blocks hold an (H W) x (H W / 4) attention matrix: 2.4 GB at the full test size.
        image = sample_image(channels, size=SMALL_TEST_SIZE if global_attention else TEST_SIZE)
    clean, noisy = image
    if noisy.shape[-1] != channels:
        raise ExportError(f"the test image has {noisy.shape[-1]} channels, the model takes {channels}")
    ref = _Reference(model, clean, noisy, tolerance)
    results = []
    keras_file = directory / "model.keras"
    if keras_file.exists():
        reloaded = load_keras(keras_file)
        results.append(ref.with_small(
            _compare("model.keras", "fp32", reloaded(noisy[None], training=False), ref.output, clean, ref.psnr,
                     ref.tolerance), reloaded(ref.small[None], training=False)))
    if (directory / "saved_model").exists():
        results += _check_saved_model(directory / "saved_model", ref)
    for quantize, filename in TFLITE_FILES.items():
        if (directory / filename).exists():
            results.append(_check_tflite(directory / filename, quantize, ref, margins, num_threads, floors))
    if not results:
        raise ExportError(f"nothing to verify in {str(directory)!r}: no model.keras, saved_model or .tflite file")
    return {
        "passed": all(r["passed"] for r in results),
        "sigma": TEST_SIGMA if default_image else None,
        "image_shape": list(noisy.shape),
        "noisy_psnr": psnr(clean, noisy),
        "reference_psnr": ref.psnr,
        "float32_sensitivity": ref.sensitivity,
        "fp32_tolerance": ref.tolerance,
        "results": results,
    }


class _Reference:
    """The Keras model's outputs every artifact is compared with: on the test image and on a
    13x7 crop of it (a second, odd size: the input really is dynamic), and the float32 limit."""

    def __init__(self, model, clean, noisy, tolerance: Optional[float]):
        self.model, self.clean, self.noisy = model, clean, noisy
        self.output = self.run(noisy)
        self.psnr = psnr(clean, self.output)
        self.small = noisy[:13, :7]
        self.small_output = self.run(self.small)
        # float32 errors are relative: an output beyond the 0-255 scale (an untrained model) widens
        # the tolerance in proportion; a trained denoiser's output is on the scale and keeps it.
        peak = float(max(np.max(np.abs(self.output)), np.max(np.abs(self.small_output))))
        scale = max(1.0, peak / VALUE_RANGE[1])
        self.peak = VALUE_RANGE[1] * scale  # the peak of PSNR against the Keras output
        if tolerance is None:
            self.tolerance, self.sensitivity = fp32_tolerance(model, noisy, FP32_TOLERANCE * scale,
                                                              FP32_TOLERANCE_CAP * scale, reference=self.output)
        else:
            self.tolerance = tolerance * scale
            self.sensitivity = float32_sensitivity(model, noisy, reference=self.output)

    def run(self, image) -> np.ndarray:
        """The Keras model on one [H, W, C] image, float64."""
        return np.asarray(self.model(image[None], training=False), np.float64)[0]

    def with_small(self, result: Dict[str, Any], small_out, small_expected=None) -> Dict[str, Any]:
        """A float32 `result` also held to the tolerance on the 13x7 crop (`small_out`)."""
        if result["kind"] == "fp32":
            expected = self.small_output if small_expected is None else small_expected
            diff = float(np.max(np.abs(np.asarray(small_out, np.float64).reshape(expected.shape) - expected)))
            result["max_abs_diff_13x7"] = diff
            result["passed"] = result["passed"] and diff <= self.tolerance
        return result


def _check_saved_model(path: Path, ref: _Reference) -> list:
    """The SavedModel's float32 signature (a batch of two, and the crop) and its uint8 one."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    serve = loaded.signatures["serving_default"]
    batch = np.stack([ref.noisy, ref.noisy[::-1, ::-1]])
    out = serve(image=tf.constant(batch))[OUTPUT_NAME].numpy()
    # Compared with the Keras model on the same batch: batched and single-image runs may
    # round differently, which N3 blocks amplify (1.6e-3 seen on a tiny N3Net's output).
    batch_reference = np.asarray(ref.model(batch, training=False), np.float64)
    result = _compare("saved_model:serving_default", "fp32", out[0], batch_reference[0], ref.clean, ref.psnr,
                      ref.tolerance)
    result["max_abs_diff_batch"] = float(np.max(np.abs(out[1] - batch_reference[1])))
    result["passed"] = result["passed"] and result["max_abs_diff_batch"] <= ref.tolerance
    results = [ref.with_small(result, serve(image=tf.constant(ref.small[None]))[OUTPUT_NAME].numpy())]

    # The uint8 signature must be the float one rounded half to even and clipped: the float
    # signature's output on the same uint8 input, rounded here, may differ from it only at
    # pixels whose float output lies within float32 noise (the fp32 limit) of a .5 tie, where
    # the two graphs may round to either side. Truncating, rounding half up or an offset
    # shows up at pixels far from any tie.
    noisy_uint8 = to_uint8(ref.noisy)
    as_float = serve(image=tf.constant(noisy_uint8[None].astype(np.float32)))[OUTPUT_NAME].numpy()[0]
    as_float = np.asarray(as_float, np.float64)
    expected = to_uint8(as_float)
    out8 = loaded.signatures["denoise_uint8"](image=tf.constant(noisy_uint8[None]))[OUTPUT_NAME].numpy()[0]
    diff = np.abs(out8.astype(np.int16) - expected.astype(np.int16))
    near_tie = np.abs(as_float - np.floor(as_float) - 0.5) <= min(ref.tolerance, FP32_TOLERANCE_CAP)
    off_tie = int(np.count_nonzero((diff > 0) & ~near_tie))
    results.append({
        "artifact": "saved_model:denoise_uint8",
        "kind": "uint8",
        "dtype": str(out8.dtype),
        "max_abs_diff": float(diff.max()),
        "pixels_differing": int(np.count_nonzero(diff)),
        "pixels_differing_off_tie": off_tie,
        "psnr": psnr(ref.clean, out8),
        "psnr_change": psnr(ref.clean, out8) - psnr(ref.clean, expected),
        "limit": "= rounded float signature",
        "passed": bool(out8.dtype == np.uint8 and diff.max() <= 1 and off_tie == 0),
    })
    return results


def _check_tflite(path: Path, quantize: str, ref: _Reference, margins: Mapping[str, float],
                  num_threads: Optional[int], fidelity: Mapping[str, float]) -> Dict[str, Any]:
    """One `.tflite` file through LiteRT: float32 held to the tolerance, quantized to its margin
    and to its floor of PSNR against the Keras output; a file of one input size also against
    the whole-image Keras output (`FIXED_SIZE_MARGIN_DB`)."""
    from bfcnn.lite import DEFAULT_OVERLAP, TFLiteDenoiser
    from bfcnn.models.shift import shift_period
    from bfcnn.tiling import fixed_size_apply

    align = shift_period(ref.model)  # tiles start at multiples of it, as bfcnn.lite's do with the card
    runner = TFLiteDenoiser(path, num_threads=num_threads, shift_period=align)
    expected, expected_psnr, small_expected = ref.output, ref.psnr, ref.small_output
    if runner.fixed_size is not None:  # a file of one input size pads and tiles other sizes: so does the reference
        expected = fixed_size_apply(ref.run, ref.noisy, runner.fixed_size, DEFAULT_OVERLAP, align)
        expected_psnr = psnr(ref.clean, expected)
        small_expected = fixed_size_apply(ref.run, ref.small, runner.fixed_size, DEFAULT_OVERLAP, align)
    kind = "fp32" if quantize == "none" else quantize
    out = runner(ref.noisy)
    result = _compare(path.name, kind, out, expected, ref.clean, expected_psnr,
                      ref.tolerance if quantize == "none" else margins[quantize])
    if quantize != "none":
        # A PSNR loss against the clean image alone passes a file that does not denoise at
        # all when the Keras model is poor; the output must also stay close to the Keras one.
        floor = fidelity[quantize]
        result["psnr_vs_keras"] = _psnr_against(out, expected, ref.peak)
        result["limit"] += f", >= {floor:g} dB vs Keras"
        result["passed"] = result["passed"] and result["psnr_vs_keras"] >= floor
    if runner.fixed_size is not None:
        # The tiles may cost quality against the whole image (too small a size): held to a margin
        # (plus the quantization margin for a quantized file).
        allowed = FIXED_SIZE_MARGIN_DB + (0.0 if quantize == "none" else margins[quantize])
        result["input_size"] = list(runner.fixed_size)
        result["psnr_change_whole_image"] = result["psnr"] - ref.psnr
        result["limit"] += f", whole-image loss <= {allowed:g} dB"
        result["passed"] = result["passed"] and result["psnr_change_whole_image"] >= -allowed
    content = path.read_bytes()
    result["ops"] = tflite_ops(content)
    result["runtime_sized_tensors"] = len(runtime_sized_tensors(content))
    return ref.with_small(result, runner(ref.small), small_expected)


def _psnr_against(out, reference, peak: float) -> float:
    """PSNR (dB) of `out` against `reference` (not the clean image), for the peak value `peak`."""
    mse = float(np.mean((np.asarray(out, np.float64).reshape(np.shape(reference)) - reference) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(peak ** 2 / mse))


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
