"""Every chapter as a Colab reader runs it: ``make colab-check`` (not part of ``make test``).

    python tools/colab_check.py [--notebook chapters/01_simple_cnn.ipynb ...] [--keep]

Makes a fresh environment, ``.venv-colab``, with only the packages a Colab runtime comes with
(``requirements-colab.txt``: torch, torchvision, numpy, matplotlib and the like; none of the book's
own dependencies, none of its extras), then runs every chapter top to bottom in it, in quick mode
(``CNN_BOOK_QUICK=1``), as Colab would: ``google.colab`` is importable and imported (a stand-in
module), so each chapter's guarded set-up cell runs, with its repository address pointed at this
checkout (``file://…``) instead of ``_config.yml``'s. Prints one line per notebook, ``ok`` or the
first cell that failed and its error, and writes them to ``_build/colab-check.json``; exits
non-zero if any failed. The book's own pages (``book/*.ipynb``) offer no Colab button and are not
run. ``--keep`` keeps the environment for the next run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv-colab"
PY = VENV / "bin" / "python"
REQUIREMENTS = ROOT / "requirements-colab.txt"
REPORT = ROOT / "_build" / "colab-check.json"
CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.ipynb"))
# the stand-in for Colab's module: imported at start-up, so that "google.colab" is in sys.modules
STAND_IN = {"google/__init__.py": "",
            "google/colab/__init__.py": '"""A stand-in for Colab\'s module (tools/colab_check.py)."""\n',
            "sitecustomize.py": "import google.colab  # noqa: F401  (tools/colab_check.py: as on Colab)\n"}


def make_environment() -> None:
    stamp = VENV / ".installed"
    if stamp.exists() and stamp.read_text() == REQUIREMENTS.read_text():
        return
    shutil.rmtree(VENV, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(PY), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run([str(PY), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)], check=True)
    stamp.write_text(REQUIREMENTS.read_text())


def pointed_here(nb: dict) -> dict:
    """``nb`` with its set-up cell installing this checkout instead of the published repository."""
    cell = next(c for c in nb["cells"] if c["cell_type"] == "code")
    source = "".join(cell["source"])
    new = re.sub(r'repo = "git\+[^"]+"', f'repo = "file://{ROOT}"', source)
    if new == source:
        raise SystemExit("a set-up cell without repo = \"git+...\": run python tools/colab_setup.py")
    cell["source"] = new
    return nb


def run(path: Path, stand_in: Path) -> dict:
    """Run one notebook in the Colab-like environment; what happened."""
    code = r'''
import json, sys, nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
nb = nbformat.reads(sys.stdin.read(), as_version=4)
client = NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": sys.argv[1]}})
try:
    client.execute()
    print(json.dumps({"ok": True}))
except CellExecutionError as e:
    index = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code" and any(
        o.get("output_type") == "error" for o in c.get("outputs", []))), None)
    print(json.dumps({"ok": False, "cell": index, "error": f"{e.ename}: {e.evalue}"[:300]}))
'''
    env = {**os.environ, "CNN_BOOK_QUICK": "1", "CNN_BOOK_PROGRESS": "0", "PYTHONPATH": str(stand_in),
           "PATH": f"{VENV / 'bin'}:{os.environ.get('PATH', '')}", "VIRTUAL_ENV": str(VENV)}
    env.pop("CNN_BOOK_OFFLINE", None)
    t0 = time.perf_counter()
    proc = subprocess.run([str(PY), "-c", code, str(path.parent)], input=json.dumps(pointed_here(
        json.loads(path.read_text()))), capture_output=True, text=True, env=env, timeout=3600)
    lines = proc.stdout.strip().splitlines()
    result = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {
        "ok": False, "cell": None, "error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--notebook", action="append", type=Path, help="only these (repeatable)")
    ap.add_argument("--keep", action="store_true", help="keep .venv-colab for the next run")
    args = ap.parse_args()
    make_environment()
    leftover = not (ROOT / "build").exists()  # pip's build of this checkout leaves build/ behind
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        stand_in = Path(tmp)
        for name, text in STAND_IN.items():
            (stand_in / name).parent.mkdir(parents=True, exist_ok=True)
            (stand_in / name).write_text(text)
        for path in [p.resolve() for p in args.notebook] if args.notebook else CHAPTERS:
            # a fresh install of the package for every notebook, as in a fresh Colab runtime
            subprocess.run([str(PY), "-m", "pip", "uninstall", "-q", "-y", "cnn_book"], capture_output=True)
            result = run(path, stand_in)
            report[path.name] = result
            where = "" if result["ok"] else f"  cell {result['cell']}: {result['error']}"
            print(f"{path.name:32} {'ok' if result['ok'] else 'FAILED':6} {result['seconds']:7.1f} s{where}",
                  flush=True)
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=1) + "\n")
    if not args.keep:
        shutil.rmtree(VENV, ignore_errors=True)
    if leftover:
        shutil.rmtree(ROOT / "build", ignore_errors=True)
    failed = [n for n, r in report.items() if not r["ok"]]
    print(f"{len(report) - len(failed)} of {len(report)} notebooks ran in a Colab-like environment; "
          f"written to {REPORT.relative_to(ROOT)}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
