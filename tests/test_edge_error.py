"""scripts/edge_error.py: the edge and interior errors it prints are those of the denoised crop."""

import numpy as np
import pytest

from conftest import load_script


@pytest.fixture(scope="module")
def script():
    return load_script("scripts/edge_error.py")


def test_edge_errors_of_a_known_output(script):
    """A model returning the clean image plus 1 in the last column and 2 in the interior."""
    clean = np.random.default_rng(0).integers(0, 256, (30, 40, 1), dtype=np.uint8)

    def model(noisy):  # [H, W, C] in and out, as bfcnn.denoise calls a function
        out = clean.astype(np.float32) + 2.0
        out[:, -1] = clean[:, -1].astype(np.float32) + 1.0
        return out

    errors = script.edge_errors(model, clean, sigma=5.0)
    assert errors["last_column"] == pytest.approx(1.0)
    assert errors["interior"] == pytest.approx(2.0)
    assert errors["last_row"] == pytest.approx((39 * 2.0 + 1.0) / 40)


def test_table_for_a_zoo_model_and_bad_sizes(script, capsys):
    assert script.main(["--models", "resnet_gray_s", "--sizes", "24", "22x26"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| resnet_gray_s")]
    assert [row.split("|")[2].strip() for row in rows] == ["24x24", "22x26"]
    assert script.main(["--models", "resnet_gray_s", "--sizes", "600"]) == 2
    assert "larger than the 512x512 photograph" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.parse_args(["--sizes", "0x5"])
