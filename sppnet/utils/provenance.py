"""What made a result: seeds, library versions, the command line — recorded in every
``results.json`` so the same command can be checked to give the same numbers.

The versions are those of the packages the numbers depend on, and of every package pinned in the
lock (``constraints-cpu.txt`` beside an editable install): ``lock`` says whether the install
matches it, and names each package that differs."""

from __future__ import annotations

import json
import platform
import re
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["environment", "write_results", "lock_status", "LOCK_FILE"]

_PACKAGES = ("torch", "numpy", "opencv-contrib-python-headless", "scikit-learn", "numba",
             "llvmlite", "pillow", "scipy", "safetensors", "matplotlib", "pycocotools")
LOCK_FILE = "constraints-cpu.txt"  # the exact versions (README: pip install -c ...)


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> dict[str, str]:
    """``{package: version}`` of the ``name==version`` lines of a constraints file."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = (t.strip() for t in line.split("==", 1))
            pins[_norm(name)] = version
    return pins


def lock_status(path: Path | None = None) -> dict[str, Any] | None:
    """The install against the lock: ``{"file", "matches", "differ": {pkg: [installed,
    locked]}}`` over the locked packages that are installed (a local label such as ``+cpu``
    matches its plain version, as pip's ``==`` does); ``None`` without a lock file."""
    if path is None:
        path = Path(__file__).resolve().parents[2] / LOCK_FILE
    if not path.is_file():
        return None
    differ = {}
    for name, locked in sorted(read_lock(path).items()):
        installed = _version(name)
        if installed is not None and installed.split("+")[0] != locked.split("+")[0]:
            differ[name] = [installed, locked]
    return {"file": LOCK_FILE, "matches": not differ, "differ": differ}


def environment() -> dict[str, Any]:
    """Versions of Python, sppnet and the libraries its numbers depend on; the install
    against the lock; torch threads."""
    from .. import __version__

    versions: dict[str, Any] = {"python": platform.python_version(), "sppnet": __version__}
    for name in _PACKAGES:
        versions[name] = _version(name)
    import torch

    return {"versions": versions, "lock": lock_status(), "torch_threads": torch.get_num_threads(),
            "machine": platform.machine(), "system": platform.system()}


def write_results(path: str | Path, results: dict[str, Any], seeds: dict[str, Any]) -> Path:
    """Write ``results`` to ``path`` (JSON, atomically) with a ``provenance`` entry: the seeds
    given, the environment and the command line."""
    from .run_dir import atomic_write_text

    doc = {**results, "provenance": {"seeds": seeds, **environment(),
                                     "command": [Path(sys.argv[0]).name, *sys.argv[1:]]}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
