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

Only the standard library and PyYAML are imported by this package, so a config is checked
before TensorFlow starts. The `model` section stays a free dict: its keys other than `type`
and `channels` are checked by `bfcnn.build_model`.

The parts live in small modules: `schema` (the section dataclasses, their defaults and value
rules, `PipelineConfig`), `checks` (the key errors, value checks and type coercion the schema
is built on) and `loading` (YAML parsing, `--set` overrides, path resolution and dumping).
"""

from bfcnn.config.loading import config_from_dict, config_to_dict, dump_config, load_config
from bfcnn.config.schema import (
    LOG_UNIFORM_FLOOR,
    MAX_SEED,
    MAX_STEPS,
    SOURCE_KINDS,
    SSIM_WINDOW,
    AdditiveNoiseConfig,
    BlurConfig,
    CorruptionConfig,
    DatasetConfig,
    DistributionConfig,
    ImageFolderSource,
    InputSource,
    LossConfig,
    MultiplicativeNoiseConfig,
    OptimizerConfig,
    PairedSource,
    PipelineConfig,
    ScheduleConfig,
    SubsamplingConfig,
    TextureConfig,
    TfdsSource,
    TrainConfig,
    ValidationConfig,
)
from bfcnn.errors import ConfigError

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
    "TextureConfig",
    "TfdsSource",
    "TrainConfig",
    "ValidationConfig",
    "config_from_dict",
    "config_to_dict",
    "dump_config",
    "load_config",
]
