"""The streamed tf.data pipeline of clean patches (tensorflow-datasets sources, or `cache: false`).

Overview, and the layout of paired runs: `bfcnn.training`.
"""

import logging
import threading

import numpy as np
import tensorflow as tf

from bfcnn.errors import BfcnnError
from bfcnn.io import ImageReadError, list_images, read_image
from bfcnn.training.images import header_size, match_pairs, reflect, size_mismatch, too_small
from bfcnn.training.sampler import dihedral

log = logging.getLogger("bfcnn.train")


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


def _is_image_spec(spec) -> bool:
    """Whether a tf.data element spec is one image: a [H, W, C] (or [H, W]) tensor of numbers."""
    return (isinstance(spec, tf.TensorSpec) and spec.shape.rank in (2, 3)
            and (spec.dtype.is_integer or spec.dtype.is_floating))


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
            # The first line says what is wrong; tfds goes on to list every dataset it knows,
            # or suggests download=True, which bfcnn never passes.
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise BfcnnError(
                f"cannot load tensorflow-datasets {spec.name!r} (split {spec.split!r}, data_dir "
                f"{spec.data_dir!r}): {first}. bfcnn never downloads: prepare it first, e.g. "
                f"`tfds build {spec.name} --data_dir DIR`, and give that folder as tfds.data_dir"
            ) from None
        key = spec.image_key
        images = sorted(name for name, feature in ds.element_spec.items() if _is_image_spec(feature))
        if key not in ds.element_spec:
            raise BfcnnError(f"tensorflow-datasets {spec.name!r} has no feature {key!r} (tfds.image_key); "
                             f"it has {sorted(ds.element_spec)}; its image features: {images}")
        if key not in images:
            raise BfcnnError(f"tensorflow-datasets {spec.name!r}: feature {key!r} (tfds.image_key) is not an image "
                             f"({ds.element_spec[key]}); its image features: {images}")
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


def _lazy_images(columns, read, channels: int, where: str, seed: int):
    """A shuffled tf.data.Dataset of uint8 [H, W, channels] images, `read(*paths)` decoding lazily.

    `columns` are lists of paths of equal length (one list, or the two sides of the pairs).
    A `BfcnnError` from `read` (e.g. an unreadable file) gives an empty image, dropped
    downstream, with one warning per file.
    """
    warned, lock = set(), threading.Lock()

    def decode(*paths):
        paths = [p.decode() if isinstance(p, bytes) else p for p in paths]
        try:
            return read(*paths)
        except BfcnnError as error:
            with lock:
                if paths[0] not in warned:
                    warned.add(paths[0])
                    log.warning("skipping %s (%d unreadable file(s) in %s so far)", error, len(warned), where)
            return np.zeros((0, 0, channels), np.uint8)

    slices = tuple(tf.constant([str(p) for p in column]) for column in columns)
    ds = tf.data.Dataset.from_tensor_slices(slices).shuffle(len(columns[0]), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(lambda *paths: tf.numpy_function(decode, list(paths), tf.uint8, stateful=False),
                num_parallel_calls=tf.data.AUTOTUNE)
    return ds.map(lambda im: tf.ensure_shape(im, [None, None, channels]))


def _directory_images(directory, color: str, seed: int):
    """A tf.data.Dataset decoding the files of a directory lazily (for `cache: false`)."""
    channels = 1 if color == "gray" else 3
    return _lazy_images([list_images(directory)], lambda path: read_image(path, color), channels,
                        str(directory), seed)


def _paired_images(paired, color: str, seed: int):
    """A tf.data.Dataset of the pairs of a paired source, each uint8 [H, W, 2C], decoded lazily.

    The sizes are checked up front from the file headers, so a mismatched pair stops the run
    before training (naming the files) instead of in the middle of it.
    """
    pairs = match_pairs(paired.noisy_a, paired.noisy_b)
    for path_a, path_b in pairs:
        size_a, size_b = header_size(path_a), header_size(path_b)
        if 0 not in size_a + size_b and size_a != size_b:
            raise size_mismatch(path_a, path_b, size_a, size_b)

    def read(path_a, path_b):
        image_a, image_b = read_image(path_a, color), read_image(path_b, color)
        if image_a.shape != image_b.shape:  # only if a header disagrees with the decoded image
            raise size_mismatch(path_a, path_b, image_a.shape, image_b.shape)
        return np.concatenate([image_a, image_b], axis=-1)

    channels = 2 if color == "gray" else 6
    return _lazy_images([[a for a, _ in pairs], [b for _, b in pairs]], read, channels,
                        f"{paired.noisy_a} / {paired.noisy_b}", seed)


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
    rows = reflect(offsets[:, 0, None] + grid, size[0])  # [count, P]
    cols = reflect(offsets[:, 1, None] + grid, size[1])
    patches = tf.gather(tf.gather(image, rows), cols, axis=2, batch_dims=1)
    return tf.ensure_shape(patches, [count, p, p, image.shape[-1]])


def _source_name(source) -> str:
    if source.directory is not None:
        return str(source.directory)
    if source.paired is not None:
        return f"{source.paired.noisy_a} / {source.paired.noisy_b}"
    if source.tfds is not None:
        return f"tensorflow-datasets {source.tfds.name!r} (split {source.tfds.split!r})"
    return f"image folder {source.image_folder.root_dir!r}"


def _has_usable_image(source, color: str, minimum: int) -> bool:
    """Whether `source` holds an image of at least `minimum` x `minimum` pixels that decodes.

    Folders and pairs are screened by their file headers, and the first file (or pair) whose
    header is large enough is decoded, then the next, until one decodes: a truncated file has
    a readable header. A tensorflow-datasets source is decoded until its first usable image,
    from a dataset object of its own (iterating the training one would move its shuffled order on).
    """
    if source.directory is not None:
        candidates = ([path] for path in list_images(source.directory))
    elif source.paired is not None:
        candidates = (list(pair) for pair in match_pairs(source.paired.noisy_a, source.paired.noisy_b))
    else:
        probe = _tfds_images(source, color).filter(lambda image: tf.reduce_all(tf.shape(image)[:2] >= minimum))
        return next(iter(probe.take(1)), None) is not None
    for paths in candidates:
        if min(min(header_size(path)) for path in paths) < minimum:
            continue
        try:
            if all(min(read_image(path, color).shape[:2]) >= minimum for path in paths):
                return True
        except ImageReadError:
            continue
    return False


def _check_usable(source, color: str, minimum: int) -> None:
    """BfcnnError unless `source` has a usable image: a repeated source with none would make
    the training pipeline wait for ever."""
    if not _has_usable_image(source, color, minimum):
        why = f"unreadable or {too_small(minimum)}" if minimum > 1 else "unreadable"
        raise BfcnnError(f"no usable image in {_source_name(source)}: every image is {why}")


def _mixed_images(sources, color: str, minimum: int, paired: bool, seed: int) -> tf.data.Dataset:
    """The endless stream of (uint8 image, is_pair) of all `sources`, drawn by their weights;
    in a paired run a plain image is doubled along its channels (the layout of `bfcnn.training`)."""
    datasets, weights = [], []
    for source in sources:
        if source.directory is not None:
            ds = _directory_images(source.directory, color, seed)
        elif source.paired is not None:
            ds = _paired_images(source.paired, color, seed)
        elif source.tfds is not None or source.image_folder is not None:
            ds = _tfds_images(source, color)
        else:
            raise BfcnnError(f"a {source.kind!r} source cannot be streamed")
        _check_usable(source, color, minimum)
        is_pair = source.paired is not None
        if paired and not is_pair:
            ds = ds.map(lambda image: tf.concat([image, image], axis=-1))
        ds = ds.map(lambda image, flag=is_pair: (image, tf.constant(flag)))
        datasets.append(ds.repeat())
        weights.append(float(source.weight))
    if len(datasets) == 1:
        return datasets[0]
    total = sum(weights)
    return tf.data.Dataset.sample_from_datasets(datasets, [w / total for w in weights], seed=seed)


def stream_seed(seed: int, start_step: int) -> int:
    """The seed of a streamed pipeline that a run starts at `start_step`: the run's `seed`
    itself at step 0, else a number drawn from (seed, start_step), so that a resumed session
    shuffles, crops and flips otherwise than the session before it (which started from the
    same first draws) instead of repeating its batches."""
    if start_step == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(start_step)]).generate_state(1, np.uint32)[0])


def streaming_dataset(sources, dataset_config, seed: int, start_step: int = 0) -> tf.data.Dataset:
    """A tf.data pipeline of float32 [B, P, P, C] patch batches for sources that are not cached.

    Args:
        sources: `InputSource`s (directories, `tfds`, `image_folder` or `paired`), mixed by weight.
        dataset_config: the `dataset` section (`color`, `patch_size`, `batch_size`,
            `patches_per_image`, `small_images`, `flips`, `rotations`, `shuffle_buffer`).
        seed: the run's seed (file order, crops, flips and the mixing of sources).
        start_step: the training step the pipeline's first batch is for (the restored step
            of a resumed run), folded into the seed (`stream_seed`); 0 leaves it as it is.

    Returns:
        Batches of clean patches; when a source is paired, `(patches [B, P, P, 2C], is_pair
        bool [B])` instead, in the layout of `bfcnn.training` (a plain image twice).

    A resumed run starts this pipeline afresh from a seed of its own (`stream_seed`): its
    file order, crops, flips and mixing of sources are new draws, neither a replay of the
    batches the first session drew nor those an uninterrupted run would have drawn after
    `start_step` (unlike cached training, a resumed run does not reach the same weights);
    the noise, drawn in the training step from (seed, step), does follow. The file order of a
    `tfds` or `image_folder` source is tfds's own (`shuffle_files`), not drawn from this seed.

    Raises:
        BfcnnError: an empty or missing source (naming it), a source with no usable image,
            a tfds source that cannot load, or a paired source whose files do not match (see
            `match_pairs`).
    """
    cfg = dataset_config
    seed = stream_seed(seed, start_step)
    p = cfg.patch_size
    minimum = p if cfg.small_images == "skip" else 1  # empty images are unreadable files
    paired = any(source.paired is not None for source in sources)
    ds = _mixed_images(sources, cfg.color, minimum, paired, seed)

    def big_enough(image, flag):
        shape = tf.shape(image)
        return tf.logical_and(shape[0] >= minimum, shape[1] >= minimum)

    def crops(i, element):
        image, flag = element
        patches = _random_crops(image, cfg.patches_per_image, p, tf.stack([tf.cast(seed, tf.int64), i]))
        return patches, tf.fill([cfg.patches_per_image], flag)

    ds = ds.filter(big_enough)
    ds = tf.data.Dataset.zip((tf.data.Dataset.counter(), ds))
    ds = ds.map(crops, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False).unbatch()
    if cfg.shuffle_buffer > 1:
        ds = ds.shuffle(cfg.shuffle_buffer, seed=seed)
    ds = ds.batch(cfg.batch_size, drop_remainder=True)
    flip_seed = tf.cast(seed, tf.int64) + 0x5EED  # differs from the crop seeds (seed, i)

    def symmetries(batch, i):
        patches, flags = batch
        patches = tf.cast(dihedral(patches, tf.stack([flip_seed, i]), cfg.flips, cfg.rotations), tf.float32)
        return (patches, flags) if paired else patches

    ds = tf.data.Dataset.zip((ds, tf.data.Dataset.counter())).map(symmetries, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
