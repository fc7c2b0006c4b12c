"""Moving trained weights into a related, larger model (a warm start for a grown architecture)."""

from typing import List

import keras
import numpy as np


def graft_weights(model: keras.Model, source: keras.Model) -> List[str]:
    """Copies every weighted layer of `source` into the layer of `model` with the same name.

    For a model grown from a trained one by layers that start as the identity (e.g. a
    multiscale model with `n3_levels`, whose `N3Branch`es start at zero): the grown model
    then computes what the trained one did, and training goes on from there. A model grown
    otherwise (e.g. one pyramid level more, whose shared layers then see other inputs) takes
    the weights all the same but computes something else (`train.init_from` logs a warning
    then). Nothing of
    `source` may be left behind: each of its weighted layers must exist in `model`, by name,
    with weights of the same shapes, except that a convolution of `model` may read more input
    channels than its namesake (e.g. a `guide_channels` input of `build_multiscale`): the
    trained kernel fills its first input channels and the rest start at zero, so the new
    inputs are ignored until training uses them.

    Returns:
        The names of the layers of `model` with weights that `source` does not have (they
        keep their initial values).

    Raises:
        ValueError: a weighted layer of `source` is missing from `model` or has other
            shapes, or the two share no weighted layer.
    """
    names = {layer.name: layer for layer in model.layers}
    copied = 0
    for layer in source.layers:
        if not layer.weights:
            continue
        target = names.get(layer.name)
        if target is None:
            raise ValueError(f"layer {layer.name!r} of {source.name!r} is not in {model.name!r}")
        shapes = [tuple(w.shape) for w in layer.weights]
        expected = [tuple(w.shape) for w in target.weights]
        if len(shapes) != len(expected) or not all(map(_fits, shapes, expected)):
            raise ValueError(f"layer {layer.name!r}: weights of shapes {shapes} do not fit {expected}")
        target.set_weights([_grow(np.asarray(w), shape) for w, shape in zip(layer.get_weights(), expected)])
        copied += 1
    if not copied:
        raise ValueError(f"{source.name!r} and {model.name!r} share no layer with weights")
    source_names = {layer.name for layer in source.layers}
    return [layer.name for layer in model.layers if layer.weights and layer.name not in source_names]


def _fits(shape, target) -> bool:
    """The same shape, or a convolution kernel [kh, kw, c_in, c_out] whose target reads more inputs."""
    if shape == target:
        return True
    return (len(shape) == 4 and len(target) == 4 and shape[:2] == target[:2] and shape[3] == target[3]
            and shape[2] < target[2])


def _grow(weight: np.ndarray, shape) -> np.ndarray:
    """`weight` in a zero array of `shape` (input channels appended at the end)."""
    if weight.shape == tuple(shape):
        return weight
    grown = np.zeros(shape, weight.dtype)
    grown[:, :, :weight.shape[2], :] = weight
    return grown
