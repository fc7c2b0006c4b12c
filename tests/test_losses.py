"""Training losses: values against numpy, and the noise-normalized loss."""

import numpy as np
import pytest

from bfcnn.config import ConfigError, LossConfig, load_config
from bfcnn.training.losses import pixel_loss


def images(seed=0, shape=(4, 8, 8, 1)):
    rng = np.random.default_rng(seed)
    clean = rng.uniform(0, 255, shape).astype(np.float32)
    return clean, rng


def test_mse_against_numpy():
    clean, rng = images()
    estimate = clean + rng.normal(0, 3, clean.shape).astype(np.float32)
    loss, terms = pixel_loss(clean, estimate, LossConfig())
    assert float(loss) == pytest.approx(np.mean(((estimate - clean) / 255.0) ** 2), rel=1e-5)
    assert set(terms) == {"mse"}


@pytest.mark.parametrize("kind", ["mse", "mae", "charbonnier"])
def test_noise_normalized_loss_against_numpy(kind):
    clean, rng = images(1)
    sigmas = np.array([1.0, 5.0, 25.0, 75.0], np.float32)[:, None, None, None]
    noisy = clean + sigmas * rng.normal(size=clean.shape).astype(np.float32)
    estimate = clean + 0.3 * (noisy - clean)
    config = LossConfig(type=kind, normalize="noise", noise_floor=2.0)
    loss, _ = pixel_loss(clean, estimate, config, noisy=noisy)

    def pointwise(error):
        error = error / 255.0
        return {"mse": error**2, "mae": np.abs(error), "charbonnier": np.sqrt(error**2 + 1e-6)}[kind]

    own = pointwise(estimate - clean).mean(axis=(1, 2, 3))
    reference = pointwise(noisy - clean).mean(axis=(1, 2, 3))
    expected = np.mean(own / (reference + pointwise(np.float32(2.0))))
    assert float(loss) == pytest.approx(expected, rel=1e-4)


def test_noise_normalized_loss_weighs_every_noise_level_alike():
    # The same relative improvement on a quiet and a loud image costs the same after
    # normalization, while plain MSE is dominated by the loud one.
    clean, rng = images(2, (2, 16, 16, 1))
    sigmas = np.array([2.0, 50.0], np.float32)[:, None, None, None]
    noisy = clean + sigmas * rng.normal(size=clean.shape).astype(np.float32)
    estimate = clean + 0.5 * (noisy - clean)
    normalized = LossConfig(normalize="noise", noise_floor=1e-3)
    per_image = [float(pixel_loss(clean[i:i + 1], estimate[i:i + 1], normalized, noisy=noisy[i:i + 1])[0])
                 for i in range(2)]
    assert per_image[0] == pytest.approx(per_image[1], rel=1e-3)
    plain = [float(pixel_loss(clean[i:i + 1], estimate[i:i + 1], LossConfig())[0]) for i in range(2)]
    assert plain[1] > 100 * plain[0]


def test_noise_normalized_loss_needs_the_noisy_input():
    clean, _ = images()
    with pytest.raises(ValueError, match="needs the noisy input"):
        pixel_loss(clean, clean, LossConfig(normalize="noise"))


def test_loss_normalize_config_is_checked(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model: {type: resnet}\nloss: {normalize: sigma}\n")
    with pytest.raises(ConfigError, match=r"loss\.normalize.*'noise', 'none'"):
        load_config(path, require_inputs=False)
    path.write_text("model: {type: resnet}\nloss: {normalize: noise, noise_floor: 0}\n")
    with pytest.raises(ConfigError, match="noise_floor"):
        load_config(path, require_inputs=False)
