"""Training losses on the 0-255 scale: MSE, MAE with an optional hinge, Charbonnier, SSIM term.

Losses are computed in float32 on images scaled to 0-1, so their size does not depend
on the value range; the hinge is given on the 0-255 scale (errors below it are free,
as in the original bfcnn's hinge-MAE). Charbonnier: sqrt(e^2 + epsilon^2), a smooth L1
(Charbonnier et al., ICIP 1994); the SSIM term is 1 - SSIM (Wang et al., IEEE TIP 2004),
with `tf.image.ssim`'s 11x11 Gaussian window.
"""

import tensorflow as tf

LOSSES = ("mse", "mae", "charbonnier")


def _pointwise(error, config):
    """The configured loss of each element of `error` (0-1 scale)."""
    if config.type == "mse":
        return tf.square(error)
    if config.type == "mae":
        return tf.nn.relu(tf.abs(error) - config.hinge / 255.0)
    if config.type == "charbonnier":
        return tf.sqrt(tf.square(error) + config.charbonnier_epsilon**2)
    raise ValueError(f"loss.type={config.type!r} is not supported; allowed: {', '.join(LOSSES)}")


def pixel_loss(target, estimate, config, noisy=None):
    """The per-batch mean of the configured pixel loss (plus the SSIM term), float32.

    With `config.normalize == "noise"`, each image's mean loss is divided by the mean loss
    of its noisy input against the same target plus the loss of a constant error of
    `config.noise_floor + config.hinge` (0-255 scale: `noise_floor` beyond the MAE hinge, so
    the divisor is never 0, even for a clean input), and the ratios are averaged: every noise level then
    counts alike, as a mean of PSNR gains does, instead of the loudest images dominating.
    `noisy` is required then.
    """
    target = tf.cast(target, tf.float32)
    pointwise = _pointwise((tf.cast(estimate, tf.float32) - target) / 255.0, config)
    if getattr(config, "normalize", "none") == "noise":
        if noisy is None:
            raise ValueError("loss.normalize='noise' needs the noisy input")
        axes = list(range(1, len(pointwise.shape)))
        own = tf.reduce_mean(pointwise, axis=axes)
        reference = tf.reduce_mean(_pointwise((tf.cast(noisy, tf.float32) - target) / 255.0, config), axis=axes)
        floor = _pointwise(tf.constant(config.noise_floor / 255.0 + config.hinge / 255.0), config)
        loss = tf.reduce_mean(own / (reference + floor))
    else:
        loss = tf.reduce_mean(pointwise)
    terms = {config.type: loss}
    if config.ssim_weight > 0:
        ssim = tf.reduce_mean(tf.image.ssim(tf.cast(target, tf.float32), tf.cast(estimate, tf.float32), 255.0))
        terms["ssim"] = 1.0 - ssim
        loss = loss + config.ssim_weight * terms["ssim"]
    return loss, terms
