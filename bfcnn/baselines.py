"""Classical denoisers to compare against, with the same interface as the evaluation's models.

- `bm3d`: BM3D (Dabov et al., "Image denoising by sparse 3-D transform-domain collaborative
  filtering", IEEE TIP 2007), through the `bm3d` package (Makinen et al. 2020), with CBM3D
  (`bm3d_rgb`, opponent color space) for RGB images. An optional extra: `pip install 'bfcnn[bench]'`.
- `nlm`: non-local means (Buades et al., CVPR 2005), scikit-image's `denoise_nl_means`.

Each baseline maps a float32 noisy image [H, W, C] (C = 1 or 3) on the 0-255 scale, not
clipped, and its known noise level sigma (0-255 scale) to a float32 estimate of the same
shape and scale. Unlike the blind models, baselines are told sigma.
"""

import importlib
import importlib.util
from typing import Callable, Dict, List

import numpy as np

from bfcnn.errors import BfcnnError, allowed, did_you_mean

INSTALL_HINT = "pip install 'bfcnn[bench]'"

# Non-local means settings: 5x5 patches searched within 13x13 (distance 6), the averaging
# cut-off h = 0.7 sigma. Chosen on six 128x128 Set12 crops at sigma 15 / 25 / 50 among
# h = 0.4-1.0 sigma and 7x7 patches at distances 8 and 11: 30.14 / 27.45 / 23.42 dB, within
# 0.1 dB of the best setting at each sigma, and the fastest of the good ones.
NLM_PATCH_SIZE = 5
NLM_PATCH_DISTANCE = 6
NLM_H_PER_SIGMA = 0.7


class BaselineUnavailableError(BfcnnError, ImportError):
    """A baseline whose optional package is not installed."""


class UnknownBaselineError(BfcnnError, KeyError):
    """A baseline name that is not in `BASELINES`."""

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0] if self.args else ""


def _import(module: str, baseline: str):
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise BaselineUnavailableError(
            f"baseline {baseline!r} needs the {module!r} package, which is not installed: {INSTALL_HINT}"
        ) from error


def _check(noisy, sigma) -> np.ndarray:
    noisy = np.asarray(noisy, np.float32)
    if noisy.ndim != 3 or noisy.shape[-1] not in (1, 3):
        raise ValueError(f"a baseline needs a [H, W, 1] or [H, W, 3] image, got shape {noisy.shape}")
    if not np.isfinite(float(sigma)) or float(sigma) < 0:
        raise ValueError(f"sigma must be a finite number >= 0 (0-255 scale), got {sigma!r}")
    return noisy


def bm3d(noisy: np.ndarray, sigma: float) -> np.ndarray:
    """BM3D (gray) or CBM3D (RGB) with the known noise level, default ('np') profile.

    Args:
        noisy: float32 [H, W, 1] or [H, W, 3], 0-255 scale, may lie outside [0, 255].
        sigma: the noise standard deviation on the 0-255 scale.

    Returns:
        The float32 estimate, same shape and scale.

    Raises:
        BaselineUnavailableError: the `bm3d` package is not installed.
        ValueError: a bad shape or sigma.
    """
    noisy = _check(noisy, sigma)
    package = _import("bm3d", "bm3d")
    if float(sigma) == 0:
        return noisy.copy()
    scaled = noisy.astype(np.float64) / 255.0
    if noisy.shape[-1] == 1:
        estimate = package.bm3d(scaled[..., 0], float(sigma) / 255.0)
    else:
        estimate = package.bm3d_rgb(scaled, float(sigma) / 255.0)
    return (np.asarray(estimate, np.float64) * 255.0).astype(np.float32).reshape(noisy.shape)


def nlm(
    noisy: np.ndarray,
    sigma: float,
    patch_size: int = NLM_PATCH_SIZE,
    patch_distance: int = NLM_PATCH_DISTANCE,
    h_per_sigma: float = NLM_H_PER_SIGMA,
) -> np.ndarray:
    """Non-local means (scikit-image, fast mode) with the known noise level.

    Args:
        noisy: float32 [H, W, 1] or [H, W, 3], 0-255 scale, may lie outside [0, 255].
        sigma: the noise standard deviation on the 0-255 scale; also passed to
            `denoise_nl_means` so that the patch distances are corrected for the noise.
        patch_size: side of the compared patches.
        patch_distance: the search window is (2 * patch_distance + 1) pixels wide.
        h_per_sigma: the cut-off h of the patch weights, as a multiple of sigma.

    Returns:
        The float32 estimate, same shape and scale.

    Raises:
        BaselineUnavailableError: scikit-image is not installed.
    """
    noisy = _check(noisy, sigma)
    _import("skimage", "nlm")
    from skimage.restoration import denoise_nl_means

    if float(sigma) == 0:
        return noisy.copy()
    scale = float(sigma) / 255.0
    color = noisy.shape[-1] == 3
    estimate = denoise_nl_means(
        noisy.astype(np.float64) / 255.0 if color else noisy[..., 0].astype(np.float64) / 255.0,
        patch_size=patch_size,
        patch_distance=patch_distance,
        h=h_per_sigma * scale,
        sigma=scale,
        fast_mode=True,
        preserve_range=True,
        channel_axis=-1 if color else None,
    )
    return (np.asarray(estimate, np.float64) * 255.0).astype(np.float32).reshape(noisy.shape)


# name -> baseline function; see the module docstring for the interface.
BASELINES: Dict[str, Callable[[np.ndarray, float], np.ndarray]] = {"bm3d": bm3d, "nlm": nlm}
_REQUIRES = {"bm3d": "bm3d", "nlm": "skimage"}


def list_baselines() -> List[str]:
    """The names of the baselines, sorted."""
    return sorted(BASELINES)


def get_baseline(name: str) -> Callable[[np.ndarray, float], np.ndarray]:
    """The baseline function called `name`, after checking that its package is installed.

    Raises:
        UnknownBaselineError: an unknown name; the message lists the available ones.
        BaselineUnavailableError: its optional package is missing; the message says how to install it.

    Example:
        >>> estimate = get_baseline("bm3d")(noisy, 25.0)
    """
    if name not in BASELINES:
        raise UnknownBaselineError(
            f"unknown baseline {name!r}{did_you_mean(name, BASELINES)}; available: {allowed(BASELINES)}"
        )
    module = _REQUIRES[name]
    if importlib.util.find_spec(module) is None:
        raise BaselineUnavailableError(
            f"baseline {name!r} needs the {module!r} package, which is not installed: {INSTALL_HINT}"
        )
    return BASELINES[name]
