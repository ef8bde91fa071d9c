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
    # built with the full site, but unlisted: in no menu (not in the table of contents) and no search
    assert "instructor_key" not in (ROOT / "_toc.yml").read_text()
    assert page.startswith("---\norphan: true\nnosearch: true\n---\n")
    assert "only_build_toc_files: false" in (ROOT / "_config.yml").read_text()


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


def test_every_solution_and_wrong_set_up_compiles():
    """The code of every exercise's solution in every chapter, and every wrong set-up of the key, is
    Python that compiles (a syntax error or an unclosed block fails here, in a second)."""
    n = 0
    for stem in STEMS:
        for label, _question, solution in key.exercises(stem):
            for i, code in enumerate(key.CODE.findall(solution)):
                compile(code, f"<{label} block {i}>", "exec")
                n += 1
    for label, ex in key.TRAINING.items():
        compile(ex.wrong, f"<{label} wrong set-up>", "exec")
    assert n >= 40


def test_one_training_solution_runs_after_its_chapter_s_set_up(tmp_path, monkeypatch):
    """What `make key` does for every training exercise (about 30 minutes in quick mode), done here
    for one, on 128 images: the chapter's own set-up cells, the solution's code as printed, its
    wrong set-up; a broken API in that path fails here."""
    from cnn_book import train

    monkeypatch.setenv("CNN_BOOK_QUICK", "1")
    monkeypatch.setenv("CNN_BOOK_RESULTS", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setattr(train, "QUICK_TRAIN_IMAGES", 128)
    monkeypatch.setattr(train, "QUICK_TEST_IMAGES", 128)
    label = "simple-cnn-no-augment"
    e = key.run([label], tmp_path / "runs.json")["exercises"][label]
    assert e["error"] is None, e["error"]
    assert len(e["runs"]) == len(key.RUN_LABELS[label][1]) and all(r["quick"] for r in e["runs"])
    assert all(len(r["curves"]["test_acc"]) == r["epochs"] for r in e["baseline"] + e["runs"])
    assert e["wrong"]["outcome"].split(":")[0] == RECORDS["exercises"][label]["wrong"]["outcome"].split(":")[0]
    key.summary(label, e)  # the page's sentence can be written from these records


@pytest.mark.key
def test_the_solutions_and_the_wrong_set_ups_still_run(tmp_path):
    """`make key` (not `make test`: about 30 minutes on 2 cores): every training exercise's solution,
    run in quick mode after its chapter's set-up, as `run` does in full: a solution that an API
    change broke fails here. The wrong set-ups still fail the way the key says."""
    env = {**os.environ, "CNN_BOOK_QUICK": "1", "CNN_BOOK_OFFLINE": "1", "CNN_BOOK_RESULTS": str(tmp_path)}
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "instructor_key.py"), "run"], env=env,
                          capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    quick = json.loads(key.QUICK_RUNS.read_text())["exercises"]
    for label in key.TRAINING:
        e = quick[label]
        assert e["error"] is None, (label, e["error"])
        assert len(e["runs"]) == len(key.RUN_LABELS[label][1]) and all(r["quick"] for r in e["runs"])
        full = RECORDS["exercises"][label]["wrong"]["outcome"]
        assert e["wrong"]["outcome"].split(":")[0] == full.split(":")[0], label
        key.summary(label, e)  # the page's sentence can be written from these records
