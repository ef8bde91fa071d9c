"""The book checks its own prose (tools/prose_numbers.py): every number with three or more
significant digits, and every percentage, in a chapter's or page's text is printed by one of its
cells (to the prose's rounding), or cited to its source, or of a kind on the tool's short, reasoned
list (dates, versions, maths, worked arithmetic, the instructor's records)."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("prose_numbers", ROOT / "tools" / "prose_numbers.py")
prose = importlib.util.module_from_spec(spec)
spec.loader.exec_module(prose)

# chapters whose text quotes a figure that only a full re-run can print (a reading the cell that
# draws the figure does not print yet): they must fail until that re-run, then leave this list
PENDING: dict[str, str] = {}


def _cases():
    for path in prose.NOTEBOOKS + prose.PAGES:
        reason = PENDING.get(path.stem)
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        yield pytest.param(path, marks=marks, id=f"{path.parent.name}/{path.stem}")


@pytest.mark.parametrize("path", list(_cases()))
def test_every_number_in_the_prose_is_printed_or_cited(path):
    found = prose.findings(path)
    assert not found, "\n".join(f"{number}: {sentence}" for number, sentence in found)


def test_the_check_finds_what_it_should(tmp_path):
    values = [0.8610, 31_030_658, 1.857]
    assert prose.is_printed("86.1", values, True) and prose.is_printed("31.0", values, False)
    assert prose.is_printed("1.86", values, False) and not prose.is_printed("1.85", values, False)
    assert not prose.is_printed("185", values, False)
    cell = {"cells": [{"cell_type": "markdown", "source": "It reaches 86.1 % after 4,321 steps. The paper's "
                       "Table 2 gives 75.3 %. In 1998, 5 × 51.4 = 257 of them. $1{,}234$ `12,345`"},
                      {"cell_type": "code", "source": "", "outputs": [{"output_type": "stream",
                                                                      "text": "acc 0.8610\n"}]}]}
    path = tmp_path / "prose-check.ipynb"
    path.write_text(json.dumps(cell))
    assert [n for n, _ in prose.findings(path)] == ["4,321"]
