"""Training data: clean patches from image directories and tensorflow-datasets.

Two samplers give the same thing, a float32 [B, P, P, C] batch of clean patches on the
0-255 scale, with random integer-offset crops (the clean target is never resampled),
flips and 90-degree rotations:

- `InMemorySampler` (directories, `dataset.cache: true`): the images are decoded once
  into one flat uint8 tensor and a batch is drawn in-graph from a stateless seed
  `(train.seed, step)`. Drawing costs next to nothing, runs inside the training step,
  and a resumed run sees exactly the batches an uninterrupted one would.
- `streaming_dataset` (tensorflow-datasets sources, or `cache: false`): a `tf.data`
  pipeline with parallel decoding and prefetch, for datasets too large for memory.

Images smaller than the patch are padded by symmetric reflection (repeated when the image
is less than half the patch), the same way in both samplers.
"""

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import List, Sequence, Tuple

import numpy as np
import tensorflow as tf

from bfcnn.errors import BfcnnError
from bfcnn.io import ImageReadError, list_images, read_image

log = logging.getLogger("bfcnn.train")

# Beyond this many bytes of decoded pixels the trainer streams instead of caching.
MAX_CACHE_BYTES = 4 << 30

SMALL_IMAGES = ("pad", "skip")


def load_directory(directory, color: str, patch_size: int, small_images: str) -> Tuple[List[np.ndarray], int]:
    """Decodes every image under `directory` as uint8 [H, W, C].

    Corrupt or unreadable files are skipped with one warning each; images smaller than
    the patch are reflect-padded (`small_images="pad"`) or dropped (`"skip"`).

    Returns:
        (images, number of files skipped: unreadable ones, and small ones when skipping).

    Raises:
        BfcnnError: the directory is missing or holds no usable image.
    """
    if small_images not in SMALL_IMAGES:
        raise ValueError(f"small_images={small_images!r} is not supported; allowed: 'pad', 'skip'")
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
        image = None if image is None else fit_to_patch(image, patch_size, small_images)
        if image is None:
            skipped += 1
        else:
            images.append(image)
    if not images:
        raise BfcnnError(f"no usable image in {str(directory)!r} ({skipped} of {len(files)} files skipped)")
    return images, skipped


def _reflect(index, size):
    """Maps indices into [0, size) by repeated symmetric reflection (period 2 * size).

    Works on numpy arrays and tensors alike.
    """
    index = index % (2 * size)
    return np.minimum(index, 2 * size - 1 - index) if isinstance(index, np.ndarray) else \
        tf.minimum(index, 2 * size - 1 - index)


def fit_to_patch(image: np.ndarray, patch_size: int, small_images: str):
    """The image, reflect-padded up to the patch size when smaller, or None to skip it."""
    h, w = image.shape[:2]
    if h >= patch_size and w >= patch_size:
        return image
    if small_images == "skip":
        return None
    rows = _reflect(np.arange(max(h, patch_size)), h)
    cols = _reflect(np.arange(max(w, patch_size)), w)
    return image[rows[:, None], cols[None, :]]


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

    Raises:
        ValueError: no images, an image smaller than the patch, mixed channel counts, or
            weights that do not match the images.

    Example:
        >>> sampler = InMemorySampler(images, [1.0] * len(images), patch_size=64)
        >>> batch = sampler.sample(16, tf.constant([0, step], tf.int64))
    """

    def __init__(self, images: Sequence[np.ndarray], weights: Sequence[float], patch_size: int,
                 patches_per_image: int = 4, flips: bool = True, rotations: bool = True):
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
        starts = np.concatenate([[0], np.cumsum(sizes[:, 0] * sizes[:, 1])[:-1]])
        flat = np.concatenate([im.reshape(-1, channels) for im in images])
        # Host memory: on an accelerator the gather runs on the CPU and only the batch is copied.
        with tf.device("/cpu:0"):
            self.pixels = tf.constant(flat)
            self.starts = tf.constant(starts, tf.int64)
            self.sizes = tf.constant(sizes, tf.int64)
            with np.errstate(divide="ignore"):
                self.logits = tf.constant(np.log(weights / weights.sum())[None], tf.float32)
        self.patch_size = int(patch_size)
        self.patches_per_image = int(patches_per_image)
        self.flips, self.rotations = bool(flips), bool(rotations)
        self.channels = int(channels)
        self.nbytes = flat.nbytes

    def sample(self, batch_size: int, seed: tf.Tensor) -> tf.Tensor:
        """A float32 [batch_size, P, P, C] batch; the same seed gives the same batch.

        Args:
            batch_size: patches in the batch (a Python int).
            seed: int32 or int64 [2], e.g. derived from (train.seed, step).
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
        patches = tf.ensure_shape(patches, [batch_size, p, p, self.channels])
        return tf.cast(patches, tf.float32)


def _to_channels(image: tf.Tensor, channels: int) -> tf.Tensor:
    """uint8 [H, W, c] with any c (gray, gray+alpha, RGB, RGBA) to [H, W, channels]."""
    have = image.shape[-1]

    def gray(x):
        return tf.image.rgb_to_grayscale(x[..., :3]) if channels == 1 else x[..., :3]

    def from_gray(x):
        return x[..., :1] if channels == 1 else tf.tile(x[..., :1], [1, 1, 3])

    if have is not None:
        image = gray(image) if have >= 3 else from_gray(image)
    else:
        image = tf.cond(tf.shape(image)[-1] >= 3, lambda: gray(image), lambda: from_gray(image))
    image.set_shape([None, None, channels])
    return image


def _to_uint8(image: tf.Tensor) -> tf.Tensor:
    """uint8 stays, uint16 is scaled to 8 bits, anything else is taken on the 0-255 scale."""
    if image.dtype == tf.uint8:
        return image
    scale = 257.0 if image.dtype == tf.uint16 else 1.0
    return tf.cast(tf.clip_by_value(tf.round(tf.cast(image, tf.float32) / scale), 0.0, 255.0), tf.uint8)


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
        if key not in ds.element_spec:
            raise BfcnnError(f"tensorflow-datasets {spec.name!r} has no feature {key!r} (tfds.image_key); "
                             f"it has {sorted(ds.element_spec)}")
    else:
        spec = source.image_folder
        try:
            builder = tfds.folder_dataset.ImageFolder(spec.root_dir)
            ds = builder.as_dataset(split=spec.split, shuffle_files=True)
        except Exception as error:
            raise BfcnnError(f"cannot read image folder {spec.root_dir!r} (split {spec.split!r}): {error}") from error
        key = "image"
    channels = 1 if color == "gray" else 3
    ds = ds.map(lambda example: _to_channels(_to_uint8(example[key]), channels),
                num_parallel_calls=tf.data.AUTOTUNE)
    # A file that fails to decode is dropped (TF logs a warning) instead of ending training.
    return ds.ignore_errors(log_warning=True)


def _directory_images(directory, color: str, seed: int):
    """A tf.data.Dataset decoding the files of a directory lazily (for `cache: false`).

    An unreadable file becomes an empty image, dropped downstream, with one warning per file.
    """
    files = [str(p) for p in list_images(directory)]
    channels = 1 if color == "gray" else 3
    warned, lock = set(), threading.Lock()

    def decode(path):
        path = path.decode() if isinstance(path, bytes) else path
        try:
            return read_image(path, color)
        except ImageReadError as error:
            with lock:
                if path not in warned:
                    warned.add(path)
                    log.warning("skipping %s (%d unreadable file(s) in %s so far)", error, len(warned), directory)
            return np.zeros((0, 0, channels), np.uint8)

    ds = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(lambda p: tf.numpy_function(decode, [p], tf.uint8, stateful=False),
                num_parallel_calls=tf.data.AUTOTUNE)
    return ds.map(lambda im: tf.ensure_shape(im, [None, None, channels]))


def _random_crops(image, count: int, patch_size: int, seed):
    """`count` random patch_size crops [count, P, P, C] at integer offsets of a uint8 image,
    which is reflect-padded first where it is smaller than the patch."""
    p = patch_size
    shape = tf.shape(image, out_type=tf.int64)
    size = shape[:2]
    room = tf.maximum(size, p) - p + 1
    draw = tf.random.stateless_uniform([count, 2], seed, dtype=tf.float64)
    offsets = tf.minimum(tf.cast(draw * tf.cast(room, tf.float64), tf.int64), room - 1)
    grid = tf.range(p, dtype=tf.int64)
    rows = _reflect(offsets[:, 0, None] + grid, size[0])  # [count, P]
    cols = _reflect(offsets[:, 1, None] + grid, size[1])
    patches = tf.gather(tf.gather(image, rows), cols, axis=2, batch_dims=1)
    return tf.ensure_shape(patches, [count, p, p, image.shape[-1]])


def streaming_dataset(sources, dataset_config, seed: int) -> tf.data.Dataset:
    """A tf.data pipeline of clean float32 [B, P, P, C] patch batches for sources that are not cached.

    Args:
        sources: `InputSource`s (directories, `tfds` or `image_folder`), mixed by weight.
        dataset_config: the `dataset` section (`color`, `patch_size`, `batch_size`,
            `patches_per_image`, `small_images`, `flips`, `rotations`, `shuffle_buffer`).
        seed: the run's seed (file order, crops, flips and the mixing of sources).

    Raises:
        BfcnnError: an empty or missing source (naming it), or a tfds source that cannot load.
    """
    cfg = dataset_config
    p = cfg.patch_size
    datasets, weights = [], []
    for source in sources:
        if source.directory is not None:
            ds = _directory_images(source.directory, cfg.color, seed)
        elif source.tfds is not None or source.image_folder is not None:
            ds = _tfds_images(source, cfg.color)
        else:
            raise BfcnnError(f"a {source.kind!r} source cannot be streamed as clean images")
        datasets.append(ds.repeat())
        weights.append(float(source.weight))
    total = sum(weights)
    ds = datasets[0] if len(datasets) == 1 else tf.data.Dataset.sample_from_datasets(
        datasets, [w / total for w in weights], seed=seed)

    minimum = p if cfg.small_images == "skip" else 1  # empty images are unreadable files

    def big_enough(image):
        shape = tf.shape(image)
        return tf.logical_and(shape[0] >= minimum, shape[1] >= minimum)

    def crops(i, image):
        return _random_crops(image, cfg.patches_per_image, p, tf.stack([tf.cast(seed, tf.int64), i]))

    ds = ds.filter(big_enough)
    ds = tf.data.Dataset.zip((tf.data.Dataset.counter(), ds))
    ds = ds.map(crops, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False).unbatch()
    if cfg.shuffle_buffer > 1:
        ds = ds.shuffle(cfg.shuffle_buffer, seed=seed)
    ds = ds.batch(cfg.batch_size, drop_remainder=True)
    flip_seed = tf.cast(seed, tf.int64) + 0x5EED  # differs from the crop seeds (seed, i)
    ds = tf.data.Dataset.zip((ds, tf.data.Dataset.counter())).map(
        lambda x, i: tf.cast(dihedral(x, tf.stack([flip_seed, i]), cfg.flips, cfg.rotations), tf.float32),
        num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
