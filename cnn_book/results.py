"""The book's results table: each chapter records what its full training run measured.

``record`` writes ``book/results/<model>.json`` when the chapter runs inside the book's checkout
and not in quick mode; the appendix page reads these files, so every figure in its table was
computed by a chapter's cell. Outside the checkout (Colab, a reader's own script) it does nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .inspect import ModelSummary
from .settings import quick_mode
from .train import History

RESULTS_DIR = Path(__file__).resolve().parents[1] / "book" / "results"


def record(key: str, chapter: str, history: History, summary: ModelSummary) -> Path | None:
    """Save one row of the results table (``key`` names the row, e.g. "lenet5"); return its path."""
    folder = Path(os.environ.get("CNN_BOOK_RESULTS", RESULTS_DIR))
    if quick_mode():
        print("Quick mode: the results table is left as it is.")
        return None
    if not folder.is_dir():
        return None
    if history.input_shape and tuple(summary.input_shape) != tuple(history.input_shape):
        raise ValueError(f"the summary is of a {summary.input_shape} input but the model was trained on "
                         f"{history.input_shape}: pass inspect.summary(model, data.input_shape)")
    row = {
        "key": key, "chapter": chapter, "model": summary.model,
        "input": "x".join(map(str, summary.input_shape)), "params": summary.total_params,
        "flops": summary.total_flops, "test_acc": history.final_test_acc, "epochs": len(history.epochs),
        "train_seconds": round(history.train_seconds, 1), "wall_seconds": round(history.wall_seconds, 1),
        "images_per_s": round(history.images_per_s), "device": history.device,
    }
    if history.curves.get("test_miou"):  # segmentation: test_acc is pixel accuracy; the mean IoU is kept too
        row["test_miou"] = history.curves["test_miou"][-1]
    path = folder / f"{key}.json"
    path.write_text(json.dumps(row, indent=1) + "\n")
    print(f"Recorded in the book's results table: {path.name}")
    return path


def load_all(folder: Path | None = None) -> list[dict]:
    """Every recorded row, in chapter order."""
    folder = Path(folder or os.environ.get("CNN_BOOK_RESULTS", RESULTS_DIR))
    rows = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    return sorted(rows, key=lambda r: (r["chapter"], r["key"]))
