"""scripts/estimate_noise.py: the patch-covariance noise estimate behind docs/training.md's argument."""

import numpy as np
import pytest

from conftest import load_script


def test_estimate_recovers_white_noise_on_smooth_images_and_scales_with_the_image():
    estimate_sigma = load_script("scripts/estimate_noise.py").estimate_sigma
    y, x = np.mgrid[0:96, 0:128].astype(np.float64)
    smooth = 100 + 40 * np.sin(x / 15.0) + 0.5 * y
    rng = np.random.default_rng(0)
    for sigma in (2.0, 10.0, 30.0):
        assert estimate_sigma(smooth + sigma * rng.standard_normal(smooth.shape)) == pytest.approx(sigma, rel=0.08)
    noisy = smooth + 10 * rng.standard_normal(smooth.shape)
    assert estimate_sigma(3 * noisy) == pytest.approx(3 * estimate_sigma(noisy), rel=1e-6)
    assert estimate_sigma(smooth) < 0.5
    with pytest.raises(ValueError, match="at least 7x7"):
        estimate_sigma(np.zeros((5, 40)))
