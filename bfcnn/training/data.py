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

Paired sources (`dataset.inputs[].paired`, two directories of the same scenes with independent
noise, for Noise2Noise on real noise, Lehtinen et al., ICML 2018) are loaded pair by pair as
one image with the channels of both copies side by side, [H, W, 2C] (`load_paired_directory`),
so a crop, flip or rotation cuts both copies at exactly the same place; the trainer splits the
channels again. In a run with a paired source every image has that layout (a plain image is
stored twice) and each patch carries a flag saying whether it is a real pair.
"""

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import tensorflow as tf
from PIL import Image

from bfcnn.errors import BfcnnError
from bfcnn.io import EXIF_ORIENTATION, ImageReadError, list_images, read_image, resolve_directory

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
    def load(path):
        try:
            return read_image(path, color)
        except ImageReadError as error:
            log.warning("skipping %s", error)
            return None

    return _load_fitted(list_images(directory), load, patch_size, small_images, "image",
                        f"{str(directory)!r}")


def _too_small(patch_size: int) -> str:
    return f"smaller than dataset.patch_size={patch_size} (small_images: skip; set it to pad or lower patch_size)"


def _load_fitted(items, load, patch_size: int, small_images: str, unit: str, where: str):
    """`load(item)` for every item in 4 threads (None: unreadable, skipped), each image fitted
    to the patch (`fit_to_patch`); returns (images, number skipped).

    Raises:
        BfcnnError: no usable `unit` in `where`, saying how many were unreadable or too small.
    """
    if small_images not in SMALL_IMAGES:
        raise ValueError(f"small_images={small_images!r} is not supported; allowed: 'pad', 'skip'")
    with ThreadPoolExecutor(max_workers=4) as pool:
        decoded = list(pool.map(load, items))
    images, unreadable, small = [], 0, 0
    for image in decoded:
        fitted = None if image is None else fit_to_patch(image, patch_size, small_images)
        if fitted is not None:
            images.append(fitted)
        elif image is None:
            unreadable += 1
        else:
            small += 1
    if not images:
        why = f"{unreadable} of {len(items)} unreadable"
        if small:
            why += f", {small} {_too_small(patch_size)}"
        raise BfcnnError(f"no usable {unit} in {where}: {why}")
    return images, unreadable + small


# How many unmatched file names an error message lists before "and N more".
_NAMES_SHOWN = 5


def _pair_key(path: Path, root: Path) -> str:
    """A file's name for matching: its path under the directory, without the extension."""
    return path.relative_to(root).with_suffix("").as_posix()


def _keyed_images(directory) -> Dict[str, Path]:
    root = resolve_directory(directory)
    keyed: Dict[str, Path] = {}
    for path in list_images(directory):
        key = _pair_key(path, root)
        if key in keyed:
            raise BfcnnError(
                f"{str(keyed[key])!r} and {str(path)!r} have the same name without extension; paired "
                "sources match files by name (path under the directory, extension ignored), so each "
                "name must be unique"
            )
        keyed[key] = path
    return keyed


def _some(names: Sequence[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:_NAMES_SHOWN])
    return shown + (f" and {len(names) - _NAMES_SHOWN} more" if len(names) > _NAMES_SHOWN else "")


def match_pairs(noisy_a, noisy_b) -> List[Tuple[Path, Path]]:
    """Pairs the image files of two directories by name, for a paired (Noise2Noise) source.

    A file's name is its path under the directory without the extension, so `a/x.png` pairs
    with `b/x.tif` and `a/s1/x.png` with `b/s1/x.png`. Every file must have a partner: a file
    without one is an error (not skipped), because it usually means the two folders are not
    two copies of the same scenes.

    Args:
        noisy_a, noisy_b: the two directories (`pkg:module/dir` allowed, as for directories).

    Returns:
        (path in noisy_a, path in noisy_b) pairs, sorted by name.

    Raises:
        BfcnnError: a missing or empty directory, both being the same directory, two files
            with the same name in one directory, or files without a partner (the message
            names up to five on each side and counts the rest).
    """
    root_a, root_b = resolve_directory(noisy_a), resolve_directory(noisy_b)
    if root_a.exists() and root_b.exists() and root_a.resolve() == root_b.resolve():
        raise BfcnnError(
            f"paired source: noisy_a and noisy_b are the same directory {str(root_a)!r}; Noise2Noise needs "
            "two copies of each scene with independent noise"
        )
    a, b = _keyed_images(noisy_a), _keyed_images(noisy_b)
    only_a = sorted(str(a[k].relative_to(root_a)) for k in a.keys() - b.keys())
    only_b = sorted(str(b[k].relative_to(root_b)) for k in b.keys() - a.keys())
    if only_a or only_b:
        problems = []
        if only_a:
            problems.append(f"{len(only_a)} file(s) of noisy_a {str(root_a)!r} have no partner in noisy_b: "
                            f"{_some(only_a)}")
        if only_b:
            problems.append(f"{len(only_b)} file(s) of noisy_b {str(root_b)!r} have no partner in noisy_a: "
                            f"{_some(only_b)}")
        raise BfcnnError(
            "paired source: " + "; ".join(problems) + ". Files are matched by their path under the directory "
            "without the extension; rename or remove the unmatched ones"
        )
    return [(a[k], b[k]) for k in sorted(a)]


def _size_mismatch(path_a, path_b, shape_a, shape_b) -> BfcnnError:
    return BfcnnError(
        f"paired source: {str(path_a)!r} is {shape_a[1]}x{shape_a[0]} but its partner {str(path_b)!r} is "
        f"{shape_b[1]}x{shape_b[0]} (width x height); the two images of a pair must have the same size"
    )


def load_paired_directory(noisy_a, noisy_b, color: str, patch_size: int,
                          small_images: str) -> Tuple[List[np.ndarray], int]:
    """Decodes the pairs of a paired source, each as one uint8 [H, W, 2C] image (a's channels first).

    Keeping both copies in one array lets every crop, flip and rotation act on both alike.
    A pair with an unreadable file is skipped with a warning; small images are padded or
    skipped as in `load_directory` (both copies the same way).

    Returns:
        (images, number of pairs skipped).

    Raises:
        BfcnnError: as `match_pairs`; two images of a pair with different sizes (naming both
            files); no usable pair.
    """
    def load(pair):
        path_a, path_b = pair
        try:
            image_a, image_b = read_image(path_a, color), read_image(path_b, color)
        except ImageReadError as error:
            log.warning("skipping a pair: %s", error)
            return None
        if image_a.shape != image_b.shape:
            raise _size_mismatch(path_a, path_b, image_a.shape, image_b.shape)
        return np.concatenate([image_a, image_b], axis=-1)

    return _load_fitted(match_pairs(noisy_a, noisy_b), load, patch_size, small_images, "pair",
                        f"{str(noisy_a)!r} and {str(noisy_b)!r}")


def _header_size(path) -> Tuple[int, int]:
    """(height, width) as `read_image` will decode it, read from the header only; (0, 0) if unreadable."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            # Pillow's getexif() decodes a whole PNG to find an eXIf chunk after the pixels; one
            # before them is in `info` already. A rare late one is caught when the file is decoded.
            if image.format == "PNG" and "exif" not in image.info:
                return height, width
            if image.getexif().get(EXIF_ORIENTATION) in (5, 6, 7, 8):  # EXIF orientations that swap the axes
                width, height = height, width
            return height, width
    except Exception:  # an unreadable file is reported once when it is decoded
        return 0, 0


def estimated_cache_bytes(sources, color: str, paired_run: bool, patch_size: int = 1,
                          small_images: str = "pad") -> int:
    """The bytes the cached images of `sources` (directories and paired ones) would take, from
    the file headers only, so that a dataset too large to cache is streamed without being
    decoded first. Images smaller than `patch_size` count as the cache holds them: padded up
    to the patch (`small_images: pad`) or not at all (`skip`); unreadable files count 0."""
    channels = 1 if color == "gray" else 3

    def cached_pixels(size):
        h, w = size
        if min(h, w) == 0 or (small_images == "skip" and min(h, w) < patch_size):
            return 0
        return max(h, patch_size) * max(w, patch_size)

    total = 0
    for source in sources:
        if source.paired is not None:
            files = [a for a, _ in match_pairs(source.paired.noisy_a, source.paired.noisy_b)]
            copies = 2
        else:
            files = list_images(source.directory)
            copies = 2 if paired_run else 1  # a paired run stores a plain image twice
        total += sum(cached_pixels(_header_size(path)) for path in files) * channels * copies
    return total


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
        size_a, size_b = _header_size(path_a), _header_size(path_b)
        if 0 not in size_a + size_b and size_a != size_b:
            raise _size_mismatch(path_a, path_b, size_a, size_b)

    def read(path_a, path_b):
        image_a, image_b = read_image(path_a, color), read_image(path_b, color)
        if image_a.shape != image_b.shape:  # only if a header disagrees with the decoded image
            raise _size_mismatch(path_a, path_b, image_a.shape, image_b.shape)
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
    rows = _reflect(offsets[:, 0, None] + grid, size[0])  # [count, P]
    cols = _reflect(offsets[:, 1, None] + grid, size[1])
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
        if min(min(_header_size(path)) for path in paths) < minimum:
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
        why = f"unreadable or {_too_small(minimum)}" if minimum > 1 else "unreadable"
        raise BfcnnError(f"no usable image in {_source_name(source)}: every image is {why}")


def _mixed_images(sources, color: str, minimum: int, paired: bool, seed: int) -> tf.data.Dataset:
    """The endless stream of (uint8 image, is_pair) of all `sources`, drawn by their weights;
    in a paired run a plain image is doubled along its channels (the module's layout)."""
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
        bool [B])` instead, in the layout of the module docstring (a plain image twice).

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
