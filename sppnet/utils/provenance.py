"""What made a result: seeds, library versions, the command line — recorded in every
``results.json`` so the same command can be checked to give the same numbers."""

from __future__ import annotations

import json
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["environment", "write_results"]

_PACKAGES = ("torch", "numpy", "opencv-contrib-python-headless", "scikit-learn", "numba",
             "pillow")


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

    return {"versions": versions, "torch_threads": torch.get_num_threads(),
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
