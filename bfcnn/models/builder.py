"""`build_model(config)`: a model from the `model:` section of a pipeline config.

Each model type is one builder function; its keyword arguments are the config keys
(plus `type`), so the function signature is the single source of truth for what a
config may say, and its defaults make every key but `type` optional.
"""

import importlib
import inspect
from typing import Any, Callable, Mapping

import keras

from bfcnn.errors import ConfigError, allowed, did_you_mean
from bfcnn.models.common import PerLevel

# type -> "module:function"; modules are imported on first use.
MODEL_TYPES = {
    "resnet": "bfcnn.models.resnet:build_resnet",
    "multiscale": "bfcnn.models.multiscale:build_multiscale",
    "n3net": "bfcnn.models.n3net:build_n3net",
    "opponent": "bfcnn.models.opponent:build_opponent",
}


def model_builder(model_type: str) -> Callable[..., keras.Model]:
    """The builder function of a model type.

    Raises:
        ConfigError: the type is unknown; the message lists the known types.
    """
    if model_type not in MODEL_TYPES:
        raise ConfigError(
            f"unknown model type {model_type!r}{did_you_mean(model_type, MODEL_TYPES)}; "
            f"allowed: {allowed(MODEL_TYPES)}"
        )
    module, function = MODEL_TYPES[model_type].split(":")
    return getattr(importlib.import_module(module), function)


def model_defaults(model_type: str) -> dict:
    """Every config key of a model type with its default value."""
    signature = inspect.signature(model_builder(model_type))
    return {name: p.default for name, p in signature.parameters.items() if name != "name"}


def _per_level_keys(model_type: str) -> set:
    """Keys whose builder annotation is `PerLevel`: an int, or a list with one int per level."""
    signature = inspect.signature(model_builder(model_type))
    return {name for name, p in signature.parameters.items() if p.annotation is PerLevel}


def resolve_model_config(config: Mapping[str, Any], where: str = "model") -> dict:
    """The full model config (defaults filled in), validated against the builder's arguments.

    Raises:
        ConfigError: missing `type`, an unknown key (with a close match), or a value whose
            type differs from the default's.
    """
    if not isinstance(config, Mapping):
        raise ConfigError(f"{where} must be a mapping with at least 'type', got {type(config).__name__}")
    if "type" not in config:
        raise ConfigError(f"{where} needs a 'type'; allowed: {allowed(MODEL_TYPES)}")
    model_type = config["type"]
    if not isinstance(model_type, str):
        raise ConfigError(f"{where}.type must be a string, one of {allowed(MODEL_TYPES)}; got {model_type!r}")
    defaults = model_defaults(model_type)
    per_level = _per_level_keys(model_type)
    resolved = {"type": model_type}
    for key, value in config.items():
        if key == "type":
            continue
        if key not in defaults:
            raise ConfigError(
                f"unknown key '{where}.{key}' for model type {model_type!r}"
                f"{did_you_mean(key, defaults)}; allowed: {allowed(defaults)}"
            )
        resolved[key] = _check_type(f"{where}.{key}", value, defaults[key], key in per_level)
    return {**{"type": model_type}, **defaults, **resolved}


def _check_type(key: str, value, default, per_level: bool = False):
    """Checks `value` against the type of the default; `per_level` keys take an int or a list."""
    if per_level:
        if value is None and default is None:  # "the builder's default" (e.g. multiscale filters)
            return None
        ok = isinstance(value, int) and not isinstance(value, bool) or (
            isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value))
        if not ok:
            raise ConfigError(f"{key} must be an integer or a list of integers (one per level), got {value!r}")
        return list(value) if isinstance(value, tuple) else value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
        expected = "a boolean"
    elif isinstance(default, int) and not isinstance(default, bool):
        ok = isinstance(value, int) and not isinstance(value, bool)
        expected = "an integer"
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        expected = "a number"
    elif isinstance(default, str):
        ok = isinstance(value, str)
        expected = "a string"
    elif isinstance(default, (tuple, list)):
        # Lists of block or level indices; one index may be given alone.
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        expected = "a list of integers (or one integer)"
    else:
        return value
    if not ok:
        raise ConfigError(f"{key} must be {expected}, got {value!r}")
    return list(value) if isinstance(value, tuple) else value


def build_model(config: Mapping[str, Any]) -> keras.Model:
    """Builds a denoiser from the `model:` section of a pipeline config.

    Args:
        config: a mapping with `type` (one of `resnet`, `multiscale`, `n3net`, `opponent`) and any of
            that type's keyword arguments (see `bfcnn.models.resnet.build_resnet` etc.);
            `channels` (1 or 3) is accepted by every type.

    Returns:
        A keras.Model taking float32 [B, H, W, C] on the 0-255 scale, any H, W >= 1, and
        returning the denoised image of the same shape and scale.

    Raises:
        ConfigError: an unknown type or key, or a value of the wrong type; the message
            names the key and the allowed ones.
        ValueError: a value out of range (e.g. `channels: 2`), naming the argument.

    Example:
        >>> model = build_model({"type": "resnet", "channels": 1})
    """
    resolved = resolve_model_config(config)
    kwargs = {k: v for k, v in resolved.items() if k != "type"}
    try:
        return model_builder(resolved["type"])(**kwargs)
    except (ValueError, TypeError) as error:
        # A builder's own argument checks raise ValueError; a value of a shape the schema
        # lets through (an int where a list of block indices is meant) can end in a TypeError.
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(f"model ({resolved['type']}): {error}") from error
