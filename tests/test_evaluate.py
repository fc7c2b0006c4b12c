"""`python -m bfcnn.evaluate` end to end, and the classical baselines."""

import importlib.util
import io
import json
import sys
import warnings

import numpy as np
import pytest

from bfcnn import baselines, evaluate
from bfcnn.evaluation import add_noise, noise_seed, psnr
from bfcnn.io import read_image, write_image
from conftest import seed_everything

HAS_BM3D = importlib.util.find_spec("bm3d") is not None


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A saved one-block gray ResNet and a folder of two small real photographs."""
    seed_everything()  # the weights must not depend on which test built them
    import bfcnn
    from skimage import data

    root = tmp_path_factory.mktemp("evaluate")
    model_path = root / "tiny.keras"
    bfcnn.build_model({"type": "resnet", "channels": 1, "filters": 8, "blocks": 1}).save(model_path)
    camera = data.camera()
    write_image(root / "images" / "a.png", camera[100:124, 200:232])
    write_image(root / "images" / "sub" / "b.png", camera[300:332, 150:174])
    return model_path, root / "images"


def crop(name, size=64):
    from skimage import data

    image = getattr(data, name)()
    image = image[..., None] if image.ndim == 2 else image
    return image[160 : 160 + size, 200 : 200 + size]


def test_cli_prints_the_table_writes_json_and_images(tiny, tmp_path, capsys):
    model, images = tiny
    out, pictures = tmp_path / "results" / "r.json", tmp_path / "pictures"
    code = evaluate.main(["--model", str(model), "--dataset", str(images), "--sigma", "15", "25",
                          "--baseline", "nlm", "--out", str(out), "--save-images", str(pictures)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "| sigma | noisy PSNR | tiny PSNR | tiny SSIM | nlm PSNR | nlm SSIM | tiny s/img | nlm s/img |" in captured.out
    rows = [line for line in captured.out.splitlines() if line.startswith("|") and line[2:].lstrip()[:1].isdigit()]
    assert [row.split("|")[1].strip() for row in rows] == ["15", "25"]
    assert "2/2" not in captured.out and "4/4" in captured.err  # the progress bar goes to stderr
    assert "tiny - nlm at sigma 25: " in captured.out and "of 2 images)" in captured.out

    result = json.loads(out.read_text())
    assert result["images"] == ["a.png", "sub/b.png"] and result["color"] == "gray"
    entry = result["results"]["25"]
    assert set(entry) == {"noisy", "model", "nlm"}
    assert entry["nlm"]["psnr"] > entry["noisy"]["psnr"]
    assert len(entry["model"]["per_image"]["psnr"]) == 2 and entry["model"]["seconds_per_image"] > 0
    assert not list(out.parent.glob("*.tmp"))

    saved = sorted(p.name for p in pictures.iterdir())
    assert saved == ["001_a_sigma15.png", "001_a_sigma25.png", "002_b_sigma15.png", "002_b_sigma25.png"]
    panel = read_image(pictures / "001_a_sigma25.png")
    assert panel.shape == (24, 4 * 32 + 3 * 4, 1)  # clean | noisy | model | nlm with 4-pixel gaps
    np.testing.assert_array_equal(panel[:, :32], read_image(images / "a.png"))


def test_cli_mae_prints_the_original_noise_level_table(tiny, capsys):
    model, images = tiny
    assert evaluate.main(["--model", str(model), "--dataset", str(images), "--metric", "mae", "--max-images", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "| noise std | noisy MAE | tiny MAE | tiny s/img |" in lines
    rows = [line.split("|") for line in lines if line.startswith("|") and line[2:].lstrip()[:1].isdigit()]
    assert [row[1].strip() for row in rows] == ["1", "5", "10", "20", "30", "40", "50", "60", "70", "80"]
    noisy = [float(row[2]) for row in rows]
    assert noisy == sorted(noisy) and noisy[0] == pytest.approx(0.8, abs=0.1)  # E|N(0, 1)| = 0.798


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_cli_missing_or_empty_dataset_exits_2(tiny, tmp_path, capsys, make):
    dataset = tmp_path / "nowhere"
    if make == "empty":
        dataset.mkdir()
    assert evaluate.main(["--model", str(tiny[0]), "--dataset", str(dataset)]) == 2
    err = capsys.readouterr().err
    assert str(dataset) in err and "Traceback" not in err


def test_cli_bad_baseline_model_and_color_exit_2(tiny, tmp_path, capsys):
    model, images = tiny
    assert evaluate.main(["--model", str(model), "--dataset", str(images), "--baseline", "bm4d"]) == 2
    err = capsys.readouterr().err
    assert "'bm4d'" in err and "'bm3d'" in err and "'nlm'" in err
    assert evaluate.main(["--model", str(tmp_path / "none.keras"), "--dataset", str(images)]) == 2
    assert "none.keras" in capsys.readouterr().err
    assert evaluate.main(["--model", str(model), "--dataset", str(images), "--color", "rgb"]) == 2
    assert "--color rgb" in capsys.readouterr().err


@pytest.mark.parametrize("flag, where, problem", [
    ("--out", "folder", "is a folder"), ("--out", "under_file", "is a file"),
    ("--save-images", "file", "is a file"), ("--save-images", "under_file", "is a file")])
def test_cli_refuses_an_output_it_cannot_write_before_any_work(tiny, tmp_path, capsys, monkeypatch, flag, where,
                                                                problem):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("not a folder")
    target = {"folder": tmp_path / "folder", "file": tmp_path / "file",
              "under_file": tmp_path / "file" / "sub" / "r.json"}[where]
    monkeypatch.setattr(evaluate, "dataset_files", lambda _: pytest.fail("the evaluation started"))
    with pytest.raises(SystemExit) as stop:
        evaluate.main(["--model", str(tiny[0]), "--dataset", str(tiny[1]), flag, str(target)])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and problem in err and "Traceback" not in err


def test_output_problem_asks_the_folder_itself_for_write_access(tmp_path, monkeypatch):
    import os

    folder = tmp_path / "images"
    folder.mkdir()
    writable = {str(tmp_path): False, str(folder): True}
    monkeypatch.setattr(os, "access", lambda path, mode: writable[str(path)])
    assert evaluate.output_problem(folder, folder=True) is None
    writable = {str(tmp_path): True, str(folder): False}
    assert "not writable" in evaluate.output_problem(folder, folder=True)


def test_cli_refuses_a_negative_seed(tiny, capsys):
    with pytest.raises(SystemExit) as stop:
        evaluate.main(["--model", str(tiny[0]), "--dataset", str(tiny[1]), "--seed", "-1"])
    assert stop.value.code == 2 and "--seed" in capsys.readouterr().err


def test_written_json_has_the_usual_permissions(tmp_path):
    import os

    umask = os.umask(0o022)
    try:
        evaluate.write_json(tmp_path / "r.json", {"a": 1})
    finally:
        os.umask(umask)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_cli_skimage_dataset(tiny, capsys):
    files = evaluate.dataset_files("skimage")[1]
    assert {"camera.png", "astronaut.png", "coffee.png"} <= {f.name for f in files}
    assert evaluate.main(["--model", str(tiny[0]), "--dataset", "skimage", "--sigma", "25", "--max-images", "1"]) == 0
    assert "skimage: 1 images (gray)" in capsys.readouterr().out


def test_progress_on_a_non_terminal_prints_tenths():
    stream = io.StringIO()
    progress = evaluate._Progress(20, stream=stream)
    for i in range(20):
        progress.step(f"image {i}")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 10 and lines[-1].startswith("[" + "=" * 30 + "] 20/20")


def test_format_table_writes_inf_for_exact_estimates():
    results = {25.0: {"noisy": {"psnr": 20.0}, "model": {"psnr": float("inf"), "ssim": 1.0, "seconds_per_image": 0.5}}}
    table = evaluate.format_table(results, {"model": "m"}, "psnr")
    assert table.splitlines()[-1].split("|")[3].strip() == "inf"


def test_unknown_baseline_suggests_a_close_name():
    with pytest.raises(baselines.UnknownBaselineError, match="did you mean 'bm3d'"):
        baselines.get_baseline("bm4d")
    assert baselines.list_baselines() == ["bm3d", "nlm"]


def test_missing_bm3d_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "bm3d", None)  # as if not installed
    with pytest.raises(baselines.BaselineUnavailableError, match=r"pip install 'bfcnn\[bench\]'"):
        baselines.bm3d(np.zeros((8, 8, 1), np.float32), 25.0)


def _beats_noisy(denoise, clean, sigma=25.0, margin=3.0):
    noisy = add_noise(clean, sigma, noise_seed(0, 0, sigma))
    estimate = denoise(noisy, sigma)
    assert estimate.shape == clean.shape and estimate.dtype == np.float32
    assert psnr(clean, estimate) > psnr(clean, noisy) + margin


@pytest.mark.skipif(not HAS_BM3D, reason="the bm3d package is not installed")
def test_bm3d_beats_noisy_gray():
    _beats_noisy(baselines.get_baseline("bm3d"), crop("camera"), margin=6.0)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_BM3D, reason="the bm3d package is not installed")
def test_bm3d_beats_noisy_color():
    _beats_noisy(baselines.get_baseline("bm3d"), crop("astronaut", 48), margin=6.0)


@pytest.mark.parametrize("name", ["camera", "astronaut"])
def test_nlm_beats_noisy(name):
    _beats_noisy(baselines.get_baseline("nlm"), crop(name))


def test_cli_ensemble_adds_an_x8_row_next_to_the_model(tiny, tmp_path, capsys):
    model, images = tiny
    out = tmp_path / "r.json"
    code = evaluate.main(["--model", str(model), "--dataset", str(images), "--sigma", "25", "--ensemble",
                          "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "| sigma | noisy PSNR | tiny PSNR | tiny SSIM | tiny x8 PSNR | tiny x8 SSIM |" in captured.out
    entry = json.loads(out.read_text())["results"]["25"]
    assert set(entry) == {"noisy", "model", "model_x8"}
    assert entry["model_x8"]["psnr"] != entry["model"]["psnr"]  # an untrained model is not rotation invariant


def test_cli_ensemble_sizes_add_one_row_each(tiny, tmp_path, capsys):
    model, images = tiny
    out = tmp_path / "r.json"
    code = evaluate.main(["--model", str(model), "--dataset", str(images), "--sigma", "25", "--ensemble", "2", "4",
                          "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "| tiny x2 PSNR | tiny x2 SSIM | tiny x4 PSNR | tiny x4 SSIM |" in captured.out
    entry = json.loads(out.read_text())["results"]["25"]
    assert set(entry) == {"noisy", "model", "model_x2", "model_x4"}
    assert len({entry[key]["psnr"] for key in ("model", "model_x2", "model_x4")}) == 3


def test_paired_difference_mean_standard_error_and_wins():
    from bfcnn.evaluation import paired_difference

    d = paired_difference([30.0, 31.0, 29.0, 33.0], [29.5, 31.5, 28.0, 32.0])  # differences .5 -.5 1 1
    assert d["mean"] == pytest.approx(0.5) and d["better"] == 3 and d["images"] == 4
    assert d["standard_error"] == pytest.approx(np.std([0.5, -0.5, 1, 1], ddof=1) / 2)
    assert paired_difference([1.0], [2.0]) == {"mean": -1.0, "standard_error": 0.0, "better": 0, "images": 1}
    with pytest.raises(ValueError, match="equally long"):
        paired_difference([1.0, 2.0], [1.0])


def test_paired_lines_leave_out_infinite_psnrs_without_a_warning():
    """At sigma 0 a baseline returns its input (PSNR inf): the line read '-inf dB PSNR (standard
    error nan ...)' after a numpy RuntimeWarning."""
    from bfcnn.evaluate import format_paired

    def entry(psnrs):
        return {"per_image": {"psnr": psnrs}}

    inf = float("inf")
    results = {0.0: {"model": entry([41.5, 54.0]), "nlm": entry([inf, inf]), "same": entry([inf, None])},
               5.0: {"model": entry([inf, 30.0, 31.0]), "nlm": entry([28.0, 29.0, 32.0]), "same": entry([inf, inf, inf])}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lines = format_paired(results, {"model": "m", "nlm": "nlm", "same": "same"}, "model").splitlines()
    assert lines[0] == ("m - nlm at sigma 0: no image with two finite PSNRs; 2 image(s) with an infinite PSNR "
                        "(output identical to the clean image) left out")
    assert lines[1] == ("m - nlm at sigma 5: +0.000 dB PSNR (standard error 1.000; better on 1 of 2 images; 1 image(s) "
                        "with an infinite PSNR (output identical to the clean image) left out)")
    assert lines[2] == "m - same at sigma 0: no image with two finite PSNRs; 2 image(s) with an infinite PSNR " \
                       "(output identical to the clean image) left out"
    assert "nan" not in "\n".join(lines) and "inf dB" not in "\n".join(lines)
    results[0.0]["model"] = entry([inf, inf])
    assert format_paired(results, {"model": "m", "nlm": "nlm"}, "model").splitlines()[0] == (
        "m - nlm at sigma 0: identical: both infinite PSNR (output identical to the clean image) on all 2 images")


def test_results_table_merges_one_file_per_sigma_and_refuses_mixed_ones(tiny, tmp_path, capsys):
    from conftest import load_script

    model, images = tiny
    outs = []
    for sigma in ("15", "25"):
        outs.append(tmp_path / f"r{sigma}.json")
        assert evaluate.main(["--model", str(model), "--dataset", str(images), "--sigma", sigma,
                              "--baseline", "nlm", "--out", str(outs[-1])]) == 0
    capsys.readouterr()
    script = load_script("scripts/results_table.py")
    assert script.main([str(o) for o in outs]) == 0
    printed = capsys.readouterr().out
    rows = [line.split("|")[1].strip() for line in printed.splitlines() if line.startswith("|") and line[2:].lstrip()[:1].isdigit()]
    assert rows == ["15", "25"]
    single = json.loads(outs[1].read_text())["results"]["25"]
    assert f"{single['model']['psnr']:.2f}" in [c.strip() for c in printed.splitlines()[-3].split("|")]
    assert "tiny - nlm at sigma 15: " in printed and "tiny - nlm at sigma 25: " in printed

    other = json.loads(outs[1].read_text())
    other["seed"] = 1
    (tmp_path / "other.json").write_text(json.dumps(other))
    assert script.main([str(outs[0]), str(tmp_path / "other.json")]) == 2
    assert "differ in 'seed'" in capsys.readouterr().err
    assert script.main([str(outs[0]), str(outs[0])]) == 2
    assert "more than one file" in capsys.readouterr().err


def test_results_table_pairs_a_model_against_the_baselines_of_an_earlier_evaluation(tiny, tmp_path, capsys):
    """--baselines-from gives the paired lines a side-by-side run gives, and refuses other noise."""
    from conftest import load_script

    model, images = tiny
    both, alone = tmp_path / "both.json", tmp_path / "alone.json"
    assert evaluate.main(["--model", str(model), "--dataset", str(images), "--sigma", "15", "25",
                          "--baseline", "nlm", "--out", str(both)]) == 0
    assert evaluate.main(["--model", str(model), "--dataset", str(images), "--sigma", "15", "25",
                          "--out", str(alone)]) == 0
    capsys.readouterr()
    script = load_script("scripts/results_table.py")
    assert script.main([str(both)]) == 0
    side_by_side = [line for line in capsys.readouterr().out.splitlines() if " - nlm at sigma " in line]
    assert script.main([str(alone), "--baselines-from", str(both)]) == 0
    borrowed = [line for line in capsys.readouterr().out.splitlines() if " - nlm at sigma " in line]
    assert len(side_by_side) == 2 and borrowed == side_by_side

    other = json.loads(both.read_text())
    other["results"]["25"]["noisy"]["per_image"]["psnr"][0] += 0.5  # as if drawn with other noise
    (tmp_path / "other.json").write_text(json.dumps(other))
    assert script.main([str(alone), "--baselines-from", str(tmp_path / "other.json")]) == 2
    assert "noisy images at sigma 25 differ" in capsys.readouterr().err
    assert script.main([str(alone), "--baselines-from", str(tmp_path / "r15.json")]) == 2  # no such file
    one_sigma = json.loads(both.read_text())
    del one_sigma["results"]["25"]
    (tmp_path / "one.json").write_text(json.dumps(one_sigma))
    assert script.main([str(alone), "--baselines-from", str(tmp_path / "one.json")]) == 2
    assert "has no sigma 25" in capsys.readouterr().err


def test_results_table_compares_two_precisions_of_one_model(tiny, tmp_path, capsys):
    """--compare-with pairs the model against another evaluation's model row (here float32)."""
    from conftest import load_script

    model, images = tiny
    exact, rounded = tmp_path / "f32.json", tmp_path / "bf16.json"
    for precision, out in (("float32", exact), ("bfloat16", rounded)):
        assert evaluate.main(["--model", str(model), "--dataset", str(images), "--sigma", "25",
                              "--precision", precision, "--out", str(out)]) == 0
    capsys.readouterr()
    script = load_script("scripts/results_table.py")
    assert script.main([str(rounded), "--compare-with", str(exact)]) == 0
    printed = capsys.readouterr().out
    assert "| tiny bfloat16 PSNR |" in printed and "| tiny float32 PSNR |" in printed
    line = next(line for line in printed.splitlines() if "tiny bfloat16 - tiny float32 at sigma 25: " in line)
    mean = float(line.split(": ")[1].split()[0])
    per_image = [json.loads(f.read_text())["results"]["25"]["model"]["per_image"]["psnr"] for f in (rounded, exact)]
    assert mean == pytest.approx(np.mean(np.subtract(*per_image)), abs=0.0051)
    assert script.main([str(exact), "--compare-with", str(exact)]) == 2
    assert "same model and precision" in capsys.readouterr().err
    assert script.main([str(exact), str(rounded)]) == 2
    assert "differ in 'precision'" in capsys.readouterr().err
    assert script.main([str(rounded), "--compare-with", str(exact), str(rounded)]) == 2  # mixed precisions
    assert "differ in 'precision'" in capsys.readouterr().err

    # two runs whose files share a name are told apart by their paths
    other = json.loads(exact.read_text())
    other["model"] = "runs/b/model.keras"
    (tmp_path / "b.json").write_text(json.dumps(other))
    first = json.loads(exact.read_text())
    first["model"] = "runs/a/model.keras"
    (tmp_path / "a.json").write_text(json.dumps(first))
    assert script.main([str(tmp_path / "a.json"), "--compare-with", str(tmp_path / "b.json")]) == 0
    assert "model - runs/b/model.keras at sigma 25: +0.000 dB" in capsys.readouterr().out


def test_cli_eight_bit_says_so_and_records_it(tiny, tmp_path, capsys):
    model, images = tiny
    out = tmp_path / "r.json"
    args = ["--model", str(model), "--dataset", str(images), "--sigma", "50", "--max-images", "1", "--out", str(out)]
    assert evaluate.main(args + ["--eight-bit"]) == 0
    assert "noisy images clipped and rounded to 8 bits" in capsys.readouterr().out
    eight = json.loads(out.read_text())
    assert "--eight-bit" in eight["protocol"]
    assert evaluate.main(args) == 0
    plain = json.loads(out.read_text())
    assert "--eight-bit" not in plain["protocol"]
    assert eight["results"]["50"]["model"]["psnr"] != plain["results"]["50"]["model"]["psnr"]  # it saw other input


def _mae_rows(tiny, tmp_path, capsys, *flags, sigmas=("2",)):
    """(printed table, JSON document) of `evaluate --metric mae` on the tiny model with `flags`."""
    model, images = tiny
    out = tmp_path / "r.json"
    code = evaluate.main(["--model", str(model), "--dataset", str(images), "--sigma", *sigmas, "--metric", "mae",
                          *flags, "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out, json.loads(out.read_text())


def test_cli_strength_adds_a_row_per_strength(tiny, tmp_path, capsys):
    printed, document = _mae_rows(tiny, tmp_path, capsys, "--strength", "1", "0", "0.5")
    assert "tiny strength 0.5" in printed
    entry = document["results"]["2"]
    assert document["strengths"] == [1.0, 0.0, 0.5]
    assert entry["model_strength_1"]["mae"] == entry["model"]["mae"]
    # strength 0 is the noisy image itself, rounded to uint8 as every output is scored
    assert abs(entry["model_strength_0"]["mae"] - entry["noisy"]["mae"]) < 0.1
    assert entry["model_strength_0"]["mae"] != entry["model_strength_0.5"]["mae"] != entry["model"]["mae"]


def test_cli_strength_outside_0_to_1_is_refused(tiny, capsys):
    model, images = tiny
    with pytest.raises(SystemExit):
        evaluate.main(["--model", str(model), "--dataset", str(images), "--strength", "1.2"])
    assert "--strength needs values from 0 (the input) to 1" in capsys.readouterr().err


def test_cli_known_noise_adds_the_model_told_each_sigma(tiny, tmp_path, capsys):
    """The row is the model's output with the change cut to each level's noise
    (`bfcnn.denoise(noise_std=sigma)`): at sigma 0 the noisy image itself, at a level the
    untrained model changes the image by more than, between the input and the model."""
    printed, document = _mae_rows(tiny, tmp_path, capsys, "--known-noise", sigmas=("0", "2"))
    assert "tiny given sigma" in printed
    assert document["known_noise"] == [1.0]
    assert document["results"]["0"][evaluate.known_noise_key()]["mae"] == 0  # told: no noise, so no change
    entry = document["results"]["2"]
    assert entry[evaluate.known_noise_key()]["mae"] not in (entry["model"]["mae"], entry["noisy"]["mae"])


def test_cli_known_noise_factors_tell_the_model_a_wrong_level(tiny, tmp_path, capsys):
    """`--known-noise 0.5 1 2`: a row per factor, each cutting the model's change to another level."""
    printed, document = _mae_rows(tiny, tmp_path, capsys, "--known-noise", "0.5", "1", "2")
    assert "tiny given sigma x0.5" in printed and "tiny given sigma x2" in printed
    assert document["known_noise"] == [0.5, 1.0, 2.0]
    entry = document["results"]["2"]
    rows = [entry[evaluate.known_noise_key(f)]["mae"] for f in (0.5, 1.0, 2.0)]
    assert len(set(rows)) == 3  # the untrained model changes the image by more than twice std 2
    model, images = tiny
    with pytest.raises(SystemExit):
        evaluate.main(["--model", str(model), "--dataset", str(images), "--known-noise", "0"])
    assert "--known-noise needs factors > 0" in capsys.readouterr().err
