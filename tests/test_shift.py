"""shift_period: a shift by the period moves the output alike; a smaller one does not."""

import numpy as np
import pytest

import bfcnn
from bfcnn.models.shift import shift_period

MODELS = {
    "resnet": ({"type": "resnet", "channels": 1, "filters": 8, "blocks": 2}, 1),
    "resnet, pixel unshuffle 2": ({"type": "resnet", "channels": 1, "filters": 8, "blocks": 2, "downsample": 2}, 2),
    "multiscale, 3 levels": ({"type": "multiscale", "channels": 1, "levels": 3, "filters": 4, "blocks": 1,
                              "encoder_blocks": 1}, 4),
    "n3net, stride 5": ({"type": "n3net", "channels": 1, "stages": 2, "depth": 2, "filters": 8, "k": 2,
                         "embedding_filters": 8, "window": 5}, 5),
}


def moved(model, image, shift, margin=40):
    """Max |f(shifted image) - shifted f(image)| away from the borders, relative to max |f(image)|
    (untrained models have outputs far off the 0-255 scale)."""
    whole = np.asarray(model(image))[0, :, :, 0]
    shifted = np.asarray(model(image[:, :, shift:]))[0, :, :, 0]
    width = whole.shape[1]
    change = shifted[margin:-margin, margin:width - shift - margin] - whole[margin:-margin, margin + shift:width - margin]
    return float(np.abs(change).max() / np.abs(whole).max())


@pytest.mark.parametrize("name", list(MODELS))
def test_the_period_is_the_smallest_shift_that_moves_the_output_alike(name):
    config, period = MODELS[name]
    model = bfcnn.build_model(config)
    assert shift_period(model) == period
    image = np.random.default_rng(0).uniform(0, 255, (1, 128, 160, 1)).astype("float32")
    assert moved(model, image, period) < 1e-5
    assert moved(model, image, 2 * period) < 1e-5
    if period > 1:
        assert moved(model, image, 1) > 1e-3
