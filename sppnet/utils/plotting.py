"""The one plotting set-up: matplotlib on its file-only backend, whatever display there is."""

from __future__ import annotations

from typing import Any

__all__ = ["pyplot"]


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the ``Agg`` backend (figures are written to files, never shown;
    no display is needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
