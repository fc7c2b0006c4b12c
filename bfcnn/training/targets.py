"""(input, target) of a training step, from clean patches or real noisy pairs.

Targets (`train.target`): `clean` trains on (corrupted patch -> clean patch); `noisy` is
Noise2Noise (Lehtinen et al., "Noise2Noise: Learning image restoration without clean data",
ICML 2018): the target is a second, independent corruption of the same patch. A paired source
(`dataset.inputs[].paired`) gives real pairs instead: the input is a crop of `noisy_a`, the
target the same crop of `noisy_b` (with `target: noisy` the two are swapped for a random half
of the patches, so neither copy is always the target; with `target: clean` never, and
`noisy_b` is taken as the clean reference). The `corruption` section applies to the other
sources only; both kinds may be mixed in one run.
"""

import tensorflow as tf

from bfcnn.config import CorruptionConfig
from bfcnn.training.corruption import add_texture, corrupt, corrupt_pair


def synthetic_inputs(clean, corruption: CorruptionConfig, seed, noisy_target: bool):
    """(input, target) from clean patches: a corruption and the clean patch, or with
    `noisy_target` two independent corruptions (Noise2Noise). With `corruption.texture` the
    clean patch gets its texture first, so the target holds it (`add_texture`)."""
    clean = add_texture(clean, corruption, seed)
    if noisy_target:
        return corrupt_pair(clean, corruption, seed)
    return corrupt(clean, corruption, seed), clean


def paired_inputs(both, is_pair, corruption: CorruptionConfig, seed, *, channels: int, noisy_target: bool,
                  all_paired: bool = False):
    """(input, target) of the patches of a run with paired sources (Lehtinen et al., ICML 2018).

    Args:
        both: float [B, P, P, 2C]: a real pair's `noisy_a` and `noisy_b` crops side by side,
            or a clean patch twice (a patch of a non-paired source).
        is_pair: bool [B], which patches are real pairs.
        corruption: the `corruption` section, applied to the non-paired patches only.
        seed: int [2], the step's corruption seed.
        channels: C.
        noisy_target: `train.target == "noisy"`: a real pair is swapped (input `noisy_b`,
            target `noisy_a`) for a random half of the patches, and non-paired patches get
            two independent corruptions. Otherwise the input is `noisy_a` and the target
            `noisy_b` (the clean reference), and non-paired patches are corrupted once.
        all_paired: every patch is a real pair, so the corruption is skipped.

    Returns:
        (input, target), each float [B, P, P, C]; the same seed gives the same result.
    """
    first, second = both[..., :channels], both[..., channels:]
    if noisy_target:
        # Its own stream, folded from the corruption seed, so runs without pairs draw as before.
        swap_seed = tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), 0x5A9)
        swap = tf.random.stateless_uniform([tf.shape(both)[0], 1, 1, 1], swap_seed) < 0.5
        first, second = tf.where(swap, second, first), tf.where(swap, first, second)
    if all_paired:
        return first, second
    noisy, target = synthetic_inputs(both[..., :channels], corruption, seed, noisy_target)
    real = tf.reshape(is_pair, [-1, 1, 1, 1])
    return tf.where(real, first, noisy), tf.where(real, second, target)
