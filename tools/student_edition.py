"""The student edition: the book without the exercises' solutions, to hand to a class.

    python tools/student_edition.py                 # make student
    python tools/student_edition.py --notebooks-only

Writes ``_build/student/notebooks/``: every chapter notebook with its solution blocks removed and
every exercise, code cell and output left in place (to hand out, or to upload to Colab), and builds
the student website into ``_build/student/html`` from a copy of the book's sources made the same
way, with sphinx-exercise's ``hide_solutions`` on as well. Pages for instructors only (the
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
NOTE = ("*Student edition: the exercises are here, their solutions are not. Your teacher has the full "
        "edition.*\n\n")


def strip_solutions(text: str) -> str:
    """``text`` (Markdown) without its ``:::{solution}`` blocks."""
    return SOLUTION.sub("", text)


def student_notebook(nb: dict) -> dict:
    """A copy of notebook ``nb`` without solutions: only Markdown cells change."""
    nb = json.loads(json.dumps(nb))
    first = True
    for cell in nb["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        text = "".join(cell["source"])
        new = strip_solutions(text)
        if first and new.startswith("# "):  # under the chapter's title
            title, _, rest = new.partition("\n")
            new = f"{title}\n\n{NOTE}{rest.lstrip(chr(10))}"
            first = False
        if new != text:
            lines = new.split("\n")
            cell["source"] = [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
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
    for page in INSTRUCTOR_ONLY:
        for f in src.glob(page + ".*"):
            f.unlink()
        # links to it become plain words: the student site has no such page
        link = re.compile(r"\{doc\}`(?:\.\./book/)?" + re.escape(Path(page).name) + "`")
        for f in [*src.glob("book/*.md"), *src.glob("book/*.ipynb")]:
            text = f.read_text()
            if link.search(text):
                f.write_text(link.sub("a page of the full edition", text))
    write_notebooks(src / "chapters")
    config = (ROOT / "_config.yml").read_text()
    config = re.sub(r'^title: "(.*)"', r'title: "\1 (student edition)"', config, count=1, flags=re.M)
    config = config.replace("  config:\n", "  config:\n    hide_solutions: true  # the student edition\n", 1)
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
