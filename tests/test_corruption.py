"""Statistics, reproducibility and graph-compatibility of the in-graph corruption."""

import math

import numpy as np
import pytest
import tensorflow as tf

from bfcnn.config import CorruptionConfig
from bfcnn.errors import ConfigError
from bfcnn.training.corruption import add_texture, corrupt, corrupt_pair, step_seed
from bfcnn.training.targets import synthetic_inputs

SEED = tf.constant([1, 2], tf.int64)


def only(**sections) -> CorruptionConfig:
    """A corruption config with additive noise off unless `sections` turn it on."""
    sections.setdefault("additive", {"probability": 0.0})
    return CorruptionConfig(**sections)


def per_image_std(images) -> np.ndarray:
    images = np.asarray(images, np.float64)
    return images.reshape(images.shape[0], -1).std(axis=1)


def correlation(a, b) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def test_additive_std_within_2_percent_over_1m_samples():
    clean = tf.fill([16, 256, 256, 1], 100.0)  # 1,048,576 samples
    noise = corrupt(clean, only(additive={"sigma": [25, 25]}), SEED).numpy() - 100.0
    assert abs(noise.std() / 25.0 - 1.0) < 0.02
    assert abs(noise.mean()) < 0.15  # standard error 0.024


def test_blind_levels_are_drawn_per_image_from_the_range():
    noisy = corrupt(tf.zeros([256, 32, 32, 1]), only(additive={"sigma": [0, 75]}), SEED)
    stds = per_image_std(noisy)
    assert stds.max() < 75 * 1.1 and stds.min() < 10 and stds.max() > 65
    assert abs(stds.mean() - 37.5) < 5.0  # uniform in [0, 75]; standard error 1.4


def test_per_channel_noise_is_independent_and_shared_noise_is_identical():
    clean = tf.zeros([8, 128, 128, 3])
    independent = corrupt(clean, only(additive={"sigma": [20, 20], "per_channel": True}), SEED).numpy()
    shared = corrupt(clean, only(additive={"sigma": [20, 20], "per_channel": False}), SEED).numpy()
    assert abs(correlation(independent[..., 0], independent[..., 1])) < 0.02
    assert abs(correlation(independent[..., 1], independent[..., 2])) < 0.02
    np.testing.assert_array_equal(shared[..., 0], shared[..., 1])
    np.testing.assert_array_equal(shared[..., 0], shared[..., 2])
    assert abs(shared.std() / 20.0 - 1.0) < 0.02


def test_multiplicative_noise_has_mean_one_and_the_requested_std():
    clean = tf.fill([16, 256, 256, 1], 100.0)
    config = only(multiplicative={"probability": 1.0, "sigma": [0.1, 0.1]})
    factor = corrupt(clean, config, SEED).numpy() / 100.0
    assert abs(factor.mean() - 1.0) < 1e-3  # standard error 1e-4
    assert abs(factor.std() / 0.1 - 1.0) < 0.02


@pytest.mark.parametrize(
    "sections",
    [
        {"additive": {"probability": 0.3, "sigma": [10, 10]}},
        {"multiplicative": {"probability": 0.3, "sigma": [0.1, 0.1]}},
        {"subsampling": {"probability": 0.3, "factors": [2]}},
        {"blur": {"probability": 0.3}},
    ],
    ids=lambda sections: next(iter(sections)),
)
def test_probability_is_the_fraction_of_images_corrupted(sections):
    clean = tf.random.stateless_uniform([20000, 4, 4, 1], [3, 4], minval=0.0, maxval=255.0)
    noisy = corrupt(clean, only(**sections), SEED)
    changed = np.abs(noisy.numpy() - clean.numpy()).reshape(20000, -1).max(axis=1) > 1e-3
    assert abs(changed.mean() - 0.3) < 0.02  # standard error 0.003


def test_same_seed_same_output_and_another_seed_differs():
    config = CorruptionConfig(
        multiplicative={"probability": 0.5},
        subsampling={"probability": 0.5},
        blur={"probability": 0.5},
    )
    clean = tf.random.stateless_uniform([8, 24, 24, 3], [5, 6], maxval=255.0)
    first = corrupt(clean, config, SEED).numpy()
    np.testing.assert_array_equal(first, corrupt(clean, config, SEED).numpy())
    # A resumed run retraces the step: a fresh tf.function gives bit-identical noise.
    in_graph = [tf.function(lambda x, s: corrupt(x, config, s))(clean, SEED).numpy() for _ in range(2)]
    np.testing.assert_array_equal(in_graph[0], in_graph[1])
    np.testing.assert_allclose(in_graph[0], first, atol=1e-3)  # graph rewrites may reorder float sums
    other = corrupt(clean, config, tf.constant([1, 3], tf.int64)).numpy()
    assert np.mean(first != other) > 0.5


@pytest.mark.parametrize("shape", [(2, 37, 53, 3), (3, 1, 1, 1), (1, 5, 3, 2), (2, 9, 16, 1)])
def test_subsampling_keeps_the_size_for_any_shape(shape):
    config = only(subsampling={"probability": 1.0, "factors": [2, 4]})
    clean = tf.random.stateless_uniform(shape, [7, 8], maxval=255.0)
    graph = tf.function(
        lambda x: corrupt(x, config, SEED), input_signature=[tf.TensorSpec([None, None, None, shape[-1]])]
    )
    assert corrupt(clean, config, SEED).shape == shape
    assert graph(clean).shape == shape
    constant = corrupt(tf.fill(shape, 77.0), config, SEED).numpy()
    np.testing.assert_allclose(constant, 77.0, rtol=1e-5)


def test_subsampling_averages_blocks():
    checkerboard = (np.indices((16, 16)).sum(axis=0) % 2 * 255.0).astype("float32")[None, :, :, None]
    out = corrupt(checkerboard, only(subsampling={"probability": 1.0, "factors": [2]}), SEED).numpy()
    np.testing.assert_allclose(out, 127.5, rtol=1e-5)


def test_blur_keeps_constants_and_reduces_white_noise_as_a_gaussian_should():
    sigma = 0.5
    config = only(blur={"probability": 1.0, "sigma": sigma})
    np.testing.assert_allclose(corrupt(tf.fill([2, 5, 7, 1], 9.0), config, SEED).numpy(), 9.0, rtol=1e-5)
    white = tf.random.stateless_normal([4, 256, 256, 1], [9, 9])
    radius = math.ceil(3 * sigma)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    expected = float((taps**2).sum())  # separable 2-D kernel: std ratio = sum of squared 1-D taps
    measured = corrupt(white, config, SEED).numpy().std() / white.numpy().std()
    assert abs(measured / expected - 1.0) < 0.03


def test_corrupt_pair_shares_levels_and_choices_but_not_noise():
    config = only(additive={"probability": 0.5, "sigma": [0, 75]})
    clean = tf.zeros([64, 128, 128, 1])
    noisy_a, noisy_b = corrupt_pair(clean, config, SEED)
    std_a, std_b = per_image_std(noisy_a), per_image_std(noisy_b)
    np.testing.assert_array_equal(std_a == 0, std_b == 0)
    assert 10 < np.sum(std_a == 0) < 54
    noisy = std_a > 1.0
    np.testing.assert_allclose(std_a[noisy], std_b[noisy], rtol=0.05)
    assert abs(correlation(noisy_a.numpy()[noisy], noisy_b.numpy()[noisy])) < 0.01
    np.testing.assert_array_equal(noisy_a.numpy(), corrupt(clean, config, SEED).numpy())


def test_log_uniform_fraction_shifts_levels_toward_low_noise():
    from bfcnn.training.corruption import _levels

    config = CorruptionConfig(additive={"sigma": [0, 75], "log_uniform": 0.5}).additive
    levels = _levels(config, 200_000, SEED).numpy()
    assert levels.min() >= 0.0 and levels.max() <= 75.0
    # Half uniform (P(sigma < 3) = 0.04), half log-uniform over [0.5, 75] (P = ln 6 / ln 150).
    expected = 0.5 * 3 / 75 + 0.5 * math.log(6) / math.log(150)
    assert abs((levels < 3).mean() - expected) < 0.01
    # The default draw is untouched: the same levels as before the option existed.
    plain = CorruptionConfig(additive={"sigma": [0, 75]}).additive
    np.testing.assert_array_equal(_levels(plain, 64, SEED).numpy(),
                                  tf.random.stateless_uniform([64], SEED, minval=0.0, maxval=75.0).numpy())



def test_multiplicative_log_uniform_has_a_relative_floor():
    """Multiplicative sigma is relative: the additive floor (0.5 on the 0-255 scale) refused every
    usual range and, on [0, 1], drew nothing under 0.5."""
    from bfcnn.training.corruption import _levels

    config = CorruptionConfig(multiplicative={"sigma": [0, 0.1], "log_uniform": 1.0}).multiplicative
    levels = _levels(config, 100_000, SEED).numpy()
    floor = 0.5 / 255
    assert levels.min() >= floor * 0.999 and levels.max() <= 0.1
    # log-uniform over [0.5/255, 0.1]: P(sigma < 0.01) = ln(0.01 / floor) / ln(0.1 / floor)
    expected = math.log(0.01 / floor) / math.log(0.1 / floor)
    assert abs((levels < 0.01).mean() - expected) < 0.01
    with pytest.raises(ConfigError, match=r"multiplicative.log_uniform.*above 0.00196"):
        CorruptionConfig(multiplicative={"sigma": [0, 0.001], "log_uniform": 0.5})


def test_sigma_values_draws_only_the_listed_values():
    values = [5.0, 20.0, 40.0]
    noisy = corrupt(tf.zeros([96, 128, 128, 1]), only(additive={"sigma_values": values}), SEED)
    stds = per_image_std(noisy)
    nearest = np.array(values)[np.abs(stds[:, None] - np.array(values)).argmin(axis=1)]
    np.testing.assert_allclose(stds, nearest, rtol=0.03)  # standard error 0.6%
    assert set(nearest) == set(values)


def test_quantize_and_clip():
    config = only(additive={"sigma": [50, 50]}, quantize=True, clip=True)
    out = corrupt(tf.fill([2, 64, 64, 1], 250.0), config, SEED).numpy()
    np.testing.assert_array_equal(out, np.round(out))
    assert out.min() >= 0.0 and out.max() == 255.0


def test_runs_in_a_replica_context_with_an_unknown_batch_size():
    config = CorruptionConfig(subsampling={"probability": 0.5}, blur={"probability": 0.5})
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])

    @tf.function(input_signature=[tf.TensorSpec([None, 16, 16, 3])])
    def step(clean):
        return strategy.run(lambda x: corrupt(x, config, step_seed(0, 5)), args=(clean,))

    out = strategy.experimental_local_results(step(tf.fill([3, 16, 16, 3], 100.0)))[0]
    assert out.shape == (3, 16, 16, 3)
    assert np.isfinite(out.numpy()).all()


def test_step_seed_depends_on_seed_step_and_replica():
    seeds = {tuple(step_seed(s, t, r).numpy()) for s in (0, 1) for t in (0, 1) for r in (0, 1)}
    assert len(seeds) == 8
    np.testing.assert_array_equal(step_seed(0, 3).numpy(), step_seed(0, tf.constant(3, tf.int64), 0).numpy())


def test_bad_arguments_are_named():
    config = CorruptionConfig()
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        corrupt(tf.zeros([8, 8, 1]), config, SEED)
    with pytest.raises(TypeError, match="float"):
        corrupt(tf.zeros([1, 8, 8, 1], tf.int32), config, SEED)
    with pytest.raises(TypeError, match="CorruptionConfig"):
        corrupt(tf.zeros([1, 8, 8, 1]), {"additive": {}}, SEED)
    with pytest.raises(ValueError, match="shape \\[2\\]"):
        corrupt(tf.zeros([1, 8, 8, 1]), config, tf.constant([1, 2, 3]))


def _lag_correlations(image):
    """Lag-1 correlations of a 2-D field: horizontal, vertical, diagonal, anti-diagonal."""
    return (correlation(image[:, 1:], image[:, :-1]), correlation(image[1:, :], image[:-1, :]),
            correlation(image[1:, 1:], image[:-1, :-1]), correlation(image[1:, :-1], image[:-1, 1:]))


def test_texture_is_off_by_default_and_does_not_change_the_other_draws():
    clean = tf.fill([4, 32, 32, 1], 100.0)
    assert np.array_equal(add_texture(clean, CorruptionConfig(), SEED).numpy(), clean.numpy())
    textured = CorruptionConfig(texture={"probability": 1.0})
    noisy, target = synthetic_inputs(clean, textured, SEED, noisy_target=False)
    assert not np.array_equal(target.numpy(), clean.numpy())
    # The noise on top of the texture is the noise a run without texture draws.
    np.testing.assert_allclose(noisy.numpy() - target.numpy(),
                               corrupt(clean, CorruptionConfig(), SEED).numpy() - clean.numpy(), atol=1e-3)


def test_texture_is_a_unit_field_correlated_by_a_half_along_one_direction():
    config = only(texture={"probability": 1.0, "sigma": [3.0, 3.0]})
    clean = tf.fill([64, 96, 96, 1], 50.0)
    field = (add_texture(clean, config, SEED).numpy() - 50.0)[..., 0] / 3.0
    assert abs(field.std() - 1.0) < 0.02
    found = set()
    for image in field:
        lags = np.array(_lag_correlations(image))
        strongest = int(np.argmax(np.abs(lags)))
        assert abs(abs(lags[strongest]) - 0.5) < 0.06, lags  # one direction at +-0.5 ...
        assert np.all(np.abs(np.delete(lags, strongest)) < 0.1), lags  # ... the others near 0
        found.add((strongest, np.sign(lags[strongest])))
    assert len(found) == 8  # every direction, with either sign


def test_grain_texture_is_a_unit_field_correlated_by_two_thirds_along_rows_and_columns():
    config = only(texture={"probability": 1.0, "sigma": [3.0, 3.0], "kind": "grain"})
    field = (add_texture(tf.fill([16, 96, 96, 1], 50.0), config, SEED).numpy() - 50.0)[..., 0] / 3.0
    assert abs(field.std() - 1.0) < 0.03
    for image in field:
        across, down, diagonal, anti_diagonal = _lag_correlations(image)
        assert abs(across - 2 / 3) < 0.06 and abs(down - 2 / 3) < 0.06, (across, down)
        assert abs(diagonal - 4 / 9) < 0.06 and abs(anti_diagonal - 4 / 9) < 0.06, (diagonal, anti_diagonal)


def test_both_textures_draw_a_kind_per_image_and_keep_the_directional_draws():
    clean = tf.fill([48, 64, 64, 1], 50.0)
    both = add_texture(clean, only(texture={"probability": 1.0, "kind": "both"}), SEED).numpy()
    directional = add_texture(clean, only(texture={"probability": 1.0}), SEED).numpy()
    same = np.all(both == directional, axis=(1, 2, 3))
    assert 0.25 < same.mean() < 0.75  # about half the images drew the directional field
    for image in (both[~same, ..., 0] - 50.0):
        across, down, _, _ = _lag_correlations(image)
        assert across > 0.5 and down > 0.5  # the others drew grain


def test_texture_stays_in_the_target_and_the_noise_comes_on_top():
    config = CorruptionConfig(additive={"sigma": [20.0, 20.0]}, texture={"probability": 1.0, "sigma": [4.0, 4.0]})
    clean = tf.fill([8, 64, 64, 1], 80.0)
    noisy, target = synthetic_inputs(clean, config, SEED, noisy_target=False)
    texture = target.numpy() - 80.0
    assert 3.8 < texture.std() < 4.2
    noise = noisy.numpy() - target.numpy()
    assert 19.0 < noise.std() < 21.0 and abs(correlation(noise, texture)) < 0.05
    # Noise2Noise: both corruptions carry that same texture under independent noise.
    noisy_a, noisy_b = synthetic_inputs(clean, config, SEED, noisy_target=True)
    for noisy_copy in (noisy_a.numpy(), noisy_b.numpy()):
        assert 19.0 < (noisy_copy - target.numpy()).std() < 21.0
        assert abs(correlation(noisy_copy - target.numpy(), texture)) < 0.05
    assert abs(correlation(noisy_a.numpy() - target.numpy(), noisy_b.numpy() - target.numpy())) < 0.05


def test_texture_probability_and_amplitude_range():
    config = only(texture={"probability": 0.5, "sigma": [1.0, 5.0]})
    clean = tf.zeros([400, 24, 24, 1])
    stds = per_image_std(add_texture(clean, config, SEED))
    untouched = stds == 0.0
    assert 0.4 < untouched.mean() < 0.6
    assert np.all((stds[~untouched] > 0.7) & (stds[~untouched] < 5.6))


def test_texture_only_under_faint_noise_with_max_noise_sigma():
    config = CorruptionConfig(additive={"sigma": [0, 40]},
                              texture={"probability": 1.0, "sigma": [4.0, 4.0], "max_noise_sigma": 10.0})
    clean = tf.fill([300, 24, 24, 1], 100.0)
    noisy, target = synthetic_inputs(clean, config, SEED, noisy_target=False)
    textured = per_image_std(target) > 0.0
    noise_std = per_image_std(noisy.numpy() - target.numpy())  # the level drawn for each image
    assert 0.15 < textured.mean() < 0.35  # a quarter of the levels in [0, 40] are under 10
    assert np.all(noise_std[textured] < 11.5) and np.all(noise_std[~textured] > 8.5)
    # Without additive noise every chosen image counts as faint.
    stds = per_image_std(add_texture(clean, only(texture=config.texture), SEED))
    assert np.all(stds > 3.0)


def test_bad_texture_config_is_named():
    with pytest.raises(ConfigError, match="texture.sigma"):
        CorruptionConfig(texture={"probability": 1.0, "sigma": [3.0, 1.0]})
    with pytest.raises(ConfigError, match="texture.probability"):
        CorruptionConfig(texture={"probability": 1.5})
    with pytest.raises(ConfigError, match="texture.max_noise_sigma"):
        CorruptionConfig(texture={"probability": 1.0, "max_noise_sigma": -1.0})
    with pytest.raises(ConfigError, match="texture.kind.*both.*directional.*grain"):
        CorruptionConfig(texture={"probability": 1.0, "kind": "film"})
