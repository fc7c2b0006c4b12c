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


# Which of bfcnn's parts a part may not import: layers <- models <- zoo, training, export.
FORBIDDEN = {
    "ops": {"layers", "models", "zoo", "training", "export", "inference", "evaluate"},
    "layers": {"models", "zoo", "training", "export", "inference", "evaluate"},
    "models": {"zoo", "training", "export", "inference", "evaluate"},
    "zoo": {"training", "export", "evaluate"},
    "training": {"zoo", "export", "inference", "evaluate"},
    "io": {"layers", "models", "zoo", "training", "export"},
    "tiling": {"layers", "models", "zoo", "training", "export"},
    "config": {"layers", "models", "zoo", "training", "export"},
}


def _imported_parts(path):
    import ast

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bfcnn."):
            yield node.module.split(".")[1]
        elif isinstance(node, ast.Import):
            yield from (a.name.split(".")[1] for a in node.names if a.name.startswith("bfcnn."))


def test_imports_go_one_way():
    from pathlib import Path

    package = Path(bfcnn.__file__).parent
    wrong = []
    for path in package.rglob("*.py"):
        part = path.relative_to(package).parts[0].removesuffix(".py")
        wrong += [f"{path.relative_to(package)} imports bfcnn.{imported}"
                  for imported in _imported_parts(path) if imported in FORBIDDEN.get(part, ())]
    assert not wrong
