"""The package's top level: cheap to import, every advertised submodule reachable as an attribute."""

import subprocess
import sys
from pathlib import Path

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
    "opponent_lift": {"layers", "models", "zoo", "training", "export", "inference", "lite"},
    "config": {"layers", "models", "zoo", "training", "export"},
}


def _imported_parts(path, package):
    """The parts of bfcnn (`layers`, `zoo`, ...) that the module at `path` imports, in any form:
    `import bfcnn.x`, `from bfcnn.x import y`, `from bfcnn import x` and relative imports."""
    import ast

    here = ("bfcnn",) + path.relative_to(package).with_suffix("").parts[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(here[: len(here) - node.level + 1]) if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            modules = [f"{module}.{a.name}" for a in node.names] if module == "bfcnn" else [module]
        else:
            continue
        yield from (m.split(".")[1] for m in modules if m.startswith("bfcnn.") and len(m.split(".")) > 1)


def test_imports_go_one_way():
    from pathlib import Path

    package = Path(bfcnn.__file__).parent
    wrong = []
    for path in package.rglob("*.py"):
        part = path.relative_to(package).parts[0].removesuffix(".py")
        wrong += [f"{path.relative_to(package)} imports bfcnn.{imported}"
                  for imported in _imported_parts(path, package) if imported in FORBIDDEN.get(part, ())]
    assert not wrong


def test_the_import_check_sees_every_form_of_import(tmp_path):
    package = tmp_path / "bfcnn"
    (package / "layers").mkdir(parents=True)
    module = package / "layers" / "x.py"
    module.write_text("import bfcnn.zoo\nfrom bfcnn import models\nfrom bfcnn.training.loop import Trainer\n"
                      "from ..export import tflite\nfrom . import pyramids\n")
    assert sorted(_imported_parts(module, package)) == ["export", "layers", "models", "training", "zoo"]


def test_the_test_extras_are_installed():
    """Some tests skip without an optional package (tensorflow-datasets, bm3d, ...) so that the
    library's own tests run without them; with the `test` extra installed, as `make test` and CI
    do, none may be missing, or its tests would skip unseen."""
    import importlib.util
    import re

    text = (Path(__file__).resolve().parents[1] / "setup.py").read_text()
    extras = re.search(r'"test": \[([^\]]*)\]', text).group(1)
    modules = {"scikit-image": "skimage", "ai-edge-litert": "ai_edge_litert", "tensorflow-datasets": "tensorflow_datasets"}
    names = [modules.get(name, name) for name in re.findall(r'"([^"]+)"', extras)]
    assert {"skimage", "bm3d", "tensorflow_datasets", "ai_edge_litert"} <= set(names)
    missing = [name for name in names if importlib.util.find_spec(name) is None]
    assert missing == []
