"""The package's top level: cheap to import, every advertised submodule reachable as an attribute."""

import subprocess
import sys

import pytest

import bfcnn


@pytest.mark.parametrize("name", bfcnn._SUBMODULES)
def test_every_listed_submodule_is_reachable_as_an_attribute(name):
    assert getattr(bfcnn, name).__name__ == f"bfcnn.{name}"


def test_an_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        bfcnn.nothing  # noqa: B018


def test_importing_bfcnn_does_not_import_tensorflow():
    done = subprocess.run([sys.executable, "-c", "import sys, bfcnn; print('tensorflow' in sys.modules)"],
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr[-500:]
