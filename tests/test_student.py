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
    # the code and the prose outside the exercises are the chapter's, but for the answers they give
    assert _code(student) == _code(nb, hide=student_edition.answers(nb))
    def before_exercises(text):
        return re.sub(r"\n+", "\n", text.split("## Exercises")[0].replace(student_edition.NOTE, ""))

    assert before_exercises(smd) == before_exercises(student_edition._redact(md, student_edition.answers(nb)))


def _code(nb, hide=None):
    """The code cells of ``nb`` as (source, tags), and their outputs: for a chapter, with the outputs
    that show one of the answers ``hide`` replaced as the student edition replaces them."""
    pattern = student_edition._pattern(hide.values()) if hide else None
    cells = []
    for c in nb["cells"]:
        tags = c["metadata"].get("tags", [])
        if c["cell_type"] != "code" or {"student-answer", "student-edition"} & set(tags):
            continue
        text = student_edition.output_text(c)
        shown = student_edition.HIDDEN if pattern and pattern.search(text) else text
        cells.append(("".join(c["source"]), tags, shown.replace(student_edition.REVEAL_LINE, "").strip()))
    return cells


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_student_notebook_gives_no_numeric_answer_away(path):
    """Every code-checked exercise whose answer is a number: no spelling of it (9220480, 9,220,480,
    9_220_480, 9.2 M, ...) in the student notebook's text or kept outputs; an empty answer cell
    after every exercise; no reveal; the checkers switched to the class's edition."""
    nb = json.loads(path.read_text())
    student = student_edition.student_notebook(nb)
    found = student_edition.answers(nb)
    everything = _markdown(student) + "\n".join(student_edition.output_text(c) for c in student["cells"])
    for label, value in found.items():
        assert not student_edition._pattern([value]).search(everything), (label, value)
    assert "reveal" not in everything
    labels = re.findall(r":::\{exercise\}\n:label: ([\w-]+)", _markdown(nb))
    cells = student["cells"]
    for label in labels:
        at = next(i for i, c in enumerate(cells) if c["cell_type"] == "markdown"
                  and f":label: {label}\n" in "".join(c["source"]))
        after = cells[at + 1]
        assert after["cell_type"] == "code" and "student-answer" in after["metadata"]["tags"], label
        assert "".join(after["source"]) == f"# Your answer to {label}\n" and after["outputs"] == []
    first_code = next(i for i, c in enumerate(cells) if c["cell_type"] == "code")  # the Colab set-up
    assert "CNN_BOOK_STUDENT" in "".join(cells[first_code + 1]["source"])


def test_the_student_notebooks_check_every_numeric_answer():
    """The code-checked numeric exercises the test above covers: all of them, chapter by chapter."""
    labels = set()
    for path in CHAPTERS:
        md = _markdown(json.loads(path.read_text()))
        labels |= {label for label, body in re.findall(r":::\{solution\} ([\w-]+)\n(.*?)\n:::\n", md, re.S)
                   if "exercises.check_param_count(" in body or "exercises.check_number(" in body}
    covered = {label.split("#")[0] for path in CHAPTERS
               for label in student_edition.answers(json.loads(path.read_text()))}
    # vit-patch-7's answer is the count of the chapter's own model, which the chapter shows: the
    # question is whether 7x7 patches change it (they do not)
    assert covered == labels - {"vit-patch-7"} and len(covered) >= 20


def test_the_checkers_never_reveal_in_the_student_edition(monkeypatch, capsys):
    from cnn_book import exercises

    assert not exercises.check_number("vgg16-rf", 100, reveal=True)
    assert "212" in capsys.readouterr().out  # the full edition: the teacher asked
    monkeypatch.setenv("CNN_BOOK_STUDENT", "1")
    assert not exercises.check_number("vgg16-rf", 100, reveal=True)
    out = capsys.readouterr().out
    assert "212" not in out and "does not reveal answers" in out and "reveal=True" not in out
    assert not exercises.check_function("receptive-field", lambda layers: 0, reveal=True)
    out = capsys.readouterr().out
    assert "the answer is" not in out and "does not reveal answers" in out
    assert not exercises.check_number("vgg16-rf", 100)
    assert "reveal" not in capsys.readouterr().out


def test_the_written_student_notebooks_are_valid_and_run_the_chapters_code(tmp_path):
    """What a second nbval pass over the student notebooks would check, in a second: each written
    notebook is a valid notebook (nbformat's schema), and its code cells, with their tags, are the
    chapter's own, which nbval already runs in quick mode, besides the answer cells and the one that
    switches the checkers to the class's edition."""
    import nbformat

    written = student_edition.write_notebooks(tmp_path)
    assert [p.name for p in written] == [p.name for p in CHAPTERS]
    for path, chapter in zip(written, CHAPTERS, strict=True):
        nbformat.validate(nbformat.read(path, as_version=4))
        mine, theirs = (json.loads(p.read_text()) for p in (path, chapter))
        assert [s for s, _, _ in _code(mine)] == [s for s, _, _ in _code(theirs)], path.name
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
    # no Colab button (it would open the full notebook), no reveal, nothing but the site in the output
    pages = [p.read_text() for p in html.rglob("*.html")]
    assert not [p for p in pages if "colab.research.google.com" in p]
    assert not [p for p in pages if "reveal=True" in p]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["html"]
