"""Running an exported `.tflite` denoiser with the LiteRT runtime (`ai_edge_litert`), as a phone app does.

`tf.lite.Interpreter` is deprecated; this module uses `ai_edge_litert.interpreter.Interpreter`
only, and imports neither TensorFlow nor Keras, so it works with `pip install ai-edge-litert`.
"""

import functools
import os
from pathlib import Path
from typing import Optional, Union

import numpy as np

from bfcnn.errors import BfcnnError
from bfcnn.tiling import TileSize, as_pair, fixed_size_apply, is_int, min_size_apply, min_tile_size, tiled_apply

# tile_size="auto": LiteRT with XNNPACK needs about 1.9 GB per megapixel it sees at once for
# the pyramids (three times Keras), and setting it up
# for a new size costs about 1.5 s per megapixel. Tiles of 256 (overlap 48) bound that at about
# 0.13 GB (a 24-megapixel photograph peaks at 0.4 GB in all) for about 1.5x the steady
# whole-image time, as the overlaps are computed twice; tiles of 512 cost about as much time
# once the last row and column of tiles are counted (1.4x to 2.3x) and four times the memory
# (benchmarks/bench_memory.py, bench_inference.py --tiles; docs/inference.md "Memory").
# The overlap matches bfcnn.denoise's.
AUTO_TILE = 256
LIFTED_SUFFIX = "_lifted"  # as bfcnn.export.tflite.LIFTED_SUFFIX (this module imports no TensorFlow)
DEFAULT_OVERLAP = 48
# Tiles start at multiples of the model's shift period (`bfcnn.models.shift`), read from the
# model card beside the file (the zoo's and every export's have it); without one the period is
# unknown and tiles start anywhere, as a model without strides allows (the zoo's have periods
# 2, 4 and 5: pass shift_period for a bare file of such a model).
FALLBACK_SHIFT_PERIOD = 1


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


class TFLiteDenoiser:
    """A bfcnn `.tflite` model: a dynamic input `[1, H, W, C]` resized to each image, or a fixed one.

    The model takes and returns float32 images on the 0-255 scale (quantized files too:
    they quantize inside). A file exported for a fixed size (`python -m bfcnn.export
    --tflite-size`) is given images of any size all the same: larger ones go through in
    tiles of exactly that size (overlap `DEFAULT_OVERLAP`, at most half the tile), smaller
    ones and short edge tiles are mirror-padded up to it at the bottom and right and
    cropped back. Not thread-safe: use one instance per thread.

    Args:
        path: the `.tflite` file (e.g. `model.tflite` or `model_int8.tflite` of an export),
            or an export folder (its `model.tflite`).
        num_threads: CPU threads for LiteRT (and its default XNNPACK delegate); None uses
            every core this process may run on (LiteRT's own default is one thread, 1.6x
            slower for pyramid_gray_m on a 2-core CPU).
        shift_period: tiles start at multiples of it (`bfcnn.tiling.tile_spans`); None reads
            `shift_period` from the model card beside the file (`<name>.json`, as the zoo's,
            or an export folder's `model_card.json`), else `FALLBACK_SHIFT_PERIOD`.

    Raises:
        BfcnnError: the file is missing, is not a TFLite model, or does not have one
            4-D float32 image input and one float32 output of the same shape; num_threads is
            not None or an integer >= 1.
        ImportError: `ai_edge_litert` is not installed.

    Example:
        >>> denoiser = TFLiteDenoiser("out/model.tflite", num_threads=2)
        >>> clean = denoiser.denoise(noisy_uint8, tile_size=512)
    """

    def __init__(self, path, num_threads: Optional[int] = None, shift_period: Optional[int] = None):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as error:
            raise ImportError("bfcnn.lite needs the LiteRT runtime: pip install ai-edge-litert") from error
        self.path = Path(path)
        if self.path.is_dir():  # an export folder: its float32 file
            if not (self.path / "model.tflite").is_file():
                raise BfcnnError(f"{str(self.path)!r} is a folder without model.tflite; give a .tflite file "
                                 "(python -m bfcnn.export --to-tflite writes model.tflite)")
            self.path = self.path / "model.tflite"
        if not self.path.is_file():
            raise BfcnnError(f"TFLite model not found: {str(self.path)!r}")
        integer = isinstance(num_threads, (int, np.integer)) and not isinstance(num_threads, bool)
        if num_threads is not None and (not integer or num_threads < 1):
            raise BfcnnError(f"num_threads must be None or an integer >= 1, got {num_threads!r}")
        num_threads = available_cores() if num_threads is None else int(num_threads)
        try:
            self._interpreter = Interpreter(model_path=str(self.path), num_threads=num_threads)
        except (ValueError, RuntimeError) as error:
            raise BfcnnError(f"cannot load {str(self.path)!r} as a TFLite model: {error}") from error
        inputs, outputs = self._interpreter.get_input_details(), self._interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise BfcnnError(f"{str(self.path)!r} has {len(inputs)} inputs and {len(outputs)} outputs; "
                             "a bfcnn denoiser has one image input and one output")
        signature = tuple(int(d) for d in inputs[0]["shape_signature"])
        if len(signature) != 4 or inputs[0]["dtype"] != np.float32:
            raise BfcnnError(f"{str(self.path)!r} takes {np.dtype(inputs[0]['dtype']).name} {list(signature)}; "
                             "a bfcnn denoiser takes float32 [1, H, W, C]")
        if tuple(int(d) for d in outputs[0]["shape_signature"]) != signature or outputs[0]["dtype"] != np.float32:
            raise BfcnnError(f"{str(self.path)!r} returns {np.dtype(outputs[0]['dtype']).name} "
                             f"{[int(d) for d in outputs[0]['shape_signature']]} for an input {list(signature)}; "
                             "a bfcnn denoiser returns float32 of its input's shape")
        self.channels = signature[-1]
        self.input_name = inputs[0]["name"]
        if shift_period is not None and (not is_int(shift_period) or shift_period < 1):
            raise BfcnnError(f"shift_period must be None or an integer >= 1, got {shift_period!r}")
        self.shift_period = int(shift_period) if shift_period is not None else card_shift_period(self.path)
        self.output_name = outputs[0]["name"]
        self.shape_signature = signature
        # (H, W) of a file exported for one input size; None when it is resized to each image.
        self.fixed_size = tuple(signature[1:3]) if min(signature[1:3]) > 0 else None
        self._input, self._output = inputs[0]["index"], outputs[0]["index"]
        self._shape = None
        # A color model's networks without its image-wide lift (`model_lifted.tflite` beside
        # `model.tflite`, `<name>_lifted.tflite` in the zoo): tiles go through it, lifted by the
        # whole image's mean gray level, as the whole file would lift the whole image.
        lifted = self.path.with_name(self.path.stem + LIFTED_SUFFIX + ".tflite")
        self.chroma_offset = card_chroma_offset(self.path) if self.channels == 3 and lifted.is_file() else None
        self._lifted = None if self.chroma_offset is None else TFLiteDenoiser(
            lifted, num_threads=num_threads, shift_period=self.shift_period)

    def __repr__(self) -> str:
        return f"TFLiteDenoiser({str(self.path)!r}, channels={self.channels})"

    def _check(self, images: np.ndarray) -> None:
        if images.ndim not in (3, 4):
            raise BfcnnError(f"expected an image [H, W, C] or a batch [B, H, W, C], got shape {images.shape}")
        if images.shape[-1] != self.channels:
            kind = "gray, 1 channel" if self.channels == 1 else f"{self.channels} channels"
            raise BfcnnError(f"{self.path.name} expects images with {kind} ([..., H, W, {self.channels}]), "
                             f"got shape {images.shape}")
        if min(images.shape[-3:-1]) < 1:
            raise BfcnnError(f"image height and width must be >= 1, got shape {images.shape}")

    def _run(self, image: np.ndarray) -> np.ndarray:
        """One [1, H, W, C] float32 image through the interpreter (resized when its size changes)."""
        if image.shape != self._shape:
            self._interpreter.resize_tensor_input(self._input, list(image.shape), strict=True)
            self._interpreter.allocate_tensors()
            self._shape = image.shape
        self._interpreter.set_tensor(self._input, image)
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output)

    def _run_any(self, image: np.ndarray) -> np.ndarray:
        """One float32 [H, W, C] image of any size (tiled or padded for a file of fixed size)."""
        def run(x):
            return self._run(np.ascontiguousarray(x[None]))[0]

        if self.fixed_size is None:
            return run(image)
        return fixed_size_apply(run, image, self.fixed_size, DEFAULT_OVERLAP, self.shift_period)

    def __call__(self, images) -> np.ndarray:
        """Denoises float [H, W, C] or [B, H, W, C] on the 0-255 scale; returns float32 of the same shape.

        Raises:
            BfcnnError: (a ValueError) wrong rank, channel count or an empty image.
        """
        images = np.asarray(images)
        self._check(images)
        batch = images.reshape((-1, *images.shape[-3:])).astype(np.float32, copy=False)
        out = np.stack([self._run_any(image) for image in batch])
        return out.reshape(images.shape[:-1] + out.shape[-1:])

    def denoise(self, image, tile_size: Union[TileSize, str, None] = "auto", overlap: int = DEFAULT_OVERLAP,
                margin: Optional[int] = None, strength: float = 1.0, ensemble: Union[bool, int] = False,
                noise_std: Optional[float] = None) -> np.ndarray:
        """Denoises one image, optionally tile by tile (see `bfcnn.tiling.tiled_apply`).

        Takes the arrays `bfcnn.denoise` takes, and gives them back the same way.

        Args:
            image: [H, W], [H, W, 1], [H, W, 3] or [H, W, 4] (alpha kept as it is), uint8,
                uint16 (16-bit PNG) or float (0-255 scale, finite). A gray image through a
                color model is denoised as gray RGB, a color one through a gray model
                channel by channel. A side under 8 pixels is mirrored up to 8 first, as in
                `bfcnn.denoise` (`bfcnn.tiling.min_size_apply`); `__call__` runs the file as it is.
            tile_size: tile height and width; None or 0 for the whole image at once; "auto"
                (default): tiles of `AUTO_TILE` (256) for images larger than that, which
                bounds memory (about 0.13 GB for the pyramids) for about 1.5x the time of
                a whole image the interpreter is already sized for (see `AUTO_TILE`); for
                a file of fixed size, tiles of that size.
            overlap: pixels shared by neighbouring tiles.
            margin: see `tiled_apply`; default `overlap // 4`.
            strength: from 0 (the input) to 1 (default, the file's output), as in
                `bfcnn.denoise`: `input + strength * (output - input)`, before rounding.
            ensemble: the file averaged over rotations and flips of each tile, as in
                `bfcnn.denoise`: True or 8 (all 8), 4 or 2 (the copies that keep the axes,
                so a tile of a file of fixed size keeps its shape), False or 1 (one pass, default).
            noise_std: None (blind, default) or the noise's standard deviation on the image's
                scale, as in `bfcnn.denoise`: the change is cut to what that noise explains
                (`bfcnn.inference.noise_strength`, over the whole image, so the output is held
                in float32 until the strength is known).

        Returns:
            The same shape and dtype: integers rounded and clipped, float unclipped.

        Raises:
            BfcnnError: (a ValueError) an unsupported dtype or shape, values that are not
                finite, or a bad tiling argument, strength, ensemble or noise_std.
        """
        from bfcnn.inference import (as_array, blend, channel_matched, check_ensemble, check_noise_std,
                                     check_strength, checked_scale, noise_strength, self_ensemble)
        from bfcnn.opponent_lift import chroma_offset, lift, lower
        from bfcnn.tiling import to_dtype

        check_strength(strength)
        check_noise_std(noise_std)
        copies = check_ensemble(ensemble)
        image = as_array(image)
        scale = checked_scale(image)
        x = image[..., None] if image.ndim == 2 else image
        alpha = x[..., 3:] if x.shape[-1] == 4 else None
        x = x[..., :3] if alpha is not None else x
        if isinstance(tile_size, str):
            if tile_size != "auto":
                raise BfcnnError(f'tile_size must be "auto", None, an int or a pair of ints, got {tile_size!r}')
            if self.fixed_size is not None:
                tile_size = self.fixed_size  # the file's own size: each tile runs as it is
                overlap = min(overlap, min(self.fixed_size) // 2)
            else:
                tile = max(AUTO_TILE, min_tile_size(overlap)) if is_int(overlap) else AUTO_TILE  # a wide overlap
                tile_size = tile if max(x.shape[:2]) > tile else None
        elif isinstance(tile_size, (int, np.integer)) and not isinstance(tile_size, bool) and tile_size == 0:
            tile_size = None
        network = self.__call__
        if self._lifted is not None and tile_size is not None:  # a color model in tiles: one lift for all
            mean = np.mean(x.reshape(-1, x.shape[-1]), axis=0, dtype=np.float64) * scale
            offset = chroma_offset(np.broadcast_to(mean, (1, 1, 3)), self.chroma_offset)  # gray: as gray RGB
            network = lambda tile: lower(self._lifted(lift(tile, offset)), offset)  # noqa: E731
        function = channel_matched(network, self.channels, x.shape[-1])
        if scale != 1.0:
            run = function
            function = lambda tile: run(np.multiply(tile, scale, dtype=np.float32)) / np.float32(scale)  # noqa: E731
        if copies > 1:
            function = self_ensemble(function, copies)
        if strength != 1 and noise_std is None:  # with noise_std: blended once the whole output is known
            full = function
            function = lambda tile: _blend_tile(full, tile, strength)  # noqa: E731
        function = functools.partial(min_size_apply, function)  # a side under MIN_SIDE mirrored up to it
        # tile by tile, band by band: no full-size float32 copy of the input or the output
        # a file of fixed size gets tiles of exactly its size (the image mirrored at the bottom and
        # right where the aligned tiles would end past it), not a few pixels smaller
        equal = self.fixed_size is not None and tile_size is not None and as_pair("tile_size", tile_size) == self.fixed_size
        out = tiled_apply(function, x, tile_size, overlap, margin, align=self.shift_period, equal_tiles=equal,
                          dtype=image.dtype if noise_std is None else np.float32)
        if noise_std is not None:
            pixels = x.astype(np.float32)
            out = blend(out, pixels, strength * noise_strength(out, pixels, noise_std))
            out = to_dtype(out, image.dtype)
        if alpha is not None:
            out = np.concatenate([out, alpha], axis=-1)
        return out.reshape(image.shape)


def _blend_tile(function, tile, strength: float) -> np.ndarray:
    """`tile + strength * (function(tile) - tile)` in float32 (`bfcnn.denoise`'s `strength`, per tile:
    the tiles' blend weights sum to 1, so blending each tile blends the whole)."""
    from bfcnn.inference import blend

    pixels = np.asarray(tile, np.float32)
    return blend(np.array(function(tile), np.float32), pixels, strength)


def model_cards(path: Path):
    """The model cards that may describe the `.tflite` file at `path`, as dicts, nearest first:
    `<name>.json` beside it (the zoo's) and the export folder's `model_card.json`; files that are
    missing or not a JSON object are skipped."""
    import json

    for card in (path.with_suffix(".json"), path.parent / "model_card.json"):
        try:
            data = json.loads(card.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            yield data


def card_chroma_offset(path: Path) -> Optional[float]:
    """The chrominance lift's scale of the color model in `path`, from the model card beside it
    (an export's `tflite["model_lifted.tflite"]["chroma_offset"]`, the zoo's
    `architecture.chroma_offset`), or None when no card says."""
    lifted = path.stem + LIFTED_SUFFIX + ".tflite"
    for data in model_cards(path):
        for entry in ((data.get("tflite") or {}).get(lifted), data.get("architecture")):
            scale = entry.get("chroma_offset") if isinstance(entry, dict) else None
            if isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale >= 0:
                return float(scale)
    return None


def card_shift_period(path: Path) -> int:
    """`shift_period` from the model card beside a `.tflite` file (`<name>.json`, or the export
    folder's `model_card.json`), or `FALLBACK_SHIFT_PERIOD` when there is none or it lacks one."""
    for data in model_cards(path):
        period = data.get("shift_period")
        if is_int(period) and period >= 1:
            return int(period)
    return FALLBACK_SHIFT_PERIOD
