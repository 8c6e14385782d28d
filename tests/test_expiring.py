"""The expiring store under every store of the edge: expiry, the cap, and memory handed back (issue 16)."""

from __future__ import annotations

import math
import sys

import pytest

from fakeedge import expiring, oauth
from fakeedge.expiring import TRIM_AFTER, Expiring
from fakeedge.policy import Identity


def test_reads_never_see_expired_entries_and_the_cap_drops_the_oldest() -> None:
    store: Expiring[str, int] = Expiring(3)
    store.put("a", 1, 10, 0)
    store.put("b", 2, 20, 0)
    assert (store.get("a", 9), store.get("a", 10)) == (1, None)  # expired at its time, pruned or not
    assert (store.peek("a"), "a" in store) == (1, True)  # held until a write prunes it
    store.put("c", 3, 30, 0)
    assert store.put("d", 4, 40, 0) == 1  # over the cap: the oldest goes, and is returned
    assert list(store.values()) == [2, 3, 4]
    assert store.put("e", 5, 50, 30) is None  # b and c expired: pruned first, room made
    assert list(store.values()) == [4, 5]
    assert (store.pop("d", 45), store.discard("e")) == (None, 5)  # pop: only a live value; discard: any
    assert len(store) == 0


def test_a_large_sweep_hands_memory_back_and_a_small_one_does_not(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[None] = []
    monkeypatch.setattr(expiring, "release_memory", lambda: calls.append(None))
    store: Expiring[int, int] = Expiring(10 * TRIM_AFTER)
    for i in range(TRIM_AFTER - 1):
        store.put(i, i, 1, 0)
    store.prune(1)
    assert (len(store), calls) == (0, [])
    for i in range(TRIM_AFTER):
        store.put(i, i, 2, 1)
    store.put(-1, -1, 10, 2)  # a write sweeps the 10,000 that expired at 2
    assert (len(store), calls) == (1, [None])
    store.prune(3)  # nothing more expired: no second call
    assert calls == [None]


def test_release_memory_works_where_the_c_library_has_no_malloc_trim(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(expiring, "_MALLOC_TRIM", None)  # musl, macOS, Windows
    expiring.release_memory()


def test_an_evicted_or_expired_oauth_grant_takes_its_tokens_with_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(oauth, "GRANT_LIMIT", 2)
    store = oauth.OAuthStore()
    who = Identity(email="alice@acme.test", name="Alice", country="US")
    grants = [oauth.Grant(f"g{i}", "client", "aud", who, f"session{i}", "login", 100.0) for i in range(3)]
    store.add_grant(grants[0], 0)
    access, refresh = store.issue(grants[0], 0, 50)
    assert store.grant_of_session("session0") is grants[0]
    assert store.grant_for_access(access, 0) is grants[0] and store.grant_for_refresh(refresh, 0) is grants[0]
    store.add_grant(grants[1], 0)
    store.add_grant(grants[2], 0)  # over the limit: the first grant goes, its tokens too
    assert store.grant_of_session("session0") is None
    assert store.grant_for_access(access, 0) is None and store.grant_for_refresh(refresh, 0) is None
    assert (len(store.access), len(store.refresh)) == (0, 0)
    access, _ = store.issue(grants[2], 0, 50)
    assert store.grant_for_access(access, 49) is grants[2] and store.grant_for_access(access, 50) is None
    store.prune(100)  # the grants' end: nothing of them is left
    lengths = [len(s) for s in (store.codes, store.spent, store.grants, store.access, store.refresh, store.by_session)]
    assert lengths == [0] * 6


class _Texts(expiring.PackedExpiring[str, str]):
    """A packed store of text: the least a store of one kind of value says."""

    __slots__ = ()

    def _encode(self, value: str) -> tuple[int, bytes]:
        return len(value), value.encode()

    def _value(self, record: expiring.Record) -> str:
        assert record.tag() == len(record.payload().rstrip(b" "))
        return record.payload().rstrip(b" ").decode()


def test_a_packed_store_expires_and_caps_like_the_other_and_holds_each_entry_as_one_large_object(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = _Texts(3)
    store.put("a", "1", 10, 0)
    store.put("b", "2" * 600, 20, 0)
    assert (store.get("a", 9), store.get("a", 10)) == ("1", None)  # expired at its time, pruned or not
    assert "a" in store and store.get("b", 0) == "2" * 600
    store.put("c", "3", 30, 0)
    assert store.put("d", "4", 40, 0) == "1"  # over the cap: the oldest goes, and is returned
    assert list(store.values()) == ["2" * 600, "3", "4"]
    store.rewrite("c", "three")  # changed in place: same expiry, same place
    assert store.put("e", "5", 50, 30) is None  # b and c expired: pruned first, room made
    assert list(store.values()) == ["4", "5"] and store._heap[0] is min(store._heap)  # records sort by expiry
    for record in store._items.values():
        # one object past CPython's 512-byte small objects, sized to whole C-heap chunks of the
        # smallest record (glibc: 8 bytes of header, 16-byte steps)
        size = sys.getsizeof(record)
        assert size > 512 and ((size + 7) // 8 * 8 + 8 + 15) // 16 * 16 % expiring.RECORD_CHUNK == 0
    calls: list[None] = []
    monkeypatch.setattr(expiring, "release_memory", lambda: calls.append(None))
    big = _Texts(10 * TRIM_AFTER)
    for i in range(TRIM_AFTER):
        big.put(str(i), "x", 2, 1)
    big.put("last", "y", 10, 2)  # a write sweeps the 10,000 that expired at 2
    assert (len(big), len(big._heap), calls) == (1, 1, [None])


def test_expiry_order_is_the_order_of_the_packed_bytes() -> None:
    times = [-math.inf, -1e300, -2.5, -1.0, 0.0, 1e-300, 1.0, 1_800_000_000.0, 1_800_000_000.5, 1e300, math.inf]
    keys = [expiring._order(t).to_bytes(8, "big") for t in times]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
