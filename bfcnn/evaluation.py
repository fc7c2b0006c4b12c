"""The evaluation protocol of published denoising tables, in one place.

Clean images are uint8 decoded as float on the 0-255 scale; noisy = clean + sigma * n
with n ~ N(0, 1) per pixel and channel, from a fixed seed, NOT clipped or rounded; the
denoised output is clipped to [0, 255] and rounded to uint8; PSNR = 10 log10(255^2 / MSE)
against the uint8 clean image; the table reports the mean of per-image PSNR. Used by the
trainer's validation and by `python -m bfcnn.evaluate`, so the numbers agree.
"""

from typing import Callable, Dict, Iterable, List, Sequence

import numpy as np


def noise_seed(seed: int, index: int, sigma: float) -> np.random.Generator:
    """The generator of the noise added to image `index` at level `sigma`: order independent."""
    return np.random.default_rng([int(seed), int(index), int(round(float(sigma) * 1000))])


def add_noise(clean: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """`clean + sigma * N(0, 1)` as float32, not clipped, not rounded."""
    clean = np.asarray(clean, np.float32)
    return (clean + float(sigma) * rng.standard_normal(clean.shape)).astype(np.float32)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Clips to [0, 255] and rounds: how a denoised image is scored."""
    return np.clip(np.round(np.asarray(image, np.float64)), 0, 255).astype(np.uint8)


def psnr(clean: np.ndarray, estimate: np.ndarray) -> float:
    """PSNR in dB of `estimate` (scored as uint8) against the uint8 `clean` image."""
    clean = np.asarray(clean, np.float64)
    mse = np.mean((to_uint8(estimate).astype(np.float64) - clean) ** 2)
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))


def ssim(clean: np.ndarray, estimate: np.ndarray) -> float:
    """SSIM (Wang et al. 2004; Gaussian window 11, sigma 1.5) of the uint8 estimate, mean over channels."""
    import tensorflow as tf

    a = tf.constant(np.asarray(clean, np.float32)[None])
    b = tf.constant(to_uint8(estimate).astype(np.float32)[None])
    return float(tf.image.ssim(a, b, max_val=255.0)[0])


def center_crop(image: np.ndarray, max_size) -> np.ndarray:
    """The central `max_size` x `max_size` part (or the whole image when smaller / None)."""
    if max_size is None:
        return image
    h, w = image.shape[:2]
    top, left = max(0, (h - max_size) // 2), max(0, (w - max_size) // 2)
    return image[top : top + max_size, left : left + max_size]


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
    results = {}
    for sigma in sigmas:
        noisy_psnr: List[float] = []
        scores: List[float] = []
        ssims: List[float] = []
        for index, clean in enumerate(images):
            noisy = add_noise(clean, sigma, noise_seed(seed, index, sigma))
            estimate = denoise(noisy)
            noisy_psnr.append(psnr(clean, noisy))
            scores.append(psnr(clean, estimate))
            if with_ssim:
                ssims.append(ssim(clean, estimate))
        results[float(sigma)] = {
            "noisy_psnr": float(np.mean(noisy_psnr)),
            "psnr": float(np.mean(scores)),
            **({"ssim": float(np.mean(ssims))} if with_ssim else {}),
        }
    return results
