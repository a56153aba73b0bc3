"""A byte-bounded least-recently-used store for tensors (what a training run rereads)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

__all__ = ["ByteLRU"]


def _nbytes(value: Any) -> int:
    ts = value if isinstance(value, (tuple, list)) else (value,)
    return sum(t.numel() * t.element_size() for t in ts)


class ByteLRU:
    """Tensors (or tuples / lists of tensors) held up to ``budget`` bytes, the least recently
    used dropped first. A value larger than the whole budget is not held (``budget=0`` holds
    nothing)."""

    def __init__(self, budget: int) -> None:
        if budget < 0:
            raise ValueError(f"budget must be >= 0 bytes, got {budget}")
        self.budget = budget
        self.held = 0
        self._items: OrderedDict[Hashable, Any] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def get(self, key: Hashable) -> Any:
        """The value, marked as just used; ``None`` when not held."""
        if key not in self._items:
            return None
        self._items.move_to_end(key)
        return self._items[key]

    def put(self, key: Hashable, value: Any) -> None:
        size = _nbytes(value)
        if size > self.budget:
            return
        if key in self._items:
            self.held -= _nbytes(self._items.pop(key))
        self._items[key] = value
        self.held += size
        while self.held > self.budget:
            self.held -= _nbytes(self._items.popitem(last=False)[1])
