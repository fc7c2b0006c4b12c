"""scripts/clean_images.py: what a denoiser does to images with no added noise."""

import numpy as np
import pytest

from conftest import load_script


def test_change_statistics_separate_a_brightness_shift_white_changes_and_smoothing():
    stats = load_script("scripts/clean_images.py").change_statistics
    rng = np.random.default_rng(0)
    clean = np.round(rng.uniform(20, 230, (64, 80, 1)))

    shifted = stats(clean, clean - 0.3)
    assert shifted["mean"] == pytest.approx(-0.3)
    assert shifted["rms"] == pytest.approx(0.3)
    assert shifted["mae"] == 0.0  # rounds back to the clean image

    white = stats(clean, clean + rng.standard_normal(clean.shape))
    assert abs(white["lag1"]) < 0.05
    assert white["rms"] == pytest.approx(1.0, rel=0.05)
    assert white["mae"] == pytest.approx(0.8, abs=0.1)

    # A 3-tap row blur of a white image removes a change that alternates along rows.
    blurred = (np.roll(clean, 1, axis=1) + clean + np.roll(clean, -1, axis=1)) / 3
    assert stats(clean, blurred)["lag1"] < -0.3


def test_measure_runs_a_keras_model_on_each_image():
    import keras

    script = load_script("scripts/clean_images.py")
    inputs = keras.Input((None, None, 1))
    model = keras.Model(inputs, inputs * 0.5)
    images = [np.full((8, 8, 1), 100.0, np.float32), np.full((4, 6, 1), 50.0, np.float32)]
    result = script.measure(model, images)
    assert result["mean"] == pytest.approx(-37.5)
    assert result["mae"] == pytest.approx(37.5)
