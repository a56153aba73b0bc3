"""What made a result: seeds, library versions, the command line, the git commit, the threads
each stage ran with, the machine's matrix-product rate and a content hash of every input model
file — recorded in every ``results.json`` so the same command can be checked to give the same
numbers, and two states of the code can be told apart.

The versions are those of the packages the numbers depend on, and of every package pinned in the
lock (``constraints-cpu.txt`` beside an editable install): ``lock`` says whether the install
matches it, and names each package that differs."""

from __future__ import annotations

import json
import platform
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from .digest import file_digest

__all__ = ["environment", "gemm_gflops", "git_state", "input_files", "provenance",
           "record_stage_threads", "stage_threads", "threads", "write_results", "lock_status",
           "LOCK_FILE"]

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
    """Versions of Python, sppnet and the libraries its numbers depend on; the install
    against the lock; torch threads."""
    from .. import __version__

    versions: dict[str, Any] = {"python": platform.python_version(), "sppnet": __version__}
    for name in _PACKAGES:
        versions[name] = _version(name)
    import torch

    return {"versions": versions, "lock": lock_status(), "git": git_state(),
            "torch_threads": torch.get_num_threads(),
            "machine": platform.machine(), "system": platform.system()}


def input_files(paths: Iterable[str | Path] | None) -> dict[str, str]:
    """``{path as given: SHA-256 of its bytes}`` for the model and weight files a result was
    made from (the digest ``sha256sum`` prints; a checkpoint retrained in place keeps its path
    and changes its digest). Empty or ``None`` entries are skipped; a missing file raises
    ``FileNotFoundError`` naming it."""
    out: dict[str, str] = {}
    for p in paths or ():
        if not p:
            continue
        path = Path(p)
        if not path.is_file():
            raise FileNotFoundError(f"input file {str(p)!r} does not exist (provenance digest)")
        out[str(p)] = file_digest(path, "sha256")
    return out


def threads() -> dict[str, Any]:
    """The threads the number-crunching libraries use right now: torch's intra- and inter-op
    pools, numba's (``numba_started`` false when its threading layer has not run yet: its
    configured count, read without starting it, since starting it can change torch's) and
    OpenCV's when it is loaded (``None`` otherwise)."""
    import torch

    out: dict[str, Any] = {"torch": torch.get_num_threads(),
                           "torch_interop": torch.get_num_interop_threads(),
                           "numba": None, "numba_started": False, "opencv": None}
    if "numba" in sys.modules:
        numba = sys.modules["numba"]
        try:
            from numba.np.ufunc import parallel

            started = bool(getattr(parallel, "_is_initialized", False))
            out["numba_started"] = started
            out["numba"] = numba.get_num_threads() if started else numba.config.NUMBA_NUM_THREADS
        except (ImportError, AttributeError):  # pragma: no cover - another numba layout
            pass
    if "cv2" in sys.modules:
        out["opencv"] = sys.modules["cv2"].getNumThreads()
    return out


_STAGE_THREADS: dict[str, dict[str, Any]] = {}


def record_stage_threads(stage: str) -> dict[str, Any]:
    """Note the threads a stage runs with (call it as the stage starts); every result written
    later in this process lists them under ``provenance.stage_threads``. Returns the entry, so
    a stage that writes its own file (``train_times.json``) can store it there too."""
    entry = threads()
    _STAGE_THREADS[stage] = entry
    return entry


def read_stage_times(path: str | Path) -> dict[str, float]:
    """The stages' seconds of a ``train_times.json`` (``{}`` when there is none; a file
    written before it carried a ``provenance`` entry reads the same way)."""
    path = Path(path)
    if not path.is_file():
        return {}
    return {k: v for k, v in json.loads(path.read_text()).items() if k != "provenance"}


def stage_threads() -> dict[str, dict[str, Any]]:
    """The stages noted by :func:`record_stage_threads` in this process, in order."""
    return {k: dict(v) for k, v in _STAGE_THREADS.items()}


def gemm_gflops(n: int = 1024, k: int = 4096, repeats: int = 3) -> float:
    """This machine's float32 matrix-product rate right now, GFLOP/s (best of ``repeats``
    ``(n, k) @ (k, n)`` products on the CPU): a yardstick that makes figures measured on
    machines of different speed (or a busy one) comparable. Its operands come from a private
    generator: a record written between training stages leaves the global random state alone."""
    import torch

    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(n, k, generator=g), torch.rand(k, n, generator=g)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n * k * n / best / 1e9


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def provenance(seeds: Mapping[str, Any] | None = None,
               inputs: Iterable[str | Path] | None = None,
               gemm: bool = True) -> dict[str, Any]:
    """Everything :func:`write_results` records: when (UTC), the seeds given, the environment
    (versions, git commit and dirty flag), the threads now and per noted stage, the
    matrix-product rate (``gemm=False``: left out, a second's measurement saved), the input
    files' digests and the command line."""
    from datetime import datetime, timezone

    rate = {"cpu_gemm_gflops": round(gemm_gflops(), 1)} if gemm else {}
    return {"written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seeds": dict(seeds or {}), **environment(), "threads": threads(),
            "stage_threads": stage_threads(), **rate, "inputs": input_files(inputs),
            "command": [Path(sys.argv[0]).name, *sys.argv[1:]]}


def write_results(path: str | Path, results: dict[str, Any], seeds: dict[str, Any],
                  inputs: Iterable[str | Path] | None = None) -> Path:
    """Write ``results`` to ``path`` (JSON, atomically) with a ``provenance`` entry
    (:func:`provenance`: seeds, environment, commit, threads, matrix-product rate, the
    digests of the ``inputs`` files, command line)."""
    from .run_dir import atomic_write_text

    doc = {**results, "provenance": provenance(seeds, inputs)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
