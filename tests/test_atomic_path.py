"""bfcnn.io.atomic_path and write_json: what the writers of images, results JSON and run files rely on."""

import os

import numpy as np
import pytest

from bfcnn.io import atomic_path, write_image, write_json


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


def test_a_replaced_file_keeps_its_permissions_and_a_link_keeps_pointing_at_it(tmp_path, umask_022):
    target = tmp_path / "private.json"
    target.write_text("old")
    target.chmod(0o600)
    link = tmp_path / "link.json"
    link.symlink_to(target)
    with atomic_path(link) as tmp:
        tmp.write_text("new")
    assert link.is_symlink() and target.read_text() == "new"
    assert target.stat().st_mode & 0o777 == 0o600


def test_write_json_is_strict_json(tmp_path):
    import json

    import numpy as np

    write_json(tmp_path / "r.json", {"best": float("-inf"), "psnr": np.float32(30.5), 3: [float("nan"), 1.0]})
    text = (tmp_path / "r.json").read_text()
    assert "Infinity" not in text and "NaN" not in text
    assert json.loads(text) == {"best": None, "psnr": 30.5, "3": [None, 1.0]}
