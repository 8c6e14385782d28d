"""Issue 16, hot path round 2: what the per-request shortcuts keep, and that they change no answer.

Every request goes through a real edge on 127.0.0.1 to a real aiohttp origin. The shortcuts are
caches of what the config and the keys already decide; each test checks both that the second
request takes the shortcut and that the answer is the one the first request got.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

from aiohttp import web

from fakeedge.config import parse_config
from fakeedge.policy import MATCH_CACHE_LIMIT
from fakeedge.testing import FakeEdge, FakeEdgeFactory

from .test_policy import MATCHES, _apps

# the apps of test_policy.INDEX, in its order (app0 ... app12)
DOMAINS: list[str | list[str]] = [
    "a.test",
    "*.a.test",
    "*test.b.test",
    "c.test/alpha/*",
    "c.test/beta",
    "d.test/foo*/bar",
    "e.test",
    "e.test/admin",
    "e.test/admin/exec",
    "x.f.test",
    "*.f.test",
    ["g.test", "h.test/api"],
    "i.test/*",
]

DIGEST = hashlib.sha256(b"acme:hotpath").hexdigest()
CI = {"CF-Access-Client-Id": f"{DIGEST[:32]}.access", "CF-Access-Client-Secret": DIGEST[32:]}


def _origin() -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        return web.Response(text="origin")

    app = web.Application()
    app.router.add_get("/{tail:.*}", echo)
    return app


def _config(service: Any, *, bots: bool = True) -> dict[str, Any]:
    policies: list[dict[str, Any]] = [
        {"name": "people", "decision": "allow", "include": [{"email": {"email": "alice@acme.test"}}]}
    ]
    if bots:
        policies.append({"name": "bots", "decision": "non_identity", "include": [{"any_valid_service_token": {}}]})
    return {
        "team": "acme",
        "service_tokens": [
            {"name": "ci", "client_id": CI["CF-Access-Client-Id"], "client_secret": CI["CF-Access-Client-Secret"]}
        ],
        "apps": [{"name": "Admin", "domain": "admin.acme.test", "policies": policies}],
        "ingress": [{"hostname": "admin.acme.test", "service": service}, {"service": "http_status:404"}],
    }


def _reconfigure(edge: FakeEdge, **changes: Any) -> None:
    new = parse_config(_config("http://127.0.0.1:9", **changes), source="changed.yml")
    edge.core.reconfigure(dataclasses.replace(new, ingress=edge.config.ingress, keys_dir=edge.config.keys_dir))


async def test_strict_service_token_verdicts_are_cached_and_dropped_with_the_config(fakeedge: FakeEdgeFactory) -> None:
    edge = await fakeedge(config=_config(_origin()))  # strict_service_token_auth: the default (spec §14.3)
    assert edge.config.strict_service_token_auth
    client = edge.client()
    for _ in range(2):
        async with client.get(edge.url("Admin"), headers=CI, allow_redirects=False) as resp:
            assert resp.status == 200 and "Set-Cookie" not in resp.headers
    first, second = edge.requests.all()
    assert first.why.judged is not None and second.why.judged is not None
    assert second.why.judged.verdict is first.why.judged.verdict  # the second decided from the cache
    assert (second.decision, second.policy, second.reason) == (first.decision, first.policy, first.reason)
    assert second.reason == "Service Auth policy 'bots' matched any_valid_service_token"

    _reconfigure(edge, bots=False)

    async with client.get(edge.url("Admin"), headers=CI, allow_redirects=False) as resp:
        assert resp.status == 403  # authenticated, and no longer allowed
    assert edge.requests.all()[-1].decision is None


async def test_service_token_secrets_follow_the_clock_both_ways(fakeedge: FakeEdgeFactory) -> None:
    """The encoded secrets are kept per token until one expires, and worked out again when the
    clock crosses an expiry either way (the control API can set it back)."""
    now = 1_800_000_000  # 2027-01-15T08:00:00Z
    cfg = _config(_origin())
    cfg["service_tokens"][0] |= {
        "previous_client_secrets": [{"client_secret": "the-old-secret-0123456789", "expires_at": "2027-01-15T08:01:00Z"}],
        "expires_at": "2027-01-15T08:02:00Z",
    }
    edge = await fakeedge(config=cfg)
    edge.clock.freeze(now)
    client = edge.client()
    old = {**CI, "CF-Access-Client-Secret": "the-old-secret-0123456789"}
    wrong = {**CI, "CF-Access-Client-Secret": "not-the-secret"}

    async def status(headers: dict[str, str]) -> int:
        async with client.get(edge.url("Admin"), headers=headers, allow_redirects=False) as resp:
            return resp.status

    assert [await status(h) for h in (CI, old, wrong)] == [200, 200, 401]
    edge.clock.advance(60)  # the old secret's grace ends
    assert [await status(h) for h in (CI, old, wrong)] == [200, 401, 401]
    edge.clock.freeze(now + 59)  # set back: in its grace again
    assert [await status(h) for h in (CI, old)] == [200, 200]
    edge.clock.freeze(now + 120)  # the token expires
    assert [await status(h) for h in (CI, old)] == [401, 401]
    edge.clock.freeze(now)
    assert [await status(h) for h in (CI, old)] == [200, 200]


def test_app_matches_are_remembered_per_host_and_path_and_bounded() -> None:
    fresh = _apps(*DOMAINS)
    for _ in range(2):  # the second round answered from the memo: the same answers, misses included
        for host, path, expected in MATCHES:
            match = fresh.match(host, path)
            assert (match.app.name if match else None) == expected, (host, path)
    first = fresh.match("c.test", "/alpha/one")
    assert first is not None and fresh.match("c.test", "/alpha/one") is first
    for i in range(3 * MATCH_CACHE_LIMIT):  # a client asking for a new path each time
        match = fresh.match("c.test", f"/alpha/{i}")
        assert match is not None and match.app.name == "app3"
    assert len(fresh._found) <= MATCH_CACHE_LIMIT
    assert fresh.match("c.test", "/beta") is not None and fresh.match("c.test", "/alpha") is None
