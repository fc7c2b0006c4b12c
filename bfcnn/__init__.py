"""bfcnn: bias-free CNN image denoisers for TensorFlow / Keras 3.

Bias-free networks (Mohan et al., ICLR 2020) have no additive constants, so
`f(a*x) = a*f(x)`: one model denoises every noise level and acts as a per-pixel
adaptive filter that can be inspected.

Example:
    >>> import bfcnn
    >>> model = bfcnn.load_model("pyramid_color_m")
    >>> clean = bfcnn.denoise(noisy_uint8_rgb, model=model)

Importing bfcnn is cheap: TensorFlow is imported on the first call that needs it.
"""

import importlib

__version__ = "0.1.0"

# Subpackages and modules reachable as attributes (`bfcnn.layers.BiasFreeBatchNorm`), imported on
# first use. `bfcnn.denoise` is the function; the command line is `python -m bfcnn.denoise`.
_SUBMODULES = ("layers", "models", "ops", "zoo", "config", "errors", "explain", "lite", "export", "training",
               "io", "inference", "evaluation", "tiling", "baselines")


def build_model(config):
    """Builds a denoiser from a `model:` config; see `bfcnn.models.builder.build_model`."""
    from bfcnn.models.builder import build_model as _build

    return _build(config)


def load_model(name_or_path="default", **kwargs):
    """A pretrained zoo model by name, or a model from a `.keras` file or export folder.

    See `bfcnn.zoo.load_model`.
    """
    from bfcnn.zoo import load_model as _load

    return _load(name_or_path, **kwargs)


def list_models(pattern="*"):
    """Names of the zoo's models matching a wildcard pattern; see `bfcnn.zoo.list_models`."""
    from bfcnn.zoo import list_models as _list

    return _list(pattern)


def model_info(name):
    """The model card of a zoo model; see `bfcnn.zoo.model_info`."""
    from bfcnn.zoo import model_info as _info

    return _info(name)


def denoise(image, model="default", **kwargs):
    """Denoises a numpy array or PIL image; see `bfcnn.inference.denoise`."""
    from bfcnn.inference import denoise as _denoise

    return _denoise(image, model=model, **kwargs)


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"bfcnn.{name}")
    raise AttributeError(f"module 'bfcnn' has no attribute {name!r}")


__all__ = ["build_model", "denoise", "list_models", "load_model", "model_info", "__version__"]
