"""The book's results table: each chapter records what its full training run measured.

``record`` writes ``book/results/<model>.json`` when the chapter runs inside the book's checkout
and not in quick mode; the appendix page reads these files, so every figure in its table was
computed by a chapter's cell. Outside the checkout (Colab, a reader's own script) it does nothing.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from pathlib import Path

from .files import atomic_write
from .inspect import ModelSummary
from .tasks import TASKS
from .train import History

RESULTS_DIR = Path(__file__).resolve().parents[1] / "book" / "results"


KEY = re.compile(r"[a-z0-9][a-z0-9_]*")  # a row's key is a file name in the results folder, nothing more
CHAPTER = re.compile(r"[0-9]{2}")  # "02": two digits, so that the rows sort in the book's order


def record(key: str, chapter: str, history: History, summary: ModelSummary) -> Path | None:
    """Save one row of the results table (``key`` names the row, e.g. "lenet5"); return its path.

    Nothing is written for a quick-mode run (``history.quick``), or outside the book's checkout.
    The summary must be of the model that was trained, at the input it was trained on. The row is
    written to a temporary file and renamed, so a killed run leaves the old row or the new one.
    """
    if not isinstance(key, str) or not KEY.fullmatch(key):
        raise ValueError(f"key must be lower-case letters, digits and underscores (a file name in the "
                         f"results folder), got {key!r}")
    if not isinstance(chapter, str) or not CHAPTER.fullmatch(chapter):
        raise ValueError(f"chapter must be two digits as a string, such as \"02\", got {chapter!r}")
    if history.quick:
        print("Quick mode: the results table is left as it is.")
        return None
    chosen = os.environ.get("CNN_BOOK_RESULTS")
    folder = Path(chosen or RESULTS_DIR)
    if not folder.is_dir():
        if chosen:  # asked for, and not there: a typo should not silently keep the row
            raise ValueError(f"CNN_BOOK_RESULTS={chosen} is not a folder: create it, or unset CNN_BOOK_RESULTS to "
                             f"write to the book's own table")
        return None  # outside the book's checkout (Colab, a reader's script): nothing to record into
    if history.model and summary.model != history.model:
        raise ValueError(f"the summary is of {summary.model} but the history is of {history.model}: pass "
                         f"inspect.summary(model, ...) of the model that was trained")
    if history.input_shape and tuple(summary.input_shape) != tuple(history.input_shape):
        raise ValueError(f"the summary is of a {summary.input_shape} input but the model was trained on "
                         f"{history.input_shape}: pass inspect.summary(model, data.input_shape)")
    row = {
        "key": key, "chapter": chapter, "model": summary.model,
        "input": "x".join(map(str, summary.input_shape)), "params": summary.total_params,
        "flops": summary.total_flops, "test_acc": _finite(history.final_test_acc), "epochs": len(history.epochs),
        "train_seconds": round(history.train_seconds, 1), "wall_seconds": round(history.wall_seconds, 1),
        "images_per_s": round(history.images_per_s), "device": history.device, "task": history.task,
    }
    # the task's own figures: the mean IoU, the negative ELBO, bits per token, mAP (None if it diverged)
    if history.task in TASKS:
        row.update({k: _finite(v) for k, v in TASKS[history.task]().results(history.curves).items()})
    path = folder / f"{key}.json"
    with atomic_write(path, "w") as f:  # readers see the old row or the new one, never half of one
        f.write(json.dumps(row, indent=1, allow_nan=False) + "\n")
    print(f"Recorded in the book's results table: {path.name}")
    return path


def _finite(x: float) -> float | None:
    """``x``, or None for NaN and infinities, which JSON cannot hold (a diverged run)."""
    return x if math.isfinite(x) else None


def load_all(folder: Path | None = None) -> list[dict]:
    """Every recorded row, in chapter order. A damaged file is named in a warning and left out."""
    folder = Path(folder or os.environ.get("CNN_BOOK_RESULTS", RESULTS_DIR))
    rows = []
    for p in sorted(folder.glob("*.json")):
        try:
            row = json.loads(p.read_text())
            if not isinstance(row, dict) or not CHAPTER.fullmatch(str(row.get("chapter"))):
                raise ValueError("not a results row")
        except (ValueError, OSError) as err:
            warnings.warn(f"{p} is damaged ({err}) and was left out of the results table: delete it, or "
                          f"re-run its chapter to write it again", stacklevel=2)
            continue
        rows.append(row)
    return sorted(rows, key=lambda r: (r["chapter"], str(r.get("key"))))
