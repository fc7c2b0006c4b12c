"""scripts/compare_options.py on a tiny synthetic setup (the real measurement is not run here)."""

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compare_options.py"


@pytest.fixture(scope="module")
def script():
    return load_script("scripts/compare_options.py")


@pytest.fixture
def setup(tmp_path, script):
    """Random gray images for training and validation, a tiny base pipeline, a document with markers."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for folder, count, size in (("train", 4, 40), ("val", 2, 24)):
        (tmp_path / folder).mkdir()
        for i in range(count):
            image = rng.integers(0, 256, (size, size), dtype=np.uint8)
            Image.fromarray(image).save(tmp_path / folder / f"{i}.png")
    base = tmp_path / "base.yaml"
    base.write_text(f"""
model: {{type: resnet, channels: 1, filters: 4, blocks: 1}}
dataset:
  inputs: [{{directory: {tmp_path / 'train'}}}]
  color: gray
  patch_size: 16
  batch_size: 2
corruption: {{additive: {{sigma: [0, 55]}}}}
train: {{steps: 100, log_every: 1, image_summaries_every: 0, tensorboard: false}}
validation: {{directory: {tmp_path / 'val'}, sigmas: [25], every: 1000}}
""")
    doc = tmp_path / "options.md"
    doc.write_text(f"# Options\n\nbefore\n\n{script.BEGIN}\nold table\n{script.END}\n\nafter\n")
    args = ["--base", str(base), "--runs", str(tmp_path / "runs"), "--dataset", str(tmp_path / "val")]
    return tmp_path, args, doc


def test_every_variant_is_a_valid_config(script):
    from bfcnn.config import load_config

    base = SCRIPT.parents[1] / "pipelines" / "options_base.yaml"
    for variant in script.VARIANTS:
        config = load_config(base, script.variant_overrides(variant))
        for key, value in script.VARIANTS[variant].items():
            assert config.model[key] == value
    assert set(script.VARIANTS) == {"baseline", "soft_orthonormal", "center_away", "block_gate", "squeeze_excite",
                                    "sparsity", "stochastic_depth", "prelu"}


def test_dry_run_builds_every_variant_and_trains_nothing(setup, script, capsys):
    tmp_path, args, doc = setup
    before = doc.read_text()
    assert script.main(args + ["--dry-run", "--write", str(doc)]) == 0
    out = capsys.readouterr().out
    for variant in script.VARIANTS:
        assert re.search(rf"{variant}: [\d,]+ parameters", out), variant
    assert "model.gate=squeeze_excite" in out
    assert "would evaluate 2 images" in out
    assert not (tmp_path / "runs").exists()
    assert doc.read_text() == before


def test_write_needs_the_markers(setup, script):
    tmp_path, args, _ = setup
    plain = tmp_path / "plain.md"
    plain.write_text("# no markers\n")
    with pytest.raises(SystemExit, match="options-table:begin"):
        script.main(args + ["--dry-run", "--write", str(plain)])


def test_two_steps_train_score_and_write(setup, script, capsys):
    tmp_path, args, doc = setup
    argv = args + ["--steps", "2", "--variants", "baseline", "squeeze_excite", "--write", str(doc)]
    assert script.main(argv) == 0
    out = capsys.readouterr().out
    rows = re.findall(r"^\| (baseline|squeeze_excite) \|.*\| ([\d.]+) \| ([+\-\d.]+|-) \| (\d+) \|$", out, re.M)
    assert [r[0] for r in rows] == ["baseline", "squeeze_excite"]
    assert all(0.0 < float(r[1]) < 60.0 for r in rows)
    assert rows[0][2] == "+0.00"
    text = doc.read_text()
    assert text.startswith("# Options\n\nbefore\n\n") and text.endswith("\n\nafter\n")
    assert "old table" not in text and "| squeeze_excite | `gate: squeeze_excite` |" in text
    for variant in ("baseline", "squeeze_excite"):
        assert (tmp_path / "runs" / variant / "model.keras").is_file()
    # A second call reuses the finished runs instead of training again.
    states = [run[3] for run in script.plan(script.parse_args(argv))]
    assert states == ["finished", "finished"]
