"""The model zoo: pretrained denoisers shipped inside the package, found by name.

Every entry is a model card, `pretrained/<name>.json`, next to its files (`<name>.keras`,
`<name>.tflite`). The card is plain data: the architecture config, the training run,
the measured validation table and the sha256 of each file, which `load_model` checks.
Cards are written by `scripts/make_zoo_entry.py` from a training run, never by hand.
"""

import fnmatch
import json
import os
import re
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Union

from bfcnn.errors import BfcnnError, UnknownModelError, did_you_mean
from bfcnn.io import sha256

# The model `load_model()` and `load_model("default")` return: the color flagship.
DEFAULT_MODEL = "pyramid_color_m"
DEFAULT_GRAY_MODEL = "pyramid_gray_m"


def zoo_directory() -> Path:
    """Where the cards live: the installed `bfcnn.pretrained` package, else the source tree."""
    try:
        from importlib.resources import files

        installed = Path(str(files("bfcnn.pretrained")))
        if any(installed.glob("*.json")):
            return installed
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parents[1] / "pretrained"


def _natural_key(name: str):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


@lru_cache(maxsize=None)
def _cards() -> Dict[str, dict]:
    cards = {}
    for path in sorted(zoo_directory().glob("*.json")):
        card = json.loads(path.read_text(encoding="utf-8"))
        cards[card["name"]] = card
    return cards


def list_models(pattern: Optional[str] = "*") -> List[str]:
    """Names of the zoo's models matching a shell-style wildcard (None: all), in natural order.

    Raises:
        BfcnnError: `pattern` is not a string (or None).

    Example:
        >>> bfcnn.list_models("*_gray_*")
        ['pyramid_gray_m', 'resnet_gray_s']
    """
    pattern = "*" if pattern is None else pattern
    if not isinstance(pattern, str):
        raise BfcnnError(f"list_models takes a shell-style wildcard such as '*_gray_*' (or None for all), "
                         f"got a {type(pattern).__name__}: {pattern!r}")
    return sorted((n for n in _cards() if fnmatch.fnmatchcase(n, pattern)), key=_natural_key)


def _resolve_name(name: str) -> str:
    name = DEFAULT_MODEL if name in (None, "default") else name
    if name not in _cards():
        available = list_models()
        raise UnknownModelError(
            f"unknown model {name!r}{did_you_mean(name, available)}; available: "
            f"{', '.join(available) if available else '(the zoo is empty)'}"
        )
    return name


def model_info(name: str) -> dict:
    """The model card of a zoo model (a copy): architecture, training, validation, files.

    Raises:
        UnknownModelError: the name is not in the zoo; lists the available ones.
    """
    return json.loads(json.dumps(_cards()[_resolve_name(name)]))


def model_file(name: str, kind: str = "keras", verify: bool = True) -> Path:
    """The path of a zoo model's file (`keras`, `tflite`, or a color model's `tflite_lifted`),
    its sha256 checked. For `tflite`, a `tflite_lifted` file in the card is checked too:
    `bfcnn.lite.TFLiteDenoiser` loads it from beside the TFLite file.

    Raises:
        BfcnnError: the file is missing or its checksum differs from the card's.
    """
    card = _cards()[_resolve_name(name)]
    if kind not in card["files"]:
        raise BfcnnError(f"zoo model {name!r} has no {kind!r} file; it has {', '.join(card['files'])}")
    companions = ["tflite_lifted"] if kind == "tflite" and "tflite_lifted" in card["files"] else []
    paths = {checked: zoo_directory() / card["files"][checked]["path"] for checked in [kind] + companions}
    for checked, path in paths.items():
        if not path.exists():
            raise BfcnnError(f"zoo file missing: {path} (a broken installation? reinstall bfcnn)")
        if verify and sha256(path) != card["files"][checked]["sha256"]:
            raise BfcnnError(f"zoo file {path} does not match the sha256 in its model card: corrupt or modified")
    return paths[kind]


def is_zoo_name(text: str) -> bool:
    """Whether `text` names a zoo model (or "default") and does not look like a path."""
    return (text == "default" or text in _cards()) and not _looks_like_path(text)


def _looks_like_path(text: str) -> bool:
    """A path rather than a zoo name: a folder separator, a model file suffix, or a leading . or ~."""
    separators = {"/", os.sep, os.altsep} - {None}
    return (any(sep in text for sep in separators) or text.startswith((".", "~"))
            or text.lower().endswith((".keras", ".tflite", ".h5")))


def _not_a_model(path: Path) -> BfcnnError:
    return BfcnnError(f"cannot load model {str(path)!r}: not a .keras file or model folder (a .keras file "
                      "is a zip archive holding a Keras model; this one is corrupt, truncated or of another format)")


def _model_path(name_or_path: str, verify: bool, as_path: bool = False) -> Path:
    """The `.keras` file `load_model` would load, checked as far as possible without Keras;
    `as_path`: the caller gave a path object (never a zoo name, even without a `./`)."""
    path = Path(name_or_path).expanduser()
    if not as_path and (is_zoo_name(name_or_path) or not (path.exists() or _looks_like_path(name_or_path))):
        # a zoo name wins over a file or folder of that name in the working directory (write
        # ./name for that); UnknownModelError lists the zoo
        return model_file(name_or_path, "keras", verify=verify)
    if path.is_dir():
        found = [c for c in (path / "model.keras", path / "best.keras") if c.exists()]
        if not found:
            raise BfcnnError(f"no model.keras or best.keras in folder {name_or_path!r}")
        path = found[0]
    elif not path.exists():
        raise BfcnnError(f"no such file or folder: {name_or_path!r} (zoo models: {', '.join(list_models())})")
    if path.suffix.lower() == ".tflite":
        raise BfcnnError(f"{name_or_path!r} is a TFLite file; load_model loads .keras files: "
                         f"run it with bfcnn.lite.TFLiteDenoiser({name_or_path!r})")
    if not zipfile.is_zipfile(path):  # Keras would say "File not found" for a damaged file
        raise _not_a_model(path)
    return path


def load_model(name_or_path: Optional[Union[str, os.PathLike]] = "default", verify: bool = True,
               float32: bool = True):
    """A pretrained zoo model by name, or a model from a `.keras` file or a model / export folder.

    Args:
        name_or_path: a zoo name (`bfcnn.list_models()`), `"default"` or None (the color
            flagship, `pyramid_color_m`), a path (str or `os.PathLike`, `~` expanded) to a
            `.keras` file, or a folder holding `model.keras` (an export or training directory;
            `best.keras` is used when there is no `model.keras`). A name that is not in the zoo but is an
            existing file or folder is taken as a path; a zoo name is the zoo model even
            when a folder of that name is in the working directory (`./name` or a `pathlib.Path` is
            the folder). `.tflite` files are run by
            `bfcnn.lite.TFLiteDenoiser` instead.
        verify: check the zoo file's sha256 against its model card.
        float32: run in float32 even if the model was saved with a mixed-precision policy.

    Returns:
        A keras.Model: float32 [B, H, W, C] on the 0-255 scale in, the same shape out.

    Raises:
        UnknownModelError: an unknown name; the message lists the available ones.
        BfcnnError: an empty name, a missing path or folder, a `.tflite` file, a file that is not a Keras
            model, or a corrupt zoo file. Raised before Keras is imported, except for a zip
            archive that is not a Keras model (or a Keras file Keras cannot load): that is
            only found by Keras itself, so it is raised after Keras (and TensorFlow) is imported.

    Example:
        >>> model = bfcnn.load_model("pyramid_gray_m")
        >>> clean = model(noisy[None, ..., None])[0, ..., 0]
    """
    if name_or_path is not None and not isinstance(name_or_path, (str, os.PathLike)):
        raise BfcnnError(f"load_model takes a zoo name ({', '.join(list_models())}), a path to a .keras file or "
                         f"a model folder, or None; got a {type(name_or_path).__name__}: {name_or_path!r}")
    if isinstance(name_or_path, str) and not name_or_path.strip():  # Path("") would be the working directory
        raise BfcnnError(f"the model name is empty: give a zoo name ({', '.join(list_models())}), a path to a "
                         ".keras file or a model folder, or None for the default")
    path = _model_path("default" if name_or_path is None else os.fspath(name_or_path), verify,
                       as_path=isinstance(name_or_path, os.PathLike))
    from bfcnn.models.files import NotKerasFileError, load_keras_file

    try:
        model = load_keras_file(path)
    except NotKerasFileError as error:
        raise _not_a_model(path) from error
    except BfcnnError as error:
        raise BfcnnError(f"cannot load model {str(path)!r}: {error}") from error
    if float32:
        from bfcnn.models.precision import to_float32

        model = to_float32(model)
    return model
