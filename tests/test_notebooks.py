"""The chapters as a reader gets them: committed after a full run, complete, and in the book."""

import json
import re
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))


def _nb(path):
    return json.loads(path.read_text())


def _code(nb):
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def _text(cells):
    out = []
    for c in cells:
        for o in c.get("outputs", []):
            out.append("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", "")))
    return "\n".join(out)


def test_there_are_chapters_and_all_are_in_the_toc():
    assert len(CHAPTERS) >= 2
    toc = (ROOT / "_toc.yml").read_text()
    for p in CHAPTERS + sorted((ROOT / "book").glob("*.ipynb")):
        assert f"file: {p.relative_to(ROOT).with_suffix('')}" in toc, p


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_committed_after_a_full_top_to_bottom_run(path):
    nb = _nb(path)
    code = _code(nb)
    counts = [c["execution_count"] for c in code]
    assert counts == list(range(1, len(code) + 1)), "run it top to bottom in a fresh kernel"
    assert not [o for c in code for o in c["outputs"] if o["output_type"] == "error"]
    assert path.stat().st_size < 5 * 2**20
    text = _text(code)
    assert "QUICK MODE" not in text, "the committed outputs must come from a full run, not quick mode"
    assert "Done: device" in text and re.search(r"train (images|sequences)/s", text) and "wall time" in text
    assert sum("image/png" in o.get("data", {}) for c in code for o in c["outputs"]) >= 4
    # the architecture diagram is an SVG output (a trailing ";" after plot.diagram hides it)
    assert any("image/svg+xml" in o.get("data", {}) for c in code for o in c["outputs"]), "no diagram shown"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_has_the_book_rhythm_exercises_and_checked_cells(path):
    nb = _nb(path)
    md = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    src = "\n".join("".join(c["source"]) for c in _code(nb))
    for heading in ("## The architecture at a glance", "## The whole model", "## Brief training",
                    "## What it sees", "## How it compares", "## Exercises", "## Summary", "## Further reading"):
        assert heading in md, heading
    labels = re.findall(r":::\{exercise\}\n:label: ([\w-]+)", md)
    assert len(labels) >= 4
    for label in labels:
        assert re.search(rf":::\{{solution\}} {label}\n:class: dropdown", md), f"solution of {label}"
    assert "{cite" in md
    assert "exercises.check_" in src  # at least one answer checked by code
    tagged = [c for c in _code(nb) if "nbval-check-output" in c["metadata"].get("tags", [])]
    assert len(tagged) >= 3 and all(c["outputs"] for c in tagged)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_opens_with_objectives_and_checks_more_than_shapes(path):
    nb = _nb(path)
    first = "".join(nb["cells"][0]["source"])
    assert ":::{admonition} In this chapter" in first and "**After it you can**" in first and "**Read first:**" in first
    objectives = re.findall(r"^- ", first.split("**After it you can**")[1].split("**Read first:**")[0], re.M)
    assert 3 <= len(objectives) <= 5
    md = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    solutions = re.findall(r":::\{solution\} ([\w-]+)\n(.*?)\n:::\n", md, re.S)
    checked = [label for label, body in solutions if "exercises.check_" in body]
    beyond = [label for label, body in solutions if re.search(r"exercises\.check_(number|function)", body)]
    assert len(checked) >= 2 and beyond, (checked, beyond)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_first_cell_is_the_hidden_guarded_colab_setup(path, monkeypatch, capsys):
    from IPython.core.inputtransformer2 import TransformerManager

    first = _code(_nb(path))[0]
    assert "remove-cell" in first["metadata"].get("tags", [])
    assert first["outputs"] == []
    code = TransformerManager().transform_cell("".join(first["source"]))
    calls = []
    shell = types.SimpleNamespace(run_line_magic=lambda *a: calls.append(a))
    exec(code, {"get_ipython": lambda: shell})  # not in Colab: does nothing, prints nothing
    assert calls == [] and capsys.readouterr().out == ""
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    exec(code, {"get_ipython": lambda: shell})  # in Colab: installs cnn_book
    assert calls and calls[0][0] == "pip" and "cnn_book" in calls[0][1]


# What a chapter uses that the plain package does not bring: its extra in pyproject.toml, or a wheel
# that make's set-up installs from requirements-offline.txt. Colab has neither until the first cell
# installs it.
NEEDS = {
    "from cnn_book.models import yolo": "cnn_book[detection]",  # torchmetrics' mAP, pycocotools
    "neon_trees": "--no-deps deepforest==1.5.0",  # the NEON tree images in the wheel's data folder
    "cnn_book.text": "cnn_book[text]",  # tokenizers' WordPiece
}


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_the_colab_cell_installs_what_the_chapter_uses(path):
    cells = _code(_nb(path))
    setup, rest = "".join(cells[0]["source"]), "\n".join("".join(c["source"]) for c in cells[1:])
    missing = [need for use, need in NEEDS.items() if use in rest and need not in setup]
    assert not missing, f"{path.stem} uses what its Colab cell does not install: {missing}"


@pytest.mark.parametrize("path", CHAPTERS + sorted((ROOT / "book").glob("*.ipynb")), ids=lambda p: p.stem)
def test_code_lines_fit_the_website_s_column(path):
    """At most 80 characters, or the code cell scrolls sideways on the page."""
    long = [line for c in _code(_nb(path)) for line in "".join(c["source"]).splitlines() if len(line) > 80]
    assert not long, f"{len(long)} code lines over 80 characters, the first: {long[0]!r}"
