"""The book checks its own prose: every number a notebook's text states is printed by one of its
cells, or cited to its source, or on a short, reasoned list.

    python tools/prose_numbers.py [NOTEBOOK ...]   # the numbers that are none of these

A number counts when it has three or more significant digits (86.10, 0.722, 1,516, 185) or is a
percentage (8 %). It is *printed* when a number in the notebook's outputs rounds to it at the
prose's precision, at the same scale or as a fraction, a per-mille or a count in thousands,
millions or billions (86.1 % from 0.8610, 31.0 M from 31,030,658). It is *cited* when its sentence
(or the one before it) names its source: a ``{cite}`` role, a ``{doc}`` link to the chapter that
prints it, a paper's table, figure, section or equation, a README, a repository, a library's
documentation, or the paper itself. Maths (``$...$``), code and the instructor's
measured runs (written from ``book/exercise_runs.json`` by ``tools/instructor_key.py``) are not
prose. ``tests/test_prose_numbers.py`` runs this over every chapter and page.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.ipynb")) + sorted((ROOT / "book").glob("*.ipynb"))
# the book's Markdown pages: no cell prints anything there, so every number is cited or reasoned
# (not the key, written from the records; the references; the troubleshooting table, whose numbers
# are those of the error messages it quotes)
PAGES = [p for p in sorted((ROOT / "book").glob("*.md"))
         if p.stem not in ("instructor_key", "references", "troubleshooting")]

# a number in prose: 1,516 / 86.10 / 0.722 / 185 / 8 (before a per cent sign)
NUMBER = re.compile(r"(?<![\w.,/#-])(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+\.\d+|\d+)(?![\w]|[.,]\d)(\s?%|\s?per cent)?")
CITED = re.compile(r"\{cite|\{doc\}|\bTable\b|\bTables\b|\bFigure\b|\bSection\b|\bEquation\b|\beq\.|"
                   r"README|\brepository\b|"
                   r"\bpaper\b|\bpaper's\b|documentation|\bet al\.|\breports?\b|\bgives\b.*\bfor\b.*\b(ImageNet|CIFAR)",
                   re.I)
SCALES = (1, 100, 0.01, 1e3, 1e-3, 1e6, 1e-6, 1e9, 1e-9, 1 / 60, 1 / 3600)
# the reasoned list: kinds of numbers that no cell prints and no citation needs
YEARS = range(1900, 2040)  # dates: "LeCun et al. (1998)", "in 2012"
PRODUCT = re.compile(r"(GTX|RTX|Tesla|JFT-|ILSVRC-|VOC|COCO|Python|numpy|matplotlib|ipykernel|torch|torchvision)\s?$")
# (names with numbers in them, and versions)
ARITHMETIC = re.compile(r"[=×+−·/≈]")  # a number worked out in its sentence from the ones beside it


def strip(markdown: str) -> str:
    """The prose of a Markdown cell: without maths, code, links' targets, labels, HTML comments and
    the instructor's measured runs (generated from the records, not typed)."""
    text = re.sub(r"<!--.*?-->", " ", markdown, flags=re.S)
    # the solutions: worked derivations, run and checked by make key (tests/test_instructor_key.py)
    text = re.sub(r"^:::\{solution\}.*?^:::[ \t]*$", " ", text, flags=re.S | re.M)
    text = re.sub(r"\*\*Measured on this book's CPU\*\*.*?(?=\n:::|\Z)", " ", text, flags=re.S)
    text = re.sub(r"```.*?```", " ", text, flags=re.S)
    text = re.sub(r"\$\$.*?\$\$", " ", text, flags=re.S)
    text = re.sub(r"\$[^$]+\$", " ", text)
    text = re.sub(r"`[^`\n]*`", " ", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)  # a link's address
    text = re.sub(r"^:label: .*$|^:class: .*$", " ", text, flags=re.M)
    text = re.sub(r"\b\d+(?:×\d+)+\b", lambda m: " ".join(m.group(0).split("×")), text)  # 185×185
    return text


def printed_numbers(nb: dict) -> list[float]:
    values = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            texts = ["".join(out.get("text", ""))]
            for key in ("text/plain", "text/markdown", "text/html"):
                texts.append("".join(out.get("data", {}).get(key, "")))
            for text in texts:
                for m in re.finditer(r"-?\d[\d,_]*(?:\.\d+)?(?:e[-+]?\d+)?", text):
                    raw = m.group(0).replace(",", "").replace("_", "")
                    try:
                        values.append(abs(float(raw)))
                    except ValueError:
                        pass
    return values


def _decimals(token: str) -> int:
    return len(token.split(".")[1]) if "." in token else 0


def is_printed(token: str, values: list[float], percent: bool) -> bool:
    target = float(token.replace(",", ""))
    d = _decimals(token)
    for v in values:
        for s in SCALES:
            if round(v * s, d) == target or (d == 0 and target >= 100 and round(v * s) == target):
                return True
    return False


def significant(token: str) -> int:
    digits = token.replace(",", "").replace(".", "").lstrip("0")
    return len(digits)


def findings(path: Path) -> list[tuple[str, str]]:
    """(number, its sentence) for every number in ``path``'s prose that is neither printed, nor
    cited, nor on the reasoned list."""
    if path.suffix == ".md":  # a page without cells: its text is one Markdown cell
        nb = {"cells": [{"cell_type": "markdown", "source": path.read_text()}]}
    else:
        nb = json.loads(path.read_text())
    values = printed_numbers(nb)
    found = []
    for cell in nb["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        prose = strip("".join(cell["source"]))
        blocks = re.split(r"\n\s*\n", prose)
        for i, block in enumerate(blocks):
            if block.lstrip().startswith("|"):  # a table: cited by the paragraph that introduces it
                if not (i and CITED.search(blocks[i - 1])):
                    found += _unprinted(block, values)
                continue
            sentences = re.split(r"(?<=[.!?])\s+|\n(?=[-*#])", block)
            for k, sentence in enumerate(sentences):
                # a sentence that names its source, or follows one that does ("That 15.3 % is ...")
                if not (CITED.search(sentence) or k and CITED.search(sentences[k - 1])):
                    found += _unprinted(sentence, values)
    return found


def _unprinted(sentence: str, values: list[float]) -> list[tuple[str, str]]:
    """The numbers of one sentence that no output prints and no reason of the list covers."""
    found = []
    for m in NUMBER.finditer(sentence):
        token, percent = m.group(1), bool(m.group(2))
        if not percent and significant(token) < 3:
            continue
        if "." not in token and "," not in token and (int(token) in YEARS or sentence[:m.start()].endswith("in ")
                                                       and 1000 <= int(token) < 2100):  # "printed in 1611"
            continue
        before, after = sentence[max(0, m.start() - 3):m.start()], sentence[m.end():m.end() + 3]
        if ARITHMETIC.search(before + " " + after):  # worked out in the sentence: 5 × 51.4 = 257
            continue
        if PRODUCT.search(sentence[max(0, m.start() - 12):m.start()]):  # "GTX 580", "JFT-300M"
            continue
        if not is_printed(token, values, percent):
            found.append((token + ("%" if percent else ""), " ".join(sentence.split())[:160]))
    return found


def main() -> None:
    paths = [Path(p).resolve() for p in sys.argv[1:]] or NOTEBOOKS + PAGES
    total = 0
    for path in paths:
        for number, sentence in findings(path):
            print(f"{path.relative_to(ROOT)}: {number:>10}  {sentence}")
            total += 1
    print(f"{total} numbers in the prose that no cell prints and no citation or reason covers")
    sys.exit(1 if total else 0)


if __name__ == "__main__":
    main()
