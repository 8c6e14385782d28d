"""Sign-in state stays bounded, and the one-time PIN cannot be farmed.

Sessions, callback nonces, chain hops and one-time PINs live in stores with expiry and a hard cap;
a sign-in costs the same with 60,000 sessions behind it as with none. Time moves on the edge's
clock, never by sleeping.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from fakeedge.clock import Clock
from fakeedge.config import parse_config
from fakeedge.edge import Edge
from fakeedge.policy import Identity

from .conftest import base_config

T0 = 1_800_000_000.0


def _edge(tmp_path: Path) -> Edge:
    raw = {**base_config("http://127.0.0.1:9"), "keys_dir": str(tmp_path / "keys")}
    clock = Clock()
    clock.freeze(T0)
    return Edge.create(parse_config(raw, source="test.yml", base_dir=tmp_path), clock=clock)


def _identity(edge: Edge, email: str = "alice@acme.test") -> Identity:
    return Identity.for_email(email, edge.config.user(email), default_country="US")


def _sign_in(edge: Edge, who: Identity) -> None:
    """The state a browser sign-in goes through: a session, its callback nonce, the callback."""
    session = edge.login(who)
    nonce = edge.add_login(
        {
            "session": session,
            "app": edge.app("Admin"),
            "host": "admin.acme.test",
            "redirect_path": "/",
            "policy": None,
            "app_session_hash": "0" * 64,
        }
    )
    assert edge.take_login(nonce) is not None


def _lines(work: Callable[[], Any]) -> int:
    """How many Python lines ``work`` executes: a count of operations that no machine load changes."""
    count = 0

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal count
        if event == "line":
            count += 1
        return trace

    sys.settrace(trace)
    try:
        work()
    finally:
        sys.settrace(None)
    return count


def test_sessions_are_bounded_and_sign_in_cost_does_not_grow_with_them(tmp_path: Path) -> None:
    edge = _edge(tmp_path)
    who = _identity(edge)
    assert edge.sessions.limit == 100_000  # the documented default
    created = 0
    base: int | None = None
    for target in (1_000, 11_000, 30_000, 60_000):
        while created < target:
            edge.login(who)
            created += 1
        cost = _lines(lambda: [_sign_in(edge, who) for _ in range(20)])
        created += 20
        if base is None:
            base = cost
        else:
            # the same work give or take the heap's depth; a scan of every session would be 1000x
            assert cost < 2 * base, (target, cost, base)
    assert len(edge.sessions) == created

    edge.clock.advance(24 * 3600)  # every one of them has ended: the next write drops them all
    fresh = edge.login(who)
    assert len(edge.sessions) == 1
    assert edge.sessions.get(fresh.nonce, edge.clock.now()) is fresh

    # the cap: the oldest session goes first, and its tokens stop working with it
    edge.sessions.limit = 5_000
    oldest = edge.login(who)
    org = edge.org_token(oldest)
    app_token, _ = edge.app_jwt(oldest, edge.app("Admin"), None)
    assert edge.credential(org) is not None and edge.credential(app_token) is not None
    for _ in range(5_000):
        edge.login(who)
    assert len(edge.sessions) == 5_000
    assert edge.sessions.get(oldest.nonce, edge.clock.now()) is None
    assert edge.credential(org) is None and edge.credential(app_token) is None


def test_callback_nonces_and_chain_hops_are_pruned_and_capped(tmp_path: Path) -> None:
    edge = _edge(tmp_path)
    session = edge.login(_identity(edge))
    args = {
        "session": session,
        "app": edge.app("Admin"),
        "host": "admin.acme.test",
        "redirect_path": "/",
        "policy": None,
        "app_session_hash": "0" * 64,
    }
    nonces = [edge.add_login(args) for _ in range(1_000)]
    hops = [
        edge.add_chain_hop({"session": session, "app": edge.app("Admin"), "host": "x", "rest": (), "final": "/"})
        for _ in range(1_000)
    ]
    assert (len(edge.logins), len(edge.chain_hops)) == (1_000, 1_000)
    edge.clock.advance(121)  # callback nonces and hops live two minutes
    assert edge.take_login(nonces[0]) is None and edge.chain_hop(hops[0], take=False) is None
    edge.add_login(args)
    edge.add_chain_hop({"session": session, "app": edge.app("Admin"), "host": "x", "rest": (), "final": "/"})
    assert (len(edge.logins), len(edge.chain_hops)) == (1, 1)

    edge.logins.limit = 100
    first = edge.add_login(args)
    for _ in range(100):
        edge.add_login(args)
    assert len(edge.logins) == 100 and edge.take_login(first) is None
