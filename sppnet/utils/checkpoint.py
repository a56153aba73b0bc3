"""Checkpoints in a safe format, written atomically.

One ``.safetensors`` file holds every tensor (model, optimizer state, RNG state); its string
metadata holds a JSON document (architecture, class names, epoch, step, scheduler and optimizer
hyper-parameters). Nothing is unpickled on load. Files are written to a temporary name in the
same folder and renamed into place, so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "optimizer_to_flat",
           "optimizer_from_flat", "with_prefix", "strip_prefix", "save_training_state",
           "resume_training_state"]

FORMAT = "sppnet-checkpoint-v1"
log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, or does not fit the model it is loaded into."""


def with_prefix(prefix: str, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """A module's state under ``prefix`` in a checkpoint (``head.``, ``trunk.``, ``model.``):
    the tensors with their names prefixed."""
    return {f"{prefix}{k}": v for k, v in tensors.items()}


def strip_prefix(prefix: str, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """The tensors of a checkpoint whose names start with ``prefix``, without it (the inverse
    of :func:`with_prefix`)."""
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def save_checkpoint(path: str | Path, tensors: dict[str, Tensor], meta: dict[str, Any]) -> Path:
    """Atomically write ``tensors`` and JSON-serialisable ``meta`` to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(flat, tmp, metadata={"format": FORMAT, "meta": json.dumps(meta)})
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`: ``(tensors, meta)``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} is not a readable safetensors file ({e}); "
                              "it may be truncated — delete it or pass another") from e
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an sppnet checkpoint (format "
                              f"{header.get('format')!r}, expected {FORMAT!r})")
    try:
        meta = json.loads(header["meta"])
    except (KeyError, json.JSONDecodeError) as e:
        raise CheckpointError(f"checkpoint {path} has unreadable metadata ({e})") from e
    return tensors, meta


def optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict]:
    """Split an optimizer ``state_dict`` into tensors (``optim.<param>.<name>``) and JSON."""
    sd = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, state in sd["state"].items():
        for name, value in state.items():
            if isinstance(value, Tensor):
                tensors[f"optim.{pid}.{name}"] = value
            else:
                scalars.setdefault(str(pid), {})[name] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def save_training_state(path: str | Path, tensors: dict[str, Tensor],
                        optimizer: torch.optim.Optimizer, meta: dict[str, Any]) -> Path:
    """A resumable training checkpoint: ``tensors`` (weights, RNG states), the optimizer's
    state (as :func:`optimizer_to_flat` splits it: ``meta["optimizer"]``) and ``meta``."""
    opt_tensors, opt_meta = optimizer_to_flat(optimizer)
    return save_checkpoint(path, {**tensors, **opt_tensors}, {**meta, "optimizer": opt_meta})


def resume_training_state(path: Path, optimizer: torch.optim.Optimizer, guard: Any,
                          restore: Callable[[dict[str, Tensor]], None], what: str) -> int:
    """The iteration a training stage resumes from: that of the checkpoint ``path`` (written
    by :func:`save_training_state`; ``restore`` loads its weights and RNG state from the
    tensors, the optimizer and the loss ``guard`` are restored here), or 0 — with a warning
    naming why — when it is not there or does not fit."""
    if not path.is_file():
        return 0
    try:
        tensors, meta = load_checkpoint(path)
        restore(tensors)
        optimizer_from_flat(optimizer, tensors, meta["optimizer"])
        guard.load_state_dict(meta.get("loss_guard"))
        start = int(meta["iteration"])
    except (CheckpointError, KeyError, RuntimeError, ValueError) as e:
        log.warning("cannot resume from %s (%s); %s from the start", path, e, what)
        return 0
    log.info("resuming %s from iteration %d (%s)", what, start, path)
    return start


def optimizer_from_flat(optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor],
                        meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for pid, values in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
