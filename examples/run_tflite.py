"""Denoises a photo with an exported bfcnn `.tflite` file, step by step as a phone app does.

Only the LiteRT runtime, numpy and Pillow: no TensorFlow, no bfcnn. The steps map one to
one onto the Android (Kotlin) and iOS (Swift) code in docs/mobile.md:

  1. load the model into a LiteRT Interpreter (XNNPACK, the default CPU delegate, is on);
  2. read the photo as 8-bit pixels, gray or RGB as the model's input asks;
  3. resize the input tensor to [1, H, W, C] and allocate the tensors;
  4. copy the pixels in as float32 on the 0-255 scale (no normalization: the model scales);
  5. invoke; read the float32 output; round (half to even) and clip to 0-255;
  6. photographs larger than one tile go through steps 3 to 5 tile by tile: each tile is
     run with `context` pixels of its surroundings and only its core is kept, so memory
     stays that of one tile (XNNPACK needs about 1.9 GB per megapixel it sees at once for the
     zoo's pyramids; a 256 x 256 tile about 0.13 GB). Every window has the same size, so the
     interpreter is resized once, and starts at a multiple of the model's shift period (read
     from its model card), so it computes what the whole image would;
  7. a color model's windows go through its networks without the image-wide chrominance lift
     (`<name>_lifted.tflite` beside `<name>.tflite`), lifted here by the whole photo's mean
     gray level, as the whole file would lift the whole photo.

    python examples/run_tflite.py out/model.tflite noisy.png denoised.png --threads 2
    python examples/run_tflite.py out/model.tflite big.jpg denoised.png --tile 0   # the whole image at once

Exit status 0 on success, 2 for an unreadable model or image, a channel mismatch or an output
that cannot be written (the output is written whole or not at all).
"""

import argparse
import json
import os
import sys
import tempfile
from typing import Optional, Sequence

import numpy as np
from ai_edge_litert.interpreter import Interpreter
from PIL import Image, ImageOps

MIN_SIDE = 8  # the smallest side an image goes through the model at (bfcnn.tiling.MIN_SIDE)


class RunError(Exception):
    """A model or an image that cannot be used; the message says which and why."""


def load_interpreter(model_path: str, num_threads: Optional[int] = None) -> Interpreter:
    """Step 1: the interpreter of a bfcnn `.tflite` file (one float32 [1, H, W, C] input, one output)."""
    try:
        interpreter = Interpreter(model_path=model_path, num_threads=num_threads)
    except (ValueError, RuntimeError) as error:
        raise RunError(f"cannot load model {model_path!r}: {error}") from error
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    if inp["dtype"] != np.float32 or len(inp["shape_signature"]) != 4:
        raise RunError(f"{model_path!r} is not a bfcnn denoiser: input {inp['dtype']} {inp['shape_signature']}")
    interpreter.allocate_tensors()  # at its stored input size; a file of one size is never resized
    return interpreter


def read_pixels(path: str, channels: int) -> np.ndarray:
    """Step 2: the photo as uint8 [H, W, channels], upright (EXIF orientation applied)."""
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            if image.mode in ("I", "I;16", "I;16L", "I;16B"):  # 16-bit gray: convert() would clip at 255
                image = Image.fromarray(np.clip(np.round(np.asarray(image, np.float64) / 257), 0, 255).astype(np.uint8))
            image = image.convert("L" if channels == 1 else "RGB")
            pixels = np.asarray(image, np.uint8)
    except Exception as error:  # Pillow raises OSError, SyntaxError, ValueError... for bad files
        raise RunError(f"cannot read image {path!r}: {type(error).__name__}: {error}") from error
    return pixels.reshape(pixels.shape[0], pixels.shape[1], channels)


def fixed_size(interpreter: Interpreter):
    """(H, W) of a file exported for one input size (`--tflite-size`), else None."""
    height, width = (int(d) for d in interpreter.get_input_details()[0]["shape_signature"][1:3])
    return (height, width) if min(height, width) > 0 else None


def run_window(interpreter: Interpreter, window: np.ndarray) -> np.ndarray:
    """Steps 3 to 5 on one uint8 [h, w, C] window: the float32 output [h, w, C]."""
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    h, w = window.shape[:2]
    # A file of one size: mirror-pad the window up to it (bottom, right), crop back below. Any
    # file: a side under MIN_SIDE pixels is mirrored up to it the same way (the pyramid models
    # return a side of 4 pixels or fewer far too dark).
    size = fixed_size(interpreter) or (max(h, MIN_SIDE), max(w, MIN_SIDE))
    if (h, w) != size:
        window = np.pad(window, ((0, size[0] - h), (0, size[1] - w), (0, 0)), mode="reflect")
    shape = [1, *window.shape]
    if list(inp["shape"]) != shape:  # resizing and allocating only when the size changes
        interpreter.resize_tensor_input(inp["index"], shape, strict=True)
        interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], window[None].astype(np.float32))
    interpreter.invoke()
    return interpreter.get_tensor(out["index"])[0, :h, :w]


def window_starts(length: int, core: int, window: int, period: int = 1):
    """(core start, core end, window start) along one axis: cores tile the axis, each window of
    `window` pixels holds its core with as much context around it as the image allows, and
    starts at a multiple of `period` (`length - window` must be one: `denoise_pixels` mirrors
    the image up to that), which costs the window up to `period - 1` pixels of context after its core."""
    spans = []
    for start in range(0, length, core):
        end = min(start + core, length)
        middle = start - (window - (end - start)) // 2
        spans.append((start, end, max(0, min(middle, length - window)) // period * period))
    return spans


def shift_period(model_path: str) -> int:
    """The model's shift period from its card beside the file (`<name>.json` in the zoo,
    `model_card.json` in an export folder), else 1. A model with strides (a pixel unshuffle, a
    pyramid, an N3 block) gives the same output for a shifted image only when the shift is a
    multiple of it: windows start at such offsets, so each computes what the whole image would."""
    for data in model_cards(model_path):
        period = data.get("shift_period")
        if isinstance(period, int) and period >= 1:
            return period
    return 1


def model_cards(model_path: str):
    """The model cards beside the file, as dicts: `<name>.json` (the zoo's), then the export
    folder's `model_card.json`; missing or unreadable ones are skipped."""
    for card in (os.path.splitext(model_path)[0] + ".json", os.path.join(os.path.dirname(model_path), "model_card.json")):
        try:
            with open(card) as file:
                data = json.load(file)
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            yield data


# Step 7: CBM3D's orthonormal luminance-chrominance transform, rows Y, C1, C2 (docs/mobile.md)
OPPONENT = np.array([[1, 1, 1], [1, 0, -1], [1, -2, 1]], np.float64) / np.sqrt([[3], [2], [6]])


def lifted_model(model_path: str, num_threads: Optional[int] = None):
    """Step 7: (the interpreter of `<name>_lifted.tflite`, the lift's scale from the card), or None
    when the file or the scale is missing (a gray model, a quantized file)."""
    path = os.path.splitext(model_path)[0] + "_lifted.tflite"
    name = os.path.basename(path)
    for data in model_cards(model_path):
        for entry in ((data.get("tflite") or {}).get(name), data.get("architecture")):
            scale = entry.get("chroma_offset") if isinstance(entry, dict) else None
            if isinstance(scale, (int, float)) and os.path.isfile(path):
                return load_interpreter(path, num_threads), float(scale)
    return None


def lifted_runner(lifted, pixels: np.ndarray):
    """Step 7: a window function for the lifted file: RGB window -> opponent channels lifted by
    the whole photo's offset (0, s*m, s*m), m its mean gray level -> the file -> RGB."""
    interpreter, scale = lifted
    mean_gray = float(np.mean(pixels, dtype=np.float64))  # the mean of (R + G + B) / 3
    offset = np.array([0.0, scale * mean_gray, scale * mean_gray], np.float32)
    forward, back = OPPONENT.T.astype(np.float32), OPPONENT.astype(np.float32)
    return lambda window: (run_window(interpreter, window.astype(np.float32) @ forward + offset) - offset) @ back


def denoise_pixels(interpreter: Interpreter, pixels: np.ndarray, tile: int = 0, context: int = 24,
                   period: int = 1, lifted=None) -> np.ndarray:
    """Steps 3 to 7: uint8 [H, W, C] in, uint8 [H, W, C] out; `tile` 0 runs the whole image at once.

    A file of one input size (`--tflite-size`) sets the window size itself (`tile` is ignored).
    Windows start at multiples of `period`, the model's shift period (`shift_period`). `lifted`
    (`lifted_model`): a color model's windows go through it, lifted by the whole photo.
    """
    inp = interpreter.get_input_details()[0]
    channels = int(inp["shape_signature"][-1])
    if pixels.ndim != 3 or pixels.shape[-1] != channels:
        raise RunError(f"the model takes {channels} channel(s), the image has shape {pixels.shape}")
    height, width = pixels.shape[:2]
    tile_h = tile_w = tile
    size = fixed_size(interpreter)
    if size:
        # a small file keeps at least half of each window as its core (a 1-pixel core would
        # run the model once per output pixel)
        (tile_h, tile_w), context = size, min(context, min(size) // 4)
    if tile_h and min(tile_h, tile_w) <= 2 * context:
        raise RunError(f"--tile must be 0 or larger than twice the context ({2 * context}), got {tile}")
    if not tile_h or (height <= tile_h and width <= tile_w):
        result = run_window(interpreter, pixels)
    else:
        window_h, window_w = min(tile_h, height), min(tile_w, width)
        # mirror the bottom and right (fewer than `period` pixels) so the last windows start on the period too
        extended = [n if n <= w else w + -(-(n - w) // period) * period for n, w in ((height, window_h), (width, window_w))]
        image = np.pad(pixels, ((0, extended[0] - height), (0, extended[1] - width), (0, 0)), mode="reflect")
        result = np.empty((*extended, pixels.shape[-1]), np.float32)
        run = (lambda window: run_window(interpreter, window)) if lifted is None else lifted_runner(lifted, pixels)
        core_h = window_h - 2 * context if window_h < extended[0] else extended[0]
        core_w = window_w - 2 * context if window_w < extended[1] else extended[1]
        for top, bottom, y in window_starts(extended[0], core_h, window_h, period):
            for left, right, x in window_starts(extended[1], core_w, window_w, period):
                out = run(image[y : y + window_h, x : x + window_w])
                result[top:bottom, left:right] = out[top - y : bottom - y, left - x : right - x]
        result = result[:height, :width]
    return np.clip(np.round(result), 0, 255).astype(np.uint8)


def check_output(path: str, input_path: str) -> str:
    """The Pillow format of the output file's extension; refuses an output that is the input."""
    extension = os.path.splitext(path)[1].lower()
    formats = Image.registered_extensions()
    if extension not in formats:
        raise RunError(f"cannot write {path!r}: {extension or 'no extension'} is not an image format; "
                       "use .png (lossless) or .jpg, .tif, .webp")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise RunError(f"cannot write {path!r}: no folder {folder!r}")
    if os.path.exists(path) and os.path.exists(input_path) and os.path.samefile(path, input_path):
        raise RunError(f"the output {path!r} is the input photo; choose another name")
    return formats[extension]


def write_pixels(path: str, pixels: np.ndarray, image_format: str) -> None:
    """Writes a temporary file beside `path`, then moves it into place: never half a file."""
    folder, name = os.path.split(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=f".{name}.", dir=folder)
    os.close(handle)
    try:
        Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(temporary, format=image_format)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # the usual permissions, not mkstemp's private ones
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Denoise one photo with a bfcnn .tflite model (LiteRT).")
    parser.add_argument("model", help="the .tflite file (model.tflite, model_fp16.tflite, ...)")
    parser.add_argument("input", help="the noisy photo (png, jpg, ...)")
    parser.add_argument("output", help="where to write the denoised photo")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: LiteRT's choice)")
    parser.add_argument("--tile", type=int, default=256,
                        help="window size for photographs larger than it, 0 for the whole image at once (default 256)")
    args = parser.parse_args(argv)
    try:
        image_format = check_output(args.output, args.input)
        interpreter = load_interpreter(args.model, args.threads)
        channels = int(interpreter.get_input_details()[0]["shape_signature"][-1])
        pixels = read_pixels(args.input, channels)
        lifted = lifted_model(args.model, args.threads) if channels == 3 else None
        denoised = denoise_pixels(interpreter, pixels, args.tile, period=shift_period(args.model), lifted=lifted)
        write_pixels(args.output, denoised, image_format)
    except RunError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: cannot write {args.output!r}: {error}", file=sys.stderr)
        return 2
    print(f"{args.input} ({pixels.shape[1]}x{pixels.shape[0]}) -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
