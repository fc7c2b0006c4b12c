"""scripts/make_zoo_entry.py --refresh: a new TFLite file, speed and checksums; nothing else changes."""

import json
from pathlib import Path

import pytest

import bfcnn
from bfcnn.zoo import sha256
from conftest import load_script


def load():
    return load_script("scripts/make_zoo_entry.py")


@pytest.fixture
def zoo(tmp_path):
    model = bfcnn.build_model({"type": "multiscale", "channels": 1, "levels": 2, "filters": 4, "blocks": 1})
    model.save(tmp_path / "tiny.keras")
    card = {"name": "tiny", "channels": 1, "validation": {"results": {"25": {"tiny": {"psnr": 1.0}}}},
            "files": {"keras": {"path": "tiny.keras", "sha256": "stale", "bytes": 0}}}
    (tmp_path / "tiny.json").write_text(json.dumps(card))
    return tmp_path


def test_refresh_writes_tflite_speed_and_checksums_and_keeps_the_rest(zoo):
    assert load().main(["--refresh", "tiny", "--zoo", str(zoo)]) == 0
    card = json.loads((zoo / "tiny.json").read_text())
    assert card["validation"] == {"results": {"25": {"tiny": {"psnr": 1.0}}}}
    for kind, name in (("keras", "tiny.keras"), ("tflite", "tiny.tflite")):
        assert card["files"][kind]["sha256"] == sha256(zoo / name)
    assert card["speed"]["keras_ms_per_megapixel"] > 0
    assert card["speed"]["tflite_fp32_ms_per_megapixel"] > 0
    assert card["shift_period"] == 2  # a 2-level pyramid: mirrored to a multiple of 2
    assert not list(zoo.glob("*.tmp"))


def test_refresh_of_a_color_entry_checksums_its_lifted_file(tmp_path):
    """An opponent model's `<name>_lifted.tflite` (loaded beside the TFLite file for tiles) is in
    the card's `files`, so `bfcnn.zoo.model_file` can check it."""
    model = bfcnn.build_model({"type": "opponent", "chroma": "shared",
                               "inner": {"type": "multiscale", "channels": 1, "levels": 2, "filters": 4, "blocks": 1}})
    model.save(tmp_path / "tinyc.keras")
    card = {"name": "tinyc", "channels": 3, "validation": {"results": {}},
            "files": {"keras": {"path": "tinyc.keras", "sha256": "stale", "bytes": 0}}}
    (tmp_path / "tinyc.json").write_text(json.dumps(card))
    assert load().main(["--refresh", "tinyc", "--zoo", str(tmp_path)]) == 0
    files = json.loads((tmp_path / "tinyc.json").read_text())["files"]
    assert files["tflite_lifted"]["path"] == "tinyc_lifted.tflite"
    assert files["tflite_lifted"]["sha256"] == sha256(tmp_path / "tinyc_lifted.tflite")


def test_refresh_of_an_unknown_entry_is_a_clear_error(zoo):
    with pytest.raises(SystemExit, match="no card"):
        load().main(["--refresh", "nothing", "--zoo", str(zoo)])


def test_a_new_entry_needs_run_name_and_description():
    with pytest.raises(SystemExit):
        load().parse_args(["--name", "x"])


def test_refresh_rebuilds_a_legacy_multiscale_entry_with_todays_lifts(tmp_path):
    """An entry saved with transposed-convolution lifts and without the mirroring up to a multiple
    of its levels is re-saved in today's graph: the same outputs at multiples of 4."""
    import shutil

    import keras
    import numpy as np

    data = Path(__file__).parent / "data"
    shutil.copy(data / "legacy_multiscale.keras", tmp_path / "old.keras")
    card = {"name": "old", "channels": 1,
            "architecture": {"type": "multiscale", "channels": 1, "levels": 3, "filters": [4, 8, 8], "blocks": 1,
                             "encoder_blocks": 1},
            "files": {"keras": {"path": "old.keras", "sha256": "stale", "bytes": 0}}}
    (tmp_path / "old.json").write_text(json.dumps(card))
    assert load().main(["--refresh", "old", "--zoo", str(tmp_path)]) == 0
    model = keras.models.load_model(tmp_path / "old.keras")
    assert not any(isinstance(layer, keras.layers.Conv2DTranspose) for layer in model.layers)
    assert any(type(layer).__name__ == "ReflectToMultiple" for layer in model.layers)
    legacy = keras.models.load_model(data / "legacy_multiscale.keras")
    noisy = np.random.default_rng(0).uniform(0, 255, (1, 16, 20, 1)).astype("float32")
    np.testing.assert_allclose(model(noisy).numpy(), legacy(noisy).numpy(), rtol=1e-5, atol=1e-3)
    assert json.loads((tmp_path / "old.json").read_text())["files"]["keras"]["sha256"] == sha256(tmp_path / "old.keras")


def test_previous_time_counts_the_zoo_entry_a_run_started_from(tmp_path):
    script = load()
    (tmp_path / "gray.json").write_text(json.dumps({"training": {"steps": 1000, "wall_time_seconds": 60.0}}))
    assert script.previous_time(tmp_path, str(tmp_path / "gray.keras")) == (1000, 60.0)
    assert script.previous_time(tmp_path, None) == (0, 0.0)
    assert script.previous_time(tmp_path, str(tmp_path / "other.keras")) == (0, 0.0)  # no card
    elsewhere = tmp_path / "runs"
    elsewhere.mkdir()
    assert script.previous_time(tmp_path, str(elsewhere / "gray.keras")) == (0, 0.0)  # not a zoo file


def test_an_opponent_models_papers_include_its_gray_networks():
    script = load()
    paper = script.paper_of({"type": "opponent", "inner": {"type": "multiscale", "channels": 1}})
    assert "Dabov" in paper and "Burt & Adelson" in paper
    assert script.paper_of({"type": "resnet"}) == script.PAPERS["resnet"]


def fake_run(tmp_path, name, init_from, steps, seconds):
    """A run directory with a config and a summary only: `previous_time` reads no weights."""
    import yaml

    directory = tmp_path / name
    directory.mkdir()
    config = {"model": {"type": "resnet", "channels": 1},
              "dataset": {"inputs": [{"directory": str(tmp_path)}]},
              "train": {"init_from": init_from}}
    (directory / "config.yaml").write_text(yaml.safe_dump(config))
    (directory / "summary.json").write_text(json.dumps({"steps": steps, "elapsed_seconds": seconds}))
    return directory / "model.keras"


def entry_and_two_runs(tmp_path, name):
    """A zoo entry `name` (1000 steps, 60 s), run a from it (300, 30 s), run b from a (20, 2 s)."""
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    (zoo / f"{name}.json").write_text(json.dumps({"training": {"steps": 1000, "wall_time_seconds": 60.0}}))
    a = fake_run(tmp_path, "a", str(zoo / f"{name}.keras"), 300, 30.0)
    b = fake_run(tmp_path, "b", str(a), 20, 2.0)
    return zoo, a, b


def test_previous_time_follows_runs_started_from_other_runs(tmp_path):
    """zoo entry -> run a (init_from the entry) -> run b (init_from a's model.keras): all counted."""
    script = load()
    zoo, a, b = entry_and_two_runs(tmp_path, "gray")
    assert script.previous_time(zoo, str(a)) == (1300, 90.0)
    assert script.previous_time(zoo, str(b)) == (1320, 92.0)


def test_previous_time_stops_at_a_run_that_is_the_zoo_entry_now(tmp_path):
    """entry (1000 steps) -> run a -> run b, b shipped as the entry (1320 steps) -> run c from b:
    the entry's card already counts a and b, so c starts from 1320, not 1320 + 320."""
    from bfcnn.config import config_to_dict, load_config

    script = load()
    zoo, a, b = entry_and_two_runs(tmp_path, "color")
    assert script.previous_time(zoo, str(b)) == (1320, 92.0)
    # b is shipped: the entry's card is rewritten with b's config and the totals above.
    config_b = config_to_dict(load_config(b.parent / "config.yaml"))
    (zoo / "color.json").write_text(json.dumps({"training": {"steps": 1320, "wall_time_seconds": 92.0,
                                                             "config": config_b}}))
    assert script.previous_time(zoo, str(b)) == (1320, 92.0)


def test_a_runs_record_of_its_start_outlives_the_entry_shipped_again(tmp_path):
    """entry (1000 steps) -> run a, which recorded the card at its start; the entry is then
    shipped again with 5000 steps: a still counts the 1000 it began from, not the 5000."""
    script = load()
    zoo, a, b = entry_and_two_runs(tmp_path, "gray")
    (a.parent / "init_from.json").write_text(json.dumps({"path": str(zoo / "gray.keras"), "sha256": "x",
                                                         "card": {"steps": 1000, "wall_time_seconds": 60.0}}))
    (zoo / "gray.json").write_text(json.dumps({"training": {"steps": 5000, "wall_time_seconds": 300.0}}))
    assert script.previous_time(zoo, str(b)) == (1320, 92.0)
    assert script.start_time(a.parent, zoo, str(zoo / "gray.keras")) == (1000, 60.0)
    assert script.start_time(None, zoo, str(zoo / "gray.keras")) == (5000, 300.0)  # no record: the card now
    (a.parent / "init_from.json").unlink()
    assert script.previous_time(zoo, str(b)) == (5320, 332.0)


def test_shipping_the_entrys_own_run_again_keeps_its_totals(tmp_path):
    """entry (1000 steps) -> run a -> run b, b shipped as the entry: a new card for b (say on more
    images) keeps 1320 steps; b resumed to 50 steps of its own counts 1350; the card of b is not
    taken for another run's."""
    from bfcnn.config import config_to_dict, load_config

    script = load()
    zoo, a, b = entry_and_two_runs(tmp_path, "color")
    config_b = config_to_dict(load_config(b.parent / "config.yaml"))
    card = {"training": {"steps": 1320, "wall_time_seconds": 92.0, "run_steps": 20, "run_seconds": 2.0,
                         "checkpoint": "ckpt-1", "config": config_b}}
    (zoo / "color.json").write_text(json.dumps(card))
    init_from = str(a)
    assert script.training_totals(zoo, "color", config_b, init_from, 20, 2.0, "ckpt-1") == (1320, 92.0)
    assert script.training_totals(zoo, "color", config_b, init_from, 50, 5.0, "ckpt-2") == (1350, 95.0)
    # A card written before run_steps existed: the same checkpoint keeps its totals; another is an error.
    del card["training"]["run_steps"], card["training"]["run_seconds"]
    (zoo / "color.json").write_text(json.dumps(card))
    assert script.training_totals(zoo, "color", config_b, init_from, 20, 2.0, "ckpt-1") == (1320, 92.0)
    with pytest.raises(SystemExit, match="ckpt-1, now ckpt-2"):
        script.training_totals(zoo, "color", config_b, init_from, 50, 5.0, "ckpt-2")
    # Another run shipped as the entry counts what it started from, not the card's totals.
    config_a = config_to_dict(load_config(a.parent / "config.yaml"))
    assert script.training_totals(zoo, "color", config_a, str(zoo / "gray.keras"), 300, 30.0, "ckpt-1") == (300, 30.0)


def test_the_cards_command_repeats_the_image_count_it_was_measured_on():
    command = load().evaluate_command("m", "../shared/datasets/val/McMaster18", [15.0, 25.0, 50.0], ["bm3d"], 6)
    assert command == ("python -m bfcnn.evaluate --model m --dataset ../shared/datasets/val/McMaster18 "
                       "--sigma 15 25 50 --baseline bm3d --max-images 6")
    assert "--max-images" not in load().evaluate_command("m", "d", [25.0], ["bm3d"])
    assert "--baseline" not in load().evaluate_command("m", "d", [25.0], [])


def test_average_ships_the_mean_of_the_last_checkpoints_and_says_so(tiny_run):
    import numpy as np

    from bfcnn.config import load_config
    from bfcnn.training.averaging import average_checkpoints

    run = tiny_run[0]
    config = load_config(run / "config.yaml")
    script = load()
    _, steps, _, label = script.restore(run, config)
    assert (steps, label) == (6, "ckpt-6")
    model, steps, _, label = script.restore(run, config, average=2)
    assert (steps, label) == (6, "mean of 2 checkpoints, ckpt-4 to ckpt-6")
    expected, _ = average_checkpoints(run, 2)
    for a, b in zip(model.get_weights(), expected.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(SystemExit, match="--average: last=5: .* keeps 3 checkpoint"):
        script.restore(run, config, average=5)


def test_a_file_with_the_same_weights_is_kept_and_any_change_is_not(tmp_path):
    import keras

    script = load()
    model = bfcnn.build_model({"type": "multiscale", "channels": 1, "levels": 2, "filters": 4, "blocks": 1})
    path = tmp_path / "m.keras"
    assert not script.same_model_file(model, path)  # no file yet
    model.save(path)
    reloaded = keras.models.load_model(path, compile=False)
    assert script.same_model_file(reloaded, path)
    weights = reloaded.get_weights()
    weights[0] = weights[0] + 1e-7
    reloaded.set_weights(weights)
    assert not script.same_model_file(reloaded, path)
    other = bfcnn.build_model({"type": "multiscale", "channels": 1, "levels": 2, "filters": 8, "blocks": 1})
    assert not script.same_model_file(other, path)
    path.write_bytes(b"not a keras file")
    assert not script.same_model_file(model, path)


def _evaluation(tmp_path, dataset="McMaster18", color="rgb", images=("1.tif", "2.tif"), seed=0, metric="psnr"):
    document = {"dataset": f"../shared/datasets/val/{dataset}", "color": color, "seed": seed, "metric": metric,
                "images": list(images),
                "results": {"25": {"model": {"psnr": 30.0}, "noisy": {"psnr": 20.0},
                                   "bm3d": {"psnr": 31.0, "per_image": {"psnr": [30.5, 31.5]}}}}}
    path = tmp_path / "evaluation.json"
    path.write_text(json.dumps(document))
    return path


def test_baselines_from_an_earlier_evaluation_fill_the_cache_without_running_them(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import bfcnn.baselines

    script = load()
    monkeypatch.setattr(script, "ROOT", tmp_path)
    monkeypatch.setattr(bfcnn.baselines, "get_baseline", lambda name: pytest.fail("BM3D ran"))
    borrowed = script.borrowed_baselines([_evaluation(tmp_path)], "McMaster18", "rgb", ["1.tif", "2.tif"])
    args = SimpleNamespace(baseline=["bm3d"], sigmas=[25.0])
    config = SimpleNamespace(validation=SimpleNamespace(directory="/data/McMaster18"),
                             dataset=SimpleNamespace(color="rgb"))
    tables = script.baseline_table(args, config, [None, None], borrowed)
    assert tables == {"bm3d": {"25": {"psnr": 31.0}}}
    assert json.loads((tmp_path / "runs" / "baseline_cache" / "McMaster18_rgb_2_bm3d.json").read_text()) == \
        {"25": {"psnr": 31.0}}


@pytest.mark.parametrize("other, named", [
    ({"dataset": "Set12"}, "dataset"), ({"color": "gray"}, "color"), ({"images": ("1.tif", "3.tif")}, "images"),
    ({"seed": 1}, "seed"), ({"metric": "mae"}, "metric")])
def test_baselines_from_an_evaluation_of_other_images_or_noise_are_refused(tmp_path, other, named):
    with pytest.raises(SystemExit, match=f"--baselines-from .*its {named} is"):
        load().borrowed_baselines([_evaluation(tmp_path, **other)], "McMaster18", "rgb", ["1.tif", "2.tif"])


def test_baselines_from_a_file_that_is_not_an_evaluation_is_named(tmp_path):
    (tmp_path / "x.json").write_text("[1, 2]")
    for path in (tmp_path / "x.json", tmp_path / "missing.json"):
        with pytest.raises(SystemExit, match="not a readable `bfcnn.evaluate --out` file"):
            load().borrowed_baselines([path], "McMaster18", "rgb", ["1.tif"])


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "benchmarks" / "baselines").glob("*.json")),
                         ids=lambda p: p.name)
def test_the_kept_bm3d_evaluations_can_be_borrowed(path):
    document = json.loads(path.read_text())
    names = document["images"]
    rows = load().borrowed_baselines([path], Path(path).stem, document["color"], names)
    assert sorted(rows) == ["15", "25", "50"]
    for sigma, entry in rows.items():
        assert len(entry["bm3d"]["per_image"]["psnr"]) == len(names) == len(entry["noisy"]["per_image"]["psnr"])
        assert entry["noisy"]["psnr"] < entry["bm3d"]["psnr"] < 40


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 6-step run of a tiny ResNet whose config names a folder of three validation images."""
    import numpy as np
    from PIL import Image

    from bfcnn.config import config_from_dict
    from bfcnn.training.loop import Trainer

    root = tmp_path_factory.mktemp("tiny_run")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, size=(32, 32), dtype=np.uint8)).save(images / f"{i}.png")
    config = config_from_dict({
        "model": {"type": "resnet", "channels": 1, "filters": 4, "blocks": 1, "batch_norm": False},
        "dataset": {"inputs": [str(images)], "patch_size": 16, "batch_size": 2},
        "train": {"steps": 6, "checkpoint_every": 2, "tensorboard": False, "image_summaries_every": 0},
        "validation": {"directory": str(images), "every": 1000},
    }, require_inputs=True)
    Trainer(config, root / "run").run()
    return root / "run", images


def ship(run, zoo, *more):
    return load().main(["--run", str(run), "--name", "tiny", "--description", "d", "--baseline",
                        "--sigmas", "25", "--zoo", str(zoo), *more])


def test_a_new_entry_is_written_whole_with_checksums_of_its_files(tiny_run, tmp_path):
    run, _ = tiny_run
    assert ship(run, tmp_path) == 0
    card = json.loads((tmp_path / "tiny.json").read_text())
    assert card["validation"]["images"] == 3 and "25" in card["validation"]["results"]
    for kind, name in (("keras", "tiny.keras"), ("tflite", "tiny.tflite")):
        assert card["files"][kind]["path"] == name
        assert card["files"][kind]["sha256"] == sha256(tmp_path / name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.json", "tiny.keras", "tiny.tflite"]


def test_a_bad_validation_image_is_one_line_and_writes_nothing(tiny_run, tmp_path, capsys):
    import shutil

    run, images = tiny_run
    broken = tmp_path / "images"
    shutil.copytree(images, broken)
    (broken / "3.png").write_bytes(b"not a png")
    config = (run / "config.yaml").read_text().replace(str(images), str(broken))
    other = tmp_path / "run"
    shutil.copytree(run, other)
    (other / "config.yaml").write_text(config)
    zoo = tmp_path / "zoo"
    assert ship(other, zoo) == 2
    error = capsys.readouterr().err
    assert "cannot read image" in error and "3.png" in error and "Traceback" not in error
    assert not zoo.exists() or not list(zoo.iterdir())


def test_a_failure_before_the_card_leaves_the_old_entry_as_it_was(tiny_run, tmp_path, monkeypatch):
    """New weights beside the old card's sha256 would make `bfcnn.load_model` call the entry corrupt."""
    run, _ = tiny_run
    old = {name: json.dumps({"old": name}) for name in ("tiny.keras", "tiny.tflite", "tiny.json")}
    for name, text in old.items():
        (tmp_path / name).write_text(text)
    script = load()
    monkeypatch.setattr(script, "speed", lambda *a: (_ for _ in ()).throw(RuntimeError("timing failed")))
    with pytest.raises(RuntimeError, match="timing failed"):
        script.main(["--run", str(run), "--name", "tiny", "--description", "d", "--baseline", "--sigmas", "25",
                     "--zoo", str(tmp_path)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.json", "tiny.keras", "tiny.tflite"]
    assert {name: (tmp_path / name).read_text() for name in old} == old


def test_todays_graph_rebuilds_a_model_whose_layers_are_set_otherwise():
    """Layer kinds alike is not enough: a multiscale model saved before its lifts skipped their
    crop (`PixelShuffle(crop=True)`, same weights) is rebuilt; today's own graph is kept."""
    import keras

    from bfcnn.layers import PixelShuffle

    architecture = {"type": "multiscale", "channels": 1, "levels": 2, "filters": 4, "blocks": 1}
    model = bfcnn.build_model(architecture)
    script = load()
    assert script.todays_graph(model, architecture) is model

    def cropping(layer):
        if isinstance(layer, PixelShuffle):
            return PixelShuffle.from_config({**layer.get_config(), "crop": True})
        return layer.__class__.from_config(layer.get_config())

    older = keras.models.clone_model(model, clone_function=cropping)
    older.set_weights(model.get_weights())
    assert any(isinstance(layer, PixelShuffle) and layer.crop for layer in older.layers)
    rebuilt = script.todays_graph(older, architecture)
    assert rebuilt is not older
    assert not any(isinstance(layer, PixelShuffle) and layer.crop for layer in rebuilt.layers)
