"""Training losses on the 0-255 scale: MSE, MAE with an optional hinge, Charbonnier, SSIM term.

Losses are computed in float32 on images scaled to 0-1, so their size does not depend
on the value range; the hinge is given on the 0-255 scale (errors below it are free,
as in the original bfcnn's hinge-MAE).
"""

import tensorflow as tf

LOSSES = ("mse", "mae", "charbonnier")


def pixel_loss(target, estimate, config):
    """The per-batch mean of the configured pixel loss (plus the SSIM term), float32."""
    error = (tf.cast(estimate, tf.float32) - tf.cast(target, tf.float32)) / 255.0
    if config.type == "mse":
        loss = tf.reduce_mean(tf.square(error))
    elif config.type == "mae":
        loss = tf.reduce_mean(tf.nn.relu(tf.abs(error) - config.hinge / 255.0))
    elif config.type == "charbonnier":
        loss = tf.reduce_mean(tf.sqrt(tf.square(error) + config.charbonnier_epsilon**2))
    else:
        raise ValueError(f"loss.type={config.type!r} is not supported; allowed: {', '.join(LOSSES)}")
    terms = {config.type: loss}
    if config.ssim_weight > 0:
        ssim = tf.reduce_mean(tf.image.ssim(tf.cast(target, tf.float32), tf.cast(estimate, tf.float32), 255.0))
        terms["ssim"] = 1.0 - ssim
        loss = loss + config.ssim_weight * terms["ssim"]
    return loss, terms
