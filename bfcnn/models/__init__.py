"""Denoiser architectures and `build_model`, which builds one from a config."""

from bfcnn.models import common, multiscale, resnet  # noqa: F401  (registers layers for loading)
from bfcnn.models.builder import MODEL_TYPES, build_model, model_defaults, resolve_model_config
from bfcnn.models.cost import count_parameters, describe, flops_per_pixel, is_bias_free
from bfcnn.models.shift import shift_period

__all__ = [
    "MODEL_TYPES",
    "build_model",
    "count_parameters",
    "describe",
    "flops_per_pixel",
    "is_bias_free",
    "model_defaults",
    "resolve_model_config",
    "shift_period",
]
