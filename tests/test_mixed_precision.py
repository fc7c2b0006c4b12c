"""Every model type trains under the `mixed_bfloat16` policy (the zoo's training precision)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import bfcnn

CONFIGS = {
    "resnet_bn": {"type": "resnet", "channels": 1, "filters": 8, "blocks": 2, "batch_norm": True},
    "multiscale_bn": {"type": "multiscale", "channels": 3, "levels": 2, "filters": 8, "blocks": 1,
                      "batch_norm": True, "encoder_blocks": 1},
    "opponent": {"type": "opponent", "channels": 3,
                 "inner": {"type": "resnet", "channels": 1, "filters": 8, "blocks": 2, "batch_norm": True}},
    "n3net": {"type": "n3net", "channels": 1, "stages": 2, "depth": 3, "filters": 8, "k": 2,
              "patch_size": 4, "stride": 2, "window": 3, "embedding_depth": 3, "embedding_filters": 8},
}


@pytest.fixture
def mixed_bfloat16():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_train_step_under_mixed_bfloat16(name, mixed_bfloat16):
    model = bfcnn.build_model(CONFIGS[name])
    channels = CONFIGS[name]["channels"]
    x = tf.constant(np.random.default_rng(0).uniform(0, 255, (2, 16, 16, channels)), tf.float32)
    optimizer = keras.optimizers.Adam(1e-3)
    before = [np.array(v) for v in model.non_trainable_variables]
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(x, training=True) - x))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply(grads, model.trainable_variables)
    assert np.isfinite(float(loss))
    assert all(g is not None and np.all(np.isfinite(np.array(g, np.float32))) for g in grads)
    # Batch-norm statistics are float32 variables and move in a training step.
    moved = [v for v, b in zip(model.non_trainable_variables, before) if not np.allclose(np.array(v), b)]
    if CONFIGS[name].get("batch_norm", name == "n3net"):
        assert moved and all(v.dtype == "float32" for v in moved)
    assert model(x, training=False).dtype == tf.float32


def test_batch_norm_moving_std_reaches_the_batch_std_under_mixed_bfloat16(mixed_bfloat16):
    # Read in bfloat16 (8 significant bits), a moving average with momentum 0.99 stops
    # moving once its 1% steps fall under the rounding: tens of percent short of the target.
    layer = bfcnn.layers.BiasFreeBatchNorm(momentum=0.99)
    x = tf.constant(np.random.default_rng(0).standard_normal((4, 16, 16, 2)) * 0.3, tf.float32)
    target = np.std(x.numpy(), axis=(0, 1, 2))
    step = tf.function(lambda: layer(x, training=True))
    for _ in range(1500):
        step()
    np.testing.assert_allclose(layer.moving_std.numpy(), target, rtol=0.01)
