"""Shared test helpers: small layer / model checks in the spirit of keras-hub's TestCase."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest


def seed_everything(seed: int = 0) -> None:
    """Python, numpy and TensorFlow / Keras random state, as at the start of every test."""
    import keras

    keras.utils.set_random_seed(seed)


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same random state: initial weights do not depend on test order.

    A module-scoped fixture is built inside whichever test first asks for it, after that test's
    own draws: such fixtures call `seed_everything()` first themselves."""
    seed_everything()
    yield


def load_script(relative_path):
    """A script of this repository (e.g. "scripts/mae_table.py") imported as a module."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / relative_path
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def random_images(shape, seed=0, high=255.0):
    """Float32 images on the 0-255 scale."""
    return np.random.default_rng(seed).uniform(0.0, high, size=shape).astype("float32")


def relative_error(actual, expected):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.max(np.abs(actual - expected)) / max(np.max(np.abs(expected)), 1e-12))


def assert_saving_round_trip(model, inputs, tmp_path, atol=0.0):
    """Saves as .keras, reloads, and checks that outputs are equal."""
    import keras

    path = os.path.join(str(tmp_path), "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(np.asarray(loaded(inputs)), np.asarray(model(inputs)), atol=atol, rtol=0)
    return loaded


def assert_config_round_trip(layer):
    """get_config -> from_config gives a layer with the same config."""
    config = layer.get_config()
    clone = layer.__class__.from_config(config)
    assert clone.get_config() == config
    return clone


@pytest.fixture
def sample_gray():
    """A real photograph from scikit-image (bundled with the package, no download)."""
    from skimage import data

    return data.camera().astype("float32")


@pytest.fixture
def sample_rgb():
    from skimage import data

    return data.astronaut().astype("float32")
