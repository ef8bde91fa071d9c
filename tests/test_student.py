"""The student edition has every exercise and no solution, in its notebooks and on its website."""

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.ipynb"))
spec = importlib.util.spec_from_file_location("student_edition", ROOT / "tools" / "student_edition.py")
student_edition = importlib.util.module_from_spec(spec)
spec.loader.exec_module(student_edition)


def _markdown(nb):
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")


def _solutions(md):
    """label -> the solution's lines that are long enough to be its own text."""
    return {label: [line.strip() for line in body.splitlines() if len(line.strip()) > 30]
            for label, body in re.findall(r":::\{solution\} ([\w-]+)\n(.*?)\n:::\n", md, re.S)}


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_student_notebook_keeps_every_exercise_and_no_solution(path):
    nb = json.loads(path.read_text())
    student = student_edition.student_notebook(nb)
    md, smd = _markdown(nb), _markdown(student)
    labels = re.findall(r":::\{exercise\}\n:label: ([\w-]+)", md)
    assert labels and re.findall(r":::\{exercise\}\n:label: ([\w-]+)", smd) == labels
    assert ":::{solution}" not in smd and "Student edition" in smd
    solutions = _solutions(md)
    assert set(solutions) == set(labels)
    outside = student_edition.strip_solutions(md)  # what the book says outside its solutions
    for label, lines in solutions.items():
        for line in lines:
            if line not in outside:
                assert line not in smd, (label, line)
    # the code, its outputs and the prose outside the exercises are untouched
    assert [c for c in student["cells"] if c["cell_type"] == "code"] == [
        c for c in nb["cells"] if c["cell_type"] == "code"]
    def before_exercises(text):
        return re.sub(r"\n+", "\n", text.split("## Exercises")[0].replace(student_edition.NOTE, ""))

    assert before_exercises(smd) == before_exercises(md)


def test_the_written_student_notebooks_are_valid_and_run_the_chapters_code(tmp_path):
    """What a second nbval pass over the student notebooks would check, in a second: each written
    notebook is a valid notebook (nbformat's schema), and its code cells, with their outputs and tags,
    are the chapter's own, which nbval already runs in quick mode; only Markdown differs."""
    import nbformat

    written = student_edition.write_notebooks(tmp_path)
    assert [p.name for p in written] == [p.name for p in CHAPTERS]
    for path, chapter in zip(written, CHAPTERS, strict=True):
        nbformat.validate(nbformat.read(path, as_version=4))
        mine, theirs = (json.loads(p.read_text()) for p in (path, chapter))
        assert [c for c in mine["cells"] if c["cell_type"] != "markdown"] == [
            c for c in theirs["cells"] if c["cell_type"] != "markdown"], path.name
        assert mine["metadata"] == theirs["metadata"]


@pytest.mark.browser
def test_student_website_has_the_exercises_and_no_solution(tmp_path):
    html = student_edition.build_site(tmp_path)
    for path in CHAPTERS:
        page = (html / "chapters" / f"{path.stem}.html").read_text()
        md = _markdown(json.loads(path.read_text()))
        assert 'class="solution' not in page and "solution-title" not in page
        labels = re.findall(r":::\{exercise\}\n:label: ([\w-]+)", md)
        assert page.count('class="exercise admonition"') == len(labels)
        text = re.sub(r"<[^>]+>", " ", page)
        text = re.sub(r"\s+", " ", text)
        nb = json.loads(path.read_text())
        code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
        outside = re.sub(r"[`*$\\{}]", "", student_edition.strip_solutions(md) + code)
        for lines in _solutions(md).values():
            for line in lines:
                words = re.sub(r"[`*$\\{}]", "", line)[:40]
                if len(words) == 40 and words not in outside:
                    assert words not in text, line
    assert "student edition" in (html / "book" / "intro.html").read_text()
    # the instructor's key is in the full edition only, and no page of the student site links to it
    assert not (html / "book" / "instructor_key.html").exists()
    assert not [p for p in html.rglob("*.html") if "instructor_key.html" in p.read_text()]
