"""The in-memory sampler: batches of clean patches drawn in-graph from cached images.

Overview: `bfcnn.training`.
"""

from typing import Sequence

import numpy as np
import tensorflow as tf


def dihedral(patches: tf.Tensor, seed: tf.Tensor, flips: bool, rotations: bool) -> tf.Tensor:
    """Applies a random symmetry of the square to each patch of [B, P, P, C].

    flips and rotations: one of all 8 symmetries (flips and a transpose); flips only:
    identity, left-right, up-down or both; rotations only: a rotation by 0, 90, 180 or
    270 degrees, never a mirror image.
    """
    if not (flips or rotations):
        return patches
    draw = tf.random.stateless_uniform([tf.shape(patches)[0], 3], seed) < 0.5
    masks = [draw[:, i, None, None, None] for i in range(3)]
    if not flips:
        patches = tf.where(masks[0], tf.reverse(patches, [1, 2]), patches)  # 180 degrees
        quarter = tf.reverse(tf.transpose(patches, [0, 2, 1, 3]), [1])  # 90 degrees
        return tf.where(masks[1], quarter, patches)
    patches = tf.where(masks[0], tf.reverse(patches, [2]), patches)
    patches = tf.where(masks[1], tf.reverse(patches, [1]), patches)
    if rotations:
        patches = tf.where(masks[2], tf.transpose(patches, [0, 2, 1, 3]), patches)
    return patches


class InMemorySampler:
    """Draws batches of clean patches in-graph from images held in memory.

    The pixels of all images are stored back to back in one flat tensor (no padding to a
    common size, so memory is the sum of the images), kept in host memory and gathered
    there: only the batch, not the dataset, travels to an accelerator each step.

    Args:
        images: uint8 [H, W, C] arrays, each at least `patch_size` on both axes.
        weights: sampling weight of each image (a source's weight split over its images).
        patch_size: side of the square patches.
        patches_per_image: crops taken from each drawn image per batch.
        flips, rotations: random flips / 90-degree rotations.
        release: `images` is a list the sampler may empty as it copies each image into the
            store (its entries become None), so the decoded images and the tensors are never
            all in memory at once. For callers that keep no other reference (the trainer).

    Raises:
        ValueError: no images, an image smaller than the patch, mixed channel counts, or
            weights that do not match the images.

    Example:
        >>> sampler = InMemorySampler(images, [1.0] * len(images), patch_size=64)
        >>> batch = sampler.sample(16, tf.constant([0, step], tf.int64))
    """

    def __init__(self, images: Sequence[np.ndarray], weights: Sequence[float], patch_size: int,
                 patches_per_image: int = 4, flips: bool = True, rotations: bool = True, release: bool = False):
        given = images
        images = [np.asarray(im) for im in images]
        if not images:
            raise ValueError("InMemorySampler needs at least one image")
        if patch_size < 1 or patches_per_image < 1:
            raise ValueError(f"patch_size={patch_size} and patches_per_image={patches_per_image} must be >= 1")
        channels = images[0].shape[-1]
        for i, im in enumerate(images):
            if im.ndim != 3 or im.shape[-1] != channels or im.dtype != np.uint8:
                raise ValueError(f"images[{i}] is {im.dtype} {im.shape}; every image must be uint8 "
                                 f"[H, W, {channels}]")
            if min(im.shape[:2]) < patch_size:
                raise ValueError(f"images[{i}] is {im.shape[0]}x{im.shape[1]}, smaller than patch_size="
                                 f"{patch_size}; pad it first (fit_to_patch)")
        weights = np.asarray(weights, np.float64)
        if weights.shape != (len(images),) or not np.all(weights >= 0) or not weights.sum() > 0:
            raise ValueError(f"weights must be {len(images)} non-negative numbers, not all 0; got {weights.shape} "
                             "values")
        if flips and rotations:
            # A transpose is one of the 8 symmetries drawn anyway, so storing portrait images
            # as landscape changes nothing in distribution, and keeps batches identical to
            # runs started before the flat storage (a resumed run must see the same batches).
            images = [im.transpose(1, 0, 2) if im.shape[0] > im.shape[1] else im for im in images]
        sizes = np.array([im.shape[:2] for im in images], np.int64)
        counts = sizes[:, 0] * sizes[:, 1]
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        # Host memory: on an accelerator the gather runs on the CPU and only the batch is copied.
        with tf.device("/cpu:0"):
            # One tensor per image, then one concatenation: TensorFlow's copy of a numpy array
            # briefly takes twice its size, which for one flat array of everything was 2x the dataset.
            parts = []
            for i in range(len(images)):
                parts.append(tf.constant(images[i].reshape(-1, channels)))
                if release:  # the last references to the decoded image: freed once copied
                    images[i] = given[i] = None
            self.pixels = tf.concat(parts, axis=0) if len(parts) > 1 else parts[0]
            del parts
            self.starts = tf.constant(starts, tf.int64)
            self.sizes = tf.constant(sizes, tf.int64)
            with np.errstate(divide="ignore"):
                self.logits = tf.constant(np.log(weights / weights.sum())[None], tf.float32)
        self.patch_size = int(patch_size)
        self.patches_per_image = int(patches_per_image)
        self.flips, self.rotations = bool(flips), bool(rotations)
        self.channels = int(channels)
        self.nbytes = int(counts.sum()) * int(channels)

    def sample(self, batch_size: int, seed: tf.Tensor, return_index: bool = False):
        """A float32 [batch_size, P, P, C] batch; the same seed gives the same batch.

        Args:
            batch_size: patches in the batch (a Python int).
            seed: int32 or int64 [2], e.g. derived from (train.seed, step).
            return_index: also return the int32 [batch_size] index of each patch's image
                (the trainer looks up whether it is a real noisy pair).
        """
        p = self.patch_size
        with tf.device("/cpu:0"):
            seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=3)
            n_images = -(-batch_size // self.patches_per_image)
            index = tf.random.stateless_categorical(self.logits, n_images, seeds[0], dtype=tf.int32)[0]
            index = tf.repeat(index, self.patches_per_image)[:batch_size]
            size = tf.gather(self.sizes, index)  # [B, 2]
            room = size - p + 1
            draw = tf.random.stateless_uniform([batch_size, 2], seeds[1])
            offsets = tf.minimum(tf.cast(draw * tf.cast(room, tf.float32), tf.int64), room - 1)
            grid = tf.range(p, dtype=tf.int64)
            rows = offsets[:, 0, None] + grid  # [B, P]
            cols = offsets[:, 1, None] + grid
            flat = (tf.gather(self.starts, index)[:, None, None] + rows[:, :, None] * size[:, 1, None, None]
                    + cols[:, None, :])  # [B, P, P] pixel indices
            patches = dihedral(tf.gather(self.pixels, flat), seeds[2], self.flips, self.rotations)
        patches = tf.cast(tf.ensure_shape(patches, [batch_size, p, p, self.channels]), tf.float32)
        return (patches, index) if return_index else patches
