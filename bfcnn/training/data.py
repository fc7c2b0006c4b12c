"""Training data: clean patches from image directories and tensorflow-datasets.

Two samplers give the same thing, a float32 [B, P, P, C] batch of clean patches on the
0-255 scale, with random integer-offset crops (the clean target is never resampled),
flips and 90-degree rotations:

- `InMemorySampler` (directories, `dataset.cache: true`): the images are decoded once
  into one uint8 tensor and a batch is drawn in-graph from a stateless seed
  `(train.seed, step)`. Drawing costs next to nothing, runs on the device inside the
  training step, and a resumed run sees exactly the batches an uninterrupted one would.
- `streaming_dataset` (tensorflow-datasets sources, or `cache: false`): a `tf.data`
  pipeline with parallel decoding and prefetch, for datasets too large for memory.
"""

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import List, Sequence, Tuple

import numpy as np
import tensorflow as tf

from bfcnn.errors import BfcnnError
from bfcnn.io import ImageReadError, list_images, read_image

log = logging.getLogger("bfcnn.train")

# Beyond this many bytes of decoded pixels the trainer streams instead of caching.
MAX_CACHE_BYTES = 4 << 30


def load_directory(directory, color: str, patch_size: int, small_images: str) -> Tuple[List[np.ndarray], int]:
    """Decodes every image under `directory` as uint8 [H, W, C].

    Corrupt or unreadable files are skipped with one warning each; images smaller than
    the patch are reflect-padded (`small_images="pad"`) or dropped (`"skip"`).

    Returns:
        (images, number of files skipped).

    Raises:
        BfcnnError: the directory is missing or holds no usable image.
    """
    files = list_images(directory)

    def load(path):
        try:
            return read_image(path, color)
        except ImageReadError as error:
            log.warning("skipping %s", error)
            return None

    with ThreadPoolExecutor(max_workers=4) as pool:
        decoded = list(pool.map(load, files))
    images, skipped = [], 0
    for image in decoded:
        if image is None:
            skipped += 1
            continue
        image = fit_to_patch(image, patch_size, small_images)
        if image is None:
            skipped += 1
            continue
        images.append(image)
    if not images:
        raise BfcnnError(f"no usable image in {str(directory)!r} ({skipped} skipped)")
    return images, skipped


def fit_to_patch(image: np.ndarray, patch_size: int, small_images: str):
    """The image, reflect-padded up to the patch size when smaller, or None to skip it."""
    h, w = image.shape[:2]
    if h >= patch_size and w >= patch_size:
        return image
    if small_images == "skip":
        return None
    while image.shape[0] < patch_size or image.shape[1] < patch_size:
        pad_h = min(patch_size - image.shape[0], image.shape[0]) if image.shape[0] < patch_size else 0
        pad_w = min(patch_size - image.shape[1], image.shape[1]) if image.shape[1] < patch_size else 0
        image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="symmetric")
    return image


def dihedral(patches: tf.Tensor, seed: tf.Tensor, flips: bool, rotations: bool) -> tf.Tensor:
    """Applies a random flip / transpose per patch (together the 8 symmetries of a square)."""
    if not (flips or rotations):
        return patches
    draw = tf.random.stateless_uniform([tf.shape(patches)[0], 3], seed) < 0.5
    masks = [draw[:, i, None, None, None] for i in range(3)]
    if flips:
        patches = tf.where(masks[0], tf.reverse(patches, [2]), patches)
        patches = tf.where(masks[1], tf.reverse(patches, [1]), patches)
    if rotations:
        patches = tf.where(masks[2], tf.transpose(patches, [0, 2, 1, 3]), patches)
    return patches


class InMemorySampler:
    """Draws batches of clean patches in-graph from images held in memory.

    Args:
        images: uint8 [H, W, C] arrays, each at least `patch_size` on both axes.
        weights: sampling weight of each image (a source's weight split over its images).
        patch_size: side of the square patches.
        patches_per_image: crops taken from each drawn image per batch.
        flips, rotations: random flips / 90-degree rotations.
    """

    def __init__(self, images: Sequence[np.ndarray], weights: Sequence[float], patch_size: int,
                 patches_per_image: int = 4, flips: bool = True, rotations: bool = True):
        if rotations:  # a random transpose follows anyway: store everything landscape, pad less
            images = [im.transpose(1, 0, 2) if im.shape[0] > im.shape[1] else im for im in images]
        height = max(im.shape[0] for im in images)
        width = max(im.shape[1] for im in images)
        channels = images[0].shape[2]
        stack = np.zeros((len(images), height, width, channels), np.uint8)
        for i, im in enumerate(images):
            stack[i, : im.shape[0], : im.shape[1]] = im
        self.images = tf.constant(stack)
        self.sizes = tf.constant([im.shape[:2] for im in images], tf.int32)
        weights = np.asarray(weights, np.float64)
        self.logits = tf.constant(np.log(weights / weights.sum())[None], tf.float32)
        self.patch_size = int(patch_size)
        self.patches_per_image = int(patches_per_image)
        self.flips, self.rotations = bool(flips), bool(rotations)
        self.channels = channels
        self.nbytes = stack.nbytes

    def sample(self, batch_size: int, seed: tf.Tensor) -> tf.Tensor:
        """A float32 [batch_size, P, P, C] batch; the same seed gives the same batch."""
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=3)
        p = self.patch_size
        n_images = -(-batch_size // self.patches_per_image)
        index = tf.random.stateless_categorical(self.logits, n_images, seeds[0], dtype=tf.int32)[0]
        index = tf.repeat(index, self.patches_per_image)[:batch_size]
        room = tf.gather(self.sizes, index) - p + 1
        offsets = tf.cast(tf.random.stateless_uniform([batch_size, 2], seeds[1]) * tf.cast(room, tf.float32), tf.int32)
        offsets = tf.minimum(offsets, room - 1)
        grid = tf.range(p)
        rows = offsets[:, 0, None] + grid  # [B, P]
        cols = offsets[:, 1, None] + grid
        batch = tf.broadcast_to(index[:, None, None], [batch_size, p, p])
        indices = tf.stack(
            [batch, tf.broadcast_to(rows[:, :, None], [batch_size, p, p]),
             tf.broadcast_to(cols[:, None, :], [batch_size, p, p])], axis=-1)
        patches = tf.cast(tf.gather_nd(self.images, indices), tf.float32)
        return dihedral(patches, seeds[2], self.flips, self.rotations)


def _tfds_images(source, color: str):
    """A tf.data.Dataset of uint8 [H, W, C] images from a tensorflow-datasets source."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise BfcnnError("tensorflow-datasets sources need the extra: pip install 'bfcnn[tfds]'") from error
    if source.tfds is not None:
        spec = source.tfds
        try:
            ds = tfds.load(spec.name, split=spec.split, data_dir=spec.data_dir, download=False,
                           shuffle_files=True)
        except Exception as error:  # tfds raises many types; name the dataset
            raise BfcnnError(
                f"cannot load tensorflow-datasets {spec.name!r} (split {spec.split!r}, data_dir "
                f"{spec.data_dir!r}); it must be prepared locally, bfcnn never downloads: {error}"
            ) from error
        key = spec.image_key
    else:
        spec = source.image_folder
        try:
            builder = tfds.folder_dataset.ImageFolder(spec.root_dir)
            ds = builder.as_dataset(split=spec.split, shuffle_files=True)
        except Exception as error:
            raise BfcnnError(f"cannot read image folder {spec.root_dir!r} (split {spec.split!r}): {error}") from error
        key = "image"
    channels = 1 if color == "gray" else 3

    def convert(example):
        image = example[key]
        if image.dtype != tf.uint8:
            image = tf.cast(tf.clip_by_value(tf.cast(image, tf.float32), 0, 255), tf.uint8)
        have = tf.shape(image)[-1]
        image = image[..., :3] if channels == 3 else image
        if channels == 1:
            image = tf.cond(have >= 3, lambda: tf.image.rgb_to_grayscale(image[..., :3]), lambda: image[..., :1])
        else:
            image = tf.cond(tf.shape(image)[-1] == 1, lambda: tf.tile(image, [1, 1, 3]), lambda: image)
        image.set_shape([None, None, channels])
        return image

    return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)


def _directory_images(directory, color: str, seed: int):
    """A repeated tf.data.Dataset decoding the files of a directory lazily (for `cache: false`)."""
    files = [str(p) for p in list_images(directory)]
    channels = 1 if color == "gray" else 3

    def decode(path):
        try:
            return read_image(path.decode() if isinstance(path, bytes) else path, color)
        except ImageReadError as error:
            log.warning("skipping %s", error)
            return np.zeros((0, 0, channels), np.uint8)

    ds = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(lambda p: tf.numpy_function(decode, [p], tf.uint8), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.map(lambda im: tf.ensure_shape(im, [None, None, channels]))


def streaming_dataset(sources, dataset_config, seed: int) -> tf.data.Dataset:
    """A tf.data pipeline of clean float32 patch batches for sources that are not cached."""
    cfg = dataset_config
    p = cfg.patch_size
    datasets, weights = [], []
    for source in sources:
        if source.directory is not None:
            ds = _directory_images(source.directory, cfg.color, seed)
        else:
            ds = _tfds_images(source, cfg.color)
        datasets.append(ds.repeat())
        weights.append(float(source.weight))
    total = sum(weights)
    ds = datasets[0] if len(datasets) == 1 else tf.data.Dataset.sample_from_datasets(
        datasets, [w / total for w in weights], seed=seed)

    def big_enough(image):
        shape = tf.shape(image)
        return tf.logical_and(shape[0] >= (1 if cfg.small_images == "pad" else p),
                              shape[1] >= (1 if cfg.small_images == "pad" else p))

    def crops(image):
        shape = tf.shape(image)
        pad_h, pad_w = tf.maximum(p - shape[0], 0), tf.maximum(p - shape[1], 0)
        image = tf.pad(image, [[0, pad_h], [0, pad_w], [0, 0]], mode="SYMMETRIC")
        patches = tf.stack([tf.image.random_crop(image, [p, p, tf.shape(image)[2]])
                            for _ in range(cfg.patches_per_image)])
        return tf.data.Dataset.from_tensor_slices(patches)

    ds = ds.filter(big_enough).interleave(crops, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    ds = ds.shuffle(cfg.shuffle_buffer, seed=seed).batch(cfg.batch_size, drop_remainder=True)
    counter = tf.data.Dataset.counter()
    ds = tf.data.Dataset.zip((ds, counter)).map(
        lambda x, i: dihedral(tf.cast(x, tf.float32), tf.stack([tf.cast(seed, tf.int64), i]), cfg.flips,
                              cfg.rotations),
        num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
