"""What made a result: seeds, library versions, the command line — recorded in every
``results.json`` so the same command can be checked to give the same numbers."""

from __future__ import annotations

import json
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["environment", "git_state", "write_results"]

_PACKAGES = ("torch", "numpy", "opencv-contrib-python-headless", "scikit-learn", "numba",
             "pillow")


def git_state() -> dict[str, Any]:
    """The git commit of the sppnet source that runs, and whether its tree had changes
    (``{"commit": None, "dirty": None, "note": "not a git checkout"}`` for an installed
    wheel)."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():  # an installed copy: site-packages is no checkout
        return {"commit": None, "dirty": None, "note": "not a git checkout"}
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], check=True,
                                capture_output=True, text=True, timeout=10).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                 "--untracked-files=no"], check=True, capture_output=True,
                                text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None, "note": "not a git checkout"}
    return {"commit": commit, "dirty": bool(status.strip())}


def environment() -> dict[str, Any]:
    """Versions of Python, sppnet and the libraries its numbers depend on; torch threads."""
    from .. import __version__

    versions: dict[str, Any] = {"python": platform.python_version(), "sppnet": __version__}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    import torch

    return {"versions": versions, "git": git_state(), "torch_threads": torch.get_num_threads(),
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
