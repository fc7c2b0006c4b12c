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
    measured = {1.0: {"noisy": 0.8, "resnet_gray_s": 0.9}, 5.0: {"noisy": 4.0, "resnet_gray_s": 2.0}}
    monkeypatch.setattr(script, "measure", lambda names, channels, dataset, max_images: (measured, 3))
    status = script.main(["--models", "resnet_gray_s", "--write", str(readme)])
    assert status == 1
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "old" not in text
    assert "| 1 | 0.80 | 0.90 * |" in text and "| 5 | 4.00 | 2.00 |" in text
    assert "scikit-image photographs (3 images)" in text and "Set12 (3 images)" in text


def test_a_file_without_markers_stops_before_measuring(script, tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    monkeypatch.setattr(script, "measure", lambda *a: pytest.fail("measured before checking the markers"))
    with pytest.raises(SystemExit, match="needs one"):
        script.main(["--models", "resnet_gray_s", "--write", str(readme)])


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
    table, count = script.measure(["resnet_gray_s"], 1, "skimage", 1)
    assert seen["sigmas"][0] == script.CLEAN_ROW and seen["sigmas"][1:] == (1.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0)
    assert count == 1 and list(table)[0] == 0.0
