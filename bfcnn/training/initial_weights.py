"""`train.init_from`: the weights a new run starts from, loaded by whichever rule fits the file."""

import logging
from pathlib import Path

import keras
import numpy as np

from bfcnn.errors import BfcnnError, ConfigError
from bfcnn.models.files import load_keras_file
from bfcnn.models.multiscale import copy_legacy_weights, has_legacy_lifts
from bfcnn.models.opponent import has_guided_chroma, seed_chroma_from_gray
from bfcnn.models.transfer import graft_weights

log = logging.getLogger("bfcnn.train")


def check_init_from_file(path: Path) -> None:
    """ConfigError naming `train.init_from` unless `path` is a file."""
    if not path.is_file():
        raise ConfigError(f"train.init_from: no such file {str(path)!r}" if not path.exists() else
                          f"train.init_from: {str(path)!r} is a directory, not a .keras file")


def load_initial_weights(model: keras.Model, path) -> None:
    """`train.init_from`: the weights of a `.keras` file, also one saved before the multiscale
    lifts became 1x1 convolutions + depth-to-space (moved by name, `copy_legacy_weights`), and
    for an `opponent` color model those of its gray network alone (a gray model's file), and
    for a model grown from the file's by layers it lacks (e.g. `n3_levels`), its layers by
    name (`bfcnn.models.transfer.graft_weights`).

    Raises:
        ConfigError: the file is missing, is not a .keras file, or does not hold weights for
            this architecture; the message names `train.init_from`.
    """
    path = Path(path)
    check_init_from_file(path)
    try:
        source = load_keras_file(path)
    except BfcnnError as error:  # NOT_KERAS, or what Keras said
        raise ConfigError(f"train.init_from: {str(path)!r} is not a readable .keras model: {error}") from None
    if len(source.weights) > len(model.weights):
        # Keras would load the weights it finds a place for and silently drop the rest.
        raise ConfigError(f"train.init_from={str(path)!r} does not fit the model in model: the file holds "
                          f"{len(source.weights)} weights, the model {len(model.weights)}")
    _load_weights(model, source, path)
    if has_guided_chroma(model) and not has_guided_chroma(source):
        seed_chroma_from_gray(model)
        log.info("train.init_from: the chrominance network starts from the luminance network's weights, "
                 "with zeros for its guide")


def _load_weights(model: keras.Model, source: keras.Model, path) -> None:
    """The weights of `source` (read from `path`) into `model`, by whichever rule fits.

    Keras's own loader is tried only on a model built like the file's (the same kinds of
    layers, the same weight shapes): on any other it fails anyway, after warning about
    containers it cannot match.
    """
    problem = None
    if _same_build(model, source):
        try:
            model.load_weights(path)
            return
        except ValueError as error:
            problem = error
    inner = next((layer for layer in model.layers if isinstance(layer, keras.Model)), None)
    if inner is not None and _same_build(inner, source):
        try:
            inner.load_weights(path)
            return
        except ValueError:
            pass
    try:
        if has_legacy_lifts(source):
            copy_legacy_weights(model, source)
            return
        try:
            new = graft_weights(model, source)
        except ValueError:
            raise ValueError(str(problem).splitlines()[0] if problem else _shape_mismatch(source, model)) from None
        log.info("train.init_from: every layer of %s copied by name; new layers keep their initial values: %s",
                 path, ", ".join(new) or "none")
        _warn_if_grown_model_differs(model, source, path)
    except (ValueError, OSError) as error:
        raise ConfigError(f"train.init_from={str(path)!r} does not fit the model in model: {error}") from None


GRAFT_TOLERANCE = 5.0  # on the 0-255 scale: far above bfloat16 rounding, far below a changed function


def _warn_if_grown_model_differs(model: keras.Model, source: keras.Model, path) -> None:
    """Logs a warning when a model grown by `graft_weights` does not compute what its source
    did on a random image (e.g. more pyramid levels: the layers it shares then see other
    inputs); training still starts from there."""
    if tuple(model.input_shape[1:]) != tuple(source.input_shape[1:]):  # e.g. a guide input: not comparable
        return
    x = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, model.input_shape[-1])).astype(np.float32)
    difference = float(np.max(np.abs(np.asarray(model(x, training=False), np.float32)
                                      - np.asarray(source(x, training=False), np.float32))))
    if difference > GRAFT_TOLERANCE:
        log.warning("train.init_from: the grown model does not compute what %s did (max difference %.1f on a random "
                    "64x64 image, 0-255 scale): the layers it shares with it see other inputs; training starts "
                    "from these weights all the same", path, difference)


def _shapes(model: keras.Model) -> list:
    return [tuple(weight.shape) for weight in model.weights]


def _same_build(model: keras.Model, source: keras.Model) -> bool:
    kinds = [type(layer).__name__ for layer in model.layers]
    return kinds == [type(layer).__name__ for layer in source.layers] and _shapes(model) == _shapes(source)


def _shape_mismatch(source: keras.Model, model: keras.Model) -> str:
    """Where the file's weights first differ from the model's, in words."""
    theirs, ours = _shapes(source), _shapes(model)
    for index, (a, b) in enumerate(zip(theirs, ours)):
        if a != b:
            return (f"weight {index} ({model.weights[index].path}) has shape {b}, the file's "
                    f"({source.weights[index].path}) {a}")
    if len(theirs) != len(ours):
        return f"the file holds {len(theirs)} weights, the model {len(ours)}"
    return "the file's model has the same weight shapes but other layers"
