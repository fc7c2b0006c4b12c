"""Reading `.keras` files with every bfcnn layer registered, and errors that say what is wrong.

The zoo, the trainer's `train.init_from` and the exporter load `.keras` files through
`load_keras_file` and each phrase its errors in its own terms.
"""

import importlib
import zipfile
from pathlib import Path

from bfcnn.errors import BfcnnError

NOT_KERAS = ("not a .keras file (a .keras file is a zip archive holding Keras's config.json and weights; "
             "this one is corrupt, truncated or of another format)")


class NotKerasFileError(BfcnnError):
    """A file that is not a Keras archive: not a zip, or a zip without a Keras model in it."""


def register_layers() -> None:
    """Imports every model module so their custom layers deserialize from `.keras` files."""
    import bfcnn.layers  # noqa: F401
    from bfcnn.models.builder import MODEL_TYPES

    for target in MODEL_TYPES.values():
        try:
            importlib.import_module(target.split(":")[0])
        except ImportError:  # a model type whose module is not there cannot be in the file either
            pass


def load_keras_file(path):
    """`keras.models.load_model(path, compile=False)` with bfcnn's layers registered.

    Raises:
        NotKerasFileError: the file is not a Keras archive (Keras would call a damaged file
            "not found", or fail with a KeyError from inside the zip).
        BfcnnError: Keras cannot load it otherwise; the message is Keras's.
    """
    import keras

    register_layers()
    if Path(path).is_file() and not zipfile.is_zipfile(path):
        raise NotKerasFileError(NOT_KERAS)
    try:
        return keras.models.load_model(path, compile=False)
    except (KeyError, zipfile.BadZipFile) as error:  # a zip without config.json, or with a damaged member
        raise NotKerasFileError(NOT_KERAS) from error
    except (ValueError, OSError, TypeError) as error:  # TypeError: a layer class Keras cannot find
        raise BfcnnError(str(error)) from error
