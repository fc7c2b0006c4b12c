"""`python -m bfcnn.denoise --model NAME_OR_PATH IN... -o OUT_DIR`: denoise image files.

Each input is read (EXIF orientation honoured), denoised and written to OUT_DIR as PNG
with the same name. An unreadable file is reported and skipped; the exit code is
non-zero at the end if any file failed.

This module is also callable, so `bfcnn.denoise(image, ...)` keeps working even after
`import bfcnn.denoise` has put the module in the function's place.
"""

import argparse
import sys
import types
from pathlib import Path

from bfcnn.inference import denoise


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bfcnn.denoise", description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", metavar="IN", help="image files or folders of images")
    parser.add_argument("-o", "--output-directory", required=True, help="where denoised PNGs are written")
    parser.add_argument("--model", default="default", help="zoo name (see bfcnn.list_models()) or path")
    parser.add_argument("--tile-size", type=int, default=None, help="tile size (default: tile above 1 MP)")
    return parser.parse_args(argv)


def _expand(inputs):
    from bfcnn.io import list_images

    files = []
    for item in inputs:
        path = Path(item)
        files += list_images(path) if path.is_dir() else [path]
    return files


def main(argv=None) -> int:
    args = parse_args(argv)
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
    failed = 0
    for index, path in enumerate(files, 1):
        try:
            with Image.open(path) as image:
                image.load()
                image = ImageOps.exif_transpose(image)
                result = denoise(image, model=model, tile_size=args.tile_size)
            import numpy as np

            write_image(out_dir / (path.stem + ".png"), np.asarray(result))
            status = "ok"
        except (OSError, ValueError, SyntaxError) as error:
            failed += 1
            status = f"FAILED: cannot read or denoise {path}: {error}"
        print(f"[{index}/{len(files)}] {path.name}: {status}", file=sys.stderr)
    if failed:
        print(f"{failed} of {len(files)} file(s) failed", file=sys.stderr)
    return 1 if failed else 0


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return denoise(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    sys.exit(main())
