"""Finding the model to export: a `.keras` file, a training run, its checkpoints or a zoo name."""

import json
import os
import sys
from pathlib import Path
from typing import Mapping

from bfcnn.errors import allowed
from bfcnn.export.errors import ExportError

WEIGHTS = ("auto", "final", "best", "checkpoint")
RUN_FILES = ("model.keras", "best.keras")  # the model files a training run writes beside its config.yaml


def warn(message: str) -> None:
    """A warning on stderr: the export goes on."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def as_float32(model):
    """The model computing in float32 (a mixed-precision model keeps float32 weights)."""
    from bfcnn.models.precision import to_float32

    return to_float32(model)


def load_keras(path: Path):
    """A `.keras` file with every bfcnn layer registered; ExportError names a damaged file."""
    from bfcnn.errors import BfcnnError
    from bfcnn.models.files import NOT_KERAS, NotKerasFileError, load_keras_file

    try:
        return load_keras_file(path)
    except NotKerasFileError:
        raise ExportError(f"cannot load model {str(path)!r}: {NOT_KERAS}") from None
    except BfcnnError as error:
        raise ExportError(f"cannot load model {str(path)!r}: {error}") from error


def build_float32(model_config: Mapping):
    """The model of a config section built in float32 whatever the global precision policy."""
    import keras

    from bfcnn.models.builder import build_model

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        return build_model(model_config)
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _restore_checkpoint(model_config: Mapping, checkpoint_dir: Path):
    import tensorflow as tf

    from bfcnn.models.checkpoints import checkpoint_paths

    paths = checkpoint_paths(checkpoint_dir)  # those the state file lists, or on disk if it is damaged
    if not paths:
        raise ExportError(f"no tf.train checkpoint in {str(checkpoint_dir)!r}")
    latest = paths[-1]
    model = build_float32(model_config)
    try:
        tf.train.Checkpoint(model=model).restore(latest).expect_partial().assert_existing_objects_matched()
    except (tf.errors.OpError, IndexError) as error:  # a truncated index or data file, a missing data file
        raise ExportError(f"checkpoint {latest} is damaged ({str(error).splitlines()[0][:200]}); export the run's "
                          "model.keras or best.keras instead (--weights final or best)") from None
    except (AssertionError, ValueError) as error:  # ValueError: a weight of another shape
        raise ExportError(f"checkpoint {latest} does not hold this model's weights ({model_config}): "
                          f"{str(error).splitlines()[0]}") from error
    return model, latest


def load_for_export(model_directory, pipeline_config=None, weights: str = "auto"):
    """The model, its training config and a description of where it came from.

    Args:
        model_directory: a training run folder (`model.keras`, `best.keras`, `checkpoints/`,
            `config.yaml`), an export folder, or a `.keras` file.
        pipeline_config: a pipeline YAML; default the run's own `config.yaml`. Needed to
            restore a tf.train checkpoint when the folder has no `model.keras`.
        weights: `auto` (`model.keras`, else the latest checkpoint, else `best.keras`),
            `final` (`model.keras`), `best` (`best.keras`) or `checkpoint` (the latest
            tf.train checkpoint in `checkpoints/` or the folder itself).

    Returns:
        (float32 keras.Model, training config dict or None, source string).

    Raises:
        ExportError: nothing loadable was found; the message lists what was looked for.
        ConfigError: the pipeline config is invalid.
    """
    from bfcnn.config import config_to_dict, load_config

    if weights not in WEIGHTS:
        raise ExportError(f"weights={weights!r} is not supported; allowed: {allowed(WEIGHTS)}")
    path = Path(model_directory).expanduser()
    if not path.exists():
        raise ExportError(f"model directory not found: {str(path)!r}")
    config_dict = None
    config_file = Path(pipeline_config) if pipeline_config else None
    if config_file is None:
        # a run's own config.yaml: beside its model.keras / best.keras or another .keras file in a
        # run folder (one with checkpoints/), or in the run folder given; a config.yaml beside a
        # .keras file elsewhere may belong to anything else in that folder
        in_run = path.name in RUN_FILES or (path.parent / "checkpoints").is_dir()  # e.g. bfcnn.average's file
        own = path.parent / "config.yaml" if path.is_file() and in_run else path / "config.yaml"
        if own.exists():
            config_file = own
    if config_file is not None:
        config_dict = config_to_dict(load_config(config_file))
    elif (path / "model_card.json").exists():
        config_dict = json.loads((path / "model_card.json").read_text()).get("training_config")

    if path.is_file():
        if path.suffix != ".keras":
            raise ExportError(f"{str(path)!r} is not a .keras file or a model directory")
        if weights != "auto":
            raise ExportError(f"weights={weights!r} (--weights) picks a file of a training run folder, and "
                              f"{str(path)!r} is a .keras file: give the run folder, or leave --weights out")
        if config_dict is None:
            config_dict = zoo_card_config(path)
        return as_float32(load_keras(path)), config_dict, str(path)

    checkpoint_dir = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    has_checkpoint = (checkpoint_dir / "checkpoint").exists() or any(checkpoint_dir.glob("ckpt-*.index"))
    order = {"auto": ["final", "checkpoint", "best"], "final": ["final"], "best": ["best"],
             "checkpoint": ["checkpoint"]}[weights]
    for kind in order:
        if kind in ("final", "best"):
            file = path / ("model.keras" if kind == "final" else "best.keras")
            if file.exists():
                return as_float32(load_keras(file)), config_dict, str(file)
        elif has_checkpoint:
            if not (config_dict or {}).get("model"):
                raise ExportError(f"{str(path)!r} has checkpoints but no config.yaml: give --pipeline-config "
                                  "so the model can be built before its weights are restored")
            model, latest = _restore_checkpoint(config_dict["model"], checkpoint_dir)
            return model, config_dict, latest
    looked = {"final": "model.keras", "best": "best.keras", "checkpoint": "checkpoints/ (tf.train)"}
    raise ExportError(f"no model in {str(path)!r}: looked for {', '.join(looked[k] for k in order)}")


def zoo_card_config(path: Path):
    """The training config in the zoo card beside a zoo `.keras` file (`pretrained/<name>.json`,
    whose `files.keras` names this file with its sha256), or None."""
    from bfcnn.io import sha256

    card_file = path.with_suffix(".json")
    try:
        card = json.loads(card_file.read_text(encoding="utf-8"))
        entry = card["files"]["keras"]
        config = card["training"]["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(config, dict) or Path(str(entry.get("path", ""))).name != path.name:
        return None
    if entry.get("sha256") != sha256(path):  # another file of that name: the card does not describe it
        return None
    return config


def resolve_model(model_or_path, config, weights, pipeline_config):
    """(model, training config, source) from a keras.Model, a path or a zoo name."""
    if not isinstance(model_or_path, (str, os.PathLike)):  # a keras.Model (checked without importing Keras)
        return as_float32(model_or_path), config, "<in-memory model>"
    from bfcnn.zoo import is_zoo_name

    text = os.fspath(model_or_path)
    as_path = not isinstance(model_or_path, str)  # a pathlib.Path is never a zoo name
    if as_path or (not is_zoo_name(text) and (Path(text).expanduser().exists() or text.endswith(".keras")
                                              or os.sep in text)):
        model, found_config, source = load_for_export(text, pipeline_config, weights)
        return model, config if config is not None else found_config, source
    from bfcnn.errors import UnknownModelError, did_you_mean
    from bfcnn.zoo import list_models, load_model, model_info

    try:
        card = model_info(text)
    except UnknownModelError as error:  # as likely a mistyped folder as a mistyped name: say both
        names = list_models()
        raise ExportError(f"{text!r} is neither an existing file or folder nor a zoo model"
                          f"{did_you_mean(text, names)}; zoo models: {', '.join(names) or '(none)'}") from error
    if weights != "auto":
        raise ExportError(f"weights={weights!r} (--weights) picks a file of a training run folder, and {text!r} "
                          "is a zoo model: leave --weights out")
    if Path(text).expanduser().exists():  # load_model's rule: the zoo name wins
        warn(f"{text!r} is both a zoo model and a file or folder here; exporting the zoo model "
             f"(write ./{text} to export the file or folder)")
    zoo_config = (card.get("training") or {}).get("config")  # the pipeline config the entry was trained with
    return load_model(text), config if config is not None else zoo_config, f"zoo:{text}"
