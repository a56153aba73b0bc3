"""Where the shared real-photo data lives, and a skip with a clear reason when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def need(relative: str) -> Path:
    """``../shared/data/<relative>``, or skip the test saying what is missing."""
    path = (SHARED_DATA / relative).resolve()
    if not path.exists():
        pytest.skip(f"needs the shared data at {path} (../shared/data beside the project; see "
                    "its README) — not present on this machine")
    return path
