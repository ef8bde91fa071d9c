"""The student edition: the book without the exercises' solutions or answers, to hand to a class.

    python tools/student_edition.py                 # make student
    python tools/student_edition.py --notebooks-only

Writes ``_build/student/notebooks/``: every chapter notebook with its solution blocks removed, an
empty answer cell after every exercise, and the kept outputs that would give a code-checked
exercise's numeric answer away cleared (``answers`` lists them, in every spelling the book prints
numbers); the checkers in those notebooks never reveal an answer (``CNN_BOOK_STUDENT=1``). It
builds the student website into ``_build/student/html`` from a copy of the book's sources made the
same way, with sphinx-exercise's ``hide_solutions`` on and no Colab buttons (they would open the
full notebooks), and leaves nothing else in ``_build/student``. Pages for instructors only (the
instructor's key) are left out of the student edition.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "_build" / "student"
INSTRUCTOR_ONLY = ["book/instructor_key"]  # toc entries (without suffix) left out of the student edition
# a solution block: from ":::{solution} label" to the ":::" that closes it (which may end the cell),
# and the blank line after it
SOLUTION = re.compile(r"^:::\{solution\}[^\n]*\n.*?^:::[ \t]*(?:\n|\Z)(?:[ \t]*\n)?", re.M | re.S)
# text of the book's pages for the full edition only (the instructor's key), marked in the source
FULL_ONLY = re.compile(r"<!-- full-edition -->.*?<!-- /full-edition -->\n?", re.S)
NOTE = ("*Student edition: the exercises are here, their solutions are not. Your teacher has the full "
        "edition.*\n\n")


def strip_solutions(text: str) -> str:
    """``text`` (Markdown) without its ``:::{solution}`` blocks."""
    return SOLUTION.sub("", text)


# the code-checked exercises whose answer is a number: exercises.check_number's labels, and the
# literal answers of check_param_count in the solutions
PARAM_ANSWER = re.compile(r"exercises\.check_param_count\(.*, ([\d_]+)\)")
CHECK_NUMBER = re.compile(r'exercises\.check_number\(\s*"([\w-]+)"')
HIDDEN = ("(Output hidden in the student edition: it gives an exercise's answer. Run the cell to "
          "see it once you have answered.)\n")
STUDENT_CELL = {"cell_type": "code", "execution_count": None, "id": "student-edition",
                "metadata": {"tags": ["remove-cell", "student-edition"]}, "outputs": [],
                "source": ["import os\n", "\n",
                           "os.environ[\"CNN_BOOK_STUDENT\"] = \"1\"  # checkers give hints, not answers"]}
REVEAL_LINE = " To see the answer, call the checker again with reveal=True."


def _markdown(nb: dict) -> str:
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")


def answers(nb: dict) -> dict[str, float]:
    """label -> the numeric answer of each code-checked exercise of notebook ``nb``."""
    from cnn_book.exercises.numeric import NUMBERS

    md, found = _markdown(nb), {}
    statements = dict(re.findall(r":::\{exercise\}\n:label: ([\w-]+)\n(.*?)\n:::\n", md, re.S))
    for label, body in re.findall(r":::\{solution\} ([\w-]+)\n(.*?)\n:::\n", md, re.S):
        for m in PARAM_ANSWER.finditer(body):
            found[label] = int(m.group(1).replace("_", ""))
        for m in CHECK_NUMBER.finditer(body):
            found[label] = float(NUMBERS[m.group(1)].compute())
            # the large counts the answer is worked out from in the solution's code, where the
            # question does not give them (the parameters of a model it asks to count)
            code = "\n".join(re.findall(r"```python\n(.*?)```", body, re.S))
            for i, literal in enumerate(re.findall(r"\b\d[\d_,]{4,}\b", code)):
                value = int(literal.replace("_", "").replace(",", ""))
                if value >= 10_000 and not _pattern([value]).search(statements.get(label, "")):
                    found[f"{label}#{i}"] = value
    return found


def spellings(value: float) -> set[str]:
    """The ways the book prints ``value``: 9220480, 9,220,480, 9_220_480, 9.2 M, 9.22 M; 7.32, 75.6."""
    if float(value).is_integer():
        v = int(value)
        out = {f"{v:d}", f"{v:,d}", f"{v:_d}"}
        if v >= 1_000_000:
            out |= {f"{v / 1e6:.{d}f}{sep}M" for d in (1, 2) for sep in ("", " ")}
        return out
    return {f"{value:.2f}"} | ({f"{value:.1f}"} if abs(value) >= 10 else set())


def _pattern(values) -> re.Pattern | None:
    words = sorted({w for v in values for w in spellings(v)}, key=len, reverse=True)
    if not words:
        return None
    return re.compile(r"(?<![\w.,])(?:" + "|".join(map(re.escape, words)) + r")(?![\w]|[.,]\d)")


def _redact(text: str, found: dict[str, float]) -> str:
    """``text`` with each numeric answer it states replaced by a pointer to its exercise."""
    for label, value in found.items():
        text = _pattern([value]).sub(f"[the answer to *{label.split('#')[0]}*]", text)
    return text


def output_text(cell: dict) -> str:
    """Every text a code cell's outputs show (streams, plain text, HTML, Markdown, errors)."""
    parts = []
    for o in cell.get("outputs", []):
        parts.append("".join(o.get("text", "")))
        for key in ("text/plain", "text/html", "text/markdown"):
            parts.append("".join(o.get("data", {}).get(key, "")))
        parts.append("\n".join(o.get("traceback", [])))
    return "\n".join(parts)


def _source(text: str) -> list[str]:
    lines = text.split("\n")
    return [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])


def _answer_cell(label: str) -> dict:
    return {"cell_type": "code", "execution_count": None, "id": f"answer-{label}"[:64],
            "metadata": {"tags": ["student-answer"]}, "outputs": [],
            "source": _source(f"# Your answer to {label}\n")}


def _split_exercises(text: str) -> list[tuple[str, str | None]]:
    """``text`` cut after each exercise block: (piece, the label of the exercise it ends with)."""
    pieces, start = [], 0
    for m in re.finditer(r"^:::\{exercise\}[^\n]*\n:label: ([\w-]+)\n.*?^:::[ \t]*$\n?", text, re.M | re.S):
        pieces.append((text[start:m.end()], m.group(1)))
        start = m.end()
    pieces.append((text[start:], None))
    return [(p, label) for p, label in pieces if p.strip() or label]


def student_notebook(nb: dict) -> dict:
    """A copy of notebook ``nb`` for a class: no solutions, an answer cell after each exercise, no
    kept output that shows a numeric answer, no checker output that offers ``reveal=True``."""
    found = answers(nb)
    pattern = _pattern(found.values())
    nb = json.loads(json.dumps(nb))
    cells, first = [], True
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            if pattern and pattern.search(output_text(cell)):
                cell["outputs"] = [{"name": "stdout", "output_type": "stream", "text": [HIDDEN]}]
            for o in cell.get("outputs", []):
                if "text" in o:
                    o["text"] = _source("".join(o["text"]).replace(REVEAL_LINE, ""))
            cells.append(cell)
            continue
        if cell["cell_type"] != "markdown":
            cells.append(cell)
            continue
        text = "".join(cell["source"])
        new = _redact(strip_solutions(text), found)
        if first and new.startswith("# "):  # under the chapter's title
            title, _, rest = new.partition("\n")
            new = f"{title}\n\n{NOTE}{rest.lstrip(chr(10))}"
            first = False
        pieces = _split_exercises(new)
        if len(pieces) == 1 and pieces[0][1] is None:
            if new != text:
                cell["source"] = _source(new)
            cells.append(cell)
            continue
        for i, (piece, label) in enumerate(pieces):  # the exercises, each followed by its answer cell
            part = cell if i == 0 else {"cell_type": "markdown", "id": f"{cell.get('id', 'md')}-{i}"[:64],
                                        "metadata": {}, "source": []}
            part["source"] = _source(piece.strip("\n"))
            cells.append(part)
            if label:
                cells.append(_answer_cell(label))
    # the checkers in these notebooks say right or wrong and give the hint, never the answer
    first_code = next((i for i, c in enumerate(cells) if c["cell_type"] == "code"), -1)
    nb["cells"] = [*cells[:first_code + 1], STUDENT_CELL, *cells[first_code + 1:]]  # after the Colab set-up
    return nb


def write_notebooks(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted((ROOT / "chapters").glob("[0-9][0-9]_*.ipynb")):
        nb = student_notebook(json.loads(path.read_text()))
        target = out / path.name
        target.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
        written.append(target)
    return written


def _without_instructor_pages(toc: str) -> str:
    for page in INSTRUCTOR_ONLY:
        toc = re.sub(rf"^[ \t]*- file: {re.escape(page)}[ \t]*\n", "", toc, flags=re.M)
    return toc


def build_site(out: Path) -> Path:
    """Build the student website from a copy of the sources; return the folder of its HTML."""
    src = out / "src"
    shutil.rmtree(src, ignore_errors=True)
    (src / "chapters").mkdir(parents=True)
    shutil.copytree(ROOT / "book", src / "book")
    shutil.copytree(ROOT / "_static", src / "_static")
    shutil.copytree(ROOT / "_ext", src / "_ext")
    for page in INSTRUCTOR_ONLY:
        for f in src.glob(page + ".*"):
            f.unlink()
        # links to it become plain words: the student site has no such page
        link = re.compile(r"\{doc\}`(?:\.\./book/)?" + re.escape(Path(page).name) + "`")
        for f in [*src.glob("book/*.md"), *src.glob("book/*.ipynb")]:
            text = f.read_text()
            if link.search(text):
                f.write_text(link.sub("a page of the full edition", text))
    for f in src.glob("book/*.md"):  # the checkers of the student edition never reveal an answer
        f.write_text(re.sub(r"[^.\n]*`reveal=True`[^.]*\.", "", f.read_text()))
    for f in src.glob("book/*.md"):  # text for the full edition only
        f.write_text(FULL_ONLY.sub("", f.read_text()))
    for f in src.glob("book/*.ipynb"):
        nb = json.loads(f.read_text())
        for cell in nb["cells"]:
            if cell["cell_type"] == "markdown":
                cell["source"] = _source(FULL_ONLY.sub("", "".join(cell["source"])))
        f.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    write_notebooks(src / "chapters")
    config = (ROOT / "_config.yml").read_text()
    config = re.sub(r'^title: "(.*)"', r'title: "\1 (student edition)"', config, count=1, flags=re.M)
    config = config.replace("  config:\n", "  config:\n    hide_solutions: true  # the student edition\n", 1)
    # no Colab buttons: they would open the full notebooks, solutions and all
    config = re.sub(r"^launch_buttons:\n(?:[ \t]+.*\n)+", "", config, flags=re.M)
    (src / "_config.yml").write_text(config)
    (src / "_toc.yml").write_text(_without_instructor_pages((ROOT / "_toc.yml").read_text()))
    jb = Path(sys.executable).with_name("jupyter-book")
    proc = subprocess.run([str(jb), "build", str(src), "--path-output", str(out), "--warningiserror", "--keep-going"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"the student site did not build:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    html = out / "html"
    shutil.rmtree(html, ignore_errors=True)
    shutil.move(str(out / "_build" / "html"), html)
    shutil.rmtree(out / "_build", ignore_errors=True)
    shutil.rmtree(src)  # the sources hold the book's own pages and records: not for the class
    for f in html.rglob("*.ipynb"):  # the site's download buttons: the student notebooks only
        if f.parent.name == "chapters" and (out / "notebooks" / f.name).exists():
            shutil.copyfile(out / "notebooks" / f.name, f)
    return html


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--notebooks-only", action="store_true", help="write the student notebooks, build no site")
    args = ap.parse_args()
    notebooks = write_notebooks(args.out / "notebooks")
    print(f"{len(notebooks)} student notebooks in {args.out / 'notebooks'}")
    if not args.notebooks_only:
        html = build_site(args.out)
        print(f"The student website is in {html / 'index.html'}")


if __name__ == "__main__":
    main()
