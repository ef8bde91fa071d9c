"""A newcomer's set-up is what README and setup say: the Python floor they state is the one in
pyproject.toml, and every version requirements.txt pins installs on it (read from each installed
distribution's own Requires-Python); one apt-get line names every system package the book uses."""

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
APT = ("python3-venv", "make", "graphviz", "bible-kjv", "dataset-fashion-mnist", "chromium")


def _floor() -> Version:
    spec = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    found = re.fullmatch(r">=\s*(3\.\d+)", spec)
    assert found, f"requires-python should be a plain floor, got {spec!r}"
    return Version(found.group(1))


def _pins() -> list[Requirement]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [Requirement(line.split("#")[0].strip()) for line in lines if line.split("#")[0].strip()]


@pytest.mark.parametrize("page", ["README.md", "book/setup.md"])
def test_the_pages_state_the_floor_of_pyproject(page):
    stated = re.findall(r"Python (3\.\d+)(?:\+| or newer)", (ROOT / page).read_text())
    assert stated and {Version(v) for v in stated} == {_floor()}, f"{page} states Python {stated}"


def test_every_pin_installs_on_the_stated_floor():
    floor, checked = _floor(), 0
    assert Version(f"{sys.version_info.major}.{sys.version_info.minor}") >= floor
    for pin in _pins():
        try:
            meta = metadata.metadata(pin.name)
        except metadata.PackageNotFoundError:
            pytest.fail(f"{pin} is pinned but not installed: run make's set-up")
        assert Version(meta["Version"]).public in pin.specifier, f"installed {pin.name} {meta['Version']}, pinned {pin}"
        needs = meta.get("Requires-Python")
        if needs:
            assert SpecifierSet(needs).contains(f"{floor}.0"), f"{pin} needs Python {needs}; the book states {floor}"
        checked += 1
    assert checked == len(_pins()) > 20


def test_one_apt_line_names_every_system_package():
    for page in ("README.md", "book/setup.md"):
        text = (ROOT / page).read_text().replace("\\\n", " ")  # a command continued on the next line
        lines = [line for line in text.splitlines() if line.startswith("sudo apt-get install")]
        assert len(lines) == 1 and lines[0].split()[3:] == list(APT), (page, lines)
    ci = (ROOT / ".ci" / "run").read_text()
    assert all(name in ci for name in APT if name not in ("python3-venv", "make"))


def test_the_cpu_build_is_an_option_of_the_set_up():
    makefile = (ROOT / "Makefile").read_text()
    assert "--index-url $(TORCH_INDEX)" in makefile
    assert "TORCH_INDEX=https://download.pytorch.org/whl/cpu" in (ROOT / "README.md").read_text()
