"""The evaluation protocol of published denoising tables, in one place.

Clean images are uint8 decoded as float on the 0-255 scale; noisy = clean + sigma * n
with n ~ N(0, 1) per pixel and channel, from a fixed seed, NOT clipped or rounded; the
denoised output is clipped to [0, 255] and rounded to uint8; PSNR = 10 log10(255^2 / MSE)
against the uint8 clean image; the table reports the mean of per-image PSNR. Used by the
trainer's validation and by `python -m bfcnn.evaluate`: the same noise, clipping and PSNR code.
The trainer's validation also center-crops each image to `validation.max_size` (default 256)
and runs the model at `train.precision`, so its numbers equal `bfcnn.evaluate`'s only with
`max_size: null` in float32.
"""

import math
import time
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np

from bfcnn.errors import BfcnnError

# What `evaluate_denoisers` can score; the noisy image gets PSNR and MAE only.
METRICS = ("psnr", "ssim", "mae")
NOISY = "noisy"


def check_sigma(sigma) -> float:
    """`sigma` as a float; BfcnnError (a ValueError) unless it is a finite number >= 0."""
    if isinstance(sigma, (bool, np.bool_)) or not isinstance(sigma, (int, float, np.integer, np.floating)) or \
            not (math.isfinite(sigma) and sigma >= 0):
        raise BfcnnError(f"sigma must be a finite number >= 0 (noise std on the 0-255 scale), got {sigma!r}")
    return float(sigma)


def _check_shapes(clean, estimate, metric: str) -> None:
    """BfcnnError unless the two images have one shape (numpy would broadcast [H, W, 1] against
    [H, W, 3], or [H, W] against [H, W, 1], into a score of other pixels)."""
    if np.shape(clean) != np.shape(estimate):
        raise BfcnnError(f"{metric}: clean and estimate must have the same shape, got {np.shape(clean)} and "
                         f"{np.shape(estimate)}")


def noise_seed(seed: int, index: int, sigma: float) -> np.random.Generator:
    """The generator of the noise added to image `index` at level `sigma`: order independent."""
    sigma = check_sigma(sigma)
    return np.random.default_rng([int(seed), int(index), int(round(float(sigma) * 1000))])


def add_noise(clean: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """`clean + sigma * N(0, 1)` as float32, not clipped, not rounded.

    Raises:
        BfcnnError: `sigma` is negative or not a finite number.
    """
    sigma = check_sigma(sigma)
    clean = np.asarray(clean, np.float32)
    return (clean + sigma * rng.standard_normal(clean.shape)).astype(np.float32)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Clips to [0, 255] and rounds: how a denoised image is scored."""
    return np.clip(np.round(np.asarray(image, np.float64)), 0, 255).astype(np.uint8)


def psnr(clean: np.ndarray, estimate: np.ndarray) -> float:
    """PSNR in dB of `estimate` (scored as uint8) against the uint8 `clean` image of the same shape."""
    _check_shapes(clean, estimate, "psnr")
    clean = np.asarray(clean, np.float64)
    mse = np.mean((to_uint8(estimate).astype(np.float64) - clean) ** 2)
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))


def ssim(clean: np.ndarray, estimate: np.ndarray) -> float:
    """SSIM (Wang et al. 2004; Gaussian window 11, sigma 1.5) of the uint8 estimate, mean over channels.

    Images smaller than the window use a window as large as the image. Both are [H, W, C].
    """
    _check_shapes(clean, estimate, "ssim")
    import tensorflow as tf

    a = tf.constant(np.asarray(clean, np.float32)[None])
    b = tf.constant(to_uint8(estimate).astype(np.float32)[None])
    window = int(min(11, a.shape[1], a.shape[2]))
    return float(tf.image.ssim(a, b, max_val=255.0, filter_size=window)[0])


def mae(clean: np.ndarray, estimate: np.ndarray, quantize: bool = True) -> float:
    """Mean absolute error on the 0-255 scale; `quantize` scores `estimate` as uint8 first.

    Denoised images are scored quantized (clipped and rounded); the original bfcnn's
    noise-level table scores the noisy image as it is (`quantize=False`). The two images have
    one shape.
    """
    _check_shapes(clean, estimate, "mae")
    estimate = to_uint8(estimate) if quantize else estimate
    return float(np.mean(np.abs(np.asarray(estimate, np.float64) - np.asarray(clean, np.float64))))


def center_crop(image: np.ndarray, max_size) -> np.ndarray:
    """The central `max_size` x `max_size` part (or the whole image when smaller / None).

    Raises:
        BfcnnError: `max_size` is not None or a positive integer.
    """
    if max_size is None:
        return image
    if isinstance(max_size, (bool, np.bool_)) or not isinstance(max_size, (int, np.integer)) or max_size < 1:
        raise BfcnnError(f"max_size must be a positive integer (pixels) or None (no crop), got {max_size!r}")
    h, w = image.shape[:2]
    top, left = max(0, (h - max_size) // 2), max(0, (w - max_size) // 2)
    return image[top : top + max_size, left : left + max_size]


def paired_difference(scores: Sequence[float], reference: Sequence[float]) -> Dict[str, float]:
    """How far one method's per-image scores are from another's on the same noisy images.

    A mean PSNR over a dozen images moves by hundredths of a dB from image to image; the
    paired difference says whether a lead of that size is more than that.

    Args:
        scores, reference: per-image scores of the two methods, image for image.

    Returns:
        {"mean": mean of scores - reference, "standard_error": its standard error (sample
        standard deviation / sqrt(n); 0 for one image), "better": images where scores >
        reference, "images": n}.
    """
    a, b = np.asarray(scores, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"need two equally long, non-empty score lists, got {a.shape} and {b.shape}")
    difference = a - b
    error = float(difference.std(ddof=1) / np.sqrt(a.size)) if a.size > 1 else 0.0
    return {"mean": float(difference.mean()), "standard_error": error,
            "better": int((difference > 0).sum()), "images": int(a.size)}


def evaluate_denoisers(
    denoisers: Mapping[str, Callable[[np.ndarray, float], np.ndarray]],
    images: Sequence[np.ndarray],
    sigmas: Iterable[float],
    seed: int = 0,
    metrics: Sequence[str] = ("psnr", "ssim"),
    callback: Optional[Callable[..., None]] = None,
    eight_bit: bool = False,
) -> Dict[float, Dict[str, Dict[str, object]]]:
    """Scores several denoisers side by side on the same noisy images, following the protocol above.

    For each sigma and image the noise is drawn once (`noise_seed(seed, index, sigma)`), and
    every denoiser sees that same noisy image.

    Args:
        denoisers: name -> function mapping a float32 [H, W, C] noisy image (0-255 scale, not
            clipped) and its noise level sigma to the estimate. The name 'noisy' is reserved.
        images: clean uint8 [H, W, C] images, at least one.
        sigmas: noise standard deviations on the 0-255 scale (finite, >= 0), at least one.
        seed: the noise seed.
        metrics: any of 'psnr', 'ssim', 'mae'. The noisy image is scored with 'psnr'
            (as uint8, like the estimates) and 'mae' (unquantized), never 'ssim'.
        callback: called as `callback(sigma, index, clean, noisy, estimates)` after each image,
            `estimates` being {name: estimate}; for progress bars and saving images.
        eight_bit: clip the noisy image to [0, 255] and round it, as an 8-bit photograph holds
            it, before the denoisers see it (off in the published protocol). Clipping makes the
            noise's mean non-zero in dark and bright regions.

    Returns:
        {sigma: {"noisy": {metric: mean, "per_image": {metric: [...]}},
                 name: {metric: mean, "seconds_per_image": mean, "cpu_seconds_per_image": mean,
                        "per_image": {...}}}}. Seconds are wall-clock time of the call; CPU
        seconds are the process's CPU time over it (all threads), telling a loaded machine apart.

    Raises:
        ValueError: an unknown metric, or a denoiser named 'noisy'; BfcnnError (a ValueError):
            no images, no sigmas, or a negative or non-finite sigma. All before any denoiser runs.
    """
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; allowed: {', '.join(METRICS)}")
    if NOISY in denoisers:
        raise ValueError(f"a denoiser may not be named {NOISY!r}: that row is the noisy input")
    images = list(images)  # a generator would be used up by the first sigma
    if not images:
        raise BfcnnError("no images to evaluate on: the mean scores of none would be NaN")
    sigmas = _checked_sigmas(sigmas)
    noisy_metrics = [m for m in metrics if m != "ssim"]
    results: Dict[float, Dict[str, Dict[str, object]]] = {}
    for sigma in sigmas:
        scores = {name: {m: [] for m in metrics} for name in denoisers}
        scores[NOISY] = {m: [] for m in noisy_metrics}
        seconds = {name: [] for name in denoisers}
        cpu_seconds = {name: [] for name in denoisers}
        for index, clean in enumerate(images):
            noisy = add_noise(clean, sigma, noise_seed(seed, index, sigma))
            if eight_bit:
                noisy = to_uint8(noisy).astype(np.float32)
            for metric in noisy_metrics:
                scores[NOISY][metric].append(_score(metric, clean, noisy, quantize=metric != "mae"))
            estimates = {}
            for name, denoise in denoisers.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                estimate = denoise(noisy, sigma)
                seconds[name].append(time.perf_counter() - start)
                cpu_seconds[name].append(time.process_time() - start_cpu)
                estimates[name] = estimate
                for metric in metrics:
                    scores[name][metric].append(_score(metric, clean, estimate))
            if callback is not None:
                callback(sigma, index, clean, noisy, estimates)
        results[sigma] = {}
        for name, per_image in scores.items():
            entry: Dict[str, object] = {m: float(np.mean(v)) for m, v in per_image.items()}
            if name != NOISY:
                entry["seconds_per_image"] = float(np.mean(seconds[name]))
                entry["cpu_seconds_per_image"] = float(np.mean(cpu_seconds[name]))
            entry["per_image"] = {m: [float(x) for x in v] for m, v in per_image.items()}
            results[sigma][name] = entry
    return results


def _checked_sigmas(sigmas) -> List[float]:
    """`sigmas` as a list of floats; BfcnnError for a bare number or string, an empty list, or a
    negative or non-finite sigma."""
    if isinstance(sigmas, (str, bytes)) or not hasattr(sigmas, "__iter__"):
        raise BfcnnError(f"sigmas must be a list of noise levels on the 0-255 scale, e.g. [25], got {sigmas!r}")
    sigmas = [check_sigma(sigma) for sigma in sigmas]
    if not sigmas:
        raise BfcnnError("sigmas is empty: give at least one noise level, e.g. [25]")
    return sigmas


def _score(metric: str, clean: np.ndarray, estimate: np.ndarray, quantize: bool = True) -> float:
    if metric == "psnr":
        return psnr(clean, estimate)
    if metric == "ssim":
        return ssim(clean, estimate)
    return mae(clean, estimate, quantize=quantize)


def evaluate_denoiser(
    denoise: Callable[[np.ndarray], np.ndarray],
    images: Sequence[np.ndarray],
    sigmas: Iterable[float],
    seed: int = 0,
    with_ssim: bool = True,
) -> Dict[float, Dict[str, float]]:
    """Mean noisy / denoised PSNR (and SSIM) per sigma, following the protocol above.

    Args:
        denoise: maps a float32 [H, W, C] noisy image (0-255 scale) to its estimate.
        images: clean uint8 [H, W, C] images.
        sigmas: noise standard deviations on the 0-255 scale.
        seed: the noise seed; the noise of an image depends on (seed, index, sigma) only.

    Returns:
        {sigma: {"noisy_psnr", "psnr", "ssim"}} with means over the images.
    """
    metrics = ("psnr", "ssim") if with_ssim else ("psnr",)
    results = evaluate_denoisers({"denoised": lambda noisy, sigma: denoise(noisy)}, images, sigmas, seed, metrics)
    return {
        sigma: {
            "noisy_psnr": r[NOISY]["psnr"],
            "psnr": r["denoised"]["psnr"],
            **({"ssim": r["denoised"]["ssim"]} if with_ssim else {}),
        }
        for sigma, r in results.items()
    }
