"""Kernel regularizers: values against numpy, what they optimize towards, serialization, errors."""

import keras
import numpy as np
import pytest

from bfcnn.errors import ConfigError
from bfcnn.layers import regularizers
from bfcnn.layers.regularizers import CenterAway, RegularizerSum, SoftOrthogonal, SoftOrthonormal


def _kernel(shape=(3, 3, 4, 5), seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _gram(kernel):
    w = kernel.reshape(-1, kernel.shape[-1]).astype(np.float64)
    return w.T @ w


def _center_window(size, sigma):
    d = np.arange(size) - (size - 1) / 2
    s = sigma * size
    return np.exp(-(d[:, None] ** 2 + d[None, :] ** 2) / (2 * s * s))


def test_soft_orthogonal_matches_numpy():
    k = _kernel()
    g = _gram(k)
    expected = 0.3 * np.sum((g * (1 - np.eye(5))) ** 2)
    np.testing.assert_allclose(float(SoftOrthogonal(0.3)(k)), expected, rtol=1e-5)


def test_soft_orthonormal_matches_numpy():
    k = _kernel()
    expected = 0.3 * np.sum((_gram(k) - np.eye(5)) ** 2)
    np.testing.assert_allclose(float(SoftOrthonormal(0.3)(k)), expected, rtol=1e-5)


@pytest.mark.parametrize("size", [3, 5])
def test_center_away_matches_numpy(size):
    k = _kernel((size, size, 2, 3))
    g = _center_window(size, 0.3)[:, :, None, None]
    expected = 0.2 * np.sum(g * np.abs(k)) + 0.7 * np.sum(g * k**2)
    np.testing.assert_allclose(float(CenterAway(l1=0.2, l2=0.7, sigma=0.3)(k)), expected, rtol=1e-5)
    assert _center_window(size, 0.3)[size // 2, size // 2] == 1.0


def test_center_away_without_a_window_is_plain_l1_l2():
    w = _kernel((6, 4))
    expected = 0.2 * np.abs(w).sum() + 0.7 * (w**2).sum()
    np.testing.assert_allclose(float(CenterAway(l1=0.2, l2=0.7)(w)), expected, rtol=1e-5)


def test_sum_is_the_sum():
    k = _kernel()
    parts = [SoftOrthonormal(0.1), CenterAway(l2=0.5)]
    np.testing.assert_allclose(float(RegularizerSum(parts)(k)), sum(float(p(k)) for p in parts), rtol=1e-6)


def _optimize(regularizer, steps=300, seed=1):
    kernel = keras.Variable(_kernel((3, 3, 8, 8), seed) * 0.3)
    optimizer = keras.optimizers.Adam(learning_rate=1e-2)
    import tensorflow as tf

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = regularizer(kernel)
        optimizer.apply_gradients([(tape.gradient(loss, kernel.value), kernel)])

    before = np.asarray(kernel.numpy())
    for _ in range(steps):
        step()
    return before, np.asarray(kernel.numpy())


def _off_diagonal_error(kernel):
    """Off-diagonal Gram mass relative to its diagonal: 0 for orthogonal filters, any scale."""
    g = _gram(kernel)
    return np.linalg.norm(g * (1 - np.eye(len(g)))) / np.linalg.norm(np.diag(g))


def test_soft_orthogonal_decorrelates_filters():
    before, after = _optimize(SoftOrthogonal(1.0))
    assert _off_diagonal_error(after) < _off_diagonal_error(before) / 1000
    # Decorrelated, not collapsed: every filter keeps a good part of its norm.
    assert np.min(np.diag(_gram(after))) > 0.1 * np.min(np.diag(_gram(before)))


def test_soft_orthonormal_reaches_identity():
    before, after = _optimize(SoftOrthonormal(1.0))
    error = lambda k: np.linalg.norm(_gram(k) - np.eye(8))  # noqa: E731
    assert error(after) < error(before) / 1000


def test_center_away_prefers_weight_away_from_the_centre():
    centre = np.zeros((3, 3, 2, 2), "float32")
    centre[1, 1] = 1.0
    border = np.zeros((3, 3, 2, 2), "float32")
    ring = np.ones((3, 3), bool)
    ring[1, 1] = False
    border[ring] = 1.0 / np.sqrt(8.0)  # same L2 norm as the centre-only kernel
    corner = np.zeros((3, 3, 2, 2), "float32")
    corner[0, 2] = 1.0  # same L1 and L2 norm as the centre-only kernel
    for regularizer in (CenterAway(l2=1.0), CenterAway(l1=1.0)):
        assert float(regularizer(centre)) > float(regularizer(corner))
    assert float(CenterAway(l2=1.0)(centre)) > 1.5 * float(CenterAway(l2=1.0)(border))


@pytest.mark.parametrize("regularizer", [
    SoftOrthogonal(0.25),
    SoftOrthonormal(1e-3),
    CenterAway(l1=1e-4, l2=2e-4, sigma=0.4),
    RegularizerSum([SoftOrthonormal(1e-3), CenterAway(l2=1e-4)]),
])
def test_serialization_round_trip(regularizer):
    restored = keras.regularizers.deserialize(keras.regularizers.serialize(regularizer))
    assert type(restored) is type(regularizer)
    assert restored.get_config() == regularizer.get_config()
    k = _kernel()
    assert float(restored(k)) == pytest.approx(float(regularizer(k)), rel=1e-6)


def test_regularized_model_saves_and_loads(tmp_path):
    spec = [{"type": "soft_orthonormal", "weight": 1e-3}, {"type": "center_away", "l2": 1e-4, "sigma": 0.5}]
    inputs = keras.Input((None, None, 2))
    outputs = keras.layers.Conv2D(4, 3, use_bias=False, kernel_regularizer=regularizers.get(spec), name="conv")(inputs)
    model = keras.Model(inputs, outputs)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.get_layer("conv").kernel_regularizer, RegularizerSum)
    np.testing.assert_allclose(float(loaded.losses[0]), float(model.losses[0]), rtol=1e-6)
    assert float(model.losses[0]) > 0


def test_get_turns_config_values_into_regularizers():
    assert regularizers.get(None) is None
    assert regularizers.get([]) is None
    assert isinstance(regularizers.get("soft_orthogonal"), SoftOrthogonal)
    so = regularizers.get({"type": "soft_orthonormal", "weight": 1.0e-4})
    assert isinstance(so, SoftOrthonormal) and so.weight == pytest.approx(1e-4)
    assert isinstance(regularizers.get({"type": "l2", "l2": 1e-3}), keras.regularizers.L2)
    both = regularizers.get(["soft_orthogonal", {"type": "center_away", "l1": 1e-3}])
    assert isinstance(both, RegularizerSum) and len(both.regularizers) == 2
    assert regularizers.get([{"type": "center_away", "l2": 2}]).l2 == 2.0
    instance = SoftOrthogonal()
    assert regularizers.get(instance) is instance


@pytest.mark.parametrize("spec, words", [
    ("soft_orthogonl", ["did you mean 'soft_orthogonal'", "'center_away'", "'soft_orthonormal'"]),
    ({"type": "centre_away", "l2": 1.0}, ["did you mean 'center_away'"]),
    ({"type": "soft_orthonormal", "wieght": 1.0}, ["unknown key 'wieght'", "did you mean 'weight'", "'type'"]),
    ({"weight": 1.0}, ["needs a 'type'", "'soft_orthogonal'"]),
    ({"type": "soft_orthogonal", "weight": "big"}, ["weight must be a number", "'big'"]),
    ({"type": "soft_orthogonal", "weight": -1.0}, ["weight must be a number >= 0"]),
    ({"type": "center_away", "sigma": 0}, ["sigma must be a number > 0", "kernel size"]),
    ([["soft_orthogonal"]], ["may not be nested"]),
    (3, ["must be null, a name"]),
])
def test_get_errors_are_clear(spec, words):
    with pytest.raises(ValueError) as error:
        regularizers.get(spec)
    for word in words:
        assert word in str(error.value)
    assert "kernel_regularizer" in str(error.value)


def test_builder_reports_a_bad_regularizer_as_config_error():
    import bfcnn

    with pytest.raises(ConfigError, match=r"kernel_regularizer.*did you mean 'soft_orthonormal'"):
        bfcnn.build_model({"type": "resnet", "channels": 1, "blocks": 1,
                           "kernel_regularizer": {"type": "soft_orthonormall"}})
