"""scripts/results_table.py on hand-made `bfcnn.evaluate --out` documents (no model is run)."""

import json

import pytest
from conftest import load_script


@pytest.fixture(scope="module")
def script():
    return load_script("scripts/results_table.py")


def document(dataset="../shared/datasets/val/Set12", model="m", rows=None, sigma="25", noisy=(20.0, 21.0)):
    """An --out document of two images with the model row and any other `rows` {name: per-image PSNRs}."""
    def row(values):
        finite = [v for v in values if v is not None]
        mean = sum(finite) / len(finite) if len(finite) == len(values) else None  # inf is null in strict JSON
        return {"psnr": mean, "ssim": 0.9, "seconds_per_image": 0.1, "per_image": {"psnr": list(values)}}

    entry = {"noisy": row(noisy), "model": row((30.0, 31.0)), **{k: row(v) for k, v in (rows or {}).items()}}
    return {"model": model, "dataset": dataset, "color": "gray", "metric": "psnr", "seed": 0,
            "images": ["01.png", "02.png"], "results": {sigma: entry}}


def write(tmp_path, name, doc):
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return str(path)


@pytest.mark.parametrize("dataset", ["../shared/datasets/val/Set12/", "/abs/path/val/Set12", "Set12"])
def test_baselines_from_the_same_folder_written_another_way_are_accepted(script, tmp_path, capsys, dataset):
    new = write(tmp_path, "new.json", document())
    old = write(tmp_path, "old.json", document(dataset=dataset, model="other", rows={"bm3d": (29.0, 32.0)}))
    assert script.main([new, "--baselines-from", old]) == 0
    assert "m - bm3d at sigma 25: +0.000 dB PSNR (standard error 1.000; better on 1 of 2 images)" in \
        capsys.readouterr().out


def test_baselines_from_another_folder_or_other_noise_are_still_refused(script, tmp_path, capsys):
    new = write(tmp_path, "new.json", document())
    other = write(tmp_path, "other.json", document(dataset="../shared/datasets/val/BSD68", rows={"bm3d": (1.0, 2.0)}))
    assert script.main([new, "--baselines-from", other]) == 2
    assert "differs in 'dataset'" in capsys.readouterr().err
    noise = write(tmp_path, "noise.json", document(noisy=(20.0, 21.5), rows={"bm3d": (1.0, 2.0)}))
    assert script.main([new, "--baselines-from", noise]) == 2
    assert "noisy images at sigma 25 differ" in capsys.readouterr().err


def test_an_infinite_psnr_is_shown_as_inf_and_left_out_of_the_paired_difference(script, tmp_path, capsys):
    """A baseline at sigma 0 returns its input: PSNR inf, null in the JSON file."""
    doc = document(sigma="0", noisy=(None, None), rows={"identity": (None, 33.0)})
    assert script.main([write(tmp_path, "r.json", doc)]) == 0
    out = capsys.readouterr().out
    assert "nan" not in out
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert [c.strip() for c in table[2].split("|")[1:-1]][:2] == ["0", "inf"]
    assert "m - identity at sigma 0: -2.000 dB PSNR (standard error 0.000; better on 0 of 1 images; 1 image(s) " \
           "with an infinite PSNR (output identical to the clean image) left out)" in out
    doc = document(sigma="0", noisy=(None, None), rows={"identity": (None, None)})
    assert script.main([write(tmp_path, "r.json", doc)]) == 0
    assert "m - identity at sigma 0: no image with two finite PSNRs; 2 image(s)" in capsys.readouterr().out


def test_only_baseline_rows_are_borrowed_not_the_other_files_model_rows(script, tmp_path, capsys):
    new = write(tmp_path, "new.json", document())
    old = write(tmp_path, "old.json", document(model="other", rows={
        "bm3d": (29.0, 32.0), "model_x8": (31.0, 32.0), "model_strength_0.5": (25.0, 26.0)}))
    assert script.main([new, "--baselines-from", old]) == 0
    out = capsys.readouterr().out
    assert "m - bm3d at sigma 25" in out and "model_x8" not in out and "model_strength" not in out
