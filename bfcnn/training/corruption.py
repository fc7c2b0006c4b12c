"""In-graph synthesis of noisy training inputs from clean patches, for blind denoising.

Blind training as in DnCNN (Zhang et al., "Beyond a Gaussian denoiser", TIP 2017) and the
bias-free networks (Mohan et al., ICLR 2020): the noise level is drawn per image from a range
(or a list), so one network learns every level. Everything is made of `tf.random.stateless_*`
ops driven by one seed tensor, so it runs inside `tf.function`, on an accelerator, in a
`tf.distribute` replica context, and a resumed run that feeds the same seeds sees the same noise.

Order of the corruptions, each chosen per image with its own probability:
subsampling (average-pool, resize back) -> multiplicative noise `x * (1 + s * n)` ->
additive noise `x + s * n` -> blur (makes the noise spatially correlated) -> quantize -> clip.
`add_texture` comes before all of them and changes the clean patch itself (the target).
"""

import math
from typing import Optional, Tuple

import tensorflow as tf

from bfcnn.config import CorruptionConfig

__all__ = ["add_texture", "corrupt", "corrupt_pair", "step_seed"]

# Each random draw has its own seed, split from the caller's at a fixed index, so turning one
# corruption on or off leaves the draws of the others unchanged.
(
    _SUBSAMPLE_MASK,
    _SUBSAMPLE_FACTOR,
    _MULTIPLICATIVE_MASK,
    _MULTIPLICATIVE_LEVEL,
    _ADDITIVE_MASK,
    _ADDITIVE_LEVEL,
    _BLUR_MASK,
    _MULTIPLICATIVE_FIELD,
    _ADDITIVE_FIELD,
) = range(9)
_SEEDS = 9
# The texture's draws are folded from the caller's seed with this constant rather than split
# with the others, so runs without texture draw exactly as before it existed.
_TEXTURE_STREAM = 0x7E7


def corrupt(clean: tf.Tensor, config: CorruptionConfig, seed: tf.Tensor) -> tf.Tensor:
    """Corrupts a batch of clean images as `config` says.

    Args:
        clean: float `[B, H, W, C]` on the 0-255 scale; B, H and W may be unknown.
        config: the `corruption` section of a pipeline config.
        seed: int32 or int64 `[2]`, the seed of every random draw (see `step_seed`).

    Returns:
        The noisy batch, same shape and dtype as `clean` (computed in float32).

    Raises:
        TypeError: `config` is not a `CorruptionConfig` or `clean` is not floating point.
        ValueError: `clean` is not rank 4 or `seed` is not of shape [2].

    Example:
        >>> noisy = corrupt(tf.zeros([4, 64, 64, 1]), CorruptionConfig(), tf.constant([0, 7]))
    """
    return _corrupt(clean, config, seed, count=1)[0]


def corrupt_pair(clean: tf.Tensor, config: CorruptionConfig, seed: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    """Two independent noisy versions of each image, for Noise2Noise targets.

    Both share the per-image choices and noise levels (which corruptions, sigma, subsampling
    factor, blur) and differ only in their noise fields, which are independent. The first one
    equals `corrupt(clean, config, seed)`.

    Args and Raises: as `corrupt`.

    Returns:
        `(noisy_a, noisy_b)`, each the same shape and dtype as `clean`.
    """
    noisy_a, noisy_b = _corrupt(clean, config, seed, count=2)
    return noisy_a, noisy_b


def add_texture(clean: tf.Tensor, config: CorruptionConfig, seed: tf.Tensor) -> tf.Tensor:
    """Adds non-white texture to clean patches, as `config.texture` says: the new target.

    A denoiser trained on (clean + white noise -> clean) also removes whatever in a photograph
    looks like faint noise: scan lines, sharpening halos, grain, the finest texture. Here a
    chosen image gets `a * (n + s * n') / sqrt(2)`, with `n` white Gaussian, `n'` the same field
    one pixel away in a direction drawn per image (horizontal, vertical or a diagonal), `s` = +1
    or -1 and `a` drawn from `texture.sigma`: a unit-variance field whose neighbours along that
    direction correlate by `s / 2`, which white noise never does. `texture.kind: grain` puts
    `a` times white noise smoothed by a 3x3 binomial filter (scaled to unit variance) in its
    place, and `both` one of the two per image. Added before the corruption
    and kept in the target, it teaches the network to remove only what is white; what that
    costs and gains is in docs/training.md ("Nearly clean images"). With
    `texture.max_noise_sigma`, only images whose additive noise level (the one `corrupt` draws
    from the same seed) is at most that get texture.

    Args and Raises: as `corrupt`.

    Returns:
        `clean` with the texture added (unchanged when `texture.probability` is 0), same dtype.
    """
    clean, seed = _checked(clean, config, seed)
    texture = config.texture
    if texture.probability <= 0.0 or texture.sigma[1] <= 0.0:
        return clean
    seeds = tf.random.experimental.stateless_split(tf.random.experimental.stateless_fold_in(seed, _TEXTURE_STREAM), 5)
    shape = tf.shape(clean)
    batch = shape[0]
    pattern = None if texture.kind == "grain" else _directional(shape, seeds)
    if texture.kind != "directional":
        grain = _grain(shape, tf.random.experimental.stateless_fold_in(seeds[0], 1))
        if pattern is None:
            pattern = grain
        else:  # both: its own draw, so the directional draws stay those of `directional`
            pick = tf.random.stateless_uniform([batch], tf.random.experimental.stateless_fold_in(seeds[1], 1)) < 0.5
            pattern = tf.where(tf.reshape(pick, [-1, 1, 1, 1]), grain, pattern)
    low, high = texture.sigma
    amplitude = tf.random.stateless_uniform([batch], seeds[3], minval=low, maxval=high)
    chosen = _chosen(texture.probability, batch, seeds[4])
    if texture.max_noise_sigma is not None:
        faint = _additive_level(config, batch, seed) <= texture.max_noise_sigma
        chosen = faint if chosen is None else chosen & faint
    if chosen is not None:
        amplitude = tf.where(chosen, amplitude, tf.zeros_like(amplitude))
    textured = tf.cast(clean, tf.float32) + tf.reshape(amplitude, [-1, 1, 1, 1]) * pattern
    return tf.ensure_shape(tf.cast(textured, clean.dtype), clean.shape)


def _directional(shape, seeds):
    """The directional unit field of `add_texture`, `[B, H, W, C]`, from its seeds 0 to 2."""
    batch, height, width = shape[0], shape[1], shape[2]
    field = tf.random.stateless_normal(tf.stack([batch, height + 1, width + 2, shape[3]]), seeds[0])
    centre = field[:, 1:, 1:-1]
    neighbours = tf.stack([field[:, 1:, :-2],  # left: horizontal
                           field[:, :-1, 1:-1],  # above: vertical
                           field[:, :-1, :-2],  # above left: diagonal
                           field[:, :-1, 2:]], axis=1)  # above right: anti-diagonal
    direction = tf.random.stateless_uniform([batch], seeds[1], minval=0, maxval=4, dtype=tf.int32)
    sign = tf.where(tf.random.stateless_uniform([batch], seeds[2]) < 0.5, -1.0, 1.0)
    neighbour = tf.gather(neighbours, direction, batch_dims=1)
    return (centre + tf.reshape(sign, [-1, 1, 1, 1]) * neighbour) / math.sqrt(2.0)


def _grain(shape, seed):
    """A unit-variance field like film grain, `[B, H, W, C]` for `shape` = [B, H, W, C]: white
    Gaussian noise smoothed by the 3x3 binomial filter [1, 2, 1]^T [1, 2, 1] / 16, whose
    weights' root sum of squares is 6/16 (lag-1 correlation 2/3 along rows and columns)."""
    field = tf.random.stateless_normal(shape + tf.constant([0, 2, 2, 0]), seed)
    field = field[:, :-2] + 2.0 * field[:, 1:-1] + field[:, 2:]
    field = field[:, :, :-2] + 2.0 * field[:, :, 1:-1] + field[:, :, 2:]
    return field / 6.0


def step_seed(seed: int, step, replica_id: Optional[tf.Tensor] = None) -> tf.Tensor:
    """The corruption seed of one training step: a function of (seed, step, replica) only.

    Args:
        seed: the run's seed (`train.seed`).
        step: the optimizer step, an int or a scalar tensor (e.g. `optimizer.iterations`).
        replica_id: the replica's index; `None` takes it from the current replica context
            (0 outside `tf.distribute`), so replicas draw different noise.

    Returns:
        An int64 `[2]` tensor for `corrupt` / `corrupt_pair`.
    """
    if replica_id is None:
        context = tf.distribute.get_replica_context()
        replica_id = context.replica_id_in_sync_group if context is not None else 0
    base = tf.constant([int(seed), 0x5EED], tf.int64)
    folded = tf.random.experimental.stateless_fold_in(base, tf.cast(step, tf.int64))
    folded = tf.random.experimental.stateless_fold_in(folded, tf.cast(replica_id, tf.int64))
    return tf.cast(folded, tf.int64)


def _corrupt(clean, config, seed, count):
    clean, seed = _checked(clean, config, seed)
    x = tf.cast(clean, tf.float32)
    seeds = tf.random.experimental.stateless_split(seed, _SEEDS)
    batch = tf.shape(x)[0]

    subsampling = config.subsampling
    if subsampling.probability > 0.0 and any(f > 1 for f in subsampling.factors):
        mask = _chosen(subsampling.probability, batch, seeds[_SUBSAMPLE_MASK])
        x = _subsample(x, subsampling.factors, mask, seeds[_SUBSAMPLE_FACTOR])
    noises = _noise_levels(config, batch, seeds)
    blur = config.blur
    blur_mask = _chosen(blur.probability, batch, seeds[_BLUR_MASK]) if blur.probability > 0.0 else None

    outputs = []
    for i in range(count):
        y = x
        for noise, level, field_index, multiplicative in noises:
            field_seed = tf.random.experimental.stateless_fold_in(seeds[field_index], i)
            field = _gaussian_field(y, noise.per_channel, field_seed)
            y = y * (1.0 + level * field) if multiplicative else y + level * field
        if blur.probability > 0.0:
            blurred = _gaussian_blur(y, blur.sigma)
            y = blurred if blur_mask is None else tf.where(tf.reshape(blur_mask, [-1, 1, 1, 1]), blurred, y)
        if config.quantize:
            y = tf.round(y)
        if config.clip:
            y = tf.clip_by_value(y, 0.0, 255.0)
        outputs.append(tf.cast(y, clean.dtype))
    return outputs


def _checked(clean, config, seed):
    """`clean` and `seed` as tensors, after the checks `corrupt` documents."""
    if not isinstance(config, CorruptionConfig):
        raise TypeError(f"config must be a bfcnn.config.CorruptionConfig, got {type(config).__name__}")
    clean = tf.convert_to_tensor(clean)
    if not clean.dtype.is_floating:
        raise TypeError(f"clean must be a float tensor on the 0-255 scale, got dtype {clean.dtype.name}")
    if clean.shape.rank is not None and clean.shape.rank != 4:
        raise ValueError(f"clean must have shape [B, H, W, C], got {clean.shape}")
    seed = tf.convert_to_tensor(seed)
    if seed.dtype not in (tf.int32, tf.int64):
        seed = tf.cast(seed, tf.int64)
    if not seed.shape.is_compatible_with([2]):
        raise ValueError(f"seed must be an integer tensor of shape [2], got shape {seed.shape}")
    return clean, seed


def _chosen(probability, batch, seed):
    """Bool [B]: which images get a corruption; None when all of them do."""
    if probability >= 1.0:
        return None
    return tf.random.stateless_uniform([batch], seed) < probability


def _noise_levels(config, batch, seeds):
    """(noise config, per-image level [B, 1, 1, 1] (0 where not chosen), field seed index,
    multiplicative) for the multiplicative then the additive noise, those that are on."""
    noises = []
    for noise, mask_index, level_index, field_index, multiplicative in (
        (config.multiplicative, _MULTIPLICATIVE_MASK, _MULTIPLICATIVE_LEVEL, _MULTIPLICATIVE_FIELD, True),
        (config.additive, _ADDITIVE_MASK, _ADDITIVE_LEVEL, _ADDITIVE_FIELD, False),
    ):
        if noise.probability > 0.0:
            level = _levels(noise, batch, seeds[level_index])
            mask = _chosen(noise.probability, batch, seeds[mask_index])
            if mask is not None:
                level = tf.where(mask, level, tf.zeros_like(level))
            noises.append((noise, tf.reshape(level, [-1, 1, 1, 1]), field_index, multiplicative))
    return noises


def _additive_level(config, batch, seed):
    """Float [B]: the additive noise std `corrupt(..., seed)` gives each image (0 where none)."""
    seeds = tf.random.experimental.stateless_split(seed, _SEEDS)
    for _, level, _, multiplicative in _noise_levels(config, batch, seeds):
        if not multiplicative:
            return tf.reshape(level, [-1])
    return tf.zeros([batch])


def _levels(noise, batch, seed):
    """Per-image noise levels [B]: uniform in the `sigma` range, or uniform over `sigma_values`."""
    if noise.sigma_values is not None:
        values = tf.constant(noise.sigma_values, tf.float32)
        index = tf.random.stateless_uniform([batch], seed, minval=0, maxval=len(noise.sigma_values), dtype=tf.int32)
        return tf.gather(values, index)
    low, high = noise.sigma
    if high == low:
        return tf.fill([batch], float(low))
    levels = tf.random.stateless_uniform([batch], seed, minval=low, maxval=high)
    if noise.log_uniform > 0.0:
        floor = max(low, noise.LOG_UNIFORM_FLOOR)  # per noise type: 0-255 or relative
        log_seed, pick_seed = (tf.random.experimental.stateless_fold_in(seed, k) for k in (1, 2))
        logs = tf.random.stateless_uniform([batch], log_seed, minval=math.log(floor), maxval=math.log(high))
        pick = tf.random.stateless_uniform([batch], pick_seed) < noise.log_uniform
        levels = tf.where(pick, tf.exp(logs), levels)
    return levels


def _gaussian_field(x, per_channel, seed):
    """Standard normal noise shaped like x, or [B, H, W, 1] (shared by all channels)."""
    shape = tf.shape(x)
    if not per_channel:
        shape = tf.concat([shape[:3], [1]], axis=0)
    return tf.random.stateless_normal(shape, seed)


def _subsample(x, factors, mask, factor_seed):
    """Average-pools each chosen image by a factor drawn from `factors`, then resizes it back.

    The image is zero-padded at the bottom and right to a multiple of the factor and each
    block is averaged over its pixels inside the image only, so every low-resolution pixel
    covers exactly one f x f block and the bilinear resize (half-pixel centres) puts it back
    in place; the padding is cropped off at the end.
    """
    batch, height, width = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
    which = tf.random.stateless_uniform([batch], factor_seed, minval=0, maxval=len(factors), dtype=tf.int32)
    if mask is not None:
        which = tf.where(mask, which, -1)
    out = x
    for k, factor in enumerate(factors):
        if factor <= 1:
            continue
        pad_height, pad_width = tf.math.floormod(-height, factor), tf.math.floormod(-width, factor)
        paddings = [[0, 0], [0, pad_height], [0, pad_width], [0, 0]]
        block_sums = tf.nn.avg_pool2d(tf.pad(x, paddings), factor, factor, "VALID")
        inside = tf.nn.avg_pool2d(tf.pad(tf.ones([1, height, width, 1]), paddings), factor, factor, "VALID")
        up = tf.image.resize(block_sums / inside, tf.stack([height + pad_height, width + pad_width]), "bilinear")
        out = tf.where(tf.reshape(tf.equal(which, k), [-1, 1, 1, 1]), up[:, :height, :width, :], out)
    return tf.ensure_shape(out, x.shape)


def _gaussian_blur(x, sigma):
    """A separable Gaussian blur of radius ceil(3 sigma).

    Near the borders the kernel is renormalized over the pixels inside the image (normalized
    convolution), so a constant image stays constant whatever its size.
    """
    channels = x.shape[-1]
    if channels is None:
        raise ValueError(f"the blur needs a known number of channels, got shape {x.shape}")
    radius = max(1, math.ceil(3.0 * sigma))
    taps = [math.exp(-0.5 * (k / sigma) ** 2) for k in range(-radius, radius + 1)]
    taps = tf.constant([t / sum(taps) for t in taps], tf.float32)

    def separable(image, count):
        vertical = tf.tile(tf.reshape(taps, [-1, 1, 1, 1]), [1, 1, count, 1])
        horizontal = tf.reshape(vertical, [1, -1, count, 1])
        image = tf.nn.depthwise_conv2d(image, vertical, [1, 1, 1, 1], "SAME")
        return tf.nn.depthwise_conv2d(image, horizontal, [1, 1, 1, 1], "SAME")

    return separable(x, channels) / separable(tf.ones_like(x[:1, :, :, :1]), 1)
