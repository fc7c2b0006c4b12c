"""The typed pipeline config: defaults, strict loading, overrides, round trips, pipelines/*.yaml."""

import ast
import dataclasses
import os
import sys
from pathlib import Path

import pytest

from bfcnn import config as config_module
from bfcnn.config import (
    CorruptionConfig,
    PipelineConfig,
    config_from_dict,
    config_to_dict,
    dump_config,
    load_config,
    loading,
)
from bfcnn.errors import ConfigError

PIPELINES = sorted((Path(__file__).resolve().parent.parent / "pipelines").glob("*.yaml"))

MINIMAL = {"model": {"type": "resnet"}}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def with_section(section: str, values: dict) -> dict:
    return {**MINIMAL, section: values}


def test_defaults():
    config = config_from_dict(MINIMAL)
    assert config.model == {"type": "resnet", "channels": 1}
    assert config.dataset.inputs == () and config.dataset.color == "gray"
    assert (config.dataset.patch_size, config.dataset.batch_size, config.dataset.patches_per_image) == (64, 16, 4)
    assert config.corruption.additive.probability == 1.0 and config.corruption.additive.sigma == (0.0, 75.0)
    assert config.corruption.multiplicative.probability == 0.0 and config.corruption.multiplicative.sigma == (0.0, 0.1)
    assert config.corruption.subsampling.factors == (2, 4) and config.corruption.blur.sigma == 0.5
    assert config.loss.type == "mse" and config.loss.charbonnier_epsilon == 1e-3
    assert config.optimizer.type == "adam" and config.optimizer.learning_rate == 1e-3
    assert config.optimizer.schedule.type == "cosine" and config.optimizer.schedule.boundaries == ()
    assert (config.train.steps, config.train.checkpoint_every, config.train.precision) == (10000, 500, "float32")
    assert config.validation.sigmas == (15.0, 25.0, 50.0) and config.validation.max_size == 256
    assert config.distribution.strategy == "default"
    assert config == PipelineConfig(model={"type": "resnet"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.train.steps = 5  # type: ignore[misc]
    assert config_from_dict({**MINIMAL, "dataset": {"color": "rgb"}}).model["channels"] == 3


def test_no_mutable_defaults():
    def walk(cls):
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else None
            assert not isinstance(default, (list, dict, set)), f"{cls.__name__}.{f.name}"
            if f.default_factory is not dataclasses.MISSING:
                value = f.default_factory()
                assert dataclasses.is_dataclass(value), f"{cls.__name__}.{f.name}"
                walk(type(value))

    walk(PipelineConfig)


def test_config_module_imports_only_the_standard_library_and_yaml():
    paths = sorted(Path(config_module.__file__).parent.glob("*.py")) + [Path(sys.modules["bfcnn.errors"].__file__)]
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                ours = name in ("yaml", "bfcnn.errors") or name.startswith("bfcnn.config.")
                assert top in sys.stdlib_module_names or ours, name


def test_unknown_key_names_the_dotted_key_the_file_and_a_close_match(tmp_path):
    path = write(tmp_path / "pipelines" / "x.yaml", "model: {type: resnet}\ntrain:\n  stepz: 10\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value) == f"unknown key 'train.stepz' in {path}, did you mean 'train.steps'?"

    path = write(tmp_path / "y.yaml", "model: {type: resnet}\ntrain: {learing_rate: 1e-4}\n")
    with pytest.raises(ConfigError, match=r"'train.learing_rate' in .*y.yaml, did you mean 'optimizer.learning_rate'\?"):
        load_config(path)


def test_unknown_key_without_a_close_match_lists_the_allowed_keys():
    with pytest.raises(ConfigError, match=r"unknown key 'loss.xyzzy' in <dict>; allowed keys: .*'hinge'.*'type'"):
        config_from_dict(with_section("loss", {"xyzzy": 1}))
    hint = r"unknown key 'dataset.inputs\[0\].tfds.nme'.*did you mean 'dataset.inputs\[0\].tfds.name'"
    with pytest.raises(ConfigError, match=hint):
        config_from_dict(with_section("dataset", {"inputs": [{"tfds": {"nme": "div2k"}}]}))


@pytest.mark.parametrize(
    "section, values, message",
    [
        ("train", {"steps": "many"}, r"wrong type for 'train.steps' in <dict>: expected int, got str 'many'"),
        ("train", {"steps": 2.5}, r"'train.steps'.*expected int, got float 2.5"),
        ("dataset", {"batch_size": True}, r"'dataset.batch_size'.*expected int, got bool True"),
        ("train", {"tensorboard": "yes"}, r"'train.tensorboard'.*expected bool, got str 'yes'"),
        ("optimizer", {"learning_rate": "fast"}, r"'optimizer.learning_rate'.*expected float, got str 'fast'"),
        ("validation", {"sigmas": 25}, r"'validation.sigmas'.*expected list of float, got int 25"),
        ("corruption", {"additive": {"sigma": [0, "x"]}}, r"'corruption.additive.sigma\[1\]'.*expected float"),
        ("dataset", {"inputs": [3]}, r"'dataset.inputs\[0\]'.*expected source"),
        ("loss", "mse", r"wrong type for 'loss'.*expected mapping, got str 'mse'"),
    ],
)
def test_wrong_type_names_the_key_the_expected_type_and_the_value(section, values, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(with_section(section, values))


def test_int_is_accepted_for_a_float_field():
    config = config_from_dict(with_section("optimizer", {"learning_rate": 1, "clipnorm": 2}))
    assert config.optimizer.learning_rate == 1.0 and isinstance(config.optimizer.learning_rate, float)


@pytest.mark.parametrize(
    "section, values, message",
    [
        (
            "train",
            {"precision": "mixed_bf16"},
            r"'train.precision'.*one of 'float32', 'mixed_bfloat16', 'mixed_float16'.*did you mean 'mixed_bfloat16'",
        ),
        ("loss", {"type": "l1"}, r"'loss.type'.*one of 'charbonnier', 'mae', 'mse', got 'l1'"),
        ("dataset", {"color": "grey"}, r"'dataset.color'.*one of 'gray', 'rgb'"),
        ("distribution", {"strategy": "tpu"}, r"'distribution.strategy'.*'default', 'mirrored', 'multi_worker'"),
    ],
)
def test_bad_enum_names_the_allowed_values(section, values, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(with_section(section, values))


@pytest.mark.parametrize(
    "data, message",
    [
        (with_section("train", {"steps": -5}), r"invalid value for 'train.steps'.*>= 1, got -5"),
        (with_section("corruption", {"additive": {"probability": 1.5}}), r"'corruption.additive.probability'.*\[0, 1\]"),
        (with_section("corruption", {"blur": {"probability": -0.1}}), r"'corruption.blur.probability'.*\[0, 1\]"),
        (with_section("corruption", {"additive": {"sigma": [50, 10]}}), r"'corruption.additive.sigma'.*lo <= hi"),
        (with_section("corruption", {"additive": {"sigma": [0, 10], "sigma_values": [5]}}), r"not both"),
        (with_section("corruption", {"additive": {"log_uniform": 1.5}}), r"'corruption.additive.log_uniform'.*\[0, 1\]"),
        (with_section("corruption", {"additive": {"sigma_values": [5], "log_uniform": 0.5}}), r"'sigma' range"),
        (with_section("optimizer", {"schedule": {"type": "step", "boundaries": [100]}}), r"len\(boundaries\) \+ 1 = 2"),
        (
            with_section("dataset", {"inputs": [{"directory": "a", "paired": {"noisy_a": "x", "noisy_b": "y"}}]}),
            r"'dataset.inputs\[0\]'.*exactly one of",
        ),
        (with_section("dataset", {"inputs": [{"tfds": {"split": "train"}}]}), r"missing key 'dataset.inputs\[0\].tfds.name'"),
        ({**MINIMAL, "dataset": {"color": "rgb"}, "model": {"type": "resnet", "channels": 1}}, r"'model.channels'.*rgb"),
        ({"model": {"channels": 1}}, r"missing key 'model.type'"),
        (with_section("optimizer", {"learning_rate": float("inf")}), r"'optimizer.learning_rate'.*finite"),
    ],
)
def test_invalid_values_are_named(data, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data)


def test_training_requires_inputs():
    assert config_from_dict(MINIMAL).dataset.inputs == ()
    with pytest.raises(ConfigError, match=r"missing key 'dataset.inputs'"):
        config_from_dict(MINIMAL, require_inputs=True)


def test_scientific_notation_loads_as_float(tmp_path):
    path = write(
        tmp_path / "x.yaml",
        "model: {type: resnet, epsilon: 1e-4}\n"
        "optimizer: {type: adamw, learning_rate: 1e-4, weight_decay: 5E-5}\n"
        "loss: {type: mae, charbonnier_epsilon: 1.0e-6, hinge: .5e1}\n"
        "train: {steps: 1e3}\n",
    )
    config = load_config(path)
    assert config.optimizer.learning_rate == 1e-4 and config.optimizer.weight_decay == 5e-5
    assert config.loss.charbonnier_epsilon == 1e-6 and config.loss.hinge == 5.0
    assert config.train.steps == 1000 and isinstance(config.train.steps, int)
    assert config.model["epsilon"] == 1e-4  # the free model section gets floats too
    assert config_from_dict(with_section("optimizer", {"learning_rate": "1e-4"})).optimizer.learning_rate == 1e-4


def test_overrides(tmp_path):
    path = write(
        tmp_path / "x.yaml",
        "model: {type: resnet}\ndataset:\n  inputs: [a, {directory: b}]\ntrain: {steps: 100}\nvalidation:\n",
    )
    config = load_config(
        path,
        [
            "train.steps=2000",
            "optimizer.learning_rate=1e-4",
            "validation.sigmas=[10, 30]",
            "dataset.inputs.1.weight=3",
            "model.blocks=8",
            "corruption.additive.sigma_values=[5, 25]",
            "corruption.additive.sigma=null",
            "validation.directory=val = images",
        ],
    )
    assert config.train.steps == 2000 and config.optimizer.learning_rate == 1e-4
    assert config.validation.sigmas == (10.0, 30.0) and config.validation.directory == "val = images"
    assert config.dataset.inputs[1].weight == 3.0 and config.model["blocks"] == 8
    assert config.corruption.additive.sigma is None and config.corruption.additive.sigma_values == (5.0, 25.0)
    with pytest.raises(ConfigError, match=r"unknown key 'train.stepz' in --set 'train.stepz=1', did you mean 'train.steps'"):
        load_config(path, ["train.stepz=1"])
    with pytest.raises(ConfigError, match=r"'train.steps' in --set 'train.steps=lots': expected int"):
        load_config(path, ["train.steps=lots"])
    with pytest.raises(ConfigError, match=r"invalid override 'train.steps'"):
        load_config(path, ["train.steps"])
    with pytest.raises(ConfigError, match=r"'dataset.inputs' has no item 5"):
        load_config(path, ["dataset.inputs.5.weight=2"])


@pytest.mark.parametrize("override, dotted", [
    ("dataset.inputs[0].directory=/tmp/y", "dataset.inputs.0.directory"),
    ("dataset.inputs [ 1 ].weight=2", "dataset.inputs.1.weight"),
    ("validation.sigmas[0]=5", "validation.sigmas.0"),
])
def test_a_bracket_index_in_a_set_says_how_list_items_are_addressed(tmp_path, override, dotted):
    """It was "unknown key 'dataset.inputs[0]' in x.yaml, did you mean 'dataset.inputs'?": the
    file blamed for the --set, and a suggestion that does not help."""
    path = write(tmp_path / "x.yaml", "model: {type: resnet}\ndataset: {inputs: [{directory: a}, {directory: b}]}\n"
                                      "validation: {sigmas: [1]}\n")
    with pytest.raises(ConfigError) as error:
        load_config(path, [override])
    assert str(error.value) == (f"invalid override --set {override!r}: list items are addressed by their index: "
                                f"{dotted}")
    assert load_config(path, [f"{dotted}={override.partition('=')[2]}"])  # the way it names works


def test_a_problem_a_set_caused_in_another_key_names_the_set(tmp_path):
    path = write(tmp_path / "x.yaml", "model: {type: resnet}\noptimizer: {schedule: {warmup_steps: 20}}\n")
    with pytest.raises(ConfigError, match=r"'optimizer.schedule.warmup_steps' in \S*x.yaml with --set "
                                          r"'train.steps=2': must be <= train.steps \(2\), got 20"):
        load_config(path, ["train.steps=2"])
    with pytest.raises(ConfigError, match=r"'optimizer.schedule.warmup_steps' in --set "
                                          r"'optimizer.schedule.warmup_steps=1000000000'"):
        load_config(path, ["optimizer.schedule.warmup_steps=1000000000"])


def test_a_step_schedule_made_by_a_set_names_the_set(tmp_path):
    path = write(tmp_path / "x.yaml", "model: {type: resnet}\n")
    with pytest.raises(ConfigError, match=r"'optimizer.schedule.values' in \S*x.yaml with --set "
                                          r"'optimizer.schedule.type=step': a step schedule needs"):
        load_config(path, ["optimizer.schedule.type=step"])


@pytest.mark.parametrize("override, message", [
    ("train.seed=4294967296", r"'train.seed'.*must be <= 4294967295 \(2\*\*32 - 1\), got 4294967296"),
    ("train.steps=10000000000000000000", r"'train.steps'.*must be <= 1e\+12"),
])
def test_integers_beyond_what_tensorflow_takes_are_refused(tmp_path, override, message):
    path = write(tmp_path / "x.yaml", "model: {type: resnet}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(path, [override])


def test_a_config_that_is_not_text_is_named(tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(20))
    with pytest.raises(ConfigError, match=r"photo.png is not UTF-8 text \(byte 0x89 at position 0\); give a YAML"):
        load_config(path)


def test_override_is_never_evaluated(tmp_path):
    path = write(tmp_path / "x.yaml", "model: {type: resnet}\n")
    with pytest.raises(ConfigError, match=r"'train.steps'.*got str"):
        load_config(path, ["train.steps=__import__('os').getpid()"])
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(path, ["train.steps=!!python/object/apply:os.getpid []"])


def test_round_trip_dict_config_dict():
    data = {
        "model": {"type": "multiscale", "channels": 3, "levels": 3, "filters": [32, 64]},
        "dataset": {
            "inputs": [
                "photos",
                {"tfds": {"name": "div2k", "split": "train[:90%]"}, "weight": 2},
                {"image_folder": {"root_dir": "folder"}},
                {"paired": {"noisy_a": "a", "noisy_b": "b"}, "weight": 0.5},
            ],
            "color": "rgb",
        },
        "corruption": {"additive": {"sigma_values": [5, 15]}, "multiplicative": {"probability": 0.2}, "clip": True},
        "loss": {"type": "mae", "hinge": 0.5, "scale_weights": [1, 0.5]},
        "optimizer": {"type": "adamw", "clipnorm": 1.0, "schedule": {"type": "step", "boundaries": [10], "values": [1, 0.1]}},
        "train": {"steps": 100, "precision": "mixed_bfloat16"},
        "validation": {"directory": "val", "max_size": None},
        "distribution": {"strategy": "mirrored", "devices": 2},
    }
    config = config_from_dict(data)
    plain = config_to_dict(config)
    assert config_from_dict(plain) == config
    assert config_to_dict(config_from_dict(plain)) == plain
    assert plain["dataset"]["inputs"][0] == {"directory": "photos", "weight": 1.0}
    assert plain["dataset"]["inputs"][1]["tfds"]["split"] == "train[:90%]"
    assert plain["corruption"]["additive"]["sigma_values"] == [5.0, 15.0]
    assert plain["model"]["filters"] == [32, 64]
    assert config.dataset.inputs[2].kind == "image_folder"


def test_dump_and_load(tmp_path):
    config = config_from_dict(
        {**MINIMAL, "optimizer": {"learning_rate": 1e-5}, "corruption": {"additive": {"sigma_values": [25]}}}
    )
    path = tmp_path / "run" / "pipeline.yaml"
    dump_config(config, path)
    assert load_config(path) == config
    assert os.listdir(path.parent) == ["pipeline.yaml"]


def test_dump_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "pipeline.yaml"
    dump_config(config_from_dict(MINIMAL), path)
    before = path.read_text()

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        dump_config(config_from_dict(with_section("train", {"steps": 7})), path)
    assert path.read_text() == before
    assert os.listdir(tmp_path) == ["pipeline.yaml"]


def test_relative_paths_resolve_against_the_config_only_when_they_exist(tmp_path, monkeypatch):
    (tmp_path / "pipelines" / "data").mkdir(parents=True)
    path = write(
        tmp_path / "pipelines" / "x.yaml",
        "model: {type: resnet}\n"
        "dataset: {inputs: [data, elsewhere, {tfds: {name: t, data_dir: data}}]}\n"
        "validation: {directory: data}\n"
        "train: {init_from: data/w.keras}\n",
    )
    (tmp_path / "pipelines" / "data" / "w.keras").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    config = load_config(Path("pipelines") / "x.yaml")
    here = str(tmp_path / "pipelines" / "data")
    assert config.train.init_from == str(tmp_path / "pipelines" / "data" / "w.keras")
    assert config.dataset.inputs[0].directory == here
    assert config.dataset.inputs[1].directory == "elsewhere"
    assert config.dataset.inputs[2].tfds.data_dir == here
    assert config.validation.directory == here
    assert load_config(path, ["validation.directory=data"]).validation.directory == "data"


def test_duplicate_keys_and_bad_files_are_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"duplicate key 'train'.*\n.*dup.yaml"):
        load_config(write(tmp_path / "dup.yaml", "model: {type: a}\ntrain: {steps: 1}\ntrain: {seed: 1}\n"))
    with pytest.raises(ConfigError, match="cannot read pipeline config"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(write(tmp_path / "list.yaml", "- a\n"))
    with pytest.raises(ConfigError, match=r"missing key 'model'"):
        load_config(write(tmp_path / "empty.yaml", ""))


def test_sections_can_be_built_directly_in_python():
    config = CorruptionConfig(additive={"sigma": [10, 20]}, blur={"probability": 0.5})
    assert config.additive.sigma == (10.0, 20.0) and config.blur.probability == 0.5
    with pytest.raises(ConfigError, match=r"'additive.probability'"):
        CorruptionConfig(additive={"probability": 2})


@pytest.mark.parametrize(
    "path", PIPELINES or [pytest.param(None, marks=pytest.mark.skip(reason="no pipelines/*.yaml yet"))],
    ids=lambda p: p.name if p else "none",
)
def test_every_pipeline_loads_through_the_schema(path):
    config = load_config(path, require_inputs=True)
    assert config_from_dict(config_to_dict(config)) == config


def test_a_hinge_is_refused_for_a_loss_it_does_not_apply_to(tmp_path):
    with pytest.raises(ConfigError, match=r"loss.hinge.*type: mae only.*'mse'"):
        config_from_dict({"model": {"type": "resnet"}, "loss": {"hinge": 0.5}})
    path = write(tmp_path / "x.yaml", "model: {type: resnet}\nloss: {type: mae, hinge: 0.5}\n")
    with pytest.raises(ConfigError, match=r"'loss.hinge' in \S*x.yaml with --set 'loss.type=mse'"):
        load_config(path, ["loss.type=mse"])


def test_an_ssim_loss_needs_patches_of_the_ssim_window():
    """tf.image.ssim's 11x11 window: smaller patches failed inside TensorFlow at the first step."""
    with pytest.raises(ConfigError, match=r"loss.ssim_weight.*patch_size >= 11.*got patch_size 8"):
        config_from_dict({"model": {"type": "resnet"}, "dataset": {"patch_size": 8}, "loss": {"ssim_weight": 0.1}})
    config_from_dict({"model": {"type": "resnet"}, "dataset": {"patch_size": 11}, "loss": {"ssim_weight": 0.1}})


@pytest.mark.parametrize("optimizer, message", [
    ({"schedule": {"boundaries": [2000, 4000], "values": [1, 0.1, 0.01]}},
     r"'optimizer.schedule.boundaries'.*applies to type: step only \(type is 'cosine'\)"),
    ({"schedule": {"values": [1.0]}}, r"'optimizer.schedule.values'.*type: step only \(type is 'cosine'\)"),
    ({"schedule": {"type": "step", "boundaries": [10], "values": [1, 0.1], "decay_rate": 0.1}},
     r"'optimizer.schedule.decay_rate'.*type: exponential only \(type is 'step'\)"),
    ({"schedule": {"type": "cosine", "decay_steps": 50}}, r"'optimizer.schedule.decay_steps'.*type: exponential only"),
    ({"schedule": {"type": "exponential", "first_decay_steps": 100}},
     r"'optimizer.schedule.first_decay_steps'.*type: cosine_restarts only \(type is 'exponential'\)"),
    ({"schedule": {"t_mul": 1.0}}, r"'optimizer.schedule.t_mul'.*type: cosine_restarts only \(type is 'cosine'\)"),
    ({"schedule": {"m_mul": 0.5}}, r"'optimizer.schedule.m_mul'.*type: cosine_restarts only"),
    ({"schedule": {"type": "constant", "alpha": 0.1}},
     r"'optimizer.schedule.alpha'.*type: cosine or cosine_restarts only \(type is 'constant'\)"),
    ({"weight_decay": 0.05}, r"'optimizer.weight_decay'.*applies to type: adamw only \(type is 'adam'\)"),
    ({"type": "rmsprop", "weight_decay": 0.05}, r"'optimizer.weight_decay'.*type: adamw only \(type is 'rmsprop'\)"),
])
def test_a_key_the_chosen_type_does_not_read_is_refused_not_ignored(optimizer, message):
    """bfcnn.training.optim reads only the chosen type's keys: the others were accepted and ignored."""
    with pytest.raises(ConfigError, match=message):
        config_from_dict(with_section("optimizer", optimizer))


def test_devices_are_refused_unless_the_strategy_is_mirrored(tmp_path):
    for strategy in ("default", "multi_worker"):
        with pytest.raises(ConfigError, match=r"'distribution.devices'.*applies to strategy: mirrored only "
                                              rf"\(strategy is '{strategy}'\)"):
            config_from_dict(with_section("distribution", {"strategy": strategy, "devices": 2}))
    assert config_from_dict(with_section("distribution", {"strategy": "mirrored", "devices": 2})).distribution.devices == 2
    path = write(tmp_path / "x.yaml", "model: {type: resnet}\ndistribution: {strategy: mirrored, devices: 2}\n")
    with pytest.raises(ConfigError, match=r"'distribution.devices' in \S*x.yaml with --set 'distribution.strategy=default'"):
        load_config(path, ["distribution.strategy=default"])


def test_keys_of_another_type_left_at_their_default_are_accepted(tmp_path):
    """Written out, as a dumped config does, or left out: only a changed value would be ignored."""
    schedule = {"type": "step", "boundaries": [10], "values": [1, 0.1], "alpha": 0.01, "first_decay_steps": None,
                "t_mul": 2, "m_mul": 1.0, "decay_rate": 0.5, "decay_steps": 1000}
    config = config_from_dict(with_section("optimizer", {"type": "adam", "weight_decay": 1e-4, "schedule": schedule}))
    assert config.optimizer.schedule.boundaries == (10,)
    assert config_from_dict(with_section("optimizer", {"type": "rmsprop", "weight_decay": 0})).optimizer.weight_decay == 0
    config = config_from_dict(with_section("optimizer", {"type": "adamw", "weight_decay": 0.05,
                                                         "schedule": {"type": "exponential", "decay_rate": 0.1}}))
    assert config.optimizer.weight_decay == 0.05 and config.optimizer.schedule.decay_rate == 0.1
    path = write(tmp_path / "x.yaml", "model: {type: resnet}\noptimizer: {type: adamw, weight_decay: 0.05}\n")
    with pytest.raises(ConfigError, match=r"'optimizer.weight_decay' in \S*x.yaml with --set 'optimizer.type=adam'"):
        load_config(path, ["optimizer.type=adam"])


def test_dump_quotes_strings_that_load_as_numbers():
    """`1e5` is a float to the loader: dumped unquoted (YAML 1.1's rules), a folder named so came back a float."""
    config = config_from_dict({**MINIMAL, "dataset": {"inputs": ["1e5", "0123", "1:30", ".5", "1_000"]},
                               "validation": {"directory": "2e3"}})
    text = loading.yaml.dump(config_to_dict(config), Dumper=loading._Dumper)
    assert "'1e5'" in text and "'2e3'" in text
    assert config_from_dict(loading._parse_yaml(text, "dumped")) == config


def test_dump_and_load_of_a_folder_named_like_a_number(tmp_path):
    config = config_from_dict({**MINIMAL, "validation": {"directory": "1e5"}})
    dump_config(config, tmp_path / "pipeline.yaml")
    assert load_config(tmp_path / "pipeline.yaml").validation.directory == "1e5"


@pytest.mark.parametrize("text, shown", [
    ("train: {steps: 1:30}", "'1:30'"),  # YAML 1.1: sexagesimal 90
    ("train: {seed: 0123}", "'0123'"),  # YAML 1.1: octal 83
    ("train: {checkpoint_every: 0x10}", "'0x10'"),
    ("train: {log_every: 1_000}", "'1_000'"),
    ("optimizer: {schedule: {type: cosine_restarts, first_decay_steps: 0o10}}", "'0o10'"),
])
def test_yaml_11_integer_forms_are_text_not_converted(tmp_path, text, shown):
    path = write(tmp_path / "x.yaml", f"model: {{type: resnet}}\n{text}\n")
    with pytest.raises(ConfigError, match=rf"wrong type for '.*' in \S*x.yaml: expected int( or null)?, got str {shown} "
                                          r"\(integers are plain decimals here"):
        load_config(path)


def test_yaml_11_integer_forms_in_a_set_are_text_and_a_folder_keeps_its_name(tmp_path):
    path = write(tmp_path / "x.yaml", "model: {type: resnet}\nvalidation: {directory: 0123, sigmas: [1:30, 2.]}\n")
    with pytest.raises(ConfigError, match=r"'train.seed' in --set 'train.seed=0777': expected int, got str '0777'"):
        load_config(path, ["train.seed=0777"])
    with pytest.raises(ConfigError, match=r"'validation.sigmas\[0\]'.*expected float, got str '1:30'"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"expected int, got str '100'$"):  # quoted: no hint about YAML 1.1
        load_config(path, ["train.seed='100'"])
    config = load_config(path, ["validation.sigmas=[-0, 2., .5e1, 12]", "train.seed=10"])
    assert config.validation.directory == "0123" and config.validation.sigmas == (0.0, 2.0, 5.0, 12.0)
    assert config.train.seed == 10


def test_a_set_of_an_item_of_a_list_the_file_does_not_hold_asks_for_the_whole_list(tmp_path):
    path = write(tmp_path / "x.yaml", "model: {type: resnet}\nvalidation: {sigmas: [15, 25]}\n")
    with pytest.raises(ConfigError, match=r"invalid override 'corruption.additive.sigma_values.0=30': "
                                          r"'corruption.additive.sigma_values' is not set, so it has no item 0; set the "
                                          r"whole list, e.g. corruption.additive.sigma_values=\[...\]"):
        load_config(path, ["corruption.additive.sigma_values.0=30"])
    with pytest.raises(ConfigError, match=r"invalid override 'model.filters.1=8': 'model.filters' is not set"):
        load_config(path, ["model.filters.1=8"])
    with pytest.raises(ConfigError, match=r"'validation.sigmas' has no item 2 .*; to add one, set the whole list"):
        load_config(path, ["validation.sigmas.2=50"])
    assert load_config(path, ["validation.sigmas.1=50"]).validation.sigmas == (15.0, 50.0)


@pytest.mark.parametrize("text, overrides, message", [
    ("model: {type: resnet, channels: 1}\n", ["dataset.color=rgb"],
     r"'model.channels' in \S*x.yaml with --set 'dataset.color=rgb': is 1 but dataset.color 'rgb'"),
    ("model: {type: resnet}\ncorruption: {additive: {sigma_values: [15, 25]}}\n", ["corruption.additive.sigma=[0, 50]"],
     r"'corruption.additive.sigma_values' in \S*x.yaml with --set 'corruption.additive.sigma=\[0, 50\]': give either"),
    ("model: {type: resnet}\ncorruption: {multiplicative: {log_uniform: 0.5}}\n",
     ["corruption.multiplicative.sigma_values=[0.1]", "corruption.multiplicative.sigma=null"],
     r"'corruption.multiplicative.log_uniform' in \S*x.yaml with --set "
     r"'corruption.multiplicative.sigma_values=\[0.1\]': applies to a 'sigma' range"),
    ("model: {type: resnet}\ndataset: {inputs: [{paired: {noisy_a: a, noisy_b: b}}]}\n", ["dataset.inputs.0.paired.noisy_a=b"],
     r"'dataset.inputs\[0\].paired.noisy_b' in \S*x.yaml with --set 'dataset.inputs.0.paired.noisy_a=b'"),
    ("model: {type: resnet}\ndataset: {inputs: [{directory: a}]}\n", ["dataset.inputs.0.tfds.name=t"],
     r"'dataset.inputs\[0\]' in \S*x.yaml with --set 'dataset.inputs.0.tfds.name=t': a source needs exactly one"),
    ("model: {type: resnet}\ncorruption: {additive: {sigma: [10, 20]}}\n", ["corruption.additive.sigma.0=30"],
     r"'corruption.additive.sigma' in \S*x.yaml with --set 'corruption.additive.sigma.0=30': must be a range"),
])
def test_a_problem_a_set_caused_names_the_set(tmp_path, text, overrides, message):
    path = write(tmp_path / "x.yaml", text)
    load_config(path)
    with pytest.raises(ConfigError, match=message):
        load_config(path, overrides)
