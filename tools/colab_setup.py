"""Every chapter's first cell, the guarded Colab set-up, written from one place.

    python tools/colab_setup.py          # rewrite the set-up cells that differ
    python tools/colab_setup.py --check  # say which differ, change nothing (tests/test_colab.py)

The repository the cells install ``cnn_book`` from is ``_config.yml``'s ``repository.url``, and
nowhere else: publishing the book under another address means changing that one line and running
this. The package's extras (``pyproject.toml``) a chapter needs follow from what its code uses
(``NEEDS``); the King James Bible (Debian's ``bible-kjv``) and deepforest's tree images likewise.
The cell installs nothing and prints nothing outside Colab.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.ipynb"))

# extra of pyproject.toml -> what in a chapter's code needs it
NEEDS = {
    "transfer": r"\bsample_photos\(|\bskimage\b|\bcaptum\b",  # scikit-image's photos, captum's Grad-CAM
    "detection": r"\btorchmetrics\b|\bpycocotools\b|\bcoco_map\b|recipes\.get\(\"yolo\"",  # mAP
    "text": r"\bkjv_\w+\(|\btokenizers\b|\bWordPiece\b",  # the Bible's verses, a trained vocabulary
}
BIBLE = r"\bkjv_\w+\("  # the text of the GPT and BERT chapters, from Debian's bible-kjv
NEON = r"\bneon_trees\("  # the NEON tree crowns, shipped in the deepforest wheel


def repository() -> str:
    """``_config.yml``'s repository URL (read without a YAML library: the set-up has none yet)."""
    config = (ROOT / "_config.yml").read_text()
    found = re.search(r"^repository:\n(?:[ \t]+.*\n)*?[ \t]+url:[ \t]*(\S+)", config, re.M)
    if not found:
        raise SystemExit("_config.yml has no repository: url: the Colab set-up cells install from it")
    return found.group(1).strip("\"'")


def code_of(nb: dict) -> str:
    """The notebook's code, without its set-up cell."""
    cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    return "\n".join("".join(c["source"]) for c in cells[1:])


def extras(code: str) -> list[str]:
    return [name for name, pattern in NEEDS.items() if re.search(pattern, code)]


def setup_source(code: str, url: str) -> str:
    """The set-up cell for a chapter whose code is ``code``."""
    wanted = extras(code)
    bible, neon = re.search(BIBLE, code), re.search(NEON, code)
    what = "cnn_book" + (" and the King James Bible (Debian's bible-kjv)" if bible else "")
    package = f"cnn_book[{','.join(wanted)}]" if wanted else "cnn_book"
    comment = (f"Colab set-up: installs {what} when this notebook runs in Google Colab; does nothing "
               "elsewhere (written by tools/colab_setup.py from _config.yml).")
    lines = [
        *("# " + line for line in textwrap.wrap(comment, 76, break_on_hyphens=False)),
        "import sys",
        "",
        'if "google.colab" in sys.modules:',
        f'    repo = "git+{url}"  # IPython fills in {{repo}}',
        f'    %pip install -q "{package} @ {{repo}}"',
    ]
    if neon:
        lines += ["    # the NEON tree images: deepforest's data folder, without its dependencies",
                  "    %pip install -q --no-deps deepforest==1.5.0"]
    if bible:
        lines += ["    import subprocess", "",
                  "    # the package lists first: a fresh runtime may not have them",
                  '    subprocess.run(["apt-get", "-qq", "update"], check=True)',
                  '    subprocess.run(["apt-get", "-qq", "install", "-y", "bible-kjv"], check=True)']
    return "\n".join(lines)


def _source(text: str) -> list[str]:
    lines = text.split("\n")
    return [line + "\n" for line in lines[:-1]] + [lines[-1]]


def differing(write: bool) -> list[str]:
    """The chapters whose set-up cell is not the one written from ``_config.yml``; with ``write``,
    rewrite them (the cell's source only: it prints nothing, so its outputs stay empty)."""
    url, out = repository(), []
    for path in CHAPTERS:
        nb = json.loads(path.read_text())
        cell = next(c for c in nb["cells"] if c["cell_type"] == "code")
        want = setup_source(code_of(nb), url)
        if "".join(cell["source"]) != want:
            out.append(path.name)
            if write:
                cell["source"] = _source(want)
                path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only say which cells differ")
    args = ap.parse_args()
    names = differing(write=not args.check)
    if args.check and names:
        sys.exit("set-up cells not written from _config.yml: " + ", ".join(names)
                 + " (run python tools/colab_setup.py)")
    print(("rewrote " + ", ".join(names)) if names else "every set-up cell is written from _config.yml")


if __name__ == "__main__":
    main()
