"""scripts/compare_n3.py: the twins' overrides and the table (the measurement itself is not run here)."""

from conftest import load_script


def load():
    return load_script("scripts/compare_n3.py")


def test_twins_differ_only_in_the_temperature_and_steps():
    script = load()
    assert script.twin_overrides(True, None) == ["model.scale_equivariant=true"]
    assert script.twin_overrides(False, 600) == ["model.scale_equivariant=false", "train.steps=600"]


def test_table_has_one_row_per_twin_and_a_consistent_header():
    script = load()
    rows = {"se": {"psnr": [30.1, 28.0, 24.9], "steps": 600, "hours": 0.2, "homogeneity": 1e-6},
            "plain": {"psnr": [30.0, 27.9, 24.8], "steps": 600, "hours": 0.2, "homogeneity": 3e-2}}
    text = script.table(rows, [24.6, 20.2, 14.2], 12, script.parse_args(["--steps", "600"]))
    lines = text.splitlines()
    assert all(line.count("|") == lines[0].count("|") for line in lines[:4])
    assert "| 600 | 0.20 | 30.10 / 28.00 / 24.90 | 1.0e-06 |" in lines[2]
    assert lines[3].startswith("| plain") and "3.0e-02" in lines[3]


def test_homogeneity_error_is_zero_for_a_linear_model_and_not_for_an_affine_one():
    import keras
    import numpy as np

    script = load()
    image = np.random.default_rng(0).uniform(0, 255, (64, 64, 1)).astype(np.float32)
    linear = keras.Sequential([keras.Input((None, None, 1)), keras.layers.Conv2D(1, 3, padding="same", use_bias=False)])
    affine = keras.Sequential([keras.Input((None, None, 1)), keras.layers.Rescaling(1.0, offset=10.0)])
    assert script.homogeneity_error(linear, image) < 1e-6
    assert script.homogeneity_error(affine, image) > 1e-2
