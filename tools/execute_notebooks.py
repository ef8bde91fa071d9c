"""Run notebooks top to bottom, each in a fresh kernel in its own folder, and save their outputs.

    python tools/execute_notebooks.py chapters/*.ipynb book/*.ipynb

This is how the committed outputs are made (``make notebooks``). Progress bars are off
(``CNN_BOOK_PROGRESS=0``) so that the saved outputs are the printed lines, not widgets. A failing
cell stops the run and the notebook is not overwritten.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def execute(path: Path, timeout: int = 3600) -> float:
    nb = nbformat.read(path, as_version=4)
    os.environ["CNN_BOOK_PROGRESS"] = "0"
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    client.execute()
    nbformat.write(nb, path)
    return time.perf_counter() - t0


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        seconds = execute(Path(arg))
        print(f"{arg}: executed in {seconds:.0f} s", flush=True)
