"""The same numbers next month: constraints-cpu.txt pins the exact version of every package an
install from the README brings in, and every results.json says whether the install matches it."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest

from sppnet.utils.provenance import LOCK_FILE, lock_status, read_lock

ROOT = Path(__file__).resolve().parents[1]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(requirement_names: list[str]) -> set[str]:
    """The installed distributions these requirements bring in, transitively (markers that
    do not apply here are skipped, as pip does)."""
    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = list(requirement_names)
    while todo:
        name = _norm(todo.pop())
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def test_the_lock_pins_every_package_of_an_install_exactly():
    from packaging.requirements import Requirement

    lock = ROOT / LOCK_FILE
    lines = [ln.split("#", 1)[0].strip() for ln in lock.read_text().splitlines()]
    pins = [ln for ln in lines if ln]
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[A-Za-z0-9_.+\-!]+", p) for p in pins), pins
    locked = read_lock(lock)
    assert locked["torch"] == "2.13.0"
    # sppnet's requirements and its test extra (README command 2), transitively
    sppnet = metadata.distribution("sppnet")
    direct = [Requirement(t).name for t in sppnet.requires or []
              if Requirement(t).marker is None
              or any(Requirement(t).marker.evaluate({"extra": e}) for e in ("", "test"))]
    needed = _closure(direct) - {"sppnet"}
    assert needed, "no installed requirements found"
    assert sorted(needed - set(locked)) == []


def test_provenance_says_whether_the_install_matches_the_lock(tmp_path):
    here = lock_status()
    assert here is not None and set(here) == {"file", "matches", "differ"}
    other = tmp_path / LOCK_FILE
    other.write_text("numpy==0.0.1\ntorch==" + metadata.version("torch").split("+")[0] + "\n")
    st = lock_status(other)
    assert st["matches"] is False and st["differ"] == {"numpy": [metadata.version("numpy"),
                                                                 "0.0.1"]}


@pytest.mark.parametrize("command", ["pip install -c constraints-cpu.txt -e .",
                                     'pip install -c constraints-cpu.txt -e ".[test]"'])
def test_the_readme_and_ci_install_from_the_lock(command):
    assert command in (ROOT / "README.md").read_text()
    assert command.replace("pip", "pip", 1) in (ROOT / ".ci" / "run").read_text()
