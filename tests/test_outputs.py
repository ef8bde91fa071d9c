"""What a reader sees in a chapter's committed outputs: a result or a short note, never a failure
(a traceback, a URL error, a download line) or a path of the machine that ran it."""

import json
import re
from pathlib import Path

import pytest

from cnn_book.files import DataError
from cnn_book.models import WeightsUnavailable

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.ipynb"))
FAILURE = re.compile(r"Traceback|URLError|urlopen error|Downloading:|/root/|/home/|/tmp/|\.cache/|https?://")


def _texts(path: Path):
    for i, cell in enumerate(json.loads(path.read_text())["cells"]):
        for out in cell.get("outputs", []):
            yield i, "".join(out.get("text", "")) + "".join(out.get("data", {}).get("text/plain", ""))


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_no_committed_output_shows_a_failure_or_a_machine_path(path):
    bad = [(i, FAILURE.search(t).group(0)) for i, t in _texts(path) if FAILURE.search(t)]
    assert not bad, bad


def test_the_errors_say_a_short_note_without_an_address_or_path():
    long = ("Could not download torchvision's x weights from https://download.pytorch.org/x.pth "
            "(URLError). Offline, put the file into /root/.cache/torch/hub.")
    err = WeightsUnavailable(long, note="torchvision's x ImageNet weights are not on this machine.")
    assert str(err) == long and not FAILURE.search(err.note)
    assert DataError("plain").note == "plain"  # without a note, the message is the note
