"""A reader who clicks through to Colab: every chapter's set-up cell is written from _config.yml's
repository alone and installs the extras its code needs; the comparisons with optional libraries
say so when the library is missing; the book's own pages offer no Colab button."""

import ast
import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("colab_setup", ROOT / "tools" / "colab_setup.py")
colab_setup = importlib.util.module_from_spec(spec)
spec.loader.exec_module(colab_setup)
CHAPTERS = colab_setup.CHAPTERS
# the optional dependencies of the package (pyproject.toml's extras), by the module a chapter imports
EXTRA_OF = {"skimage": "transfer", "captum": "transfer", "torchmetrics": "detection", "pycocotools": "detection",
            "tokenizers": "text"}


def _imports(code: str) -> set[str]:
    """The top-level modules the code imports (IPython's magics taken out first)."""
    tree = ast.parse("\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("%", "!"))))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


def test_every_set_up_cell_is_written_from_the_config():
    assert colab_setup.differing(write=False) == [], "run python tools/colab_setup.py"
    url = colab_setup.repository()
    assert url.startswith("https://") and (ROOT / "_config.yml").read_text().count(url) == 1
    for path in CHAPTERS:
        nb = json.loads(path.read_text())
        first = next(c for c in nb["cells"] if c["cell_type"] == "code")
        assert first["metadata"].get("tags") == ["remove-cell"] and first["outputs"] == []
        assert all(len(line) <= 80 for line in "".join(first["source"]).splitlines())
        # the address is in the set-up cell only
        rest = json.dumps([c for c in nb["cells"] if c is not first])
        assert url.split("//")[1] not in rest, path.name


def test_the_address_is_nowhere_else_in_the_repository():
    url = colab_setup.repository().split("//")[1]
    for path in [*ROOT.glob("*.md"), *ROOT.glob("book/*.*"), *ROOT.glob("cnn_book/**/*.py"), *ROOT.glob("tools/*.py"),
                 ROOT / "pyproject.toml", ROOT / "Makefile"]:
        assert url not in path.read_text(errors="ignore"), path


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_the_set_up_installs_the_extras_the_chapter_imports(path):
    nb = json.loads(path.read_text())
    code = colab_setup.code_of(nb)
    installed = set(colab_setup.extras(code))
    needed = {EXTRA_OF[m] for m in _imports(code) if m in EXTRA_OF}
    assert needed <= installed, f"{path.name} imports modules of the extras {needed - installed}"
    first = "".join(next(c for c in nb["cells"] if c["cell_type"] == "code")["source"])
    assert (f"cnn_book[{','.join(sorted(installed, key=list(colab_setup.NEEDS).index))}]" in first
            if installed else '"cnn_book @ {repo}"' in first)


def test_what_the_extras_stand_for_is_what_the_package_imports():
    """The uses NEEDS ties to an extra import that extra's modules inside the package."""
    photos = (ROOT / "cnn_book" / "data" / "photos.py").read_text()
    assert "import skimage.data" in photos.split("def sample_photos")[1]
    assert "from torchmetrics" in (ROOT / "cnn_book" / "models" / "yolo.py").read_text()
    assert "from tokenizers import" in (ROOT / "cnn_book" / "text.py").read_text()


@pytest.mark.parametrize("path", [p for p in CHAPTERS if "transformers" in p.read_text()], ids=lambda p: p.stem)
def test_a_missing_comparison_library_is_said_not_silent(path):
    """transformers is a test-only dependency: where a chapter compares with it, a reader without it
    (Colab installs none of the test tools) is told so."""
    for cell in json.loads(path.read_text())["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] != "code" or "transformers" not in _imports(source):
            continue
        tree = ast.parse(source)
        guarded = [t for t in ast.walk(tree) if isinstance(t, ast.Try)
                   and any(isinstance(n, (ast.Import, ast.ImportFrom)) for b in t.body for n in ast.walk(b))]
        assert guarded, f"{path.name}: import transformers without a try"
        handlers = "".join(ast.unparse(h) for t in guarded for h in t.handlers)
        assert "ImportError" in handlers and re.search(r"print\(", handlers), handlers


def test_the_book_pages_offer_no_colab_button():
    ext = (ROOT / "_ext" / "book_pages.py").read_text()
    assert 'pagename.startswith("book/")' in ext and "launch-buttons" in ext
    assert "book_pages: _ext" in (ROOT / "_config.yml").read_text()


def test_the_colab_check_points_every_set_up_cell_at_this_checkout():
    spec = importlib.util.spec_from_file_location("colab_check", ROOT / "tools" / "colab_check.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    for path in CHAPTERS:
        nb = check.pointed_here(json.loads(path.read_text()))
        first = "".join(next(c for c in nb["cells"] if c["cell_type"] == "code")["source"])
        assert f'repo = "file://{ROOT}"' in first and "git+" not in first
    # its environment has none of the book's own packages: the set-up cells must install them
    wanted = {line.split("==")[0].strip() for line in (ROOT / "requirements-colab.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    assert not wanted & {"torchinfo", "torchview", "scikit-image", "captum", "torchmetrics", "pycocotools",
                         "tokenizers", "transformers", "cnn_book"}
    assert "colab-check:" in (ROOT / "Makefile").read_text()
