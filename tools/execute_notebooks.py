"""Run notebooks top to bottom, each in a fresh kernel in its own folder, and save their outputs.

    python tools/execute_notebooks.py chapters/*.ipynb book/*.ipynb

This is how the committed outputs are made (``make notebooks``). Progress bars are off
(``CNN_BOOK_PROGRESS=0``) so that the saved outputs are the printed lines, not widgets. A failing
cell stops the run and the notebook is not overwritten. A chapter's full-run time is recorded in
``book/run_times.json`` (the course plan reads it), with the machine it ran on; quick mode
records nothing.
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


def cpu_model() -> str:
    """The processor's name (Linux's /proc/cpuinfo; the machine type elsewhere): run times differ by
    a factor of two or more between the CPUs the book has been run on."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def record(path: Path, seconds: float) -> None:
    """Keep a chapter's full-run time in book/run_times.json."""
    import datetime
    import json
    import platform

    import torch

    root = Path(__file__).resolve().parents[1]
    if path.resolve().parent != root / "chapters" or os.environ.get("CNN_BOOK_QUICK", "0") not in ("", "0"):
        return
    out = root / "book" / "run_times.json"
    times = json.loads(out.read_text()) if out.exists() else {}
    device = f"cuda ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else \
        f"cpu ({torch.get_num_threads()} threads, {platform.machine()})"
    times[path.stem] = {"seconds": round(seconds), "device": device, "cpu": cpu_model(),
                        "date": datetime.date.today().isoformat()}
    out.write_text(json.dumps(dict(sorted(times.items())), indent=1) + "\n")


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        seconds = execute(Path(arg))
        record(Path(arg), seconds)
        print(f"{arg}: executed in {seconds:.0f} s", flush=True)
