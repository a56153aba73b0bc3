"""Run folders are owned (STYLE 23): a folder records what made it, and another run never writes
into it without an explicit ``--force`` — which then really starts over.

A run's ``config.json`` holds its resolved config plus ``kind`` (``train-cls``, ``train-det``),
``config_hash`` and ``sppnet_version``. Folders written before ``kind`` existed are recognised by
their fields.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .config import META_KEYS, config_diff

__all__ = ["RunFolderError", "check_output_dir", "run_kind", "config_hash", "write_run_config",
           "refuse_other_kind", "remove_outputs", "atomic_write_text", "describe_diff"]

log = logging.getLogger(__name__)


class RunFolderError(ValueError):
    """An output folder that cannot take this run (a file, or another run's folder)."""


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename, so
    a crash never leaves a half-written file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def check_output_dir(out: str | Path, flag: str = "--output-dir") -> Path:
    """``out`` as a Path; raises when it exists and is not a folder (nothing is created)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"{flag} {out} exists and is not a folder")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise RunFolderError(f"{flag} {out}: {parent} is a file, not a folder")
            break
    return out


def run_kind(out: str | Path) -> tuple[str | None, dict[str, Any] | None]:
    """``(kind, config)`` of the run recorded in ``out/config.json``, ``(None, None)`` if none."""
    p = Path(out) / "config.json"
    if not p.is_file():
        return None, None
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return "unreadable", None
    if not isinstance(data, dict):
        return "unreadable", None
    kind = data.get("kind")
    if kind is None:  # written before runs recorded their kind
        if "config_hash" in data or "svm_layers" in data:
            kind = "train-det"
        elif "sizes" in data and "epochs" in data:
            kind = "train-cls"
        else:
            kind = "unknown"
    return kind, data


def refuse_other_kind(out: Path, kind: str) -> dict[str, Any] | None:
    """The config of the ``kind`` run in ``out`` (or None); raises if another kind owns it."""
    found, data = run_kind(out)
    if found is not None and found != kind:
        raise RunFolderError(f"{out} holds a {found} run (its config.json), not a {kind} run; "
                             "use another --output-dir")
    return data


def config_hash(cfg_json: dict[str, Any], ignore: Sequence[str] = ()) -> str:
    keys = {k: v for k, v in cfg_json.items() if k not in set(ignore) | set(META_KEYS)}
    return hashlib.sha1(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:12]


def write_run_config(out: Path, kind: str, cfg_json: dict[str, Any],
                     ignore: Sequence[str] = ()) -> Path:
    """``out/config.json``: the resolved config with ``kind``, ``config_hash`` and the version."""
    from .. import __version__

    out.mkdir(parents=True, exist_ok=True)
    doc = {"kind": kind, "config_hash": config_hash(cfg_json, ignore),
           "sppnet_version": __version__, **cfg_json}
    return atomic_write_text(out / "config.json", json.dumps(doc, indent=2) + "\n")


def describe_diff(old: dict[str, Any] | None, new: dict[str, Any],
                  ignore: Sequence[str] = ()) -> str:
    diff = config_diff(old or {}, new, ignore)
    if not diff:
        return "the same configuration"
    more = f" (+{len(diff) - 4} more)" if len(diff) > 4 else ""
    return "a different configuration: " + "; ".join(diff[:4]) + more


def remove_outputs(out: Path, names: Iterable[str]) -> list[str]:
    """Delete the named files / folders (glob patterns) under ``out``; returns what went."""
    gone = []
    for pattern in names:
        for p in sorted(out.glob(pattern)):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            gone.append(p.name)
    return gone
