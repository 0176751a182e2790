"""A least-recently-used cache bounded by the total size of its values, not their count.

Not thread-safe on purpose: the render service touches it only from the event loop; worker
threads hand their results back instead of writing here.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ByteLRU(Generic[K, V]):
    """Keeps the most recently used values whose ``size_of`` sum stays within ``limit``.

    A value larger than ``max_item`` (default: a quarter of the limit) is not kept, so one
    huge frame cannot flush everything else.
    """

    def __init__(self, limit: int, size_of: Callable[[V], int], max_item: int | None = None) -> None:
        self.limit = max(0, limit)
        self.max_item = self.limit // 4 if max_item is None else max_item
        self.size = 0
        self.hits = 0
        self.misses = 0
        self._size_of = size_of
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: K) -> bool:
        return key in self._items

    def get(self, key: K) -> V | None:
        item = self._items.get(key)
        if item is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return item[0]

    def put(self, key: K, value: V) -> None:
        size = self._size_of(value)
        self.discard(key)
        if size > self.max_item or size > self.limit:
            return
        self._items[key] = (value, size)
        self.size += size
        while self.size > self.limit and self._items:
            _, (_, dropped) = self._items.popitem(last=False)
            self.size -= dropped

    def discard(self, key: K) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self.size -= old[1]

    def clear(self) -> None:
        self._items.clear()
        self.size = 0
