"""`python -m bfcnn.denoise --model NAME_OR_PATH IN... -o OUT_DIR`: denoise image files.

Each input is read (EXIF orientation honoured), denoised and written to OUT_DIR as PNG
with the same name (`name-2.png`, ... when two inputs share a name, ignoring case; 16-bit
gray stays 16-bit, alpha is kept). A named file may be of any format Pillow reads; a folder
is scanned recursively for .png, .jpg, .jpeg, .bmp, .tif, .tiff and .webp files only (name
others, such as a .gif, one by one). A text progress bar goes to stderr. A file that exists but
cannot be read or denoised correctly (damaged, not an image, several frames as in an animated
GIF or a multi-page TIFF, 32-bit float or integer pixels of unknown scale) is reported and
skipped; the exit code is 1 at the end if any file failed.

Inputs are never overwritten: a run whose output would replace one of its input files (by
path, or as the same file under another spelling, as on a case-insensitive file system) is
refused, and images already inside OUT_DIR are skipped when an input folder is scanned, so
running twice does not denoise the first run's outputs. Exit codes: 0 done, 1 some files
failed, 2 bad arguments (checked before the model is loaded: a named input that does not
exist, an output folder that cannot be made, an output that would overwrite an input, an
unknown model, ...).

This module is also callable, so `bfcnn.denoise(image, ...)` keeps working even after
`import bfcnn.denoise` has put the module in the function's place.
"""

import argparse
import os
import sys
import types
from pathlib import Path

from bfcnn.inference import DEFAULT_OVERLAP, PRECISIONS, SIXTEEN_BIT_MODES, denoise
from bfcnn.tiling import min_tile_size


def _tile_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value != 0 and value < min_tile_size(DEFAULT_OVERLAP):
        raise argparse.ArgumentTypeError(f"must be 0 (never tile) or at least twice the tile overlap "
                                         f"({min_tile_size(DEFAULT_OVERLAP)} pixels), got {value}")
    return value


ENSEMBLE_CHOICES = (1, 2, 4, 8)


def _strength(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 1, got {text!r}") from None
    if not 0 <= value <= 1:  # NaN fails this too
        raise argparse.ArgumentTypeError(f"must be from 0 (the input) to 1 (the model's output), got {text}")
    return value


def _noise_std(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}") from None
    if not (value >= 0 and value != float("inf")):  # NaN fails this too
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0 (the noise's std on the 0-255 scale), "
                                         f"got {text}")
    return value


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m bfcnn.denoise",
        description="Denoise image files with a bfcnn model; writes one PNG per input to the output folder.")
    parser.add_argument("inputs", nargs="+", metavar="IN",
                        help="image files (any format Pillow reads) or folders, scanned recursively for "
                             ".png, .jpg, .jpeg, .bmp, .tif, .tiff and .webp files")
    parser.add_argument("-o", "--output-directory", required=True, help="where denoised PNGs are written")
    parser.add_argument("--model", default="default",
                        help="zoo name (list them with python -c 'import bfcnn; print(bfcnn.list_models())'), "
                             "a .keras file or a model / export folder (default: the color flagship)")
    parser.add_argument("--tile-size", type=_tile_size, default=None,
                        help="tile size in pixels, 0 never tiles (default: 512 for images above 1 MP)")
    parser.add_argument("--ensemble", type=int, nargs="?", const=8, default=1, choices=ENSEMBLE_CHOICES, metavar="N",
                        help="average the model over N rotations and flips of each image, N times slower: "
                             "8 (all of them, the default of a bare --ensemble), 4 or 2 (most of the gain)")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32",
                        help="bfloat16: the convolutions compute in bfloat16, 1.6 to 1.9x faster for the zoo's "
                             "models on a CPU with AVX512-BF16, for 0.01 to 0.02 dB; may be slower on a CPU "
                             "without bfloat16 instructions (default float32)")
    parser.add_argument("--strength", type=_strength, default=1.0,
                        help="how much of the model's change to keep, 0 (the input) to 1 (default): below 1 "
                             "keeps more texture and grain in nearly clean photographs")
    parser.add_argument("--noise-std", type=_noise_std, default=None, metavar="S",
                        help="the noise's standard deviation on the 0-255 scale (16-bit files too), when known: "
                             "the model's change is cut to what that noise explains, keeping texture a blind "
                             "model would take for faint noise (default: blind)")
    return parser.parse_args(_bare_ensemble(sys.argv[1:] if argv is None else list(argv)))


def _bare_ensemble(argv: list) -> list:
    """`argv` with a bare `--ensemble` written `--ensemble=8`, so that the image path after it
    is not read as its number of copies (a number after it is, and argparse checks it)."""
    return ["--ensemble=8" if arg == "--ensemble" and (i + 1 == len(argv) or not argv[i + 1].isdigit()) else arg
            for i, arg in enumerate(argv)]


def _progress(done: int, total: int, width: int = 20) -> str:
    """`[#####.....] 5/10`: a text progress bar that also reads well in a log file."""
    filled = width * done // max(total, 1)
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total}"


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _identity(path: Path):
    """`(st_dev, st_ino)` of an existing file or folder (links followed), else None.

    Two spellings of one file (`IMG.PNG` and `IMG.png` on a case-insensitive file system, a
    hard link) resolve to different paths but have the same identity.
    """
    try:
        stat = path.stat()
    except (OSError, ValueError):  # missing, unreadable, or a name the OS refuses
        return None
    return (stat.st_dev, stat.st_ino) if stat.st_ino else None  # some file systems give no inode numbers


def _same_folder(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    identity = _identity(a)
    return identity is not None and identity == _identity(b)


def _expand(inputs, out_dir: Path):
    """The input files: files as given, folders scanned for images (skipping `out_dir` inside them).

    Raises:
        BfcnnError: an input that does not exist (all of them are named), an input folder that
            is the output folder or holds no image.
    """
    from bfcnn.errors import BfcnnError
    from bfcnn.io import list_images

    missing = [str(item) for item in inputs if not Path(item).exists()]
    if missing:
        raise BfcnnError(f"input{'s' if len(missing) > 1 else ''} not found: {', '.join(missing)}")
    out = out_dir.resolve()
    files = []
    for item in inputs:
        path = Path(item)
        if not path.is_dir():
            files.append(path)
            continue
        folder = path.resolve()
        if _same_folder(path, out_dir):
            raise BfcnnError(f"input folder {item} is the output folder: the outputs would overwrite or mix "
                             "with its images; choose another output folder")
        images = list_images(path)
        if _inside(out, folder):  # the output folder's images are earlier outputs, not inputs
            images = [f for f in images if not _inside(f.resolve(), out)]
            if not images:
                raise BfcnnError(f"no images in {item} outside the output folder {out_dir}")
        files += images
    return files


def _plan(files, out_dir: Path):
    """The output path of each input; BfcnnError if one would overwrite an input file.

    An output overwrites an input when both paths resolve to the same file, or when the output
    already exists and is the same file as an input (same device and inode): comparing
    spellings alone misses `scans/IMG.PNG -o scans` on a case-insensitive file system
    (macOS, Windows), where the output `IMG.png` is the input.
    """
    from bfcnn.errors import BfcnnError

    used, inputs = set(), {f.resolve(): f for f in files}
    identities = {}
    for f in files:
        identities.setdefault(_identity(f), f)
    identities.pop(None, None)
    outputs = [out_dir / _output_name(f, used) for f in files]
    for output in outputs:
        source = inputs.get(output.resolve())
        if source is None and identities:
            source = identities.get(_identity(output))
        if source is not None:
            raise BfcnnError(f"{output} would overwrite the input {source}: choose another output folder")
        if output.is_dir():
            raise BfcnnError(f"{output} is a folder, where a denoised image would be written: move it or choose "
                             "another output folder")
    return outputs


def _output_name(path: Path, used: set) -> str:
    """`<stem>.png`, or `<stem>-2.png`, ... when an earlier input of this run had the same stem.

    Names are compared case-folded (`a.jpg` then `A.jpg` give `a.png` and `A-2.png`), so two
    outputs never land on one file of a case-insensitive file system. `used` holds the
    case-folded names given so far and is updated.
    """
    name, number = f"{path.stem}.png", 1
    while name.casefold() in used:
        number += 1
        name = f"{path.stem}-{number}.png"
    used.add(name.casefold())
    return name


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported: errors only
    import numpy as np
    from PIL import Image

    from bfcnn.errors import BfcnnError
    from bfcnn.inference import in_precision
    from bfcnn.io import check_output_folder, decodes_to_fewer_bits, image_problem, write_image
    from bfcnn.zoo import load_model

    out_dir = Path(args.output_directory).expanduser()
    try:  # every argument is checked before the model is loaded (a zoo name before Keras is imported)
        check_output_folder(out_dir)
        files = _expand(args.inputs, out_dir)
        outputs = _plan(files, out_dir)
        model = in_precision(load_model(args.model), args.precision)
    except BfcnnError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    failed = 0
    for index, (path, output) in enumerate(zip(files, outputs), 1):
        try:
            with Image.open(path) as image:  # denoise turns it upright by its EXIF orientation
                problem = image_problem(image)  # several frames, float or 32-bit pixels: found before decoding
                if problem:
                    raise BfcnnError(problem)
                fewer_bits = decodes_to_fewer_bits(image)
                image.load()
                noise_std = args.noise_std
                if noise_std is not None and image.mode in SIXTEEN_BIT_MODES:
                    noise_std *= 65535 / 255  # bfcnn.denoise takes it on the image's own scale
                result = denoise(image, model=model, tile_size=args.tile_size, ensemble=args.ensemble,
                                 strength=args.strength, noise_std=noise_std)
        except BfcnnError as error:  # an image bfcnn cannot denoise correctly: said as it is
            failed += 1
            status = f"FAILED: {error}"
        except Exception as error:  # Pillow's decoders raise OSError, EOFError, SyntaxError, ...: keep going
            failed += 1
            status = f"FAILED: cannot read or denoise {path}: {type(error).__name__}: {error}"
        else:
            try:
                write_image(output, np.asarray(result), result.info.get("icc_profile"))
                name = output.name
                status = "ok" if name == f"{path.stem}.png" else f"ok -> {name} (an earlier input had the same name)"
                if fewer_bits:
                    status += (" (16-bit color read and written as 8-bit: Pillow decodes it so; bfcnn.denoise "
                               "keeps a uint16 array, e.g. from tifffile or imageio, 16-bit)")
            except OSError as error:  # a full disk, a folder made meanwhile: the next file may still go
                failed += 1
                status = f"FAILED: cannot write {output}: {error.strerror or error}"
        print(f"{_progress(index, len(files))} {path.name}: {status}", file=sys.stderr)
    if failed:
        print(f"{failed} of {len(files)} file(s) failed", file=sys.stderr)
    return 1 if failed else 0


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return denoise(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    sys.exit(main())
