"""Files in and out: images (every 8- and 16-bit mode Pillow knows, as uint8 gray or RGB; float
and 32-bit images and files of several frames refused), atomic writes, strict JSON, checksums
and image folders.

Imports only numpy and Pillow, so data loading code stays light.
"""

import hashlib
import importlib.util
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional

import numpy as np
from PIL import Image, ImageOps

from bfcnn.errors import BfcnnError

# The files a folder scan takes (`list_images`), the formats of photographs and data sets; a file
# named on its own (`read_image`, `python -m bfcnn.denoise`) may be of any format Pillow reads (.gif, .pgm).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# Gray modes of 16-bit samples, scaled to 8 bits by `to_uint8_array`
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
# Formats whose mode "I" images hold 16-bit samples: 16-bit PGM, and 16-bit PNG in Pillows older than
# those that open it as "I;16" (neither format stores more than 16 bits a sample)
SIXTEEN_BIT_I_FORMATS = ("PNG", "PPM")
COLORS = ("gray", "rgb")
EXIF_ORIENTATION = 0x0112  # the EXIF tag saying how a photograph is turned for display


class ImageReadError(BfcnnError):
    """A file that is missing, unreadable or not an image."""


def sha256(path) -> str:
    """The sha256 of a file, read in blocks of 1 MiB."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _umask() -> int:
    """The process's umask (read once: setting it to read it is not thread-safe)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


def usual_mode(directory: bool = False) -> int:
    """The permissions a new file (0666) or folder (0777) gets under this process's umask."""
    return (0o777 if directory else 0o666) & ~_UMASK


@contextmanager
def atomic_path(path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; moved onto `path` if the block succeeds.

    A crash or an error mid-write leaves any previous file at `path` intact and no temporary
    file behind. Missing parent folders are created. The file keeps the permissions of the
    file it replaces, or gets the usual ones (0666 less the umask), not the private ones of a
    temporary file, and is flushed to disk before the rename. A symbolic link is followed:
    the file it points to is replaced.

    Example:
        >>> with atomic_path("out/r.json") as tmp:
        ...     tmp.write_text("{}")
    """
    path = Path(os.path.realpath(path)) if os.path.islink(path) else Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o7777 if path.is_file() else usual_mode()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, mode)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def json_safe(value):
    """`value` with non-finite floats as None (strict JSON has no inf or NaN), keys as strings,
    and numpy scalars and arrays as Python numbers, bools and lists."""
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_json(path, data) -> None:
    """Writes `data` as strict JSON (non-finite numbers as null), atomically (`atomic_path`)."""
    text = json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def resolve_directory(directory) -> Path:
    """A directory path; `pkg:module/sub/dir` names a folder inside an installed package.

    Example: `pkg:skimage/data` is scikit-image's bundled sample photographs, which the
    quick-start config trains on so that it needs no dataset.

    Raises:
        BfcnnError: a `pkg:` path whose package is not installed or is not a package.
    """
    text = str(directory)
    if not text.startswith("pkg:"):
        return Path(directory).expanduser()
    module, _, rest = text[4:].partition("/")
    try:
        spec = importlib.util.find_spec(module) if module else None
    except (ImportError, ValueError):  # a dotted name whose parent is missing
        spec = None
    if spec is None:
        raise BfcnnError(f"{text!r}: package {module!r} is not installed")
    if not spec.submodule_search_locations:
        raise BfcnnError(f"{text!r}: {module!r} is a module, not a package with data folders")
    return Path(list(spec.submodule_search_locations)[0]) / rest


def existing_ancestor(path) -> Path:
    """`path` itself if it exists, else its nearest existing parent folder (or file): where a
    write to `path` would start, and what would stop it."""
    path = Path(path)
    return next(p for p in (path, *path.absolute().parents) if p.exists())


def check_output_folder(out_dir, flag: str = "-o") -> None:
    """BfcnnError when `out_dir` is, or lies under, an existing file (it could not be made);
    `flag` is the command-line option that named it, for the message."""
    out_dir = Path(out_dir)
    folder = existing_ancestor(out_dir)
    if folder.is_dir():
        return
    if folder == out_dir:
        raise BfcnnError(f"output folder {out_dir} is a file; {flag} needs a folder")
    raise BfcnnError(f"output folder {out_dir} cannot be made: {folder} is a file")


def output_problem(path: Path, folder: bool) -> Optional[str]:
    """Why `path` cannot be written as a file (or created as a folder), or None if it can."""
    if path.exists():
        if folder and not path.is_dir():
            return "is a file, not a folder"
        if not folder and path.is_dir():
            return "is a folder; give a file name"
    # where the files will be made
    ancestor = path if folder and path.is_dir() else existing_ancestor(path.parent)
    if not ancestor.is_dir():
        return f"{ancestor} is a file, not a folder"
    if not os.access(ancestor, os.W_OK):
        return f"{ancestor} is not writable"
    return None


def directory_problem(root: Path) -> Optional[str]:
    """Why `root` is not a directory to read ("not found", "is a file, ..."), or None."""
    if root.is_dir():
        return None
    return "is a file, not a directory" if root.exists() else "not found"


def list_images(directory) -> List[Path]:
    """Image files under `directory`, recursively, sorted (png, jpg, jpeg, bmp, tif, tiff, webp:
    `IMAGE_EXTENSIONS`; other formats, such as .gif, are skipped).

    `directory` may be `pkg:module/sub/dir`, a folder inside an installed package.

    Raises:
        BfcnnError: the directory does not exist or holds no image.
    """
    root = resolve_directory(directory)
    problem = directory_problem(root)
    if problem:
        raise BfcnnError(f"image directory {problem}: {str(root)!r}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise BfcnnError(
            f"no images in {str(root)!r} (looked recursively for {', '.join(IMAGE_EXTENSIONS)})"
        )
    return files


def to_uint8_array(image: Image.Image, color: Optional[str] = None) -> np.ndarray:
    """A PIL image (its current frame) as a uint8 array [H, W, 1] (gray) or [H, W, 3] (rgb).

    16-bit images are scaled to 8 bits, palettes expanded, alpha dropped (composited on
    black would change the colors, so it is simply removed). `color=None` keeps gray
    images gray and makes everything else RGB.

    Raises:
        BfcnnError: a float (mode F) or 32-bit integer (mode I) image (`mode_problem`).
        ValueError: `color` is not 'gray', 'rgb' or None.
    """
    _check_color(color)
    problem = mode_problem(image)
    if problem:
        raise BfcnnError(problem)
    if image.mode.startswith("I"):  # 16-bit samples (mode_problem passed it)
        array = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(np.round(array / 257.0), 0, 255).astype(np.uint8))
    target = color or ("gray" if _is_gray(image) else "rgb")
    image = image.convert("L" if target == "gray" else "RGB")
    array = np.asarray(image, dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array


def mode_problem(image: Image.Image) -> Optional[str]:
    """Why the pixels of `image` cannot be read on the 0-255 scale, or None.

    A float image (mode F: a float TIFF may hold 0 to 1, or anything) and a 32-bit integer one
    (mode I: a TIFF may hold 0 to 4095, or 0 to 2**31) have no scale bfcnn can know; mode I
    from a 16-bit PGM (or PNG, in older Pillow) holds 16-bit samples and is read as such.
    """
    mode = image.mode
    if mode.startswith("F"):
        return (f"mode {mode} (32-bit float) images are not supported: convert to 8- or 16-bit, or pass a "
                "float numpy array on the 0-255 scale")
    if mode.startswith("I") and mode not in SIXTEEN_BIT_MODES and image.format not in SIXTEEN_BIT_I_FORMATS:
        return (f"mode {mode} (32-bit integer) images are not supported: convert to 8- or 16-bit, or pass a "
                "uint16 numpy array (0-65535) or a float one on the 0-255 scale")
    return None


def image_problem(image: Image.Image) -> Optional[str]:
    """Why the opened image file `image` cannot be read as one picture on the 0-255 scale, or None:
    several frames (an animated GIF, PNG or WebP, a multi-page TIFF), or `mode_problem`.

    A JPEG holding more than one picture (MPO: a camera's stereo pair or previews) is read as its
    first, the photograph itself.
    """
    frames = getattr(image, "n_frames", 1)
    if frames > 1 and image.format != "MPO":
        return (f"has {frames} frames (an animation or a multi-page file); bfcnn reads single images: save "
                "the frames as separate files")
    return mode_problem(image)


def _check_color(color) -> None:
    if color is not None and color not in COLORS:
        raise ValueError(f"color={color!r} is not supported; allowed: 'gray', 'rgb'")


def _is_gray(image: Image.Image) -> bool:
    """Gray modes, and palette images whose used colors all have R == G == B."""
    if image.mode in ("L", "1", "LA", "La"):
        return True
    if image.mode not in ("P", "PA"):
        return False
    rgb = np.asarray(image.convert("RGB"))
    return bool(np.all(rgb[..., 0] == rgb[..., 1]) and np.all(rgb[..., 1] == rgb[..., 2]))


def read_image(path, color: Optional[str] = None) -> np.ndarray:
    """Reads an image file as uint8 [H, W, C], honouring the EXIF orientation.

    Args:
        path: the file.
        color: 'gray' ([H, W, 1]), 'rgb' ([H, W, 3]) or None (gray images stay gray,
            everything else becomes RGB).

    Raises:
        ImageReadError: the file is missing, truncated or not an image, or one bfcnn cannot
            read correctly (`image_problem`: several frames, a float or 32-bit mode); names the path.
        ValueError: `color` is not one of the above.
    """
    _check_color(color)
    try:
        with Image.open(path) as image:
            problem = image_problem(image)
            if problem:
                raise BfcnnError(problem)
            image.load()
            if image.mode == "I":  # 16-bit samples (image_problem passed it), kept so when turned upright
                image = image.convert("I;16")
            image = ImageOps.exif_transpose(image)
            return to_uint8_array(image, color)
    except FileNotFoundError as error:
        raise ImageReadError(f"image not found: {str(path)!r}") from error
    except BfcnnError as error:
        raise ImageReadError(f"cannot read image {str(path)!r}: {error}") from error
    except Exception as error:  # Pillow's decoders raise many types (OSError, EOFError, struct.error, ...)
        raise ImageReadError(f"cannot read image {str(path)!r}: {type(error).__name__}: {error}") from error


def decodes_to_fewer_bits(image: Image.Image) -> bool:
    """Whether Pillow decodes this opened (not yet loaded) file's samples to fewer bits than it
    stores: 16-bit RGB (48-bit PNG, TIFF) comes out as 8-bit "RGB"; 16-bit gray keeps its bits."""
    for tile in image.tile:
        args = tile.args if hasattr(tile, "args") else tile[3]
        rawmode = args if isinstance(args, str) else (args[0] if args and isinstance(args[0], str) else "")
        if ";16" in rawmode and not image.mode.startswith("I"):
            return True
    return False


# Modes whose pixels keep the color space of the file's ICC profile through `bfcnn.denoise`
# (gray stays gray, RGB and palettes come back RGB); CMYK, LAB, YCbCr and HSV come back RGB.
PROFILE_KEEPING_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "P", "PA", "RGB", "RGBA", "RGBa")


def check_image_path(path) -> None:
    """BfcnnError unless `path` can name an image file to write: not a folder, and its extension
    that of a format Pillow writes (.png, .jpg, .tif, ...)."""
    path = Path(path)
    if path.is_dir():
        raise BfcnnError(f"cannot write image {str(path)!r}: it is a folder; give a file name ending in .png")
    extension = path.suffix.lower()
    if Image.registered_extensions().get(extension) not in Image.SAVE:
        what = f"unknown image extension {path.suffix!r}" if extension else "no file extension"
        raise BfcnnError(f"cannot write image {str(path)!r}: {what}; use {', '.join(IMAGE_EXTENSIONS)} "
                         "or another extension Pillow writes")


def write_image(path, array: np.ndarray, icc_profile: Optional[bytes] = None) -> None:
    """Writes a uint8 image array atomically (temp file, then rename), in the format of the suffix.

    Args:
        path: the file to write; missing parent folders are created.
        array: uint8 [H, W], [H, W, 1], [H, W, 2] (gray and alpha), [H, W, 3] or [H, W, 4]
            (uint16 [H, W] for 16-bit gray).
        icc_profile: the color profile to embed (a photograph's, so color-managed viewers show
            the result in the colors of the input); None embeds none.

    Raises:
        BfcnnError: `path` is a folder, or its extension names no format Pillow writes.
        ValueError: a float or bool array, or another shape.
    """
    check_image_path(path)
    array = np.asarray(array)
    if array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"write_image needs a uint8 array (uint16 for 16-bit gray), got dtype {array.dtype}; "
                         "round and clip first")
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (1, 2, 3, 4) and array.dtype == np.uint8)):
        raise ValueError(f"write_image needs shape [H, W], [H, W, 1], [H, W, 2], [H, W, 3] or [H, W, 4], got "
                         f"{array.shape} {array.dtype}")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, **({"icc_profile": icc_profile} if icc_profile else {}))
