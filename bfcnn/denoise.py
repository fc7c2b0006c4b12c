"""`python -m bfcnn.denoise --model NAME_OR_PATH IN... -o OUT_DIR`: denoise image files.

Each input is read (EXIF orientation honoured), denoised and written to OUT_DIR as PNG
with the same name (`name-2.png`, ... when two inputs share a name; 16-bit gray stays
16-bit, alpha is kept). A text progress bar goes to stderr. An unreadable file is
reported and skipped; the exit code is non-zero at the end if any file failed.

This module is also callable, so `bfcnn.denoise(image, ...)` keeps working even after
`import bfcnn.denoise` has put the module in the function's place.
"""

import argparse
import sys
import types
from pathlib import Path

from bfcnn.inference import DEFAULT_OVERLAP, denoise


def _tile_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value != 0 and value <= DEFAULT_OVERLAP:
        raise argparse.ArgumentTypeError(f"must be 0 (never tile) or larger than the tile overlap "
                                         f"({DEFAULT_OVERLAP} pixels), got {value}")
    return value


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m bfcnn.denoise",
        description="Denoise image files with a bfcnn model; writes one PNG per input to the output folder.")
    parser.add_argument("inputs", nargs="+", metavar="IN", help="image files or folders of images")
    parser.add_argument("-o", "--output-directory", required=True, help="where denoised PNGs are written")
    parser.add_argument("--model", default="default",
                        help="zoo name (list them with python -c 'import bfcnn; print(bfcnn.list_models())'), "
                             "a .keras file or a model / export folder (default: the color flagship)")
    parser.add_argument("--tile-size", type=_tile_size, default=None,
                        help="tile size in pixels, 0 never tiles (default: 512 for images above 1 MP)")
    parser.add_argument("--ensemble", action="store_true",
                        help="average the model over the 8 rotations and flips of each image (8x slower)")
    return parser.parse_args(argv)


def _progress(done: int, total: int, width: int = 20) -> str:
    """`[#####.....] 5/10`: a text progress bar that also reads well in a log file."""
    filled = width * done // max(total, 1)
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total}"


def _expand(inputs):
    from bfcnn.io import list_images

    files = []
    for item in inputs:
        path = Path(item)
        files += list_images(path) if path.is_dir() else [path]
    return files


def _output_name(path: Path, used: set) -> str:
    """`<stem>.png`, or `<stem>-2.png`, ... when an earlier input of this run had the same stem."""
    name, number = f"{path.stem}.png", 1
    while name in used:
        number += 1
        name = f"{path.stem}-{number}.png"
    used.add(name)
    return name


def main(argv=None) -> int:
    args = parse_args(argv)
    import numpy as np
    from PIL import Image, ImageOps

    from bfcnn.errors import BfcnnError
    from bfcnn.io import write_image
    from bfcnn.zoo import load_model

    try:
        model = load_model(args.model)
        files = _expand(args.inputs)
    except BfcnnError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out_dir = Path(args.output_directory)
    failed, used = 0, set()
    for index, path in enumerate(files, 1):
        try:
            with Image.open(path) as image:
                image.load()
                image = ImageOps.exif_transpose(image)
                result = denoise(image, model=model, tile_size=args.tile_size, ensemble=args.ensemble)
            name = _output_name(path, used)
            write_image(out_dir / name, np.asarray(result))
            status = "ok" if name == f"{path.stem}.png" else f"ok -> {name} (an earlier input had the same name)"
        except Exception as error:  # Pillow's decoders raise OSError, EOFError, SyntaxError, ...: keep going
            failed += 1
            status = f"FAILED: cannot read or denoise {path}: {type(error).__name__}: {error}"
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
