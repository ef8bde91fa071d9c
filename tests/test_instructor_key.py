"""The instructor's key: every exercise on the page, measured records for every training exercise,
chapter solutions that quote those records, and solutions that still run (in quick mode)."""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("instructor_key", ROOT / "tools" / "instructor_key.py")
key = importlib.util.module_from_spec(spec)
sys.modules["instructor_key"] = key  # dataclasses look their module up there
spec.loader.exec_module(key)
STEMS = sorted(p.stem for p in (ROOT / "chapters").glob("[0-9][0-9]_*.ipynb"))
RECORDS = json.loads(key.RUNS.read_text())


def test_the_page_is_written_from_the_chapters_and_the_records():
    assert key.PAGE.read_text() == key.render_page(RECORDS), "run `python tools/instructor_key.py page`"
    page = key.PAGE.read_text()
    for stem in STEMS:
        for label, _, solution in key.exercises(stem):
            assert f"### `{label}`" in page
            assert solution.splitlines()[0] in page
    assert "file: book/instructor_key" in (ROOT / "_toc.yml").read_text()


def test_every_exercise_that_trains_is_a_training_exercise_of_the_key():
    for stem in STEMS:
        for label, _question, solution in key.exercises(stem):
            if "train.fit(" in solution:
                assert label in key.TRAINING, f"{label} trains: add it to TRAINING in tools/instructor_key.py"
    assert set(key.TRAINING) == set(key.RUN_LABELS) == set(key.RANGE)


@pytest.mark.parametrize("label", sorted(key.TRAINING))
def test_each_training_exercise_was_measured_in_full(label):
    e = RECORDS["exercises"][label]
    assert e["error"] is None
    before, runs = key.RUN_LABELS[label]
    assert len(e["runs"]) == len(runs) and len(e["baseline"]) >= len(before)
    for run in e["baseline"] + e["runs"]:
        assert not run["quick"] and run["device"] and run["wall_seconds"] > 0
        assert len(run["curves"]["test_acc"]) == run["epochs"]
    assert e["machine"]["device"] and e["seconds"] > 0
    assert e["wrong"]["code"] == key.TRAINING[label].wrong  # the page shows what ran
    assert "TODO" not in key.RANGE[label](e, RECORDS)


@pytest.mark.parametrize("label", sorted(key.TRAINING))
def test_the_chapter_solution_quotes_the_measured_numbers(label):
    body = dict((lab, sol) for lab, _, sol in key.exercises(key.TRAINING[label].chapter))[label]
    flat = re.sub(r"\s+", " ", body)
    assert key.summary(label, RECORDS["exercises"][label]) in flat


def test_the_solutions_and_the_wrong_set_ups_still_run(tmp_path):
    """Every training exercise's solution, run in quick mode after its chapter's set-up, as `run`
    does in full: a solution that an API change broke fails here. The wrong set-ups still fail the
    way the key says."""
    env = {**os.environ, "CNN_BOOK_QUICK": "1", "CNN_BOOK_OFFLINE": "1", "CNN_BOOK_RESULTS": str(tmp_path)}
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "instructor_key.py"), "run"], env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    quick = json.loads(key.QUICK_RUNS.read_text())["exercises"]
    for label in key.TRAINING:
        e = quick[label]
        assert e["error"] is None, (label, e["error"])
        assert len(e["runs"]) == len(key.RUN_LABELS[label][1]) and all(r["quick"] for r in e["runs"])
        full = RECORDS["exercises"][label]["wrong"]["outcome"]
        assert e["wrong"]["outcome"].split(":")[0] == full.split(":")[0], label
        key.summary(label, e)  # the page's sentence can be written from these records
