"""A map whose entries expire, bounded, giving memory back as they go (issue 16).

Every store of the edge with a lifetime (sessions, callback nonces, chain hops, one-time PINs,
verified tokens, policy verdicts, managed-OAuth codes and grants) is one of these: the sessions and
the tokens signed for them as a :class:`PackedExpiring`, which keeps each entry as one object in the
C heap rather than as Python's small objects, so that their memory goes back to the system whatever
outlives them.
"""

from __future__ import annotations

import ctypes
import heapq
import itertools
import struct
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


# A packed entry (PackedExpiring): its expiry as an unsigned integer that sorts like the float, a
# sequence number, a number of the store's own (``tag``), the key's length, then the key (UTF-8)
# and the value's bytes, padded with spaces. The padding makes a record one allocation of over 512
# bytes, the most CPython serves from its own arenas, so it lives in the C heap; and it sizes
# every record to a whole number of the smallest one's chunks there (glibc, 64-bit), so that when a
# freed record is split to make a smaller one, what is left is a whole record again, not a
# fragment nothing reuses (without it, a token's record split for a session's left ~450 bytes
# unused per sign-in: 100,000 sessions, 155 MiB instead of 139).
_HEAD = struct.Struct(">QQQI")
RECORD_CHUNK = 528  # the C heap's chunk for the smallest record (glibc, 64-bit: 8-byte header, 16-byte steps)
RECORD_WASTE = 58  # the GC header (16), a bytes object's header and NUL (34), the chunk's header (8)


def _order(expires: float) -> int:
    """``expires`` as an unsigned 64-bit integer in the same order (IEEE 754 bits, sign flipped)."""
    bits = int.from_bytes(struct.pack(">d", expires), "big")
    return bits ^ 0xFFFF_FFFF_FFFF_FFFF if bits >> 63 else bits | 1 << 63


class Record(bytes):
    """One entry of a :class:`PackedExpiring`. Sorts as bytes, i.e. by (expiry, sequence); hashes
    and compares equal as its key, so that the store's dict is keyed by the record itself and
    looked up by the key's text."""

    __slots__ = ()

    def key(self) -> str:
        size = _HEAD.unpack_from(self)[3]
        return self[_HEAD.size : _HEAD.size + size].decode("utf-8", "surrogatepass")

    def tag(self) -> int:
        return cast(int, _HEAD.unpack_from(self)[2])

    def payload(self) -> bytes:
        """The value's bytes, and the padding (spaces) after them."""
        return self[_HEAD.size + _HEAD.unpack_from(self)[3] :]

    def __hash__(self) -> int:
        return hash(self.key())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):  # a lookup by key: compared as bytes, not decoded
            size = _HEAD.unpack_from(self)[3]
            return self[_HEAD.size : _HEAD.size + size] == other.encode("utf-8", "surrogatepass")
        return isinstance(other, Record) and self.key() == other.key()


class PackedExpiring(Generic[K, V]):
    """:class:`Expiring`'s expiry and cap for the stores that grow with sign-ins, each entry packed
    in one :class:`Record` of over 512 bytes (issue 16).

    Why: an entry kept as Python objects is several small ones (the key, the times, the value's
    parts, the store's rows), which CPython places in 1 MiB arenas of its own and gives back only
    once every object in an arena is gone. What the edge makes while the entries are held and
    keeps afterwards (the journal, caches, the server's state) lands between them, so 100,000
    expired sessions left ~20 MiB of arenas behind for good. A record is one object that CPython
    takes from the C library; once it is freed, ``malloc_trim`` gives its pages back
    (:func:`release_memory`) whatever lies next to it. The heap ordered by expiry holds the records
    themselves, which sort by it. Keys are text (``_text``); a store says how its values are
    packed (``_encode``) and made again (``_value``).
    """

    __slots__ = ("_heap", "_items", "_now", "_now_order", "_peak", "_rewritten", "_seq", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._now, self._now_order = 0.0, _order(0.0)  # the last time read at, as a record's order
        self._items: dict[str | Record, Record] = {}  # keyed by the record, looked up by its key's text
        self._heap: list[Record] = []
        self._seq = itertools.count()
        self._peak = 0  # the most entries held since the table was last sized
        self._rewritten = 0  # heap rows holding an older copy of their entry's record

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` is held, expired or not (not pruned yet): :meth:`get` for a live one."""
        return self._text(cast(K, key)) in self._items

    def get(self, key: K, now: float) -> V | None:
        record = self._find(key, now)
        return None if record is None else self._value(record)

    def _find(self, key: K, now: float) -> Record | None:
        """``key``'s record if it has not expired by ``now``."""
        record = self._items.get(self._text(key))
        if record is None:
            return None
        if now != self._now:  # the same ``now`` for every read of one request
            self._now, self._now_order = now, _order(now)
        return None if _HEAD.unpack_from(record)[0] <= self._now_order else record

    def put(self, key: K, value: V, expires: float, now: float) -> V | None:
        """Keep ``value`` until ``expires``; returns the value the cap pushed out, if any."""
        self.prune(now)
        text = self._text(key)
        items = self._items
        evicted = None
        old = items.pop(text, None)
        if old is not None:
            self._released(old)
        elif len(items) >= self.limit:
            oldest = items.pop(next(iter(items)))
            evicted = self._value(oldest)
            self._released(oldest)
        record = self._record(text, value, _order(expires), next(self._seq))
        items[record] = record
        if len(items) > self._peak:
            self._peak = len(items)
        heapq.heappush(self._heap, record)
        if len(self._heap) > 2 * len(items) + 1024 or self._rewritten > len(items) // 2 + 1024:
            # rows of entries gone, or holding old copies of records: rebuild, O(n) once every
            # n/2 writes or so
            self._heap = list(items.values())
            heapq.heapify(self._heap)
            self._rewritten = 0
        return evicted

    def rewrite(self, key: K, value: V) -> None:
        """Pack ``key``'s entry again from ``value`` (it changed), keeping its expiry and place."""
        text = self._text(key)
        items = self._items
        old = items.get(text)
        if old is None:
            return
        order, seq = _HEAD.unpack_from(old)[:2]
        record = self._record(text, value, order, seq)
        del items[text]  # a dict keeps the key it has: delete, so that the old record goes
        items[record] = record
        self._released(old)
        # its heap row too: the same order, so it takes the old one's place where that is found
        # cheaply (an entry just put, expiring last, is at the end); else the old copy stays
        # there until the heap is rebuilt (put)
        heap = self._heap
        for i in range(len(heap) - 1, max(len(heap) - 16, 0) - 1, -1):
            if heap[i] is old:
                heap[i] = record
                return
        self._rewritten += 1

    def prune(self, now: float) -> None:
        """Drop every entry that has expired by ``now``."""
        heap = self._heap
        if not heap:
            return
        limit = _order(now)
        if _HEAD.unpack_from(heap[0])[0] > limit:
            return
        items = self._items
        dropped = 0
        while heap and _HEAD.unpack_from(heap[0])[0] <= limit:
            row = heapq.heappop(heap)
            record = items.get(row)
            if record is not None and record[:16] == row[:16]:  # same expiry and sequence: this entry
                del items[record]
                self._released(record)
                dropped += 1
                if record is not row:
                    self._rewritten -= 1
        if self._peak > 4 * len(items) + 1024:
            self._items = dict(items)  # CPython dicts never shrink their tables
            self._peak = len(items)
        if dropped >= TRIM_AFTER:
            release_memory()

    def values(self, now: float | None = None) -> Iterator[V]:
        """The values not expired at ``now`` (default: every one held), oldest first."""
        limit = None if now is None else _order(now)
        for record in list(self._items.values()):
            if limit is None or _HEAD.unpack_from(record)[0] > limit:
                yield self._value(record)

    def clear(self) -> None:
        self._items = {}
        self._heap = []
        self._peak = self._rewritten = 0

    def _record(self, text: str, value: V, order: int, seq: int) -> Record:
        tag, payload = self._encode(value)
        key = text.encode("utf-8", "surrogatepass")
        head = _HEAD.pack(order, seq, tag, len(key))
        # joined at its final size, then copied: two chunks of one size, the first reused by the
        # next record (built up piece by piece, each record left a hole of another size behind)
        size = len(head) + len(key) + len(payload)
        pad = b" " * (-(size + RECORD_WASTE) % RECORD_CHUNK)
        return Record(b"".join((head, key, payload, pad)))

    # -- what a store of one kind of value says --

    def _text(self, key: K) -> str:
        """``key`` as the text records hold (keys that are text: themselves)."""
        return cast(str, key)

    def _encode(self, value: V) -> tuple[int, bytes]:
        """``value`` packed: a number the store may use (``Record.tag``) and bytes that do not end
        in white space (the padding), written at their final size."""
        raise NotImplementedError

    def _value(self, record: Record) -> V:
        """The value ``record`` holds, made again."""
        raise NotImplementedError

    def _released(self, record: Record) -> None:
        """``record`` is no longer held (a store that counts what records refer to)."""
