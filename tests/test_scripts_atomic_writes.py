"""Files the scripts rewrite (README.md, docs/*.md, figures) are replaced whole or not at all,
and a file without its markers is one line, exit 2, before any work."""

import pytest
from conftest import load_script

UNENCODABLE = "\ud800"  # a lone surrogate: writing it as UTF-8 fails half-way through a write


@pytest.fixture
def zoo_table(tmp_path, monkeypatch):
    script = load_script("scripts/zoo_table.py")
    (tmp_path / "pretrained").symlink_to(script.ROOT / "pretrained")
    monkeypatch.setattr(script, "ROOT", tmp_path)
    return script


def test_zoo_table_without_its_markers_is_one_line_and_exit_2(zoo_table, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("no table here\n")
    assert zoo_table.main(["--write"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "<!-- /zoo-table -->" in error and len(error.splitlines()) == 1
    assert readme.read_text() == "no table here\n"


def test_zoo_table_write_keeps_the_old_readme_when_writing_fails(zoo_table, tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    text = f"intro\n{zoo_table.BEGIN} generated -->\nold table\n{zoo_table.END}\noutro\n"
    readme.write_text(text)
    assert zoo_table.main(["--write"]) == 0
    written = readme.read_text()
    assert written.startswith(f"intro\n{zoo_table.BEGIN} generated -->\n| model |") and written.endswith(
        f"{zoo_table.END}\noutro\n")
    monkeypatch.setattr(zoo_table, "table", lambda: UNENCODABLE)
    with pytest.raises(UnicodeEncodeError):
        zoo_table.main(["--write"])
    assert readme.read_text() == written
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_generalization_checks_the_markdown_markers_before_measuring(tmp_path, monkeypatch, capsys):
    script = load_script("scripts/generalization.py")
    monkeypatch.setattr(script, "load_run", lambda *a: pytest.fail("measured before checking the markers"))
    doc = tmp_path / "generalization.md"
    doc.write_text("no markers\n")
    assert script.main(["--bias-free", "a", "--with-bias", "b", "--markdown", str(doc)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: --markdown ") and script.END in error and len(error.splitlines()) == 1


def test_generalization_replaces_its_block_whole_or_not_at_all(tmp_path):
    script = load_script("scripts/generalization.py")
    doc = tmp_path / "generalization.md"
    doc.write_text(f"head\n{script.BEGIN}\nold\n{script.END}\ntail\n")
    script.update_markdown(doc, "new")
    assert doc.read_text() == f"head\n{script.BEGIN}\nnew\n{script.END}\ntail\n"
    with pytest.raises(UnicodeEncodeError):
        script.update_markdown(doc, UNENCODABLE)
    assert doc.read_text() == f"head\n{script.BEGIN}\nnew\n{script.END}\ntail\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generalization.md"]


def test_a_measured_table_is_written_whole_or_not_at_all(tmp_path):
    doc_tables = load_script("scripts/doc_tables.py")
    readme = tmp_path / "README.md"
    readme.write_text("<!-- b -->\nold\n<!-- e -->\n")
    doc_tables.write_measured_table(readme, "<!-- b -->", "<!-- e -->", "new", "python x.py")
    written = readme.read_text()
    assert written.startswith("<!-- b -->\nnew\n\nMeasured ") and "with `python x.py`." in written
    with pytest.raises(UnicodeEncodeError):
        doc_tables.write_measured_table(readme, "<!-- b -->", "<!-- e -->", UNENCODABLE, "python x.py")
    assert readme.read_text() == written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md"]  # no README.md.tmp left


def test_save_figure_replaces_an_image_whole_or_not_at_all(tmp_path):
    """A stand-in for a matplotlib figure (the test environment has no matplotlib): what matters
    is where `savefig` writes and what is left when it fails."""
    import numpy as np
    from PIL import Image

    doc_tables = load_script("scripts/doc_tables.py")

    class Figure:
        dpi = 50

        def savefig(self, target, dpi):
            Image.fromarray(np.zeros((dpi, 2 * dpi), np.uint8)).save(target, format="png")

    figure = Figure()
    path = tmp_path / "figures" / "plot.png"
    doc_tables.save_figure(figure, path)
    with Image.open(path) as image:
        assert image.size == (100, 50)
    before = path.read_bytes()

    def broken(target, **kwargs):  # a crash half-way through writing the file
        with open(target, "wb") as handle:
            handle.write(b"\x89PNG partial")
        raise RuntimeError("renderer failed")

    figure.savefig = broken
    with pytest.raises(RuntimeError, match="renderer failed"):
        doc_tables.save_figure(figure, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["plot.png"]


@pytest.mark.parametrize("name", ["plot_adaptive_filters.py", "plot_attention.py", "plot_effective_dimension.py",
                                  "plot_knn_relaxation.py", "generalization.py"])
def test_the_plot_scripts_save_through_save_figure(name):
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "scripts" / name).read_text()
    assert ".savefig(" not in text and "save_figure(" in text


def test_no_script_writes_a_file_in_place_with_write_text():
    """Every file a script leaves behind goes through bfcnn.io's atomic writers, save_figure, or a
    temporary file (a name with `tmp`) that is moved into place."""
    import re
    from pathlib import Path

    scripts = sorted((Path(__file__).resolve().parents[1] / "scripts").glob("*.py"))
    assert scripts
    offenders = [f"{path.name}: {match.group(0)}" for path in scripts
                 for match in re.finditer(r"(\S+)\.write_(?:text|bytes)\(", path.read_text())
                 if "tmp" not in match.group(1)]
    assert offenders == []
