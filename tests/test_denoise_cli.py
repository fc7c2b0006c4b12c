"""Bad arguments to `python -m bfcnn.denoise`, `python -m bfcnn.demo` and `python -m bfcnn.average`: one
line, exit code 2, no data lost; files the denoiser cannot read correctly: one line each, exit code 1."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import bfcnn

ROOT = Path(__file__).resolve().parents[1]


def _digests(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def photos(tmp_path):
    """A folder with a PNG and a JPEG, and a saved tiny gray model beside it."""
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (12, 10), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 256, (12, 10), dtype=np.uint8)).save(folder / "b.jpg")
    model = tmp_path / "m.keras"
    bfcnn.build_model({"type": "resnet", "channels": 1, "filters": 8, "blocks": 1}).save(model)
    return folder, str(model)


def test_outputs_never_overwrite_inputs(photos, capsys):
    """Refused before the model is loaded (a missing model would be reported otherwise)."""
    from bfcnn.denoise import main

    folder, _ = photos
    before = _digests(folder)
    for argv, message in [([str(folder), "-o", str(folder)], "is the output folder"),
                          ([str(folder / "a.png"), "-o", str(folder)], "would overwrite the input"),
                          ([str(folder / "b.jpg"), str(folder / "a.png"), "-o", str(folder / ".")],
                           "would overwrite the input")]:
        assert main([*argv, "--model", "no_such_model"]) == 2
        err = capsys.readouterr().err
        assert message in err and "no_such_model" not in err and len(err.strip().splitlines()) == 1
    assert _digests(folder) == before
    only_outputs = folder.parent / "only_outputs"
    (only_outputs / "den").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(only_outputs / "den" / "old.png")
    assert main([str(only_outputs), "-o", str(only_outputs / "den"), "--model", "x"]) == 2
    assert f"no images in {only_outputs} outside the output folder" in capsys.readouterr().err


def test_an_existing_output_that_is_an_input_under_another_spelling_is_refused(photos, capsys):
    """`scans/IMG.PNG -o scans` on a case-insensitive file system: the output IMG.png *is* the input.

    A hard link gives the same situation on any file system: two spellings, one file.
    """
    from bfcnn.denoise import main

    folder, _ = photos
    scans = folder.parent / "scans"
    scans.mkdir()
    Image.fromarray(np.full((6, 5), 7, np.uint8)).save(scans / "IMG.PNG")
    try:
        os.link(scans / "IMG.PNG", scans / "IMG.png")
    except OSError as error:  # a file system without hard links (or case-insensitive: then it is the same name)
        if not (scans / "IMG.png").exists():
            pytest.skip(f"no hard links here: {error}")
    before = _digests(scans)
    for out in (scans, folder.parent / "scans" / "."):
        assert main([str(scans / "IMG.PNG"), "-o", str(out), "--model", "no_such_model"]) == 2
        err = capsys.readouterr().err
        assert "IMG.png would overwrite the input" in err and "IMG.PNG" in err and "no_such_model" not in err
    assert _digests(scans) == before


def test_output_names_are_unique_ignoring_case(tmp_path):
    """`a.jpg` and `A.jpg` would both write one file on macOS or Windows: the second gets `A-2.png`."""
    from bfcnn.denoise import _plan

    files = [tmp_path / "x" / "a.jpg", tmp_path / "y" / "A.jpg", tmp_path / "z" / "A.JPG", tmp_path / "b.png"]
    assert [p.name for p in _plan(files, tmp_path / "out")] == ["a.png", "A-2.png", "A-3.png", "b.png"]


def test_an_input_in_the_output_folder_with_another_output_name_is_fine(photos):
    from bfcnn.denoise import main

    folder, model = photos
    before = _digests(folder)
    assert main([str(folder / "b.jpg"), "-o", str(folder), "--model", model]) == 0
    assert sorted(_digests(folder)) == ["a.png", "b.jpg", "b.png"]
    assert {k: v for k, v in _digests(folder).items() if k != "b.png"} == before


def test_a_second_run_does_not_denoise_the_first_runs_outputs(photos, capsys):
    from bfcnn.denoise import main

    folder, model = photos
    # an output folder around the input folder gets flat outputs beside it: no input is skipped
    assert main([str(folder), "-o", str(folder.parent), "--model", model]) == 0
    assert "] 2/2 " in capsys.readouterr().err
    for _ in range(2):
        assert main([str(folder), "-o", str(folder / "denoised"), "--model", model]) == 0
        err = capsys.readouterr().err
        assert "] 2/2 " in err and "3/" not in err and "-2.png" not in err
    assert sorted(_digests(folder)) == ["a.png", "b.jpg", "denoised/a.png", "denoised/b.png"]


def test_an_output_folder_that_is_a_file_is_named_once(photos, capsys):
    from bfcnn.denoise import main

    folder, _ = photos
    taken = folder.parent / "taken.txt"
    taken.write_text("keep me")
    for out, message in [(taken, f"output folder {taken} is a file; -o needs a folder"),
                         (taken / "sub", f"output folder {taken / 'sub'} cannot be made: {taken} is a file")]:
        assert main([str(folder), "-o", str(out), "--model", "no_such_model"]) == 2
        err = capsys.readouterr().err
        assert err.strip() == f"error: {message}"
    assert taken.read_text() == "keep me"


def test_cli_errors_are_one_line_without_tensorflow_logs(photos, tmp_path):
    """An unknown model is found before TensorFlow is imported: no log lines, no traceback."""
    folder, _ = photos
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    code = "import sys; from bfcnn.denoise import main; c = main(sys.argv[1:]); print('keras' in sys.modules); sys.exit(c)"
    result = subprocess.run([sys.executable, "-c", code, str(folder), "-o", str(tmp_path / "out"), "--model",
                             "pyramid_gray_mm"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown model 'pyramid_gray_mm', did you mean")
    assert result.stdout.strip() == "False"  # Keras (and TensorFlow) never imported


def test_cli_quiets_tensorflow_info_and_warnings_before_importing_it(photos, tmp_path):
    """A run that loads a model: TF_CPP_MIN_LOG_LEVEL is "2" when TensorFlow is first imported.

    "2" hides TensorFlow's C++ info and warning lines (oneDNN, CPU instructions) but not its
    errors, which "3" would also hide. Run in a subprocess: here TensorFlow is already imported
    and the environment is shared with the other tests.
    """
    folder, model = photos
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    code = (
        "import os, sys\n"
        "seen = []\n"
        "class Spy:  # records the log level when tensorflow is first imported\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'tensorflow' and not seen:\n"
        "            seen.append(os.environ.get('TF_CPP_MIN_LOG_LEVEL'))\n"
        "sys.meta_path.insert(0, Spy())\n"
        "from bfcnn.denoise import main\n"
        "code = main(sys.argv[1:])\n"
        "print(seen)\n"
        "sys.exit(code)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(folder), "-o", str(tmp_path / "out"), "--model", model],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "['2']"
    progress = [line for line in result.stderr.splitlines() if line.startswith("[")]
    assert len(progress) == 2 and all(": ok" in line for line in progress), result.stderr
    # hidden from level 1 up; TensorFlow 2.21's oneDNN / CUDA lines logged before absl::InitializeLog()
    # ignore the level, so they are not asserted on
    assert "cpu_feature_guard" not in result.stderr


def test_an_output_name_taken_by_a_folder_is_refused_before_any_work(tmp_path, capsys):
    from bfcnn.denoise import main

    Image.fromarray(np.full((8, 8), 100, np.uint8)).save(tmp_path / "gray.png")
    (tmp_path / "out" / "gray.png").mkdir(parents=True)
    assert main(["--model", "no_such_model", str(tmp_path / "gray.png"), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "gray.png is a folder, where a denoised image would be written" in err and "unknown model" not in err


def test_demo_sets_the_same_log_level(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    code = ("import os, sys; from bfcnn.demo import main; c = main(sys.argv[1:]); "
            "print(os.environ.get('TF_CPP_MIN_LOG_LEVEL')); sys.exit(c)")
    result = subprocess.run([sys.executable, "-c", code, "--gray-model", "no_such_model", "--output-directory",
                             str(tmp_path / "demo")], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2 and result.stdout.strip() == "2", result.stderr[-2000:]


def test_demo_names_an_unknown_model_in_one_line(tmp_path, capsys):
    from bfcnn.demo import main

    assert main(["--gray-model", "no_such_model", "--output-directory", str(tmp_path / "demo")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown model 'no_such_model'") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "demo").exists()


def test_demo_refuses_an_output_folder_under_a_file_and_names_missing_scikit_image(tmp_path, capsys, monkeypatch):
    from bfcnn.demo import main

    (tmp_path / "afile").write_text("keep")
    assert main(["--output-directory", str(tmp_path / "afile" / "sub")]) == 2
    assert "cannot be made" in capsys.readouterr().err and (tmp_path / "afile").read_text() == "keep"
    monkeypatch.setitem(sys.modules, "skimage", None)  # not installed
    assert main(["--output-directory", str(tmp_path / "demo")]) == 2
    assert "pip install scikit-image" in capsys.readouterr().err


@pytest.mark.parametrize("sigma", ["-1", "nan", "inf", "abc"])
def test_demo_rejects_a_bad_sigma(sigma, capsys):
    from bfcnn.demo import parse_args

    with pytest.raises(SystemExit) as caught:
        parse_args(["--sigma", sigma])
    assert caught.value.code == 2 and "argument --sigma: must be a" in capsys.readouterr().err
    assert parse_args(["--sigma", "0"]).sigma == 0.0


def test_missing_inputs_are_bad_arguments_named_before_the_model_loads(photos, tmp_path, capsys):
    from bfcnn.denoise import main

    folder, _ = photos
    missing = [str(tmp_path / "missing.png"), str(tmp_path / "gone" / "b.jpg")]
    assert main([str(folder / "a.png"), *missing, "-o", str(tmp_path / "out"), "--model", "no_such_model"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: inputs not found: {missing[0]}, {missing[1]}"
    assert main([missing[0], "-o", str(tmp_path / "out"), "--model", "no_such_model"]) == 2
    assert capsys.readouterr().err.strip() == f"error: input not found: {missing[0]}"
    assert not (tmp_path / "out").exists()


def test_images_of_several_frames_or_unknown_scale_fail_one_by_one(photos, capsys):
    """Reported `ok` before, with frame 1 alone or 2 to 16 gray levels denoised; now each fails in a
    line of its own, the other files are denoised and the exit code is 1."""
    from bfcnn.denoise import main

    folder, model = photos
    ramp = np.linspace(0, 1, 12 * 10, dtype=np.float32).reshape(12, 10)
    Image.fromarray(ramp).save(folder / "float.tif")
    Image.fromarray(np.round(ramp * 4095).astype(np.int32)).save(folder / "twelve_bit.tif")
    frames = [Image.fromarray(np.full((12, 10), 40 * i, np.uint8)) for i in range(3)]
    frames[0].save(folder / "pages.tif", save_all=True, append_images=frames[1:])
    animated = folder.parent / "animated.gif"  # named: a folder scan takes no .gif
    frames[0].save(animated, save_all=True, append_images=frames[1:2])
    out = folder.parent / "out"
    assert main([str(folder), str(animated), "-o", str(out), "--model", model]) == 1
    err = capsys.readouterr().err
    lines = {line.split(": ", 1)[0].split(" ")[-1]: line for line in err.splitlines() if line.startswith("[")}
    assert "FAILED: mode F (32-bit float) images are not supported" in lines["float.tif"]
    assert "FAILED: mode I (32-bit integer) images are not supported" in lines["twelve_bit.tif"]
    assert "FAILED: has 3 frames" in lines["pages.tif"] and "FAILED: has 2 frames" in lines["animated.gif"]
    assert ": ok" in lines["a.png"] and ": ok" in lines["b.jpg"]
    assert "4 of 6 file(s) failed" in err and sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]


def test_help_says_which_files_a_folder_scan_takes(capsys):
    from bfcnn.denoise import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "any format Pillow reads" in help_text and ".tiff and .webp files" in help_text


def test_demo_names_its_own_output_option(tmp_path, capsys):
    from bfcnn.demo import main

    pytest.importorskip("skimage")
    (tmp_path / "afile").write_text("keep")
    assert main(["--output-directory", str(tmp_path / "afile")]) == 2
    assert capsys.readouterr().err.strip() == (f"error: output folder {tmp_path / 'afile'} is a file; "
                                               "--output-directory needs a folder")


def test_average_names_a_model_directory_that_is_a_file_not_the_output(tmp_path, capsys):
    from bfcnn.average import main

    (tmp_path / "run").write_text("not a run")
    assert main(["--model-directory", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (f"error: model directory {str(tmp_path / 'run')!r} is a file, not a directory: "
                           "give a bfcnn.train model directory")
