"""`python -m bfcnn.demo`: an output folder that cannot be made is refused before any model loads."""

import errno
import os
import pathlib

import pytest

import bfcnn


@pytest.fixture
def no_model_loads(monkeypatch):
    def load_model(name):
        raise AssertionError(f"model {name!r} loaded before the output folder was made")

    monkeypatch.setattr(bfcnn, "load_model", load_model)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc, where no folder can be made")
def test_demo_refuses_an_output_folder_that_cannot_be_made_before_loading_a_model(no_model_loads, capsys):
    """It loaded both models and denoised a photograph, then failed with a traceback (exit 1)."""
    from bfcnn.demo import main

    assert main(["--output-directory", "/proc/bfcnn_demo_test/out"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: output folder /proc/bfcnn_demo_test/out cannot be made: ")
    assert len(err.strip().splitlines()) == 1


def test_demo_names_a_folder_it_may_not_make(no_model_loads, tmp_path, capsys, monkeypatch):
    from bfcnn.demo import main

    mkdir = pathlib.Path.mkdir

    def refuse(self, *args, **kwargs):
        if self.name == "denied":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return mkdir(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", refuse)
    assert main(["--output-directory", str(tmp_path / "made" / "denied")]) == 2
    assert capsys.readouterr().err.strip() == f"error: output folder {tmp_path / 'made' / 'denied'} cannot be made: " \
                                              "Permission denied"
    assert not (tmp_path / "made").exists()  # the parent made for it is removed again


def test_demo_removes_the_folders_it_made_when_a_model_cannot_load(tmp_path, capsys):
    from bfcnn.demo import main

    (tmp_path / "kept").mkdir()
    assert main(["--gray-model", "no_such_model", "--output-directory", str(tmp_path / "kept" / "a" / "b")]) == 2
    assert capsys.readouterr().err.startswith("error: unknown model 'no_such_model'")
    assert os.listdir(tmp_path) == ["kept"] and os.listdir(tmp_path / "kept") == []
