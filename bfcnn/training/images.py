"""Training images decoded into memory: image directories and paired (Noise2Noise) ones.

Also what the cache of a dataset would weigh, read from the file headers only
(`estimated_cache_bytes`), and the reflect-padding of images smaller than the patch
(`fit_to_patch`), which the streamed pipeline shares. Overview: `bfcnn.training`.
"""

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import tensorflow as tf
from PIL import Image

from bfcnn.errors import BfcnnError
from bfcnn.io import EXIF_ORIENTATION, ImageReadError, list_images, read_image, resolve_directory

log = logging.getLogger("bfcnn.train")


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


def too_small(patch_size: int) -> str:
    return f"smaller than dataset.patch_size={patch_size} (small_images: skip; set it to pad or lower patch_size)"


SMALL_IMAGES = ("pad", "skip")


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
            why += f", {small} {too_small(patch_size)}"
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


def size_mismatch(path_a, path_b, shape_a, shape_b) -> BfcnnError:
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
            raise size_mismatch(path_a, path_b, image_a.shape, image_b.shape)
        return np.concatenate([image_a, image_b], axis=-1)

    return _load_fitted(match_pairs(noisy_a, noisy_b), load, patch_size, small_images, "pair",
                        f"{str(noisy_a)!r} and {str(noisy_b)!r}")


def header_size(path) -> Tuple[int, int]:
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


# Beyond this many bytes of decoded pixels the trainer streams instead of caching.
MAX_CACHE_BYTES = 4 << 30


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
        total += sum(cached_pixels(header_size(path)) for path in files) * channels * copies
    return total


def reflect(index, size):
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
    rows = reflect(np.arange(max(h, patch_size)), h)
    cols = reflect(np.arange(max(w, patch_size)), w)
    return image[rows[:, None], cols[None, :]]
