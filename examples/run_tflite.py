"""Denoises a photo with an exported bfcnn `.tflite` file, step by step as a phone app does.

Only the LiteRT runtime, numpy and Pillow: no TensorFlow, no bfcnn. The steps map one to
one onto the Android (Kotlin) and iOS (Swift) code in docs/mobile.md:

  1. load the model into a LiteRT Interpreter (XNNPACK, the default CPU delegate, is on);
  2. read the photo as 8-bit pixels, gray or RGB as the model's input asks;
  3. resize the input tensor to [1, H, W, C] and allocate the tensors;
  4. copy the pixels in as float32 on the 0-255 scale (no normalization: the model scales);
  5. invoke; read the float32 output; round (half to even) and clip to 0-255.

    python examples/run_tflite.py out/model.tflite noisy.png denoised.png --threads 2

Exit status 0 on success, 2 for an unreadable model or image or a channel mismatch.
"""

import argparse
import sys
from typing import Optional, Sequence

import numpy as np
from ai_edge_litert.interpreter import Interpreter
from PIL import Image, ImageOps


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
    return interpreter


def read_pixels(path: str, channels: int) -> np.ndarray:
    """Step 2: the photo as uint8 [H, W, channels], upright (EXIF orientation applied)."""
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            image = image.convert("L" if channels == 1 else "RGB")
            pixels = np.asarray(image, np.uint8)
    except Exception as error:  # Pillow raises OSError, SyntaxError, ValueError... for bad files
        raise RunError(f"cannot read image {path!r}: {type(error).__name__}: {error}") from error
    return pixels.reshape(pixels.shape[0], pixels.shape[1], channels)


def denoise_pixels(interpreter: Interpreter, pixels: np.ndarray) -> np.ndarray:
    """Steps 3 to 5: uint8 [H, W, C] in, uint8 [H, W, C] out."""
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    channels = int(inp["shape_signature"][-1])
    if pixels.ndim != 3 or pixels.shape[-1] != channels:
        raise RunError(f"the model takes {channels} channel(s), the image has shape {pixels.shape}")
    height, width = pixels.shape[:2]
    interpreter.resize_tensor_input(inp["index"], [1, height, width, channels], strict=True)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], pixels[None].astype(np.float32))
    interpreter.invoke()
    result = interpreter.get_tensor(out["index"])[0]
    return np.clip(np.round(result), 0, 255).astype(np.uint8)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Denoise one photo with a bfcnn .tflite model (LiteRT).")
    parser.add_argument("model", help="the .tflite file (model.tflite, model_fp16.tflite, ...)")
    parser.add_argument("input", help="the noisy photo (png, jpg, ...)")
    parser.add_argument("output", help="where to write the denoised photo")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: LiteRT's choice)")
    args = parser.parse_args(argv)
    try:
        interpreter = load_interpreter(args.model, args.threads)
        channels = int(interpreter.get_input_details()[0]["shape_signature"][-1])
        pixels = read_pixels(args.input, channels)
        denoised = denoise_pixels(interpreter, pixels)
        Image.fromarray(denoised[..., 0] if channels == 1 else denoised).save(args.output)
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
