"""Typed pipeline configs for the trainer: frozen dataclasses with defaults, loaded strictly from YAML.

A pipeline config is one YAML file with the sections `model`, `dataset`, `corruption`, `loss`,
`optimizer`, `train`, `validation` and `distribution` (see DESIGN.md). Every key has a default
except `model.type` and, for training, `dataset.inputs`. Loading is strict: an unknown key, a
wrong type or an invalid value raises a `ConfigError` that names the dotted key, the file (or
the `--set` override that set it) and a close match or the allowed values. A key that the
chosen `type` (or `strategy`) does not read must stay at its default. Numbers are YAML 1.2's
plain decimals (`1e-4` is a float); YAML 1.1's `0123`, `0x10`, `1_000` and `1:30` are text.

Relative paths written in a config file (the `dataset.inputs` directories, `tfds.data_dir`,
`image_folder.root_dir`, `paired.noisy_a` / `noisy_b`, `validation.directory`,
`train.init_from`) are resolved
against the config file's directory when that path exists there (and become absolute);
otherwise they are kept as written, that is relative to the working directory. Paths given in
`--set` overrides are always kept as written. `~` is expanded.

Only the standard library and PyYAML are imported here, so a config is checked before
TensorFlow starts. The `model` section stays a free dict: its keys other than `type` and
`channels` are checked by `bfcnn.build_model`.
"""

import copy
import dataclasses
import functools
import math
import os
import re
import tempfile
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Dict, Literal, Optional, Sequence, Tuple, Union

import yaml

from bfcnn.errors import ConfigError, allowed, did_you_mean

__all__ = [
    "AdditiveNoiseConfig",
    "BlurConfig",
    "CorruptionConfig",
    "DatasetConfig",
    "DistributionConfig",
    "ImageFolderSource",
    "InputSource",
    "LossConfig",
    "MultiplicativeNoiseConfig",
    "OptimizerConfig",
    "PairedSource",
    "PipelineConfig",
    "ScheduleConfig",
    "SubsamplingConfig",
    "TfdsSource",
    "TrainConfig",
    "ValidationConfig",
    "config_from_dict",
    "config_to_dict",
    "dump_config",
    "load_config",
]


# ----------------------------------------------------------------------------- errors


class _KeyProblem(ConfigError):
    """A problem with one key, named relative to the config object that found it.

    It bubbles up through the nested sections, each prefixing its own name, and the loader
    turns it into a plain `ConfigError` that also names the file. Raised as is (without a
    file) when a config dataclass is built directly in Python.
    """

    def __init__(self, key: str, problem: str = "", kind: str = "invalid", options: Sequence[str] = (),
                 related: Sequence[str] = ()):
        # `related`: other keys whose values the problem depends on, dotted like `key` (relative
        # to the same section, prefixed alike), so the loader can name a `--set` that changed one.
        self.key, self.problem, self.kind, self.options = key, problem, kind, tuple(options)
        self.related = tuple(related)
        super().__init__(self.message(""))

    def within(self, prefix: str) -> "_KeyProblem":
        related = tuple(_join(prefix, key) for key in self.related)
        return _KeyProblem(_join(prefix, self.key), self.problem, self.kind, self.options, related)

    def message(self, where: str) -> str:
        place = f" in {where}" if where else ""
        if self.kind == "unknown":
            return f"unknown key '{self.key}'{place}{_unknown_key_hint(self.key, self.options)}"
        head = {"missing": "missing key", "type": "wrong type for"}.get(self.kind, "invalid value for")
        return f"{head} '{self.key}'{place}: {self.problem}"


def _join(prefix: str, key: str) -> str:
    if not prefix:
        return key
    if not key:
        return prefix
    return prefix + key if key.startswith("[") else f"{prefix}.{key}"


def _unknown_key_hint(key: str, options: Sequence[str]) -> str:
    """A close key at the same level, else a close key in another section, else the allowed keys."""
    prefix, _, leaf = key.rpartition(".")
    if did_you_mean(leaf, options):
        return did_you_mean(key, [_join(prefix, option) for option in options])
    others = [k for k in _schema_keys() if k != key]
    best = did_you_mean(leaf, {k.rpartition(".")[2] for k in others})
    elsewhere = [k for k in others if best and did_you_mean(leaf, [k.rpartition(".")[2]]) == best]
    if len(elsewhere) == 1:
        return f", did you mean '{elsewhere[0]}'?"
    if elsewhere:
        return f", did you mean one of {allowed(elsewhere)}?"
    return f"; allowed keys: {allowed(options)}" if options else ""


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 80 else text[:77] + '...'}"


def _check(condition: bool, key: str, problem: str, related: Sequence[str] = ()) -> None:
    if not condition:
        raise _KeyProblem(key, problem, related=related)


def _check_at_least(obj: Any, name: str, minimum: float) -> None:
    value = getattr(obj, name)
    _check(value >= minimum, name, f"must be >= {minimum}, got {value!r}")


def _check_optional_at_least(obj: Any, name: str, minimum: float) -> None:
    if getattr(obj, name) is not None:
        _check_at_least(obj, name, minimum)


def _check_probability(obj: Any, name: str = "probability") -> None:
    value = getattr(obj, name)
    _check(0.0 <= value <= 1.0, name, f"must be in [0, 1], got {value!r}")


def _check_applies(obj: Any, name: str, switch: str, kinds: Sequence[str], also_unset: Sequence[Any] = ()) -> None:
    """Refuses `name` when `obj.<switch>` is not one of `kinds`, the only ones that read it, and
    the key is set away from its default (or the values in `also_unset`, which mean the same):
    it would be accepted and silently ignored."""
    chosen, value = getattr(obj, switch), getattr(obj, name)
    default = next(f.default for f in dataclasses.fields(obj) if f.name == name)
    if chosen in kinds or value == default or value in also_unset:
        return
    names = " or ".join(kinds)
    raise _KeyProblem(name, f"applies to {switch}: {names} only ({switch} is {chosen!r}); remove it or use "
                            f"{switch}: {names}", related=(switch,))


# ------------------------------------------------------------------- type coercion

_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
# What YAML 1.1 (or 1.2) reads as an integer and `_Loader` (plain decimals only) as text.
_YAML11_INT = re.compile(r"[-+]?(?:0[0-9_]+|0[xob][0-9a-fA-F_]+|[0-9][0-9_]*(?::[0-5]?[0-9])+|[1-9][0-9]*_[0-9_]*)")


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> Dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Union:
        return " or ".join(_type_name(a) if a is not type(None) else "null" for a in args)
    if origin is Literal:
        return f"one of {allowed(args)}"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type_name(args[0])}"
        return f"list of {len(args)} {_type_name(args[0])}"
    if dataclasses.is_dataclass(tp) or tp is dict or origin is dict:
        return getattr(tp, "_TYPE_NAME", "mapping")
    return getattr(tp, "__name__", str(tp))


def _plain(value: Any) -> Any:
    """Deep copy into plain YAML types: mappings become dicts, tuples lists."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return copy.deepcopy(value)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Checks `value` against the annotation `tp` and converts it (lists to tuples, ints to floats)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)

    def wrong_type() -> _KeyProblem:
        hint = ""
        if isinstance(value, str) and _YAML11_INT.fullmatch(value) and int in (tp,) + args:
            hint = " (integers are plain decimals here; YAML 1.1's 0123, 0x10, 1_000 and 1:30 are read as text)"
        return _KeyProblem(key, f"expected {_type_name(tp)}, got {_describe(value)}{hint}", "type")

    if origin is Union:  # only Optional[X] is used
        if value is None:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        try:
            return _coerce(value, inner, key)
        except _KeyProblem as problem:
            if problem.kind == "type" and problem.key == key:
                raise wrong_type() from None
            raise
    if origin is Literal:
        if not isinstance(value, str):
            raise wrong_type()
        if value not in args:
            raise _KeyProblem(key, f"must be one of {allowed(args)}, got {value!r}{did_you_mean(value, args)}")
        return value
    if origin is tuple:
        return _coerce_tuple(value, args, key, wrong_type)
    if tp is dict or origin is dict:
        if not isinstance(value, Mapping):
            raise wrong_type()
        for name in value:
            if not isinstance(name, str):
                raise _KeyProblem(_join(key, str(name)), f"keys must be strings, got {_describe(name)}", "type")
        return _plain(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if value is None:  # an empty section, e.g. "validation:" with everything commented out
            value = {}
        if isinstance(value, str) and hasattr(tp, "_from_string"):
            return tp._from_string(value)
        if not isinstance(value, Mapping):
            raise wrong_type()
        return _build(tp, value, key)
    if tp in (bool, int, float, str):
        return _coerce_scalar(value, tp, key, wrong_type)
    raise TypeError(f"unsupported annotation {tp!r} for {key!r}")  # a bug in this module


def _coerce_tuple(value: Any, args: tuple, key: str, wrong_type: Callable[[], Exception]) -> tuple:
    """A list or tuple checked item by item: `Tuple[X, ...]` any length, `Tuple[X, Y]` exactly two."""
    if not isinstance(value, (list, tuple)):
        raise wrong_type()
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
    if len(value) != len(args):
        raise _KeyProblem(key, f"expected a list of {len(args)} values, got {_describe(value)}")
    return tuple(_coerce(v, t, f"{key}[{i}]") for i, (v, t) in enumerate(zip(value, args)))


def _coerce_scalar(value: Any, tp: type, key: str, wrong_type: Callable[[], Exception]) -> Any:
    """A bool, int (integral floats accepted), finite float (numeric strings accepted) or str."""
    if tp is bool:
        if not isinstance(value, bool):
            raise wrong_type()
        return value
    if tp is int:
        # 1e5 steps is common enough in YAML to accept integral floats.
        if isinstance(value, float) and not isinstance(value, bool) and value.is_integer():
            return int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise wrong_type()
        return value
    if tp is float:
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            value = float(value)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise wrong_type()
        if not math.isfinite(value):
            raise _KeyProblem(key, f"must be a finite number, got {value!r}")
        return float(value)
    if not isinstance(value, str):  # tp is str
        raise wrong_type()
    return value


def _build(cls: type, data: Mapping, key: str = "") -> Any:
    """Builds the dataclass `cls` from a mapping, with errors naming the dotted key."""
    if not isinstance(data, Mapping):
        raise _KeyProblem(key, f"expected mapping, got {_describe(data)}", "type")
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    try:
        for name in data:
            if name not in names:
                raise _KeyProblem(str(name), kind="unknown", options=names)
        for f in dataclasses.fields(cls):
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if required and f.name not in data:
                raise _KeyProblem(f.name, "required", "missing")
        return cls(**data)
    except _KeyProblem as problem:
        raise problem.within(key) from None


class _Section:
    """Coerces every field to its annotated type, then runs the section's own value checks."""

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _coerce(getattr(self, f.name), hints[f.name], f.name))
        self._check()

    def _check(self) -> None:
        """Raises `_KeyProblem` for invalid values; overridden by sections that have rules."""

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)


# --------------------------------------------------------------------------- dataset


@dataclass(frozen=True)
class TfdsSource(_Section):
    """A tensorflow-datasets dataset, read from `data_dir` (no download on offline machines)."""

    name: str
    split: str = "train"
    data_dir: Optional[str] = None
    image_key: str = "image"

    def _check(self) -> None:
        _check(bool(self.name), "name", "must be a non-empty dataset name")


@dataclass(frozen=True)
class ImageFolderSource(_Section):
    """A `tfds.folder_dataset.ImageFolder` tree: `root_dir/split/label/image.png`."""

    root_dir: str
    split: str = "train"


@dataclass(frozen=True)
class PairedSource(_Section):
    """Two directories of the same scenes with independent noise, for Noise2Noise on real noise
    (Lehtinen et al., ICML 2018).

    Files are matched by their path under the directory without the extension; a file without
    a partner, or a pair of different sizes, is an error. The input is a crop of `noisy_a`, the
    target the same crop of `noisy_b` (swapped for a random half of the patches when
    `train.target: noisy`; with `train.target: clean`, `noisy_b` is the clean reference). No
    synthetic corruption is added to a paired source.
    """

    noisy_a: str
    noisy_b: str

    def _check(self) -> None:
        for name in ("noisy_a", "noisy_b"):
            _check(getattr(self, name) != "", name, "must be a non-empty path")
        _check(self.noisy_a != self.noisy_b, "noisy_b",
               f"must differ from noisy_a ({self.noisy_a!r}): a pair needs two independently noisy copies",
               related=("noisy_a",))


SOURCE_KINDS = ("directory", "tfds", "image_folder", "paired")


@dataclass(frozen=True)
class InputSource(_Section):
    """One training source: exactly one of the four kinds, plus its sampling weight.

    A plain string in `dataset.inputs` is a directory.
    """

    directory: Optional[str] = None
    tfds: Optional[TfdsSource] = None
    image_folder: Optional[ImageFolderSource] = None
    paired: Optional[PairedSource] = None
    weight: float = 1.0

    _OMIT_NONE: ClassVar[bool] = True
    _TYPE_NAME: ClassVar[str] = "source (a directory, or a mapping)"

    @classmethod
    def _from_string(cls, value: str) -> "InputSource":
        return cls(directory=value)

    @property
    def kind(self) -> str:
        """Which source this is: 'directory', 'tfds', 'image_folder' or 'paired'."""
        return next(k for k in SOURCE_KINDS if getattr(self, k) is not None)

    def _check(self) -> None:
        given = [k for k in SOURCE_KINDS if getattr(self, k) is not None]
        _check(
            len(given) == 1,
            "",
            f"a source needs exactly one of {allowed(SOURCE_KINDS)}, got {len(given)}"
            + (f" ({allowed(given)})" if given else ""),
        )
        _check(self.directory != "", "directory", "must be a non-empty path")
        _check(self.weight > 0.0, "weight", f"must be > 0, got {self.weight!r}")


@dataclass(frozen=True)
class DatasetConfig(_Section):
    """Where the clean training images come from and how patches are cut from them."""

    inputs: Tuple[InputSource, ...] = ()
    color: Literal["gray", "rgb"] = "gray"
    patch_size: int = 64
    batch_size: int = 16
    patches_per_image: int = 4
    small_images: Literal["pad", "skip"] = "pad"
    flips: bool = True
    rotations: bool = True
    shuffle_buffer: int = 256
    cache: bool = True

    @property
    def channels(self) -> int:
        return 3 if self.color == "rgb" else 1

    def _check(self) -> None:
        for name in ("patch_size", "batch_size", "patches_per_image"):
            _check_at_least(self, name, 1)
        _check_at_least(self, "shuffle_buffer", 0)


# ------------------------------------------------------------------------ corruption


SSIM_WINDOW = 11  # the window of tf.image.ssim, which loss.ssim_weight uses
LOG_UNIFORM_FLOOR = 0.5  # lowest sigma of an additive log-uniform draw (0-255 scale)
MAX_SEED = 2**32 - 1  # TensorFlow's global seed is 32-bit
MAX_STEPS = 10**12  # step counters are int64; far above any training


@dataclass(frozen=True)
class _NoiseConfig(_Section):
    probability: float = 1.0
    sigma: Optional[Tuple[float, float]] = None
    sigma_values: Optional[Tuple[float, ...]] = None
    per_channel: bool = True
    log_uniform: float = 0.0

    DEFAULT_SIGMA: ClassVar[Tuple[float, float]] = (0.0, 75.0)
    LOG_UNIFORM_FLOOR: ClassVar[float] = LOG_UNIFORM_FLOOR  # in the units of `sigma`

    def _check(self) -> None:
        _check_probability(self)
        _check(
            self.sigma is None or self.sigma_values is None,
            "sigma_values",
            "give either 'sigma' (a [lo, hi] range) or 'sigma_values' (a list), not both",
            related=("sigma",),
        )
        if self.sigma is None and self.sigma_values is None:
            self._set("sigma", tuple(self.DEFAULT_SIGMA))
        if self.sigma is not None:
            lo, hi = self.sigma
            _check(0.0 <= lo <= hi, "sigma", f"must be a range [lo, hi] with 0 <= lo <= hi, got {list(self.sigma)}")
        if self.sigma_values is not None:
            _check(len(self.sigma_values) > 0, "sigma_values", "must list at least one value")
            for i, value in enumerate(self.sigma_values):
                _check(value >= 0.0, f"sigma_values[{i}]", f"must be >= 0, got {value!r}")
        _check(0.0 <= self.log_uniform <= 1.0, "log_uniform", f"must be a fraction in [0, 1], got {self.log_uniform!r}")
        _check(self.log_uniform == 0.0 or self.sigma_values is None, "log_uniform",
               "applies to a 'sigma' range, not to 'sigma_values'", related=("sigma_values",))
        _check(self.log_uniform == 0.0 or self.sigma[1] > self.LOG_UNIFORM_FLOOR, "log_uniform",
               f"needs a sigma range reaching above {self.LOG_UNIFORM_FLOOR:g}, got {list(self.sigma or [])}",
               related=("sigma",))


@dataclass(frozen=True)
class AdditiveNoiseConfig(_NoiseConfig):
    """Gaussian noise `x + sigma * n`, sigma on the 0-255 scale, drawn per image from the
    `sigma` range or uniformly from `sigma_values` (mutually exclusive).

    `log_uniform` is the fraction of images whose sigma is drawn log-uniformly over the range
    (its low end raised to `LOG_UNIFORM_FLOOR`) instead of uniformly: the scale-invariant
    prior, which gives low noise levels the share a bias-free (scale-equivariant) network
    sees them with, where a uniform draw over [0, 75] leaves 1 in 25 images under sigma 3."""


@dataclass(frozen=True)
class MultiplicativeNoiseConfig(_NoiseConfig):
    """Gaussian noise of mean 1, `x * (1 + sigma * n)`, sigma relative, drawn per image.

    `log_uniform` as for additive noise; its floor is relative too, `LOG_UNIFORM_FLOOR / 255`
    (the additive floor on a full-scale pixel)."""

    probability: float = 0.0

    DEFAULT_SIGMA: ClassVar[Tuple[float, float]] = (0.0, 0.1)
    LOG_UNIFORM_FLOOR: ClassVar[float] = LOG_UNIFORM_FLOOR / 255.0


@dataclass(frozen=True)
class SubsamplingConfig(_Section):
    """Average-pool by a factor drawn per image from `factors`, then resize back (bilinear)."""

    probability: float = 0.0
    factors: Tuple[int, ...] = (2, 4)

    def _check(self) -> None:
        _check_probability(self)
        _check(len(self.factors) > 0, "factors", "must list at least one factor")
        for i, factor in enumerate(self.factors):
            _check(factor >= 1, f"factors[{i}]", f"must be >= 1, got {factor!r}")


@dataclass(frozen=True)
class BlurConfig(_Section):
    """A small Gaussian blur of the noisy image, which makes the noise spatially correlated."""

    probability: float = 0.0
    sigma: float = 0.5

    def _check(self) -> None:
        _check_probability(self)
        _check(0.0 < self.sigma <= 10.0, "sigma", f"must be in (0, 10] pixels, got {self.sigma!r}")


@dataclass(frozen=True)
class CorruptionConfig(_Section):
    """In-graph synthesis of the noisy input from a clean patch (see bfcnn.training.corruption)."""

    additive: AdditiveNoiseConfig = field(default_factory=AdditiveNoiseConfig)
    multiplicative: MultiplicativeNoiseConfig = field(default_factory=MultiplicativeNoiseConfig)
    subsampling: SubsamplingConfig = field(default_factory=SubsamplingConfig)
    blur: BlurConfig = field(default_factory=BlurConfig)
    quantize: bool = False
    clip: bool = False


# ------------------------------------------------------------------- loss, optimizer


@dataclass(frozen=True)
class LossConfig(_Section):
    """The training loss; `hinge` is the MAE hinge (errors below it cost nothing).

    `normalize: noise` divides each image's loss by the same loss of its noisy input plus
    that of a constant error `noise_floor` beyond the hinge (an error of `noise_floor +
    hinge` on the 0-255 scale, so the sum is never 0), so every noise level
    weighs alike: a blind model then learns to leave nearly clean images alone instead of
    spending its capacity on the loudest noise only.
    """

    type: Literal["mse", "mae", "charbonnier"] = "mse"
    hinge: float = 0.0
    charbonnier_epsilon: float = 1e-3
    ssim_weight: float = 0.0
    scale_weights: Optional[Tuple[float, ...]] = None
    normalize: Literal["none", "noise"] = "none"
    noise_floor: float = 1.0

    def _check(self) -> None:
        _check_at_least(self, "hinge", 0.0)
        _check(self.hinge == 0.0 or self.type == "mae", "hinge",
               f"applies to type: mae only (type is {self.type!r}); set it to 0 or use type: mae",
               related=("type",))
        _check(self.noise_floor > 0.0, "noise_floor", f"must be > 0, got {self.noise_floor!r}")
        _check(self.charbonnier_epsilon > 0.0, "charbonnier_epsilon", f"must be > 0, got {self.charbonnier_epsilon!r}")
        _check_at_least(self, "ssim_weight", 0.0)
        if self.scale_weights is not None:
            _check(len(self.scale_weights) > 0, "scale_weights", "must list at least one weight, or be null")
            for i, weight in enumerate(self.scale_weights):
                _check(weight >= 0.0, f"scale_weights[{i}]", f"must be >= 0, got {weight!r}")


@dataclass(frozen=True)
class ScheduleConfig(_Section):
    """The learning-rate schedule, as multipliers of `optimizer.learning_rate`, after a linear
    warm-up of `warmup_steps`. `step`: `values` (len(boundaries) + 1 multipliers) between the
    `boundaries`; `cosine`: decays to `alpha`; `cosine_restarts` uses `first_decay_steps`
    (default a quarter of the steps after the warm-up: with `t_mul: 2` the run ends part-way
    through its third cycle, not at its low), `t_mul`, `m_mul`; `exponential`:
    `decay_rate ** (step / decay_steps)`. Steps count from the end of the warm-up. A key that
    the chosen type does not read (`USED_BY`) must stay at its default."""

    type: Literal["constant", "cosine", "cosine_restarts", "step", "exponential"] = "cosine"
    warmup_steps: int = 0
    alpha: float = 0.01
    first_decay_steps: Optional[int] = None
    t_mul: float = 2.0
    m_mul: float = 1.0
    boundaries: Tuple[int, ...] = ()
    values: Tuple[float, ...] = ()
    decay_rate: float = 0.5
    decay_steps: int = 1000

    # The types that read each key (bfcnn.training.optim.learning_rate_schedule); set away from
    # its default under another type, a key is refused rather than ignored.
    USED_BY: ClassVar[Mapping[str, Tuple[str, ...]]] = {
        "alpha": ("cosine", "cosine_restarts"),
        "first_decay_steps": ("cosine_restarts",),
        "t_mul": ("cosine_restarts",),
        "m_mul": ("cosine_restarts",),
        "boundaries": ("step",),
        "values": ("step",),
        "decay_rate": ("exponential",),
        "decay_steps": ("exponential",),
    }

    def _check(self) -> None:
        for name, kinds in self.USED_BY.items():
            _check_applies(self, name, "type", kinds)
        _check_at_least(self, "warmup_steps", 0)
        _check(0.0 <= self.alpha <= 1.0, "alpha", f"must be in [0, 1], got {self.alpha!r}")
        _check_optional_at_least(self, "first_decay_steps", 1)
        for name in ("t_mul", "m_mul", "decay_rate"):
            _check(getattr(self, name) > 0.0, name, f"must be > 0, got {getattr(self, name)!r}")
        _check_at_least(self, "decay_steps", 1)
        for i, boundary in enumerate(self.boundaries):
            previous = self.boundaries[i - 1] if i else 0
            _check(boundary > previous, f"boundaries[{i}]", f"must be increasing and > 0, got {list(self.boundaries)}")
        for i, value in enumerate(self.values):
            _check(value >= 0.0, f"values[{i}]", f"must be >= 0, got {value!r}")
        if self.type == "step":
            _check(
                len(self.values) == len(self.boundaries) + 1,
                "values",
                f"a step schedule needs len(boundaries) + 1 = {len(self.boundaries) + 1} values, "
                f"got {len(self.values)}",
                related=("type", "boundaries"),
            )


@dataclass(frozen=True)
class OptimizerConfig(_Section):
    """A Keras optimizer; `weight_decay` applies to `adamw` only (another type refuses it unless
    it is 0 or the default), `clipnorm` clips the global norm of all gradients together (Keras's
    `global_clipnorm`)."""

    type: Literal["adam", "adamw", "rmsprop"] = "adam"
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    clipnorm: Optional[float] = None
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)

    def _check(self) -> None:
        _check(self.learning_rate > 0.0, "learning_rate", f"must be > 0, got {self.learning_rate!r}")
        _check_at_least(self, "weight_decay", 0.0)
        _check_applies(self, "weight_decay", "type", ("adamw",), also_unset=(0.0,))
        if self.clipnorm is not None:
            _check(self.clipnorm > 0.0, "clipnorm", f"must be > 0 or null, got {self.clipnorm!r}")


# ------------------------------------------------------- train, validation, distribution


@dataclass(frozen=True)
class TrainConfig(_Section):
    """The run: `steps` optimizer steps in total, checkpoints, logging, precision.

    `image_summaries_every: 0` turns image summaries off. `init_from` (a `.keras` file)
    starts a new run from existing weights, e.g. to continue a zoo model in a later session;
    a run that already has checkpoints resumes from them instead.
    """

    steps: int = 10000
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    seed: int = 0
    precision: Literal["float32", "mixed_bfloat16", "mixed_float16"] = "float32"
    on_nan: Literal["stop", "skip"] = "stop"
    log_every: int = 50
    image_summaries_every: int = 1000
    target: Literal["clean", "noisy"] = "clean"
    tensorboard: bool = True
    init_from: Optional[str] = None

    def _check(self) -> None:
        for name in ("steps", "checkpoint_every", "keep_checkpoints", "log_every"):
            _check_at_least(self, name, 1)
        for name in ("seed", "image_summaries_every"):
            _check_at_least(self, name, 0)
        _check(self.seed <= MAX_SEED, "seed", f"must be <= {MAX_SEED} (2**32 - 1), got {self.seed!r}")
        for name in ("steps", "checkpoint_every", "log_every", "image_summaries_every"):
            _check(getattr(self, name) <= MAX_STEPS, name, f"must be <= {MAX_STEPS:.0e}, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class ValidationConfig(_Section):
    """Validation on clean images with fixed-seed noise; `directory: null` turns it off."""

    directory: Optional[str] = None
    sigmas: Tuple[float, ...] = (15.0, 25.0, 50.0)
    every: int = 500
    max_images: Optional[int] = None
    max_size: Optional[int] = 256
    seed: int = 0

    def _check(self) -> None:
        _check(len(self.sigmas) > 0, "sigmas", "must list at least one noise level")
        for i, sigma in enumerate(self.sigmas):
            _check(sigma >= 0.0, f"sigmas[{i}]", f"must be >= 0, got {sigma!r}")
        _check_at_least(self, "every", 1)
        _check_optional_at_least(self, "max_images", 1)
        _check_optional_at_least(self, "max_size", 1)
        _check_at_least(self, "seed", 0)


@dataclass(frozen=True)
class DistributionConfig(_Section):
    """The tf.distribute strategy; `devices` is the number of logical CPU devices that
    `mirrored` creates when there is no GPU (another strategy refuses it)."""

    strategy: Literal["default", "mirrored", "multi_worker"] = "default"
    devices: Optional[int] = None

    def _check(self) -> None:
        _check_optional_at_least(self, "devices", 1)
        _check_applies(self, "devices", "strategy", ("mirrored",))


# ------------------------------------------------------------------------------ root


@dataclass(frozen=True)
class PipelineConfig(_Section):
    """A whole pipeline config. `model` is a free dict with `type` and `channels` (1 or 3;
    when absent, taken from `dataset.color`); its other keys go to `bfcnn.build_model`."""

    model: Dict[str, Any]
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    corruption: CorruptionConfig = field(default_factory=CorruptionConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    distribution: DistributionConfig = field(default_factory=DistributionConfig)

    def _check(self) -> None:
        model = self.model
        if "type" not in model:
            raise _KeyProblem("model.type", "required (e.g. 'resnet')", "missing")
        _check(isinstance(model["type"], str) and model["type"] != "", "model.type",
               f"must be a non-empty model type name, got {_describe(model['type'])}")
        model.setdefault("channels", self.dataset.channels)
        channels = model["channels"]
        _check(
            type(channels) is int and channels in (1, 3), "model.channels", f"must be 1 or 3, got {_describe(channels)}"
        )
        _check(
            channels == self.dataset.channels,
            "model.channels",
            f"is {channels} but dataset.color {self.dataset.color!r} has {self.dataset.channels} channel(s)",
            related=("dataset.color",),
        )
        warmup = self.optimizer.schedule.warmup_steps
        _check(warmup <= self.train.steps, "optimizer.schedule.warmup_steps",
               f"must be <= train.steps ({self.train.steps}), got {warmup}", related=("train.steps",))
        # tf.image.ssim uses an 11x11 window; smaller patches fail inside TensorFlow
        _check(self.loss.ssim_weight == 0.0 or self.dataset.patch_size >= SSIM_WINDOW, "loss.ssim_weight",
               f"needs dataset.patch_size >= {SSIM_WINDOW} (the SSIM window), got patch_size "
               f"{self.dataset.patch_size}", related=("dataset.patch_size",))


@functools.lru_cache(maxsize=None)
def _schema_keys_of(cls: type, prefix: str = "") -> Tuple[str, ...]:
    keys = []
    for f in dataclasses.fields(cls):
        name = _join(prefix, f.name)
        keys.append(name)
        tp = _hints(cls)[f.name]
        if typing.get_origin(tp) is Union:
            tp = next(a for a in typing.get_args(tp) if a is not type(None))
        if dataclasses.is_dataclass(tp):
            keys.extend(_schema_keys_of(tp, name))
    return tuple(keys)


def _schema_keys() -> Tuple[str, ...]:
    """Every dotted key of the schema, except those inside lists and the free `model` dict."""
    return _schema_keys_of(PipelineConfig)


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
