"""Reading and writing pipeline configs as YAML: the strict YAML 1.2 number rules, `--set`
overrides, resolving relative paths against the config file, and dumping a config atomically.
"""

import dataclasses
import os
import re
import tempfile
from collections.abc import Mapping
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import yaml

from bfcnn.config.checks import _KeyProblem, _build, _describe, _join, _plain
from bfcnn.config.schema import SOURCE_KINDS, PipelineConfig
from bfcnn.errors import ConfigError, allowed


# ------------------------------------------------------------------------------ YAML


class _Loader(yaml.SafeLoader):
    """A SafeLoader that reads numbers the YAML 1.2 way, plain decimals only, and rejects
    duplicate keys.

    Integers are plain decimals (`-12`, `0`); floats have a point or an exponent (`1e-4`,
    `.5`, `2.`) or are `.inf` / `.nan`. Every other form stays text, for the schema to refuse
    with a type error rather than convert silently: YAML 1.1's octal `0123` (83),
    sexagesimal `1:30` (90), `0x10`, `0b10` and `1_000`, and YAML 1.2's `0o10` and `0x10`.
    """

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key; the base class reports it
                    continue
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"found duplicate key {key!r}",
                        key_node.start_mark,
                    )
        return super().construct_mapping(node, deep=deep)


_INT_TAG, _FLOAT_TAG = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_NUMBER_RESOLVERS = (
    (_INT_TAG, re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"), list("-+0123456789")),
    (
        _FLOAT_TAG,
        re.compile(
            r"""^(?:[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?
                |[-+]?[0-9]+[eE][-+]?[0-9]+
                |[-+]?\.(?:inf|Inf|INF)
                |\.(?:nan|NaN|NAN)
                )$""",
            re.X,
        ),
        list("-+0123456789."),
    ),
)
# YAML 1.1's number resolvers out, YAML 1.2's in; the rest (null, bool, timestamp, ...) kept.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp, chars in _NUMBER_RESOLVERS if first in chars]
    + [(tag, regexp) for tag, regexp in resolvers if tag not in (_INT_TAG, _FLOAT_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _parse_yaml(text: str, source: str) -> Any:
    loader = _Loader(text)
    loader.name = source  # named in the marks of parse errors
    try:
        return loader.get_single_data()
    except yaml.YAMLError as error:
        raise ConfigError(f"cannot parse {source} as YAML: {error}") from None
    finally:
        loader.dispose()


class _Dumper(yaml.SafeDumper):
    """Writes lists of scalars on one line (`sigma: [0.0, 75.0]`), everything else in blocks.

    A string is quoted when `_Loader` or YAML 1.1 would read it as anything else (`'1e5'`,
    `'0123'`), so the file loads back the same here and in other YAML readers.
    """

    def represent_list(self, data):
        flow = all(not isinstance(item, (list, dict)) for item in data)
        return self.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _Dumper.represent_list)
for _tag, _regexp, _first in _NUMBER_RESOLVERS:
    _Dumper.add_implicit_resolver(_tag, _regexp, _first)


# ------------------------------------------------------------------------ public API


def config_from_dict(
    data: Optional[Mapping],
    source: str = "<dict>",
    *,
    base_dir: Optional[str] = None,
    require_inputs: bool = False,
) -> PipelineConfig:
    """Builds and checks a pipeline config from nested mappings (e.g. parsed YAML).

    Args:
        data: the sections as a mapping; `None` is an empty config.
        source: where `data` came from, named in error messages.
        base_dir: a directory to resolve relative paths against, when they exist there
            (see the module docstring); `None` keeps every path as given.
        require_inputs: also require a non-empty `dataset.inputs` (training).

    Returns:
        A frozen `PipelineConfig`.

    Raises:
        ConfigError: an unknown key, a wrong type or an invalid value, naming the dotted key
            and `source`.

    Example:
        >>> config_from_dict({"model": {"type": "resnet"}, "train": {"steps": 100}}).train.steps
        100
    """
    return _config_from_dict(data, source, base_dir, require_inputs, {})


def _config_from_dict(data, source, base_dir, require_inputs, overrides: Dict[Tuple[str, ...], str]) -> PipelineConfig:
    def parts_of(key: str) -> Tuple[str, ...]:
        return tuple(p for p in re.split(r"[.\[\]]+", key) if p)

    def where(key: str) -> str:
        parts = parts_of(key)
        for override_parts, expression in overrides.items():
            if parts[: len(override_parts)] == override_parts:
                return f"--set {expression!r}"
        return source

    def sets_within(key: str) -> list:
        """The overrides of a part of `key` (`--set validation.sigmas.1=50` for 'validation.sigmas')."""
        parts = parts_of(key)
        return [f"--set {expression!r}" for override_parts, expression in overrides.items()
                if len(override_parts) > len(parts) and override_parts[: len(parts)] == parts]

    try:
        config = _build(PipelineConfig, {} if data is None else data)
        if require_inputs and not config.dataset.inputs:
            raise _KeyProblem(
                "dataset.inputs",
                "training needs at least one source: a directory, or a mapping with one of "
                f"{allowed(SOURCE_KINDS)}",
                "missing",
            )
        if base_dir is not None:
            config = _resolve_paths(config, base_dir, lambda key: where(key) != source)
    except _KeyProblem as problem:
        place = where(problem.key)
        changed = [where(key) for key in problem.related if where(key) != source]
        for key in (problem.key,) + problem.related:
            changed += sets_within(key)
        changed = list(dict.fromkeys(changed))
        if changed and place == source:  # the value in the file is fine; a --set made it wrong
            place = f"{source} with {', '.join(changed)}"
        raise ConfigError(problem.message(place)) from None
    return config


def _resolve_paths(config: PipelineConfig, base_dir: str, overridden) -> PipelineConfig:
    def resolve(path: Optional[str], key: str) -> Optional[str]:
        if path is None:
            return None
        path = os.path.expanduser(path)
        if os.path.isabs(path) or overridden(key):
            return path
        candidate = os.path.join(base_dir, path)
        return os.path.abspath(candidate) if os.path.exists(candidate) else path

    def resolve_fields(obj, key, names):
        return dataclasses.replace(obj, **{n: resolve(getattr(obj, n), _join(key, n)) for n in names})

    inputs = []
    for i, source in enumerate(config.dataset.inputs):
        key = f"dataset.inputs[{i}]"
        changes = {"directory": resolve(source.directory, _join(key, "directory"))}
        if source.tfds is not None:
            changes["tfds"] = resolve_fields(source.tfds, _join(key, "tfds"), ["data_dir"])
        if source.image_folder is not None:
            changes["image_folder"] = resolve_fields(source.image_folder, _join(key, "image_folder"), ["root_dir"])
        if source.paired is not None:
            changes["paired"] = resolve_fields(source.paired, _join(key, "paired"), ["noisy_a", "noisy_b"])
        inputs.append(dataclasses.replace(source, **changes))
    return dataclasses.replace(
        config,
        dataset=dataclasses.replace(config.dataset, inputs=tuple(inputs)),
        validation=resolve_fields(config.validation, "validation", ["directory"]),
        train=resolve_fields(config.train, "train", ["init_from"]),
    )


def _apply_override(data: dict, expression: str) -> Tuple[str, ...]:
    """Sets `key.path=value` (value parsed as YAML) in `data`; returns the key's parts."""
    key, equals, text = expression.partition("=")
    parts = tuple(part.strip() for part in key.strip().split("."))
    if not equals or not all(parts):
        raise ConfigError(f"invalid override {expression!r}: expected key.path=value, e.g. train.steps=1000")
    _check_no_brackets(key.strip(), expression)
    value = _parse_yaml(text, f"--set {expression!r}")
    node: Any = data
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if node == {} and depth and part.isdigit():
            # a list index where the config holds no list: it would make a mapping {'0': value}
            parent = ".".join(parts[:depth])
            raise ConfigError(f"invalid override {expression!r}: '{parent}' is not set, so it has no item {part}; "
                              f"set the whole list, e.g. {parent}=[...]")
        if isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        else:
            parent = ".".join(parts[:depth])
            if isinstance(node, list):
                problem = f"has no item {part} ({_describe(node)}); to add one, set the whole list"
            else:
                problem = f"is not a mapping ({_describe(node)})"
            raise ConfigError(f"invalid override {expression!r}: '{parent}' {problem}")
    return parts


def _check_no_brackets(key: str, expression: str) -> None:
    """A ConfigError for `dataset.inputs[0].directory`: it would set a key named 'inputs[0]',
    reported as unknown in the file; list items are addressed by a numeric part instead."""
    if "[" in key or "]" in key:
        dotted = ".".join(part.strip() for part in re.split(r"[.\[\]]+", key) if part.strip())
        raise ConfigError(f"invalid override --set {expression!r}: list items are addressed by their index: "
                          f"{dotted}")


def load_config(
    path: Union[str, os.PathLike],
    overrides: Sequence[str] = (),
    *,
    require_inputs: bool = False,
) -> PipelineConfig:
    """Loads a pipeline config from a YAML file, applies `--set` overrides and checks it all.

    Args:
        path: the YAML file.
        overrides: `"key.path=value"` strings; the value is parsed as YAML (never eval'd), so
            `train.steps=1000`, `optimizer.learning_rate=1e-4` and `validation.sigmas=[15, 50]`
            work. A numeric part indexes a list in the file: `dataset.inputs.0.weight=2`; a
            list the file does not hold, or a new item, needs the whole list.
        require_inputs: also require a non-empty `dataset.inputs` (training).

    Returns:
        A frozen `PipelineConfig`; relative paths are resolved as the module docstring says.

    Raises:
        ConfigError: the file cannot be read or parsed, an override is malformed, or a key is
            unknown, has a wrong type or an invalid value (the error names the dotted key and
            the file or the override).

    Example:
        >>> cfg = load_config("pipelines/quickstart.yaml", ["train.steps=200"])
    """
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as f:
            text = f.read()
    except OSError as error:
        raise ConfigError(f"cannot read pipeline config {source}: {error.strerror or error}") from None
    except UnicodeDecodeError as error:  # an image or a file in another encoding given as the config
        raise ConfigError(f"pipeline config {source} is not UTF-8 text (byte {error.object[error.start]:#04x} at "
                          f"position {error.start}); give a YAML file") from None
    data = _parse_yaml(text, source)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must hold a mapping of sections, got {_describe(data)}")
    data = _plain(data)
    applied: Dict[Tuple[str, ...], str] = {}
    for expression in overrides:
        applied[_apply_override(data, expression)] = expression
    base_dir = os.path.dirname(os.path.abspath(source))
    return _config_from_dict(data, source, base_dir, require_inputs, applied)


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        out = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if value is None and getattr(obj, "_OMIT_NONE", False):
                continue
            out[f.name] = _to_plain(value)
        return out
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return _plain(obj)


def config_to_dict(config: PipelineConfig) -> Dict[str, Any]:
    """The config as plain dicts, lists and scalars (YAML-serializable), every default included.

    `config_from_dict(config_to_dict(c)) == c`.
    """
    if not isinstance(config, PipelineConfig):
        raise TypeError(f"config_to_dict expects a PipelineConfig, got {type(config).__name__}")
    return _to_plain(config)


def dump_config(config: PipelineConfig, path: Union[str, os.PathLike]) -> None:
    """Writes the config as YAML, atomically (a temporary file, then `os.replace`).

    A crash mid-write leaves any previous file at `path` intact. Parent folders are created.
    """
    text = yaml.dump(config_to_dict(config), Dumper=_Dumper, sort_keys=False, default_flow_style=False)
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
