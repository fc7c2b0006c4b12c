"""Paired sources (Noise2Noise on two noisy copies of each scene, Lehtinen et al., ICML 2018).

Every image is generated in tmp_path and tiny: noisy_a = clean + n1 and noisy_b = clean + n2
with known integer noise, so a patch can be traced back to where it was cut.
"""

import json
import logging

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from bfcnn.config import CorruptionConfig, DatasetConfig, config_from_dict
from bfcnn.errors import BfcnnError, ConfigError
from bfcnn.training.images import load_paired_directory, match_pairs
from bfcnn.training.loop import Trainer
from bfcnn.training.sampler import InMemorySampler
from bfcnn.training.streaming import streaming_dataset
from bfcnn.training.targets import paired_inputs

TRANSFORMS = (  # the 8 symmetries of the square, on [P, P, C]
    lambda x: x,
    lambda x: x[:, ::-1],
    lambda x: x[::-1],
    lambda x: np.rot90(x, 1),
    lambda x: np.rot90(x, 2),
    lambda x: np.rot90(x, 3),
    lambda x: x.transpose(1, 0, 2),
    lambda x: np.rot90(x, 2).transpose(1, 0, 2),
)


def save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path)


def make_pairs(root, shapes, seed=0):
    """Writes root/a and root/b (noisy copies); returns {name: (clean, n1, n2)} as int arrays."""
    rng = np.random.default_rng(seed)
    scenes = {}
    for i, (h, w) in enumerate(shapes):
        clean = rng.integers(60, 196, (h, w, 1))
        n1, n2 = rng.integers(-50, 51, (2, h, w, 1))
        save(root / "a" / f"s{i}.png", (clean + n1).astype(np.uint8))
        save(root / "b" / f"s{i}.png", (clean + n2).astype(np.uint8))
        scenes[f"s{i}"] = clean, n1, n2
    return scenes


def locate(patch, image):
    """Every (transform, row, col) at which `patch` is a transformed crop of `image`."""
    p = patch.shape[0]
    found = []
    for t, transform in enumerate(TRANSFORMS):
        for i in range(image.shape[0] - p + 1):
            for j in range(image.shape[1] - p + 1):
                if np.array_equal(transform(image[i:i + p, j:j + p]), patch):
                    found.append((t, i, j))
    return found


def assert_same_crop(noisy, target, scenes, sign):
    """noisy is a crop of one scene's first copy and noisy - target the same crop of sign * (n1 - n2)."""
    for name, (clean, n1, n2) in scenes.items():
        source = clean + (n1 if sign > 0 else n2)
        for t, i, j in locate(noisy, source):
            p = noisy.shape[0]
            difference = TRANSFORMS[t](sign * (n1 - n2)[i:i + p, j:j + p])
            if np.array_equal(noisy - target, difference):
                return name
    raise AssertionError("the input patch and its target are not the same crop of one pair")


# ----------------------------------------------------------------------------- matching


def test_pairs_are_matched_by_name_without_extension(tmp_path):
    image = np.zeros((4, 4, 1), np.uint8)
    for name in ("a/x.png", "a/sub/y.png", "b/x.tif", "b/sub/y.png"):
        save(tmp_path / name, image)
    pairs = match_pairs(tmp_path / "a", tmp_path / "b")
    assert [(a.relative_to(tmp_path).as_posix(), b.relative_to(tmp_path).as_posix()) for a, b in pairs] == [
        ("a/sub/y.png", "b/sub/y.png"), ("a/x.png", "b/x.tif")]


def test_unmatched_files_are_an_error_naming_them(tmp_path):
    image = np.zeros((4, 4, 1), np.uint8)
    save(tmp_path / "a" / "both.png", image)
    save(tmp_path / "b" / "both.png", image)
    for i in range(7):
        save(tmp_path / "a" / f"lonely{i}.png", image)
    save(tmp_path / "b" / "orphan.png", image)
    with pytest.raises(BfcnnError) as error:
        match_pairs(tmp_path / "a", tmp_path / "b")
    message = str(error.value)
    assert "7 file(s) of noisy_a" in message and "'lonely0.png'" in message and "and 2 more" in message
    assert "1 file(s) of noisy_b" in message and "'orphan.png'" in message
    assert "both.png" not in message


def test_two_files_with_one_name_and_one_directory_twice_are_errors(tmp_path):
    image = np.zeros((4, 4, 1), np.uint8)
    for name in ("a/x.png", "a/x.jpg", "b/x.png"):
        save(tmp_path / name, image)
    with pytest.raises(BfcnnError, match="same name without extension"):
        match_pairs(tmp_path / "a", tmp_path / "b")
    with pytest.raises(BfcnnError, match="same directory"):
        match_pairs(tmp_path / "b", str(tmp_path / "b") + "/")
    with pytest.raises(ConfigError, match="noisy_b"):
        config_from_dict({"model": {"type": "resnet"},
                          "dataset": {"inputs": [{"paired": {"noisy_a": "d", "noisy_b": "d"}}]}})


def test_pairs_of_different_sizes_are_an_error_naming_the_file(tmp_path):
    make_pairs(tmp_path, [(10, 12)])
    save(tmp_path / "a" / "odd.png", np.zeros((10, 12, 1), np.uint8))
    save(tmp_path / "b" / "odd.png", np.zeros((12, 10, 1), np.uint8))
    with pytest.raises(BfcnnError, match=r"odd\.png' is 12x10 .* is 10x12"):
        load_paired_directory(tmp_path / "a", tmp_path / "b", "gray", 8, "pad")
    config = DatasetConfig(inputs=[{"paired": {"noisy_a": str(tmp_path / "a"), "noisy_b": str(tmp_path / "b")}}],
                           patch_size=8, batch_size=4)
    with pytest.raises(BfcnnError, match=r"odd\.png"):  # checked from the headers, before streaming
        streaming_dataset(config.inputs, config, seed=0)



def test_streaming_refuses_pairs_whose_files_are_truncated(tmp_path):
    make_pairs(tmp_path, [(64, 64)])
    for folder in ("a", "b"):
        (path,) = (tmp_path / folder).iterdir()
        Image.open(path).save(path.with_suffix(".jpg"), quality=95)  # noise: most of the file is image data
        path.unlink()
    cut = tmp_path / "b" / path.with_suffix(".jpg").name
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    with Image.open(cut) as image:
        assert image.size == (64, 64)  # the header is intact
    config = DatasetConfig(inputs=[{"paired": {"noisy_a": str(tmp_path / "a"), "noisy_b": str(tmp_path / "b")}}],
                           patch_size=8, batch_size=4)
    with pytest.raises(BfcnnError, match="no usable image in .*: every image is unreadable"):
        streaming_dataset(config.inputs, config, seed=0)


# ----------------------------------------------------------------------------- same crop


def test_in_memory_input_and_target_are_the_same_crop(tmp_path):
    scenes = make_pairs(tmp_path, [(11, 13), (14, 9)])
    images, skipped = load_paired_directory(tmp_path / "a", tmp_path / "b", "gray", 6, "pad")
    assert skipped == 0 and [im.shape for im in images] == [(11, 13, 2), (14, 9, 2)]
    sampler = InMemorySampler(images, [1.0, 1.0], patch_size=6, patches_per_image=2)
    both, index = sampler.sample(12, tf.constant([3, 7], tf.int64), return_index=True)
    is_pair = tf.ones([12], tf.bool)
    noisy, target = paired_inputs(both, is_pair, CorruptionConfig(), tf.constant([1, 2]), channels=1,
                                  noisy_target=False, all_paired=True)
    names = [assert_same_crop(n, t, scenes, sign=1) for n, t in zip(noisy.numpy().astype(int),
                                                                   target.numpy().astype(int))]
    assert names == [f"s{k}" for k in index.numpy()]


def test_noisy_target_swaps_a_random_half_of_the_pairs(tmp_path):
    scenes = make_pairs(tmp_path, [(10, 10)], seed=1)
    images, _ = load_paired_directory(tmp_path / "a", tmp_path / "b", "gray", 5, "pad")
    both = InMemorySampler(images, [1.0], patch_size=5).sample(40, tf.constant([0, 1], tf.int64))
    seed = tf.constant([5, 6])
    noisy, target = paired_inputs(both, tf.ones([40], tf.bool), CorruptionConfig(), seed, channels=1,
                                  noisy_target=True, all_paired=True)
    again, _ = paired_inputs(both, tf.ones([40], tf.bool), CorruptionConfig(), seed, channels=1,
                             noisy_target=True, all_paired=True)
    np.testing.assert_array_equal(noisy.numpy(), again.numpy())
    swapped = 0
    for n, t, pair in zip(noisy.numpy().astype(int), target.numpy().astype(int), both.numpy().astype(int)):
        is_swapped = np.array_equal(n, pair[..., 1:])
        assert np.array_equal(t, pair[..., :1] if is_swapped else pair[..., 1:])
        assert_same_crop(n, t, scenes, sign=-1 if is_swapped else 1)
        swapped += is_swapped
    assert 8 <= swapped <= 32, swapped


@pytest.mark.parametrize("noisy_target", [False, True])
def test_non_paired_patches_are_corrupted_and_pairs_are_not(noisy_target):
    rng = np.random.default_rng(0)
    clean = rng.uniform(0, 255, (2, 16, 16, 1)).astype(np.float32)
    pair = rng.uniform(0, 255, (2, 16, 16, 2)).astype(np.float32)
    both = np.concatenate([np.concatenate([clean, clean], -1), pair])
    is_pair = tf.constant([False, False, True, True])
    corruption = CorruptionConfig(additive={"sigma": [20, 20]})
    noisy, target = paired_inputs(both, is_pair, corruption, tf.constant([0, 1]), channels=1,
                                  noisy_target=noisy_target)
    noisy, target = noisy.numpy(), target.numpy()
    assert 15 < np.std(noisy[:2] - clean) < 25
    if noisy_target:  # a second, independent corruption: the difference has twice the variance
        assert 15 < np.std(target[:2] - clean) < 25 and 24 < np.std(noisy[:2] - target[:2]) < 33
    else:
        np.testing.assert_array_equal(target[:2], clean)
    for k, real in zip((2, 3), pair):  # real pairs: no synthetic noise, a and b (possibly swapped)
        assert {noisy[k].tobytes(), target[k].tobytes()} == {real[..., :1].tobytes(), real[..., 1:].tobytes()}
        if not noisy_target:
            np.testing.assert_array_equal(noisy[k], real[..., :1])


def test_streaming_mixes_pairs_and_plain_images_with_flags(tmp_path):
    scenes = make_pairs(tmp_path, [(9, 12), (12, 10)], seed=2)
    plain = np.full((10, 10, 1), 7, np.uint8)  # no pair has a constant patch
    save(tmp_path / "plain" / "p.png", plain)
    config = DatasetConfig(inputs=[{"paired": {"noisy_a": str(tmp_path / "a"), "noisy_b": str(tmp_path / "b")}},
                                   str(tmp_path / "plain")], patch_size=6, batch_size=8, patches_per_image=2)
    flags_seen = set()
    for both, flags in streaming_dataset(config.inputs, config, seed=0).take(4):
        assert both.shape == (8, 6, 6, 2) and flags.dtype == tf.bool
        for pair, flag in zip(both.numpy().astype(int), flags.numpy()):
            flags_seen.add(bool(flag))
            if flag:
                assert_same_crop(pair[..., :1], pair[..., 1:], scenes, sign=1)
            else:
                assert np.all(pair == 7)
    assert flags_seen == {True, False}


# ----------------------------------------------------------------------------- trainer


def paired_config(root, **sections):
    data = {
        "model": {"type": "resnet", "channels": 1, "filters": 4, "blocks": 1, "batch_norm": False},
        "dataset": {"inputs": [{"paired": {"noisy_a": str(root / "a"), "noisy_b": str(root / "b")}}],
                    "patch_size": 8, "batch_size": 4},
        "optimizer": {"learning_rate": 1e-3},
        "train": {"steps": 3, "checkpoint_every": 2, "log_every": 1, "target": "noisy", "tensorboard": False},
        "validation": {"directory": None},
    }
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values}
    return config_from_dict(data, require_inputs=True)


@pytest.fixture(scope="module")
def pair_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    make_pairs(root, [(12, 12), (10, 14), (16, 11)])
    return root


def test_training_on_pairs_with_noisy_targets_writes_a_checkpoint(pair_root, tmp_path):
    Trainer(paired_config(pair_root), tmp_path).run()
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("ckpt-*.index")) == ["ckpt-2.index",
                                                                                       "ckpt-3.index"]
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 3
    model = keras.models.load_model(tmp_path / "model.keras")
    assert model.input_shape == (None, None, None, 1)


def test_resumed_paired_run_reaches_the_same_weights(pair_root, tmp_path):
    config = paired_config(pair_root, train={"steps": 4, "checkpoint_every": 1})
    Trainer(config, tmp_path / "straight").run()
    Trainer(config, tmp_path / "resumed").run(stop_after=2)
    Trainer(config, tmp_path / "resumed").run()
    straight = keras.models.load_model(tmp_path / "straight" / "model.keras").get_weights()
    resumed = keras.models.load_model(tmp_path / "resumed" / "model.keras").get_weights()
    initial = paired_config(pair_root)  # a different run (3 steps) must not match: the check can fail
    Trainer(initial, tmp_path / "other").run()
    other = keras.models.load_model(tmp_path / "other" / "model.keras").get_weights()
    for a, b in zip(straight, resumed):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert any(not np.allclose(a, b, atol=1e-6) for a, b in zip(straight, other))


def test_streamed_mix_of_pairs_and_clean_images_trains(pair_root, tmp_path):
    plain = tmp_path / "plain"
    save(plain / "p.png", np.random.default_rng(3).integers(0, 256, (12, 12, 1), dtype=np.uint8))
    inputs = [{"paired": {"noisy_a": str(pair_root / "a"), "noisy_b": str(pair_root / "b")}}, str(plain)]
    config = paired_config(pair_root, dataset={"inputs": inputs, "cache": False, "patch_size": 8, "batch_size": 4},
                           train={"steps": 2, "target": "clean"})
    Trainer(config, tmp_path / "run").run()
    assert (tmp_path / "run" / "model.keras").exists()


def test_corruption_of_an_all_paired_run_is_reported_unused(pair_root, caplog):
    with caplog.at_level(logging.WARNING, logger="bfcnn.train"):
        Trainer(paired_config(pair_root, corruption={"additive": {"sigma": [25, 25]}}), "unused")
    assert any("not used" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bfcnn.train"):
        Trainer(paired_config(pair_root), "unused")
    assert not caplog.records
