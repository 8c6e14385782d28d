"""A map whose entries expire, bounded, giving memory back as they go (issue 16).

Every store of the edge with a lifetime (sessions, callback nonces, chain hops, one-time PINs,
verified tokens, policy verdicts, managed-OAuth codes and grants) is one of these.
"""

from __future__ import annotations

import ctypes
import heapq
import itertools
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar, cast

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
TRIM_AFTER = 10_000  # entries one sweep drops before freed memory is handed back (release_memory)


class Expiring(Generic[K, V]):
    """A map whose entries expire, with a hard cap on how many it holds.

    Every write first drops the entries that have expired, found through a heap ordered by
    expiry: each entry is dropped once, at O(log n), so the cost is amortised over the writes and
    does not depend on how many live entries there are. Past ``limit`` entries, a write drops the
    oldest one (insertion order) whatever its expiry, and returns it. Reads never return an
    expired entry, pruned or not.

    Memory goes back as entries go: CPython dicts never shrink their tables, so once the store
    holds a quarter of what it once held, its table is rebuilt at the present size; and a sweep
    that dropped :data:`TRIM_AFTER` entries or more asks the C allocator to hand freed pages back
    to the system (:func:`release_memory`).
    """

    __slots__ = ("_heap", "_items", "_peak", "_seq", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: OrderedDict[K, tuple[V, float]] = OrderedDict()
        self._heap: list[tuple[float, int, K]] = []
        self._seq = itertools.count()  # ties in the heap never compare keys
        self._peak = 0  # the most entries held since the table was last sized

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` is held, expired or not (not pruned yet): :meth:`get` for a live one."""
        return key in self._items

    def get(self, key: K, now: float) -> V | None:
        entry = self._items.get(key)
        if entry is None or entry[1] <= now:
            return None
        return entry[0]

    def pop(self, key: K, now: float) -> V | None:
        """Remove ``key``; its value if it had not expired."""
        entry = self._items.pop(key, None)
        if entry is None or entry[1] <= now:
            return None
        return entry[0]

    def peek(self, key: K) -> V | None:
        """The value held for ``key``, expired or not (until a write prunes it)."""
        entry = self._items.get(key)
        return None if entry is None else entry[0]

    def discard(self, key: K) -> V | None:
        """Remove ``key``; the value it held, expired or not."""
        entry = self._items.pop(key, None)
        return None if entry is None else entry[0]

    def put(self, key: K, value: V, expires: float, now: float) -> V | None:
        """Keep ``value`` until ``expires``; returns the value the cap pushed out, if any."""
        self.prune(now)
        items = self._items
        evicted = None
        if items.pop(key, None) is None and len(items) >= self.limit:
            _, (evicted, _) = items.popitem(last=False)
        items[key] = (value, expires)
        if len(items) > self._peak:
            self._peak = len(items)
        heapq.heappush(self._heap, (expires, next(self._seq), key))
        if len(self._heap) > 2 * len(items) + 1024:
            # entries popped or pushed out before expiring left their heap rows behind: rebuild,
            # O(n) once every n writes or so
            self._heap = [(exp, next(self._seq), k) for k, (_, exp) in items.items()]
            heapq.heapify(self._heap)
        return evicted

    def prune(self, now: float) -> None:
        """Drop every entry that has expired by ``now``."""
        heap = self._heap
        if not heap or heap[0][0] > now:
            return
        items = self._items
        dropped = 0
        while heap and heap[0][0] <= now:
            expires, _, key = heapq.heappop(heap)
            entry = items.get(key)
            if entry is not None and entry[1] == expires:
                del items[key]
                dropped += 1
        if self._peak > 4 * len(items) + 1024:
            # O(n) for the 3n entries dropped since the table last grew: amortised, like the heap
            self._items = OrderedDict(items)
            self._peak = len(items)
        if dropped >= TRIM_AFTER:
            release_memory()

    def values(self, now: float | None = None) -> Iterator[V]:
        """The values not expired at ``now`` (default: every one held), oldest first."""
        return (value for value, expires in self._items.values() if now is None or expires > now)

    def clear(self) -> None:
        self._items = OrderedDict()  # clear() would keep the table's size (see prune)
        self._heap = []
        self._peak = 0


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return cast("Callable[[int], int]", ctypes.CDLL(None).malloc_trim)  # glibc only
    except (AttributeError, OSError, TypeError):  # musl, macOS, Windows: no such call
        return None


_MALLOC_TRIM = _malloc_trim()


def release_memory() -> None:
    """Hand the C heap's free pages back to the system, where the C library can (glibc).

    glibc's ``free`` keeps freed memory in the process unless it sits at the very top of the heap,
    so after 100,000 sessions expired their tokens' bytes (strings over 512 bytes live there, not
    in Python's own arenas) would stay resident for good; ``malloc_trim(0)`` returns every free
    page wherever it lies. A few milliseconds, only after a sweep of thousands of entries.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
