"""bfcnn.io.atomic_path: what every writer of results (images, JSON, configs, run files) relies on."""

import os

import numpy as np
import pytest

from bfcnn.io import atomic_path, write_image


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_a_failed_write_keeps_the_previous_file_and_leaves_nothing_behind(tmp_path):
    target = tmp_path / "r.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_the_file_gets_the_usual_permissions_and_missing_folders_are_made(tmp_path, umask_022):
    target = tmp_path / "a" / "b" / "r.txt"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".txt"
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert target.stat().st_mode & 0o777 == 0o644


def test_written_images_are_not_private(tmp_path, umask_022):
    write_image(tmp_path / "x.png", np.zeros((4, 4), np.uint8))
    assert (tmp_path / "x.png").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]
