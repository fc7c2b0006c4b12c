"""The typed schema of a pipeline config: `_Section`, the frozen dataclass of every section with its
defaults and value rules, `PipelineConfig` at the root, and the list of every dotted key.
"""

import dataclasses
import functools
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, Literal, Optional, Tuple, Union

from bfcnn.config.checks import (_KeyProblem, _check, _check_applies, _check_at_least, _check_optional_at_least,
                                 _check_probability, _coerce, _describe, _hints, _join)
from bfcnn.errors import allowed


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
class TextureConfig(_Section):
    """Non-white texture added to the clean patch before the noise, so it stays in the target.

    A unit-variance Gaussian field that is not white, of std drawn per image from the `sigma`
    range on the 0-255 scale: structure a denoiser of white noise is to keep (see
    bfcnn.training.corruption.add_texture). `kind`: `directional`, lag-1 correlation +0.5 or
    -0.5 along one direction (horizontal, vertical or a diagonal, drawn per image); `grain`,
    white noise smoothed by a 3x3 binomial filter (lag-1 correlation 2/3 along rows and
    columns, like film grain); `both`, one of the two drawn per image. `max_noise_sigma`:
    only images whose additive noise std (the level the corruption draws for them) is at
    most this get texture; None: any level."""

    probability: float = 0.0
    sigma: Tuple[float, float] = (0.0, 4.0)
    max_noise_sigma: Optional[float] = None
    kind: Literal["directional", "grain", "both"] = "directional"

    def _check(self) -> None:
        _check_probability(self)
        lo, hi = self.sigma
        _check(0.0 <= lo <= hi, "sigma", f"must be a range [lo, hi] with 0 <= lo <= hi, got {list(self.sigma)}")
        _check(self.max_noise_sigma is None or self.max_noise_sigma >= 0.0, "max_noise_sigma",
               f"must be a noise std >= 0 on the 0-255 scale, or null for any level, got {self.max_noise_sigma!r}")


@dataclass(frozen=True)
class CorruptionConfig(_Section):
    """In-graph synthesis of the noisy input from a clean patch (see bfcnn.training.corruption)."""

    additive: AdditiveNoiseConfig = field(default_factory=AdditiveNoiseConfig)
    multiplicative: MultiplicativeNoiseConfig = field(default_factory=MultiplicativeNoiseConfig)
    subsampling: SubsamplingConfig = field(default_factory=SubsamplingConfig)
    blur: BlurConfig = field(default_factory=BlurConfig)
    texture: TextureConfig = field(default_factory=TextureConfig)
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
