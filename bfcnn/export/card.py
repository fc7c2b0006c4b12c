"""The model card (`model_card.json`): what the export holds, and an entry per `.tflite` file."""

import datetime
from pathlib import Path
from typing import Any, Dict

import numpy as np

from bfcnn.export.signature import INPUT_NAME, OUTPUT_NAME, VALUE_RANGE, model_channels
from bfcnn.export.tflite import int8_weight_tensors, tflite_ops


def file_sizes(directory: Path) -> Dict[str, int]:
    sizes = {}
    for entry in sorted(directory.iterdir()):
        if entry.is_dir():
            sizes[entry.name + "/"] = sum(f.stat().st_size for f in entry.rglob("*") if f.is_file())
        else:
            sizes[entry.name] = entry.stat().st_size
    return sizes


def tflite_entry(path: Path, quantize: str) -> Dict[str, Any]:
    import hashlib

    from ai_edge_litert.interpreter import Interpreter

    content = path.read_bytes()  # read once: the ops, the int8 weights and the checksum come from it
    interpreter = Interpreter(model_content=content)
    signature = interpreter.get_signature_list()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    return {
        "quantization": quantize,
        "signature": signature,
        "input": {"name": inp["name"], "signature_name": INPUT_NAME, "dtype": np.dtype(inp["dtype"]).name,
                  "shape_signature": [int(d) for d in inp["shape_signature"]]},
        "output": {"name": out["name"], "signature_name": OUTPUT_NAME, "dtype": np.dtype(out["dtype"]).name,
                   "shape_signature": [int(d) for d in out["shape_signature"]]},
        "ops": tflite_ops(content),
        # constant int8 tensors: 0 in a `dynamic` file means the converter quantized nothing
        "int8_weight_tensors": int8_weight_tensors(content),
        "bytes": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
    }


def model_card(model, name, config, source, tflite: Dict[str, dict]) -> Dict[str, Any]:
    import keras
    import tensorflow as tf

    import bfcnn
    from bfcnn.models.cost import count_parameters, flops_per_pixel, is_bias_free
    from bfcnn.models.shift import shift_period

    channels = model_channels(model)
    image_spec = {"dtype": "float32", "shape": [None, None, None, channels], "value_range": list(VALUE_RANGE)}
    return {
        "name": name,
        "format_version": 1,
        "channels": channels,
        "color": "gray" if channels == 1 else "rgb",
        "value_range": list(VALUE_RANGE),
        "value_range_note": "0-255 scale in and out; noisy input values outside [0, 255] are valid",
        "inputs": [{"name": INPUT_NAME, **image_spec}],
        "outputs": [{"name": OUTPUT_NAME, **image_spec}],
        "saved_model": {
            "path": "saved_model",
            "signatures": {
                "serving_default": {"inputs": {INPUT_NAME: image_spec}, "outputs": {OUTPUT_NAME: image_spec}},
                "denoise_uint8": {
                    "inputs": {INPUT_NAME: {"dtype": "uint8", "shape": [None, None, None, channels]}},
                    "outputs": {OUTPUT_NAME: {"dtype": "uint8", "shape": [None, None, None, channels],
                                              "note": "rounded (half to even) and clipped to [0, 255]"}},
                },
            },
        },
        "tflite": tflite,
        "model_config": config.get("model") if config else None,
        "training_config": config,
        "source": source,
        "parameters": count_parameters(model),
        "flops_per_pixel": flops_per_pixel(model),
        "bias_free": is_bias_free(model),
        "shift_period": shift_period(model),
        "shift_period_note": "tiles start at multiples of it (bfcnn.tiling.tile_spans): a shift by it moves the "
                             "output alike, a smaller one may not",
        "bfcnn_version": bfcnn.__version__,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
