"""The trainer end to end: runs, resumes (also after SIGKILL), stops on NaN, distributes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from bfcnn.config import config_from_dict, load_config
from bfcnn.errors import ConfigError
from bfcnn.train import main as train_main
from bfcnn.training.loop import Trainer, TrainingError

ROOT = Path(__file__).resolve().parents[1]


# Keras's loader, tried on a model built otherwise than the file's, warns that it skipped
# containers before it fails; load_initial_weights must not try it there.
NO_SKIPPED_CONTAINERS = pytest.mark.filterwarnings("error:Skipping nested container")


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    """Smooth synthetic photographs: sums of random gradients and discs."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:56]
    for i in range(6):
        image = 128 + 60 * np.sin(xx / rng.uniform(4, 12)) * np.cos(yy / rng.uniform(4, 12))
        cy, cx = rng.integers(10, 40, size=2)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < 80] = rng.uniform(0, 255)
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / f"img{i}.png")
    return root


def tiny_config(image_dir, **sections):
    data = {
        "model": {"type": "resnet", "channels": 1, "filters": 8, "blocks": 1, "batch_norm": False},
        "dataset": {"inputs": [str(image_dir)], "patch_size": 24, "batch_size": 4},
        "corruption": {"additive": {"sigma": [10, 30]}},
        "optimizer": {"learning_rate": 3e-3},
        "train": {"steps": 20, "checkpoint_every": 10, "log_every": 5, "image_summaries_every": 10},
        "validation": {"directory": str(image_dir), "sigmas": [20], "every": 10, "max_images": 2},
    }
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values}
    return config_from_dict(data, require_inputs=True)


def test_training_writes_every_artifact_and_lowers_the_loss(image_dir, tmp_path):
    config = tiny_config(image_dir, train={"steps": 60, "checkpoint_every": 30})
    results = Trainer(config, tmp_path).run()
    for name in ("config.yaml", "model.keras", "best.keras", "history.jsonl", "summary.json"):
        assert (tmp_path / name).exists(), name
    assert load_config(tmp_path / "config.yaml").train.steps == 60
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [10, 20, 30, 40, 50, 60]
    assert history[-1]["mean_psnr"] > history[0]["mean_psnr"]
    assert set(results) == {20.0} and results[20.0]["psnr"] == history[-1]["results"]["20"]["psnr"]
    events = list((tmp_path / "logs").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    model = keras.models.load_model(tmp_path / "model.keras")
    assert model.input_shape == (None, None, None, 1)


def _weights(model_dir):
    return keras.models.load_model(Path(model_dir) / "model.keras").get_weights()


def test_resumed_run_reaches_the_same_weights(image_dir, tmp_path):
    """Batches and noise depend on (seed, step) only, so stopping and resuming changes nothing."""
    config = tiny_config(image_dir, train={"steps": 20, "checkpoint_every": 5}, validation={"directory": None})
    Trainer(config, tmp_path / "straight").run()
    Trainer(config, tmp_path / "resumed").run(stop_after=8)
    assert not (tmp_path / "resumed" / "model.keras").exists()
    Trainer(config, tmp_path / "resumed").run()
    summary = json.loads((tmp_path / "resumed" / "summary.json").read_text())
    assert summary["steps"] == 20
    for a, b in zip(_weights(tmp_path / "straight"), _weights(tmp_path / "resumed")):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(image_dir, tmp_path, monkeypatch):
    import bfcnn.training.loop as loop

    real = loop.pixel_loss

    def poisoned(target, estimate, config, **kwargs):
        loss, terms = real(target, estimate, config, **kwargs)
        return loss * np.float32("nan"), terms

    config = tiny_config(image_dir, train={"steps": 10, "checkpoint_every": 4}, validation={"directory": None})
    Trainer(config, tmp_path).run(stop_after=4)
    monkeypatch.setattr(loop, "pixel_loss", poisoned)
    with pytest.raises(TrainingError, match="loss became nan at step 4.*ckpt-4"):
        Trainer(config, tmp_path).run()
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("ckpt-*.index")) == ["ckpt-4.index"]


@pytest.mark.parametrize("first, then", [("stop", "skip"), ("skip", "stop")])
def test_a_run_resumes_with_on_nan_changed(image_dir, tmp_path, first, then):
    """The NaN stop's advice, `train.on_nan: skip`, wraps the optimizer in a loss scaler, which
    stores its state under other names: a run resumes across the change, as if it had not stopped."""
    def config(on_nan):
        return tiny_config(image_dir, train={"steps": 6, "checkpoint_every": 3, "on_nan": on_nan},
                           validation={"directory": None})

    Trainer(config(first), tmp_path / "straight").run()
    Trainer(config(first), tmp_path / "changed").run(stop_after=3)
    Trainer(config(then), tmp_path / "changed").run()
    for a, b in zip(_weights(tmp_path / "straight"), _weights(tmp_path / "changed")):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5)


def test_a_skip_run_resumed_in_float16_gets_the_float16_loss_scale(image_dir, tmp_path):
    import tensorflow as tf

    from bfcnn.training.loss_scale import FLOAT16_LOSS_SCALE

    skip = tiny_config(image_dir, train={"steps": 6, "checkpoint_every": 3, "on_nan": "skip"},
                       validation={"directory": None})
    Trainer(skip, tmp_path).run(stop_after=3)
    half = tiny_config(image_dir, train={"steps": 6, "checkpoint_every": 3, "precision": "mixed_float16"},
                       validation={"directory": None})
    Trainer(half, tmp_path).run()
    checkpoint = tf.train.latest_checkpoint(str(tmp_path / "checkpoints"))
    (scale,) = [tf.train.load_checkpoint(checkpoint).get_tensor(name)
                for name, _ in tf.train.list_variables(checkpoint) if "dynamic_scale" in name]
    assert scale >= FLOAT16_LOSS_SCALE / 8  # not the skip run's 1 (a few halvings allowed)


def _spoil_first_losses(monkeypatch, value: str, count: int = 4):
    """Makes the training loss `value` ("nan" or "inf") at its first `count` calls (its
    gradients then are not finite), as it is after; returns the call counter."""
    import tensorflow as tf

    import bfcnn.training.loop as loop

    real = loop.pixel_loss
    calls = tf.Variable(0)

    def spoiled(target, estimate, config, **kwargs):
        loss, terms = real(target, estimate, config, **kwargs)
        calls.assign_add(1)
        return loss * tf.where(calls <= count, np.float32(value), np.float32(1.0)), terms

    monkeypatch.setattr(loop, "pixel_loss", spoiled)
    return calls


def test_nan_loss_can_skip_the_batch(image_dir, tmp_path, monkeypatch):
    """The first 4 steps' losses are NaN and skipped; the rest train, at a loss scale still 1
    (Keras's scaler would have halved it at each skipped step)."""
    import tensorflow as tf

    calls = _spoil_first_losses(monkeypatch, "nan")
    config = tiny_config(image_dir, train={"steps": 8, "on_nan": "skip", "checkpoint_every": 8},
                         validation={"directory": None})
    Trainer(config, tmp_path / "skip").run()
    assert int(calls.numpy()) == 8
    weights = _weights(tmp_path / "skip")
    assert all(np.all(np.isfinite(w)) for w in weights)
    checkpoint = tf.train.latest_checkpoint(str(tmp_path / "skip" / "checkpoints"))
    scales = [tf.train.load_checkpoint(checkpoint).get_tensor(name)
              for name, _ in tf.train.list_variables(checkpoint) if "dynamic_scale" in name]
    assert scales == [1.0]
    # a skipped step still counts for the learning-rate schedule, which follows the step counter
    iterations = tf.train.load_checkpoint(checkpoint).get_tensor(
        "optimizer/inner_optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE")
    assert int(iterations) == 8


def test_skipping_non_finite_steps_does_not_change_the_finite_ones(image_dir, tmp_path, monkeypatch):
    """`on_nan: skip` wraps the optimizer in a loss scaler, which divides the gradients by its
    scale: the step must multiply the loss by it, or every update shrinks (with a scale of
    1024 here, Adam's epsilon would then dominate)."""
    import bfcnn.training.loss_scale as loss_scale

    monkeypatch.setattr(loss_scale, "SKIP_LOSS_SCALE", 1024.0)
    config = tiny_config(image_dir, train={"steps": 6}, validation={"directory": None})
    Trainer(config, tmp_path / "stop").run()
    skip = tiny_config(image_dir, train={"steps": 6, "on_nan": "skip"}, validation={"directory": None})
    Trainer(skip, tmp_path / "skip").run()
    for plain, scaled in zip(_weights(tmp_path / "stop"), _weights(tmp_path / "skip")):
        np.testing.assert_allclose(scaled, plain, rtol=1e-4, atol=1e-6)


def test_a_different_model_in_the_same_directory_is_refused(image_dir, tmp_path):
    Trainer(tiny_config(image_dir, train={"steps": 2}, validation={"directory": None}), tmp_path).run()
    other = tiny_config(image_dir, model={"filters": 16}, train={"steps": 2}, validation={"directory": None})
    with pytest.raises(ConfigError, match="different model"):
        Trainer(other, tmp_path).run()


def test_a_checkpoint_that_no_longer_fits_the_graph_is_refused(image_dir, tmp_path, monkeypatch):
    """Same config, but the code builds other weights (an upgrade changed a layer): no silent fresh weights."""
    import bfcnn.training.loop as loop

    config = tiny_config(image_dir, train={"steps": 4, "checkpoint_every": 2}, validation={"directory": None})
    Trainer(config, tmp_path).run(stop_after=2)
    build = loop.build_model
    monkeypatch.setattr(loop, "build_model", lambda model_config: build({**model_config, "kernel_size": 5}))
    with pytest.raises(TrainingError, match="cannot resume from .*ckpt-2.*train.init_from"):
        Trainer(config, tmp_path).run()


def test_channels_must_match_the_color(image_dir):
    with pytest.raises(ConfigError, match="channels"):
        tiny_config(image_dir, model={"channels": 3})


def test_cli_reports_config_errors_without_a_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {type: resnet}\ntrain: {stepz: 3}\ndataset: {inputs: [x]}\n")
    assert train_main(["--pipeline-config", str(bad), "--model-directory", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "train.stepz" in err and "did you mean 'train.steps'" in err and "Traceback" not in err


def _cli(config_path, model_dir, *extra):
    return [sys.executable, "-m", "bfcnn.train", "--pipeline-config", str(config_path),
            "--checkpoint-directory", str(model_dir), *extra]


def _write_config(path, image_dir, steps, **train):
    from bfcnn.config import dump_config

    dump_config(tiny_config(image_dir, train={"steps": steps, **train}, validation={"directory": None}), path)


@pytest.mark.slow
def test_sigkill_during_training_then_resume(image_dir, tmp_path):
    config_path = tmp_path / "run.yaml"
    _write_config(config_path, image_dir, steps=400, checkpoint_every=10, log_every=10)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen(_cli(config_path, tmp_path / "run"), cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not list((tmp_path / "run" / "checkpoints").glob("ckpt-2*.index")):
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    import tensorflow as tf

    # The state file names the last complete checkpoint; a kill between writing a checkpoint's
    # files and renaming the state file into place leaves the one before it as the latest.
    latest = tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints"))
    assert latest is not None and int(latest.rsplit("-", 1)[1]) >= 10
    done = subprocess.run(_cli(config_path, tmp_path / "run"), cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    step = int(latest.rsplit("-", 1)[1])
    assert "resumed from" in done.stderr and f"ckpt-{step} at step {step}" in done.stderr, done.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == 400


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_ctrl_c_saves_a_checkpoint_of_the_step_reached(image_dir, tmp_path, sig):
    """A stop asked for by SIGTERM (a job scheduler, `kill`) or Ctrl-C loses no steps: the step
    reached is saved (the schedule would have saved only at step 1000), the exit status is
    128 + the signal's number, and the same command resumes from there."""
    import tensorflow as tf

    config_path = tmp_path / "run.yaml"
    _write_config(config_path, image_dir, steps=100000, checkpoint_every=1000, log_every=5)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen(_cli(config_path, tmp_path / "run"), cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and not list((tmp_path / "run" / "logs").glob("**/events.*")):
        time.sleep(0.2)  # the TensorBoard writer is made just before the first step
    time.sleep(3.0)  # some steps, far from step 1000
    process.send_signal(sig)
    _, err = process.communicate(timeout=120)
    lines = [err]
    assert process.returncode == 128 + sig, err[-2000:]
    latest = tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints"))
    assert latest is not None and 0 < int(latest.rsplit("-", 1)[1]) < 1000
    assert f"stopped by {signal.Signals(sig).name} at step {int(latest.rsplit('-', 1)[1])}" in "".join(lines)
    assert "run the same command to resume" in "".join(lines)


MIRRORED_CHECK = """
import json, sys
import numpy as np
from bfcnn.config import load_config
from bfcnn.training.distribution import configure_logical_cpus
from bfcnn.training.loop import Trainer
configure_logical_cpus(2)
import tensorflow as tf
config = load_config(sys.argv[1], ["distribution.strategy=mirrored", "distribution.devices=2"])
trainer = Trainer(config, sys.argv[2])
trainer.run()
print("REPLICAS", len(tf.config.list_logical_devices("CPU")))
"""


@pytest.mark.slow
def test_mirrored_over_two_logical_cpus(image_dir, tmp_path):
    config_path = tmp_path / "run.yaml"
    _write_config(config_path, image_dir, steps=40, log_every=5)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-c", MIRRORED_CHECK, str(config_path), str(tmp_path / "run")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "REPLICAS 2" in out.stdout
    _assert_loss_went_down(tmp_path / "run")


def _assert_loss_went_down(model_dir):
    from tensorflow.python.summary.summary_iterator import summary_iterator

    losses = []
    for path in sorted((Path(model_dir) / "logs").glob("events.out.tfevents.*")):
        for event in summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag == "loss/mse":
                    import tensorflow as tf

                    losses.append(float(tf.make_ndarray(value.tensor)))
    assert len(losses) >= 4 and np.mean(losses[-2:]) < np.mean(losses[:2])


@pytest.mark.slow
def test_multi_worker_with_two_local_processes(image_dir, tmp_path):
    import socket

    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("localhost", 0))
            ports.append(s.getsockname()[1])
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    config_path = tmp_path / "run.yaml"
    _write_config(config_path, image_dir, steps=30, log_every=5)
    workers = []
    for index in range(2):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3",
               "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        workers.append(subprocess.Popen(_cli(config_path, tmp_path / "run", "--set",
                                             "distribution.strategy=multi_worker"),
                                        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for worker in workers:
        _, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err[-3000:]
    _assert_loss_went_down(tmp_path / "run")
    for a, b in zip(_weights(tmp_path / "run"), _weights(tmp_path / "run" / ".worker1")):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_unsupported_options_are_refused_before_training(image_dir):
    with pytest.raises(ConfigError, match="scale_weights"):
        Trainer(tiny_config(image_dir, loss={"scale_weights": [1.0, 0.5]}), "unused")
    with pytest.raises(ConfigError, match="noisy_b.*must differ from noisy_a"):  # paired: tests/test_paired.py
        config_from_dict({
            "model": {"type": "resnet"},
            "dataset": {"inputs": [{"paired": {"noisy_a": str(image_dir), "noisy_b": str(image_dir)}}]},
        })


def test_noise_normalized_loss_trains(image_dir, tmp_path):
    config = tiny_config(image_dir, loss={"normalize": "noise"}, corruption={"additive": {"sigma": [0, 30]}},
                         train={"steps": 30, "checkpoint_every": 30, "log_every": 10},
                         validation={"sigmas": [5, 20], "every": 10})
    Trainer(config, tmp_path).run()
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert history[-1]["mean_psnr"] > history[0]["mean_psnr"]


def test_texture_reaches_the_training_step_and_a_resumed_run_draws_it_again(image_dir, tmp_path):
    texture = {"additive": {"sigma": [10, 30]}, "texture": {"probability": 1.0, "sigma": [2.0, 6.0]}}
    config = tiny_config(image_dir, corruption=texture, train={"steps": 12, "checkpoint_every": 4},
                         validation={"directory": None})
    Trainer(config, tmp_path / "straight").run()
    Trainer(config, tmp_path / "resumed").run(stop_after=5)
    Trainer(config, tmp_path / "resumed").run()
    for a, b in zip(_weights(tmp_path / "straight"), _weights(tmp_path / "resumed")):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)
    plain = tiny_config(image_dir, train={"steps": 12, "checkpoint_every": 4}, validation={"directory": None})
    Trainer(plain, tmp_path / "plain").run()
    assert any(not np.allclose(a, b, atol=1e-5) for a, b in zip(_weights(tmp_path / "straight"), _weights(tmp_path / "plain")))


@NO_SKIPPED_CONTAINERS
def test_init_from_reads_a_model_saved_with_the_older_multiscale_lifts():
    """`train.init_from` moves the weights of an older multiscale file (transposed-convolution lifts) by name."""
    import keras
    import numpy as np

    from bfcnn.errors import ConfigError
    from bfcnn.models import build_model
    from bfcnn.training.initial_weights import load_initial_weights

    data = Path(__file__).parent / "data"
    config = {"type": "multiscale", "channels": 1, "levels": 3, "filters": [4, 8, 8], "blocks": 1,
              "encoder_blocks": 1}
    model = build_model(config)
    load_initial_weights(model, data / "legacy_multiscale.keras")
    legacy = keras.models.load_model(data / "legacy_multiscale.keras")
    noisy = np.random.default_rng(0).uniform(0, 255, (1, 16, 20, 1)).astype("float32")  # a multiple of 4: the
    np.testing.assert_allclose(model(noisy).numpy(), legacy(noisy).numpy(), rtol=1e-5, atol=1e-3)  # same function
    with pytest.raises(ConfigError, match="does not fit the model"):
        load_initial_weights(build_model({**config, "filters": [4, 8, 16]}), data / "legacy_multiscale.keras")
    with pytest.raises(ConfigError, match="does not fit the model"):
        load_initial_weights(build_model({"type": "resnet", "channels": 1, "filters": 4, "blocks": 1}),
                             data / "legacy_multiscale.keras")


def test_init_from_grafts_a_plain_model_onto_one_grown_with_n3_branches(tmp_path, caplog):
    """`train.init_from` with a smaller model's file: its layers by name, the new ones logged."""
    import logging

    import numpy as np

    from bfcnn.errors import ConfigError
    from bfcnn.models import build_model
    from bfcnn.training.initial_weights import load_initial_weights

    base = {"type": "multiscale", "channels": 1, "levels": 2, "filters": [4, 8], "blocks": 1}
    plain = build_model(base)
    plain.save(tmp_path / "plain.keras")
    grown = build_model({**base, "n3_levels": [1], "n3": {"channels": 2, "k": 1, "patch_size": 4, "stride": 2,
                                                          "window": 3, "embedding_depth": 1}})
    with caplog.at_level(logging.INFO, logger="bfcnn.train"):
        load_initial_weights(grown, tmp_path / "plain.keras")
    assert "new layers keep their initial values: level1_n3" in caplog.text
    assert "does not compute what" not in caplog.text  # the N3 branches start as the identity
    x = np.random.default_rng(0).uniform(0, 255, (1, 24, 20, 1)).astype("float32")
    np.testing.assert_array_equal(grown(x).numpy(), plain(x).numpy())
    grown.save(tmp_path / "grown.keras")
    with pytest.raises(ConfigError, match="does not fit the model"):
        load_initial_weights(build_model(base), tmp_path / "grown.keras")  # would drop the N3 weights


def test_init_from_warns_when_the_grown_model_computes_something_else(tmp_path, caplog):
    """One pyramid level more: every layer of the file has a place, but level 1 now sees a detail
    band instead of the low-pass image, so the function changes; the log says so."""
    import logging

    from bfcnn.models import build_model
    from bfcnn.training.initial_weights import load_initial_weights

    base = {"type": "multiscale", "channels": 1, "filters": 4, "blocks": 1}
    build_model({**base, "levels": 2}).save(tmp_path / "two.keras")
    with caplog.at_level(logging.WARNING, logger="bfcnn.train"):
        load_initial_weights(build_model({**base, "levels": 3}), tmp_path / "two.keras")
    assert "the grown model does not compute what" in caplog.text


def test_a_run_records_the_weights_it_started_from_and_their_card(image_dir, tmp_path):
    """`init_from.json`: the start's sha256 and, from the card beside it, the steps it counted then."""
    import hashlib
    import shutil

    first = tiny_config(image_dir, train={"steps": 2, "checkpoint_every": 2}, validation={"directory": None})
    Trainer(first, tmp_path / "a").run()
    assert not (tmp_path / "a" / "init_from.json").exists()  # a run from scratch records nothing
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    shutil.copy(tmp_path / "a" / "model.keras", zoo / "gray.keras")
    (zoo / "gray.json").write_text(json.dumps({"training": {"steps": 1000, "wall_time_seconds": 60.0}}))
    second = tiny_config(image_dir, train={"steps": 2, "checkpoint_every": 2, "init_from": str(zoo / "gray.keras")},
                         validation={"directory": None})
    Trainer(second, tmp_path / "b").run()
    record = json.loads((tmp_path / "b" / "init_from.json").read_text())
    assert record["sha256"] == hashlib.sha256((zoo / "gray.keras").read_bytes()).hexdigest()
    assert record["card"] == {"steps": 1000, "wall_time_seconds": 60.0}
    (zoo / "gray.json").write_text(json.dumps({"training": {"steps": 5000, "wall_time_seconds": 99.0}}))
    Trainer(second, tmp_path / "b").run()  # resuming keeps the record of the start
    assert json.loads((tmp_path / "b" / "init_from.json").read_text())["card"]["steps"] == 1000


def test_init_from_names_the_first_weight_that_does_not_fit(tmp_path):
    """A file of other shapes: the error names the weight and both shapes, not a Keras traceback."""
    from bfcnn.errors import ConfigError
    from bfcnn.models import build_model
    from bfcnn.training.initial_weights import load_initial_weights

    build_model({"type": "resnet", "channels": 1, "filters": 4, "blocks": 1}).save(tmp_path / "small.keras")
    wider = build_model({"type": "resnet", "channels": 1, "filters": 8, "blocks": 1})
    with pytest.raises(ConfigError, match=r"weight 0 \(stem/conv/kernel\) has shape \(3, 3, 1, 8\), "
                                          r"the file's \(stem/conv/kernel\) \(3, 3, 1, 4\)"):
        load_initial_weights(wider, tmp_path / "small.keras")


def test_resumed_run_with_stochastic_depth_draws_the_same_masks(image_dir, tmp_path):
    """The drop masks' random state is checkpointed: a resumed run ends where a straight one does."""
    config = tiny_config(image_dir, model={"blocks": 2, "stochastic_depth": 0.5},
                         train={"steps": 12, "checkpoint_every": 4}, validation={"directory": None})
    Trainer(config, tmp_path / "straight").run()
    Trainer(config, tmp_path / "resumed").run(stop_after=4)
    Trainer(config, tmp_path / "resumed").run()
    for a, b in zip(_weights(tmp_path / "straight"), _weights(tmp_path / "resumed")):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)


def _history_steps(model_dir):
    return [json.loads(line)["step"] for line in (Path(model_dir) / "history.jsonl").read_text().splitlines()]


def test_resume_skips_a_damaged_checkpoint_and_validates_each_step_once(image_dir, tmp_path, caplog):
    """A truncated latest checkpoint: a warning names it, the run resumes from the one before, and
    the validations it repeats replace the lines written after that checkpoint."""
    import logging

    config = tiny_config(image_dir, train={"steps": 6, "checkpoint_every": 4, "log_every": 2},
                         validation={"every": 2, "max_images": 1})
    Trainer(config, tmp_path).run()
    (tmp_path / "checkpoints" / "ckpt-6.index").write_bytes(b"cut")
    with caplog.at_level(logging.WARNING, logger="bfcnn.train"):
        Trainer(config, tmp_path).run()
    assert "ckpt-6 is damaged" in caplog.text
    assert _history_steps(tmp_path) == [2, 4, 6]
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 6


@pytest.mark.parametrize("damage", ["garbage", "empty", "missing"])
def test_a_damaged_checkpoint_state_file_is_rebuilt_and_the_run_resumes(image_dir, tmp_path, caplog, damage):
    """TensorFlow ignores an unparsable `checkpoints/checkpoint` (the run would start over at step 0
    and overwrite its checkpoints) and raises on an empty one; it is rebuilt from the files on disk."""
    import logging

    config = tiny_config(image_dir, train={"steps": 4, "checkpoint_every": 2}, validation={"directory": None})
    Trainer(config, tmp_path).run()
    state = tmp_path / "checkpoints" / "checkpoint"
    {"garbage": lambda: state.write_text("x{{"), "empty": lambda: state.write_text(""),
     "missing": state.unlink}[damage]()
    longer = tiny_config(image_dir, train={"steps": 6, "checkpoint_every": 2, "keep_checkpoints": 5},
                         validation={"directory": None})
    with caplog.at_level(logging.INFO):
        Trainer(longer, tmp_path).run()
    assert "rebuilt it from the 2 checkpoint(s) on disk (steps 2, 4)" in caplog.text
    assert "ckpt-4 at step 4" in caplog.text  # resumed, not started over
    from bfcnn.models.checkpoints import listed_checkpoints

    assert [Path(p).name for p in listed_checkpoints(tmp_path / "checkpoints")] == ["ckpt-2", "ckpt-4", "ckpt-6"]
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 6


def test_a_truncated_checkpoint_data_file_falls_back_to_the_one_before(image_dir, tmp_path, caplog):
    import logging

    config = tiny_config(image_dir, train={"steps": 4, "checkpoint_every": 2}, validation={"directory": None})
    Trainer(config, tmp_path).run()
    data = tmp_path / "checkpoints" / "ckpt-4.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 3])
    with caplog.at_level(logging.WARNING, logger="bfcnn.train"):
        Trainer(config, tmp_path).run()
    assert "ckpt-4 is damaged" in caplog.text
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 4


def test_running_a_finished_run_again_keeps_its_summary(image_dir, tmp_path):
    config = tiny_config(image_dir, train={"steps": 4, "checkpoint_every": 2}, validation={"every": 2, "max_images": 1})
    first = Trainer(config, tmp_path).run()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["validation"] and list(first) == [20.0]
    model_bytes = (tmp_path / "model.keras").read_bytes()
    again = Trainer(config, tmp_path).run()
    assert json.loads((tmp_path / "summary.json").read_text()) == summary  # its final validation not erased
    assert (tmp_path / "model.keras").read_bytes() == model_bytes  # not saved again
    assert again == first and _history_steps(tmp_path) == [2, 4]


def test_two_runs_cannot_write_into_one_model_directory(image_dir, tmp_path):
    from bfcnn.training.run_directory import lock_directory

    config = tiny_config(image_dir, train={"steps": 2}, validation={"directory": None})
    held = lock_directory(tmp_path)  # as a run in another process holds it
    try:
        with pytest.raises(ConfigError, match=rf"another training run \(pid {os.getpid()}\) is writing into"):
            Trainer(config, tmp_path).run()
        assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]
    finally:
        held.close()
    Trainer(config, tmp_path).run()  # free again
    assert (tmp_path / "model.keras").exists()


def test_a_file_system_without_locks_runs_unlocked(image_dir, tmp_path, monkeypatch, caplog):
    import errno
    import fcntl
    import logging

    def no_locks(*args):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    config = tiny_config(image_dir, train={"steps": 2}, validation={"directory": None})
    with caplog.at_level(logging.WARNING, logger="bfcnn.train"):
        Trainer(config, tmp_path).run()
    assert "running without the lock" in caplog.text and (tmp_path / "model.keras").exists()


def test_model_directory_entries_of_the_wrong_kind_are_refused_up_front(image_dir, tmp_path, capsys):
    config = tiny_config(image_dir, train={"steps": 2}, validation={"directory": None})
    (tmp_path / "checkpoints").write_text("")
    with pytest.raises(ConfigError, match="checkpoints' must be a folder for the run to write it"):
        Trainer(config, tmp_path).run()
    (tmp_path / "checkpoints").unlink()
    (tmp_path / "model.keras").mkdir()
    with pytest.raises(ConfigError, match="model.keras' must be a file for the run to write it"):
        Trainer(config, tmp_path).run()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]
    with pytest.raises(SystemExit) as stop:
        train_main(["--pipeline-config", "any.yaml", "--model-directory", ""])
    assert stop.value.code == 2 and "--model-directory is empty" in capsys.readouterr().err


def test_temporary_files_of_a_killed_save_are_cleared(image_dir, tmp_path):
    config = tiny_config(image_dir, train={"steps": 2}, validation={"directory": None})
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / ".best.keras.x1y2.tmp.keras").write_bytes(b"half a file")
    (tmp_path / ".notes.tmp.txt").write_text("the user's")  # not the run's: kept
    Trainer(config, tmp_path).run()
    assert [p.name for p in tmp_path.glob(".*.tmp*")] == [".notes.tmp.txt"] and (tmp_path / "model.keras").exists()


@pytest.mark.parametrize("tf_config, message", [
    ("{bad", "TF_CONFIG is not JSON"),
    ('{"cluster": {"worker": ["localhost:1"]}}', "TF_CONFIG needs a 'cluster' mapping"),
    ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 3}}',
     r"task \{'type': 'worker', 'index': 3\} is not in its cluster \(jobs: worker x1\)"),
])
def test_a_bad_tf_config_is_named(monkeypatch, tf_config, message):
    from bfcnn.config import DistributionConfig
    from bfcnn.training.distribution import make_strategy

    monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ConfigError, match=message):
        make_strategy(DistributionConfig(strategy="multi_worker"))


def test_trim_history_drops_lines_after_the_restored_step_and_cut_lines(tmp_path):
    from bfcnn.training.run_directory import trim_history

    path = tmp_path / "history.jsonl"
    path.write_text('{"step": 2}\n{"step": 4}\n{"step": 6}\n{"st')
    trim_history(path, 4)
    assert path.read_text() == '{"step": 2}\n{"step": 4}\n'


def test_every_checkpoint_damaged_is_a_clean_error(image_dir, tmp_path, capsys):
    config_path = tmp_path / "run.yaml"
    _write_config(config_path, image_dir, steps=4, checkpoint_every=2)
    run = tmp_path / "run"
    assert train_main(["--pipeline-config", str(config_path), "--model-directory", str(run)]) == 0
    (run / "checkpoints" / "ckpt-4.index").write_bytes(b"cut")
    (run / "checkpoints" / "ckpt-2.data-00000-of-00001").unlink()
    capsys.readouterr()
    args = ["--pipeline-config", str(config_path), "--model-directory", str(run), "--set", "train.steps=6"]
    assert train_main(args) == 1
    err = capsys.readouterr().err
    assert "every checkpoint is damaged" in err and "ckpt-4" in err and "ckpt-2" in err
    assert "new --model-directory" in err and "train.init_from" in err and "Traceback" not in err


def test_bad_inputs_are_named_and_leave_no_model_directory(image_dir, tmp_path):
    """Missing paths are found before the run writes anything, so a corrected rerun is not refused."""
    import zipfile

    with zipfile.ZipFile(tmp_path / "hello.keras", "w") as archive:
        archive.writestr("hello.txt", "hi")
    run = tmp_path / "run"
    cases = [
        ({"dataset": {"inputs": [str(tmp_path / "nope")]}},
         r"dataset.inputs\[0\]: image directory not found: '.*nope'"),
        ({"validation": {"directory": str(tmp_path / "nope")}}, "validation.directory: image directory not found"),
        ({"train": {"init_from": str(tmp_path / "nope.keras")}}, "train.init_from: no such file '.*nope.keras'"),
        ({"train": {"init_from": str(tmp_path / "hello.keras")}}, "train.init_from: .*not a .keras file"),
    ]
    for sections, message in cases:
        config = tiny_config(image_dir, **{"train": {"steps": 2}, **sections})
        with pytest.raises(ConfigError, match=message):
            Trainer(config, run).run()
        assert not run.exists()


def test_init_from_that_is_missing_or_not_a_keras_archive_is_named(tmp_path):
    import zipfile

    from bfcnn.models import build_model
    from bfcnn.training.initial_weights import load_initial_weights

    model = build_model({"type": "resnet", "channels": 1, "filters": 4, "blocks": 1})
    with pytest.raises(ConfigError, match=r"^train.init_from: no such file '.*missing.keras'$"):
        load_initial_weights(model, tmp_path / "missing.keras")
    with zipfile.ZipFile(tmp_path / "hello.keras", "w") as archive:
        archive.writestr("hello.txt", "hi")
    (tmp_path / "text.keras").write_text("not a zip")
    for name in ("hello.keras", "text.keras"):
        with pytest.raises(ConfigError, match=f"train.init_from: '.*{name}' is not a readable .keras model: not a "
                                              r"\.keras file"):
            load_initial_weights(model, tmp_path / name)


def test_a_model_directory_that_is_a_file_is_refused(image_dir, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    config = tiny_config(image_dir, train={"steps": 2}, validation={"directory": None})
    with pytest.raises(ConfigError, match="model directory '.*file' is a file, not a directory"):
        Trainer(config, tmp_path / "file").run()
    with pytest.raises(ConfigError, match="model directory '.*sub' cannot be made: '.*file' is a file"):
        Trainer(config, tmp_path / "file" / "sub").run()


def test_cli_exit_codes_input_errors_2_training_failures_1(image_dir, tmp_path, capsys, monkeypatch):
    config_path = tmp_path / "run.yaml"
    _write_config(config_path, image_dir, steps=2)
    (tmp_path / "file").write_text("")
    cases = [
        (["--set", "model.type=resnett"], "invalid value for 'model.type': unknown model type 'resnett', did you "
                                          "mean 'resnet'?"),
        (["--set", f"validation.directory={tmp_path / 'nope'}"], "validation.directory: image directory not found"),
        (["--set", f"train.init_from={tmp_path / 'nope.keras'}"], "train.init_from: no such file"),
    ]
    for extra, message in cases:
        assert train_main(["--pipeline-config", str(config_path), "--model-directory", str(tmp_path / "r"),
                           *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert train_main(["--pipeline-config", str(config_path), "--model-directory", str(tmp_path / "file" / "r")]) == 2
    assert "is a file" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()

    import bfcnn.training.loop as loop

    real = loop.pixel_loss

    def poisoned(*args, **kwargs):
        loss, terms = real(*args, **kwargs)
        return loss * np.float32("nan"), terms

    monkeypatch.setattr(loop, "pixel_loss", poisoned)
    assert train_main(["--pipeline-config", str(config_path), "--model-directory", str(tmp_path / "r")]) == 1
    assert "loss became nan" in capsys.readouterr().err


def test_run_files_survive_a_crash_mid_write(image_dir, tmp_path, monkeypatch):
    """summary.json and init_from.json go through a temporary file: a write cut short leaves the
    previous file whole and no temporary file behind."""
    from bfcnn.training.run_directory import record_start

    config = tiny_config(image_dir, train={"steps": 2, "checkpoint_every": 2}, validation={"directory": None})
    Trainer(config, tmp_path / "run").run()
    real = Path.write_text

    def cut_short(self, data, *args, **kwargs):
        if "summary.json" in self.name or "init_from.json" in self.name:
            real(self, data[: len(data) // 2], *args, **kwargs)
            raise OSError(28, "No space left on device")
        return real(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", cut_short)
    longer = tiny_config(image_dir, train={"steps": 3, "checkpoint_every": 2}, validation={"directory": None})
    with pytest.raises(OSError, match="No space"):
        Trainer(longer, tmp_path / "run").run()
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == 2
    with pytest.raises(OSError, match="No space"):
        record_start(tmp_path / "run", tmp_path / "run" / "model.keras")
    leftovers = [p.name for p in (tmp_path / "run").iterdir() if "summary" in p.name or "init_from" in p.name]
    assert leftovers == ["summary.json"]


def test_a_resumed_run_never_replaces_best_keras_with_a_worse_model(image_dir, tmp_path, monkeypatch):
    """best.keras is written between checkpoints; a crash before the next checkpoint must not let a
    resumed run, which restores an older best PSNR, overwrite it with a model that scores lower."""
    import tensorflow as tf

    import bfcnn.training.loop as loop

    config = tiny_config(image_dir, train={"steps": 4, "checkpoint_every": 2, "log_every": 2},
                         validation={"every": 2, "max_images": 1})
    real_save = tf.train.CheckpointManager.save

    def crash_at_4(self, *args, checkpoint_number=None, **kwargs):
        if checkpoint_number == 4:
            raise RuntimeError("killed")
        return real_save(self, *args, checkpoint_number=checkpoint_number, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(tf.train.CheckpointManager, "save", crash_at_4)
        with pytest.raises(RuntimeError, match="killed"):
            Trainer(config, tmp_path).run()
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    psnr_2, psnr_4 = history[0]["mean_psnr"], history[1]["mean_psnr"]
    assert psnr_4 > psnr_2  # best.keras is the step-4 model; ckpt-2 recorded psnr_2 as the best
    best_inode = (tmp_path / "best.keras").stat().st_ino
    real_evaluate = loop.evaluate_denoiser

    def worse(*args, **kwargs):  # the resumed step 4 scores between the two
        results = real_evaluate(*args, **kwargs)
        return {s: {**r, "psnr": r["psnr"] - (psnr_4 - psnr_2) / 2} for s, r in results.items()}

    monkeypatch.setattr(loop, "evaluate_denoiser", worse)
    Trainer(config, tmp_path).run()
    assert (tmp_path / "best.keras").stat().st_ino == best_inode
    assert json.loads((tmp_path / "summary.json").read_text())["best_psnr"] == pytest.approx(psnr_4)


def test_run_restores_the_global_precision_policy(image_dir, tmp_path):
    from bfcnn.models import build_model

    assert keras.mixed_precision.global_policy().name == "float32"
    config = tiny_config(image_dir, train={"steps": 1, "precision": "mixed_bfloat16"}, validation={"directory": None})
    Trainer(config, tmp_path / "run").run()
    assert keras.mixed_precision.global_policy().name == "float32"
    broken = tiny_config(image_dir, train={"steps": 1, "precision": "mixed_bfloat16", "init_from": "nope.keras"})
    with pytest.raises(ConfigError):
        Trainer(broken, tmp_path / "other").run()
    assert keras.mixed_precision.global_policy().name == "float32"
    model = build_model({"type": "resnet", "channels": 1, "filters": 4, "blocks": 1})
    assert model.compute_dtype == "float32"


def test_data_too_large_to_cache_is_streamed_without_being_decoded_first(image_dir, tmp_path, monkeypatch):
    """The size comes from the file headers: the cache loaders are not even called."""
    from bfcnn.training import images, loop

    assert images.estimated_cache_bytes(tiny_config(image_dir).dataset.inputs, "gray", False) == 6 * 48 * 56
    monkeypatch.setattr(loop, "MAX_CACHE_BYTES", 6 * 48 * 56 - 1)

    def refuse(*args, **kwargs):
        raise AssertionError("decoded for the cache although too large")

    monkeypatch.setattr(loop, "load_directory", refuse)
    config = tiny_config(image_dir, train={"steps": 4, "checkpoint_every": 4}, validation={"directory": None})
    Trainer(config, tmp_path).run()
    assert json.loads((tmp_path / "summary.json").read_text())["skipped_files"] is None  # streamed


def _flat_images(root, count):
    """`count` 16x16 gray images, image i all of value i, so a patch's mean names its file."""
    root.mkdir()
    for i in range(count):
        Image.fromarray(np.full((16, 16), i, np.uint8)).save(root / f"{i:03d}.png")
    return root


def test_a_resumed_streamed_run_draws_other_files_than_its_first_session(tmp_path):
    """Streamed data cannot be replayed from the middle: the resumed session's pipeline is seeded
    from the restored step too, not restarted at the first session's draws (which it used to
    repeat, all 16 patches of them)."""
    flat = _flat_images(tmp_path / "flat", 96)
    config = tiny_config(flat, dataset={"cache": False, "patch_size": 16, "shuffle_buffer": 8, "patches_per_image": 1},
                         train={"steps": 8, "checkpoint_every": 4}, validation={"directory": None})
    drawn = []

    class Recording(Trainer):
        def _data(self, strategy, *args):
            sampler, iterator = super()._data(strategy, *args)

            def recorded():
                for batch in iterator:
                    drawn.append({int(v) for v in np.asarray(batch).mean(axis=(1, 2, 3)).round()})
                    yield batch

            return sampler, recorded()

    Recording(config, tmp_path / "run").run(stop_after=4)
    first = set().union(*drawn[:4])
    drawn.clear()
    Recording(config, tmp_path / "run").run()
    resumed = set().union(*drawn[:4])
    assert len(first) == len(resumed) == 16
    assert len(first & resumed) <= 8  # about 16 x 16 / 96 = 2.7 by chance
    from bfcnn.training.streaming import stream_seed

    assert stream_seed(123, 0) == 123 and stream_seed(123, 4) != 123  # an uninterrupted run keeps its seed


CLIP_CHECK = """
import sys, tempfile
import numpy as np
from bfcnn.config import load_config
from bfcnn.training.distribution import configure_logical_cpus
from bfcnn.training.loop import Trainer
configure_logical_cpus(2)
captured = {}
restore = Trainer._restore_state
def capture(self, strategy, ckpt_dir):
    captured["state"] = restore(self, strategy, ckpt_dir)
    return captured["state"]
Trainer._restore_state = capture
for strategy, precision in [("mirrored", "float32"), ("mirrored", "mixed_float16"), ("default", "float32")]:
    devices = ["distribution.devices=2"] if strategy == "mirrored" else []
    config = load_config(sys.argv[1], [f"distribution.strategy={strategy}", *devices,
                                       f"train.precision={precision}"])
    Trainer(config, tempfile.mkdtemp()).run()
    optimizer = captured["state"].optimizer
    adam = getattr(optimizer, "inner_optimizer", optimizer)
    # after one step Adam's first moment is (1 - beta_1) x the gradient it applied
    moments = [np.asarray(m.value if hasattr(m, "value") else m) for m in adam._momentums]
    print("NORM", strategy, precision, np.sqrt(sum(np.sum(np.square(m)) for m in moments)) / (1 - adam.beta_1))
"""


def test_clipnorm_limits_the_gradient_summed_over_the_replicas(image_dir, tmp_path):
    """Keras clips each replica's gradient before summing them (2 replicas: 1.99 x clipnorm
    here); the step clips the sum, in float32 and under float16's loss scale."""
    from bfcnn.config import dump_config

    clipnorm = 1e-3  # far below the gradient's norm
    dump_config(tiny_config(image_dir, optimizer={"clipnorm": clipnorm}, train={"steps": 1},
                            validation={"directory": None}), tmp_path / "run.yaml")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-c", CLIP_CHECK, str(tmp_path / "run.yaml")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    norms = {tuple(line.split()[1:3]): float(line.split()[3]) for line in out.stdout.splitlines()
             if line.startswith("NORM")}
    assert len(norms) == 3, out.stdout
    for (strategy, precision), norm in norms.items():
        assert norm == pytest.approx(clipnorm, rel=1e-3), (strategy, precision)


def test_only_a_single_replica_optimizer_clips_itself(image_dir):
    from bfcnn.training.optim import build_optimizer

    config = tiny_config(image_dir, optimizer={"clipnorm": 0.5}).optimizer
    assert build_optimizer(config, 10).global_clipnorm == 0.5
    assert build_optimizer(config, 10, clip=False).global_clipnorm is None


def test_float16_steps_skipped_for_overflow_still_count_for_the_schedule(image_dir, tmp_path, monkeypatch):
    """Keras's float16 loss scaler halves its scale and skips a step with non-finite gradients
    without counting it in `iterations`, which the learning-rate schedule reads; here it counts."""
    import tensorflow as tf

    from bfcnn.training.loss_scale import FLOAT16_LOSS_SCALE

    _spoil_first_losses(monkeypatch, "inf")
    config = tiny_config(image_dir, train={"steps": 8, "checkpoint_every": 8, "on_nan": "skip",
                                           "precision": "mixed_float16"}, validation={"directory": None})
    Trainer(config, tmp_path).run()
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(tmp_path / "checkpoints")))
    assert reader.get_tensor("optimizer/dynamic_scale/.ATTRIBUTES/VARIABLE_VALUE") <= FLOAT16_LOSS_SCALE / 16
    assert reader.get_tensor("optimizer/inner_optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == 8


def test_a_float16_checkpoint_whose_iterations_lag_catches_up_on_resume(image_dir, tmp_path, monkeypatch, caplog):
    """A checkpoint of an older bfcnn, whose float16 scaler did not count skipped steps: the
    resumed run's schedule goes on from the step counter."""
    import logging

    import tensorflow as tf

    import bfcnn.training.loop as loop
    from bfcnn.training.loss_scale import Float16LossScale

    real = loop.pixel_loss

    def inf_loss(target, estimate, config, **kwargs):
        loss, terms = real(target, estimate, config, **kwargs)
        return loss * np.float32("inf"), terms

    config = tiny_config(image_dir, train={"steps": 5, "checkpoint_every": 3, "on_nan": "skip",
                                           "precision": "mixed_float16"}, validation={"directory": None})
    with monkeypatch.context() as patch:  # as before the fix: every step skipped, none counted
        patch.setattr(loop, "pixel_loss", inf_loss)
        patch.setattr(Float16LossScale, "_stateful_handle_non_finite_grads",
                      keras.optimizers.LossScaleOptimizer._stateful_handle_non_finite_grads)
        Trainer(config, tmp_path).run(stop_after=3)
    with caplog.at_level(logging.INFO, logger="bfcnn.train"):
        Trainer(config, tmp_path).run()
    assert "the optimizer counted 0 steps, the run 3" in caplog.text
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(tmp_path / "checkpoints")))
    assert reader.get_tensor("optimizer/inner_optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == 5


def test_best_tracking_starts_afresh_when_the_validation_settings_change(image_dir, tmp_path, caplog):
    """PSNRs at sigma 50 never beat those at sigma 20: compared with them, best.keras would stay
    the sigma-20 model for good."""
    import logging

    def config(sigma, steps):
        return tiny_config(image_dir, train={"steps": steps, "checkpoint_every": 2, "log_every": 2},
                           validation={"sigmas": [sigma], "every": 2, "max_images": 1})

    Trainer(config(20, 4), tmp_path).run()
    record = json.loads((tmp_path / "best_validation.json").read_text())
    assert record["validation"] == {"directory": str(image_dir), "sigmas": [20.0], "max_size": 256,
                                    "max_images": 1, "seed": 0}
    with caplog.at_level(logging.INFO, logger="bfcnn.train"):
        Trainer(config(50, 6), tmp_path).run()
    assert caplog.text.count("validation settings changed since best.keras was chosen (sigmas [20.0] -> [50.0])") == 1
    record = json.loads((tmp_path / "best_validation.json").read_text())
    assert record["step"] == 6 and record["validation"]["sigmas"] == [50.0]
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert json.loads((tmp_path / "summary.json").read_text())["best_psnr"] == history[-1]["mean_psnr"]


def test_a_best_record_without_validation_settings_counts_as_matching(image_dir, tmp_path, caplog):
    """A run written before the settings were recorded resumes and keeps its best."""
    import logging

    def config(steps):
        return tiny_config(image_dir, train={"steps": steps, "checkpoint_every": 2},
                           validation={"sigmas": [50], "every": 2, "max_images": 1})

    Trainer(config(2), tmp_path).run()
    (tmp_path / "best_validation.json").write_text(json.dumps({"step": 2, "mean_psnr": 99.0}))
    with caplog.at_level(logging.INFO, logger="bfcnn.train"):
        Trainer(config(4), tmp_path).run()
    assert "validation settings changed" not in caplog.text
    assert json.loads((tmp_path / "best_validation.json").read_text()) == {"step": 2, "mean_psnr": 99.0}
    assert json.loads((tmp_path / "summary.json").read_text())["best_psnr"] == 99.0


def test_history_is_strict_json_also_at_sigma_0(image_dir, tmp_path):
    """The noisy input's PSNR at sigma 0 is infinite: null, as in summary.json, not `Infinity`."""
    def no_constants(name):
        raise ValueError(f"not strict JSON: {name}")

    config = tiny_config(image_dir, train={"steps": 2, "checkpoint_every": 2},
                         validation={"sigmas": [0, 20], "every": 2, "max_images": 1})
    Trainer(config, tmp_path).run()
    (line,) = (tmp_path / "history.jsonl").read_text().splitlines()
    entry = json.loads(line, parse_constant=no_constants)
    assert entry["results"]["0"]["noisy_psnr"] is None and entry["results"]["20"]["noisy_psnr"] > 0


def test_the_logged_learning_rate_is_the_one_the_step_used(image_dir, tmp_path, monkeypatch):
    """A step schedule drops the rate after step 2 (steps 0, 1, 2 at 1e-3, step 3 at 1e-5): the
    rate logged with the 4th step's loss is 1e-5 and the 3rd's 1e-3, not the next step's."""
    import bfcnn.training.loop as loop

    logged = []
    real = loop._log_step
    monkeypatch.setattr(loop, "_log_step", lambda writer, progress, step, metrics, loss, lr, rate:
                        logged.append((step, lr)) or real(writer, progress, step, metrics, loss, lr, rate))
    config = tiny_config(image_dir, optimizer={"learning_rate": 1e-3, "schedule": {
                             "type": "step", "boundaries": [2], "values": [1.0, 0.01]}},
                         train={"steps": 4, "checkpoint_every": 4, "log_every": 1}, validation={"directory": None})
    Trainer(config, tmp_path).run()
    assert [step for step, _ in logged] == [1, 2, 3, 4]
    np.testing.assert_allclose([lr for _, lr in logged], [1e-3, 1e-3, 1e-3, 1e-5], rtol=1e-6)


def _best_files(directory, record, history_steps_psnr, best_bytes=b"newer best"):
    directory.mkdir()
    (directory / "best.keras").write_bytes(best_bytes)
    if record is not None:
        (directory / "best_validation.json").write_text(json.dumps(record))
    (directory / "history.jsonl").write_text("".join(json.dumps({"step": s, "mean_psnr": p}) + "\n"
                                                     for s, p in history_steps_psnr))


def test_a_best_model_newer_than_its_record_keeps_the_psnr_history_gives_it(tmp_path):
    """A run stopped between moving best.keras into place and writing best_validation.json."""
    from bfcnn.io import sha256
    from bfcnn.training.run_directory import recorded_best

    history = [(10, 20.0), (20, 22.0), (30, 21.5), (40, 23.0)]
    stale = {"step": 20, "mean_psnr": 22.0, "sha256": "0" * 64}
    _best_files(tmp_path / "stale", stale, history)
    assert recorded_best(tmp_path / "stale") == 23.0  # step 40's, which best.keras holds
    _best_files(tmp_path / "missing", None, history)
    assert recorded_best(tmp_path / "missing") == 23.0
    _best_files(tmp_path / "current", dict(stale, sha256=sha256(tmp_path / "stale" / "best.keras")), history)
    assert recorded_best(tmp_path / "current") == 22.0  # the record matches the file: taken as it is
    _best_files(tmp_path / "older", {"step": 20, "mean_psnr": 22.0}, history)
    assert recorded_best(tmp_path / "older") == 22.0  # written before records held a sha256


def test_the_best_record_names_the_file_it_describes(image_dir, tmp_path):
    from bfcnn.io import sha256

    config = tiny_config(image_dir, train={"steps": 20, "checkpoint_every": 10})
    Trainer(config, tmp_path).run()
    record = json.loads((tmp_path / "best_validation.json").read_text())
    assert record["sha256"] == sha256(tmp_path / "best.keras")


def test_a_resumed_run_does_not_replace_a_best_model_newer_than_its_record(image_dir, tmp_path):
    from bfcnn.io import sha256

    config = tiny_config(image_dir, train={"steps": 20, "checkpoint_every": 10}, validation={"every": 10})
    Trainer(config, tmp_path).run()
    # As if the run had validated again after its last checkpoint, moved that better model into
    # best.keras and stopped before writing the record: history has the line, the record is old.
    with open(tmp_path / "history.jsonl", "a") as f:
        f.write(json.dumps({"step": 25, "results": {}, "mean_psnr": 99.0}) + "\n")
    record = json.loads((tmp_path / "best_validation.json").read_text())
    (tmp_path / "best_validation.json").write_text(json.dumps(dict(record, sha256="0" * 64)))
    before = sha256(tmp_path / "best.keras")
    Trainer(tiny_config(image_dir, train={"steps": 30, "checkpoint_every": 10}, validation={"every": 10}),
            tmp_path).run()
    assert sha256(tmp_path / "best.keras") == before  # step 30 (far under 99 dB) did not replace it
    assert [json.loads(line)["step"] for line in (tmp_path / "history.jsonl").read_text().splitlines()] == [10, 20, 30]
