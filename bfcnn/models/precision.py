"""Switching a trained model between float32 and bfloat16 inference.

Models may be trained in mixed bfloat16 and are shipped computing in float32 (`to_float32`).
`to_bfloat16` goes the other way for speed: the convolutions compute in bfloat16 with
float32 weights (Keras's `mixed_bfloat16` policy), while everything that decides the output's
precision stays float32: the 0-255 input scaling, the pyramid split and expansion, the color
transforms and the output layer, which subtracts the estimated noise from the float32 input.
"""

import keras

# The layers `to_bfloat16` switches, by class name: the ones that do the multiplications.
# Every other layer (sums, concatenations, pyramids, color transforms, the output) stays
# float32, and Keras casts between the two where they meet.
BFLOAT16_LAYERS = frozenset({"Conv2D", "Dense", "BiasFreeConvBlock", "BiasFreeResidualBlock", "NonLocalBlock",
                             "N3Block", "N3Branch"})
_REDUCED = ("mixed_bfloat16", "mixed_float16", "bfloat16", "float16")


def _with_policy(node, policy: str):
    """A `DTypePolicy` config (or a policy name) set to `policy`."""
    if isinstance(node, dict) and node.get("class_name") == "DTypePolicy" and isinstance(node.get("config"), dict):
        return {**node, "config": {**node["config"], "name": policy}}
    return policy if isinstance(node, str) else node


def _float32_policies(node):
    """The config with every mixed dtype policy replaced by float32."""
    if isinstance(node, dict):
        if node.get("class_name") == "DTypePolicy" and isinstance(node.get("config"), dict):
            return _with_policy(node, "float32")
        return {k: _float32_policies(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_float32_policies(v) for v in node]
    return "float32" if node in _REDUCED else node


def _bfloat16_policies(node):
    """The config with the layers of BFLOAT16_LAYERS set to mixed_bfloat16 (their sublayers follow)."""
    if isinstance(node, dict):
        config = node.get("config")
        if node.get("class_name") in BFLOAT16_LAYERS and isinstance(config, dict) and "dtype" in config:
            return {**node, "config": {**config, "dtype": _with_policy(config["dtype"], "mixed_bfloat16")}}
        return {k: _bfloat16_policies(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_bfloat16_policies(v) for v in node]
    return node


def _policies(model: keras.Model) -> set:
    return {layer.dtype_policy.name for layer in model._flatten_layers()}


def _rebuilt(model: keras.Model, config: dict) -> keras.Model:
    clone = model.__class__.from_config(config)
    clone.set_weights(model.get_weights())
    return clone


def to_float32(model: keras.Model) -> keras.Model:
    """The same model with float32 computation everywhere (weights are float32 already).

    Mixed-precision training keeps float32 weights; running them in float32 costs a
    little speed and gives slightly better PSNR than bfloat16 inference.
    """
    if _policies(model) <= {"float32"}:
        return model
    return _rebuilt(model, _float32_policies(model.get_config()))


def to_bfloat16(model: keras.Model) -> keras.Model:
    """A copy of a functional model whose convolutions compute in bfloat16 (float32 weights).

    For the zoo's models 1.6 to 1.9x faster on a CPU with AVX512-BF16, for 0.01 to 0.02 dB
    (docs/inference.md, "bfloat16 inference"); may be slower on a CPU without bfloat16
    instructions, where they are emulated (not measured). The input and output
    stay float32 0-255, and a bias-free model stays bias-free (rounding is homogeneous up to
    its relative error).

    Raises:
        ValueError: a model that is not a Keras functional model (a subclassed model has no
            config to rebuild from).
    """
    if not isinstance(model, keras.Model) or not hasattr(model, "get_config"):
        raise ValueError(f"to_bfloat16 needs a keras.Model, got {type(model).__name__}")
    try:
        config = model.get_config()
    except NotImplementedError:
        config = None
    if not isinstance(config, dict) or "layers" not in config:
        raise ValueError(f"to_bfloat16 needs a functional keras.Model (one with a layer graph to rebuild), "
                         f"got {type(model).__name__}")
    return _rebuilt(model, _bfloat16_policies(to_float32(model).get_config()))
