"""Checkpoint averaging (`bfcnn.training.averaging`, `python -m bfcnn.average`) on a tiny run."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from bfcnn.average import main as average_main
from bfcnn.config import config_from_dict
from bfcnn.errors import ConfigError
from bfcnn.training.averaging import average_checkpoints, list_checkpoints
from bfcnn.training.loop import Trainer


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A 12-step run that keeps its checkpoints at steps 4, 8 and 12."""
    images = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(4):
        smooth = np.cumsum(np.cumsum(rng.normal(size=(40, 40)), 0), 1)
        smooth = 255 * (smooth - smooth.min()) / np.ptp(smooth)
        Image.fromarray(smooth.astype(np.uint8)).save(images / f"img{i}.png")
    config = config_from_dict({
        "model": {"type": "resnet", "channels": 1, "filters": 8, "blocks": 1, "batch_norm": False},
        "dataset": {"inputs": [str(images)], "patch_size": 24, "batch_size": 4},
        "corruption": {"additive": {"sigma": [10, 30]}},
        "optimizer": {"learning_rate": 1e-2},
        "train": {"steps": 12, "checkpoint_every": 4, "keep_checkpoints": 5, "tensorboard": False,
                  "image_summaries_every": 0},
    }, require_inputs=True)
    directory = tmp_path_factory.mktemp("run")
    Trainer(config, directory).run()
    return directory


def _stored_trainable_weights(path):
    """The model's trainable weights as a checkpoint stores them, read without building a model.

    The trainer's checkpoint reaches each of them first through the optimizer, which was
    built on `model.trainable_variables`, so they are stored under its index there.
    """
    reader = tf.train.load_checkpoint(path)
    keys = reader.get_variable_to_shape_map()
    weights, i = [], 0
    while f"optimizer/_trainable_variables/{i}/.ATTRIBUTES/VARIABLE_VALUE" in keys:
        weights.append(reader.get_tensor(f"optimizer/_trainable_variables/{i}/.ATTRIBUTES/VARIABLE_VALUE"))
        i += 1
    return weights


def test_list_checkpoints_gives_steps_oldest_first(run_dir, monkeypatch):
    assert [step for step, _ in list_checkpoints(run_dir)] == [4, 8, 12]
    monkeypatch.chdir(run_dir.parent)  # a directory named relative to the working directory
    assert [step for step, _ in list_checkpoints(run_dir.name)] == [4, 8, 12]


@pytest.mark.parametrize("state", ["x{{", ""])
def test_a_damaged_state_file_lists_the_checkpoints_on_disk(run_dir, tmp_path, state):
    """An unparsable state file (TensorFlow ignores it) or an empty one (TensorFlow raises)."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "checkpoints" / "checkpoint").write_text(state)
    assert [step for step, _ in list_checkpoints(copy)] == [4, 8, 12]
    assert average_checkpoints(copy, last=2)[1] == [8, 12]


def test_the_newest_checkpoint_alone_is_the_final_model(run_dir):
    model, steps = average_checkpoints(run_dir, last=1)
    assert steps == [12]
    final = keras.models.load_model(run_dir / "model.keras").get_weights()
    for a, b in zip(model.get_weights(), final):
        np.testing.assert_array_equal(a, b)


def test_average_is_the_mean_of_the_stored_weights(run_dir):
    older, newer = (_stored_trainable_weights(path) for _, path in list_checkpoints(run_dir)[-2:])
    model, steps = average_checkpoints(run_dir, last=2)
    assert steps == [8, 12]
    assert len(older) == len(model.trainable_variables) > 0
    for variable, a, b in zip(model.trainable_variables, older, newer):
        np.testing.assert_allclose(np.asarray(variable), (a + b) / 2, rtol=1e-6, atol=1e-7)
    # The weights moved between the checkpoints, so the average is neither of them.
    assert not all(np.allclose(np.asarray(v), b) for v, b in zip(model.trainable_variables, newer))


def test_averaged_model_stays_homogeneous(run_dir):
    model, _ = average_checkpoints(run_dir)
    x = np.random.default_rng(1).uniform(0, 255, size=(1, 16, 16, 1)).astype("float32")
    np.testing.assert_allclose(np.asarray(model(3.0 * x)), 3.0 * np.asarray(model(x)), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("last", [0, 4, True])
def test_a_count_outside_the_kept_checkpoints_names_the_allowed_range(run_dir, last):
    with pytest.raises(ConfigError, match=r"keeps 3 checkpoint\(s\) \(steps 4, 8, 12\); allowed: 1 to 3"):
        average_checkpoints(run_dir, last=last)


def test_checkpoints_of_another_architecture_are_refused(run_dir, tmp_path):
    import shutil

    import yaml

    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    config = yaml.safe_load((other / "config.yaml").read_text())
    config["model"]["filters"] = 12
    (other / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match="does not hold every weight of the model"):
        average_checkpoints(other)


def test_a_directory_without_checkpoints_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="holds no training checkpoints"):
        average_checkpoints(tmp_path)


def test_command_line_writes_a_loadable_model(run_dir, tmp_path, capsys):
    output = tmp_path / "avg.keras"
    assert average_main(["--model-directory", str(run_dir), "--last", "2", "--output", str(output)]) == 0
    assert "averaged 2 checkpoint(s), steps 8 to 12" in capsys.readouterr().out
    expected, _ = average_checkpoints(run_dir, last=2)
    for a, b in zip(keras.models.load_model(output).get_weights(), expected.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert average_main(["--model-directory", str(run_dir), "--last", "9"]) == 2
    assert "allowed: 1 to 3" in capsys.readouterr().err
    assert average_main(["--model-directory", str(run_dir), "--output", str(tmp_path / "x.h5")]) == 2
    (tmp_path / "afile").write_text("")
    (tmp_path / "afolder.keras").mkdir()
    for output, problem in ((tmp_path / "afile" / "x.keras", "is a file, not a folder"),
                            (tmp_path / "afolder.keras", "is a folder; give a file name")):
        capsys.readouterr()
        assert average_main(["--model-directory", str(run_dir), "--output", str(output)]) == 2
        assert problem in capsys.readouterr().err


def test_a_missing_directory_is_named_as_missing(tmp_path, capsys):
    assert average_main(["--model-directory", str(tmp_path / "nosuchrun")]) == 2
    err = capsys.readouterr().err
    assert "'" + str(tmp_path / "nosuchrun") + "' does not exist" in err and "checkpoints" not in err
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        average_checkpoints(tmp_path / "file")


@pytest.mark.parametrize("damage", ["truncated index", "missing data"])
def test_a_damaged_checkpoint_is_named_without_a_traceback(run_dir, tmp_path, capsys, damage):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    if damage == "truncated index":
        (copy / "checkpoints" / "ckpt-12.index").write_bytes(b"cut")
    else:
        (copy / "checkpoints" / "ckpt-12.data-00000-of-00001").unlink()
    assert average_main(["--model-directory", str(copy)]) == 2
    err = capsys.readouterr().err
    assert "checkpoint " + str(copy / "checkpoints" / "ckpt-12") + " is damaged" in err and "Traceback" not in err
    assert not (copy / "averaged.keras").exists()
