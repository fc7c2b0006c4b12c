"""scripts/mae_table.py: the starring of failures, the exit status and the marker writing (models from the zoo)."""


import pytest
from conftest import load_script


@pytest.fixture(scope="module")
def script():
    return load_script("scripts/mae_table.py")


def test_markdown_stars_every_cell_worse_than_the_noisy_image(script):
    table = {1.0: {"noisy": 0.80, "a": 0.70, "b": 1.68}, 50.0: {"noisy": 39.9, "a": 5.0, "b": 39.95}}
    text, worse = script.markdown(table, ["a", "b"], "title")
    assert worse == 2
    lines = text.splitlines()
    assert lines[4] == "| 1 | 0.80 | 0.70 | 1.68 * |"
    assert lines[5] == "| 50 | 39.90 | 5.00 | 39.95 * |"


def test_the_table_goes_between_the_markers_and_a_failure_exits_1(script, tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{script.BEGIN}\nold\n{script.END}\noutro\n")
    def measure(names, channels, dataset, max_images, known_noise):
        assert not known_noise
        table = {1.0: {"noisy": 0.8}, 5.0: {"noisy": 4.0}}
        for name in names:
            table[1.0][name], table[5.0][name] = (0.9, 2.0) if name == "resnet_gray_s" else (0.5, 2.0)
        return table, 3, 2

    monkeypatch.setattr(script, "measure", measure)
    status = script.main(["--write", str(readme), "--max-images", "3"])
    assert status == 1
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "old" not in text
    assert "| 1 | 0.80 | 0.50 | 0.50 | 0.90 * |" in text and "| 5 | 4.00 | 2.00 | 2.00 | 2.00 |" in text
    assert "gray models, scikit-image photographs (3 images):" in text and "Set12 (3 images)" in text
    assert "color models, scikit-image photographs (3 images; 2 of them gray, the same on all three channels):" in text
    # the command line as given, --max-images included
    assert f"with `python scripts/mae_table.py --write {readme} --max-images 3`." in text


def test_write_with_a_subset_of_the_models_is_refused_before_measuring(script, tmp_path, monkeypatch, capsys):
    """The file holds every model's tables: writing a subset would drop the others (the color ones)."""
    readme = tmp_path / "README.md"
    readme.write_text(f"{script.BEGIN}\nold\n{script.END}\n")
    monkeypatch.setattr(script, "measure", lambda *a: pytest.fail("measured"))
    assert script.main(["--models", "resnet_gray_s", "--write", str(readme)]) == 2
    error = capsys.readouterr().err
    assert "--write replaces the tables of every zoo model" in error and "Traceback" not in error
    assert readme.read_text() == f"{script.BEGIN}\nold\n{script.END}\n"


def test_an_unknown_model_is_one_line_and_exit_2(script, monkeypatch, capsys):
    monkeypatch.setattr(script, "measure", lambda *a: pytest.fail("measured"))
    assert script.main(["--models", "nosuch"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "nosuch" in error and len(error.strip().splitlines()) == 1


@pytest.mark.parametrize("count", ["0", "-1", "x"])
def test_max_images_must_be_at_least_one(script, monkeypatch, capsys, count):
    monkeypatch.setattr(script, "measure", lambda *a: pytest.fail("measured"))
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--models", "resnet_gray_s", "--max-images", count])
    assert exit_info.value.code == 2 and "--max-images" in capsys.readouterr().err


def test_a_color_title_counts_the_gray_images_among_them(script):
    import numpy as np

    gray = np.repeat(np.arange(12, dtype=np.uint8).reshape(3, 4, 1), 3, axis=-1)
    color = gray.copy()
    color[0, 0, 1] = 200
    assert script.gray_count([gray, color, gray]) == 2
    assert script.title("color", "skimage", 11, 7) == ("MAE on the 0-255 scale, color models, scikit-image "
                                                       "photographs (11 images; 7 of them gray, the same on all "
                                                       "three channels):")
    assert script.title("gray", "skimage", 11, 0) == "MAE on the 0-255 scale, gray models, scikit-image photographs (11 images):"


def test_a_file_without_markers_stops_before_measuring(script, tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    monkeypatch.setattr(script, "measure", lambda *a: pytest.fail("measured before checking the markers"))
    with pytest.raises(SystemExit, match="needs one"):
        script.main(["--write", str(readme)])


def test_the_clean_input_row_is_labelled_and_never_starred(script):
    table = {0.0: {"noisy": 0.0, "a": 0.79}, 1.0: {"noisy": 0.80, "a": 1.14}}
    text, worse = script.markdown(table, ["a"], "title")
    assert worse == 1
    lines = text.splitlines()
    assert lines[4] == "| 0 (clean input) | 0.00 | 0.79 |"
    assert lines[5] == "| 1 | 0.80 | 1.14 * |"


def test_measure_scores_the_clean_image_first(script, monkeypatch):
    import bfcnn.evaluation

    seen = {}

    def fake(denoisers, images, sigmas, seed, metrics):
        seen["sigmas"] = tuple(sigmas)
        return {s: {"noisy": {"mae": s}, **{n: {"mae": s} for n in denoisers}} for s in sigmas}

    monkeypatch.setattr(bfcnn.evaluation, "evaluate_denoisers", fake)
    table, count, gray = script.measure(["resnet_gray_s"], 1, "skimage", 1)
    assert seen["sigmas"][0] == script.CLEAN_ROW and seen["sigmas"][1:] == (1.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0)
    assert count == 1 and gray == 0 and list(table)[0] == 0.0


def test_known_noise_adds_a_column_per_model_told_the_std(script, tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    readme.write_text(f"{script.BEGIN}\nold\n{script.END}\n")
    def measure(names, channels, dataset, max_images, known_noise):
        assert known_noise
        table = {1.0: {"noisy": 0.8}}
        for name in names:
            table[1.0][name], table[1.0][script.given(name)] = 0.9, 0.7
        return table, 3, 0

    monkeypatch.setattr(script, "measure", measure)
    assert script.main(["--write", str(readme), "--known-noise"]) == 1  # the blind columns still fail at std 1
    text = readme.read_text()
    assert "| noise std | noisy | `n3net_gray` | `n3net_gray` given σ | `pyramid_gray_m` | " in text
    assert "| 1 | 0.80 | 0.90 * | 0.70 | 0.90 * | 0.70 | 0.90 * | 0.70 |" in text
    assert "told the noise std" in text


def test_given_sigma_cuts_the_models_change_to_the_noise(script):
    """The column's denoiser: a model returning zeros, told std 2, keeps 1 - 4 / mean(x^2) of the input."""
    import numpy as np

    from bfcnn.evaluate import given_sigma

    noisy = np.full((4, 5, 1), 10.0, np.float32)
    told = given_sigma(lambda x, sigma: np.zeros_like(x))
    np.testing.assert_allclose(told(noisy, 2.0), noisy * (1 - 4.0 / 100.0), rtol=1e-6)
    np.testing.assert_allclose(told(noisy, 20.0), 0.0)  # more noise than change: all of it
