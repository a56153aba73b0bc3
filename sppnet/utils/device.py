"""``--device``: one rule for every command that runs a net."""

from __future__ import annotations

import torch

__all__ = ["resolve_device", "DEVICE_HELP"]

DEVICE_HELP = "auto (default: cuda when available, else cpu), cpu, cuda or cuda:N"


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (or ``None``) -> ``cuda`` when a CUDA device is available, else ``cpu``;
    otherwise the named device, refused with a clear message when it is not there."""
    if name is None or str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"device {name!r} is not a device name ({DEVICE_HELP})") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r}: no CUDA device is available here "
                             "(torch.cuda.is_available() is False); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} CUDA "
                             "device(s) here")
    elif dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r}: sppnet runs on cpu or cuda ({DEVICE_HELP})")
    return dev
