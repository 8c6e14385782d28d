"""The control API under /cdn-cgi/fakeedge/ on the team domain: every endpoint, and who may use it."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest

from fakeedge.config import parse_config
from fakeedge.errors import ConfigError
from fakeedge.testing import FakeEdge, FakeEdgeFactory
from fakeedge.web_control import control_allowed

from .conftest import BOT_ID
from .origins import config_for, verify, whoami

ADMIN_TOKEN = "a-long-admin-token-for-tests-0123"


@pytest.fixture
async def edge(fakeedge: FakeEdgeFactory) -> FakeEdge:
    return await fakeedge(config=config_for(whoami()))


async def call(edge: FakeEdge, method: str, name: str, body: Any = None, **headers: str) -> tuple[int, dict[str, Any]]:
    url = f"{edge.team_domain}/cdn-cgi/fakeedge/{name}"
    kwargs: dict[str, Any] = {"headers": headers}
    if body is not None:
        kwargs["json"] = body
    async with edge.client().request(method, url, **kwargs) as resp:
        return resp.status, await resp.json()


async def test_token(edge: FakeEdge) -> None:
    status, body = await call(edge, "POST", "token", {"email": "alice@acme.test", "app": "Admin"})
    assert (status, body["variant"]) == (200, "valid")
    claims = await verify(edge.certs_url, body["token"], audience=edge.aud("Admin"), issuer=edge.team_domain)
    assert claims["email"] == "alice@acme.test"
    # a valid minted token is a session at the edge too: what a Playwright or Node test sets as its cookie
    async with edge.client().get(
        edge.url("Admin"), headers={"Cookie": f"CF_Authorization={body['token']}"}, allow_redirects=False
    ) as resp:
        assert resp.status == 200

    status, body = await call(
        edge, "POST", "token", {"service_token": "ci-deploy-bot", "app": "Sentry", "expired": True, "lifetime": "10m"}
    )
    assert (status, body["variant"]) == (200, "expired")
    with pytest.raises(jwt.ExpiredSignatureError):
        await verify(edge.certs_url, body["token"], audience=edge.aud("Sentry"), issuer=edge.team_domain)
    unverified = jwt.decode(body["token"], options={"verify_signature": False})
    assert (unverified["common_name"], unverified["exp"] - unverified["iat"]) == (BOT_ID, 600)

    status, body = await call(
        edge, "POST", "token", {"email": "a@acme.test", "app": "Admin", "variant": "wrong-aud", "claims": {"x": 1}}
    )
    assert (status, body["variant"]) == (200, "wrong_aud")  # the canonical name, whatever the spelling
    assert jwt.decode(body["token"], options={"verify_signature": False})["x"] == 1


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (
            {"email": "a@acme.test", "app": "Admn"},
            "no app named 'Admn'; did you mean 'Admin'? apps: Admin, Sentry, Grafana",
        ),
        ({"email": "a@acme.test"}, "app: expected a non-empty string"),
        (
            {"email": "a@acme.test", "app": "Admin", "expired": True, "variant": "no_kid"},
            "give one variant at most, got expired, no_kid",
        ),
        (
            {"emial": "a@acme.test", "app": "Admin"},
            "unknown key(s) emial; valid: app, email, service_token, variant, claims, header, lifetime",
        ),
        ({"email": "a@acme.test", "app": "Admin", "claims": [1]}, "claims: expected a JSON object"),
    ],
    ids=["unknown app", "no app", "two variants", "unknown key", "claims not an object"],
)
async def test_token_mistakes(edge: FakeEdge, body: dict[str, Any], error: str) -> None:
    assert await call(edge, "POST", "token", body) == (400, {"error": error})


async def test_keys_and_rotation(edge: FakeEdge) -> None:
    old = edge.core.keys.current.kid
    assert await call(edge, "GET", "keys") == (200, {"current": old, "previous": None, "previous_until": None})
    edge.clock.freeze()
    status, body = await call(edge, "POST", "keys/rotate", {"grace": "1h"})
    assert status == 200
    assert body == {"current": edge.core.keys.current.kid, "previous": old, "previous_until": edge.clock.now() + 3600}
    assert body["current"] != old
    async with edge.client().get(edge.certs_url) as resp:
        assert [k["kid"] for k in (await resp.json())["keys"]] == [old, body["current"]]
    await call(edge, "POST", "clock", {"advance": 3601})
    assert (await call(edge, "GET", "keys"))[1]["previous"] is None
    status, _ = await call(edge, "POST", "keys/rotate", {})  # Cloudflare's 7 days
    assert status == 200


async def test_clock(edge: FakeEdge) -> None:
    client = await edge.login("alice@acme.test", app="Admin")  # Admin: 1 h sessions
    status, body = await call(edge, "POST", "clock", {"freeze": True})
    assert (status, body["frozen"]) == (200, True)
    start = body["now"]
    assert (await call(edge, "POST", "clock", {"advance": "30m"}))[1] == {"now": start + 1800, "frozen": True}
    async with client.get(edge.url("Admin"), allow_redirects=False) as resp:
        assert resp.status == 200
    assert (await call(edge, "POST", "clock", {"advance": 1801}))[1]["now"] == start + 3601
    async with client.get(edge.url("Admin"), allow_redirects=False) as resp:
        assert resp.status == 302  # the session expired: back to sign-in
    assert (await call(edge, "POST", "clock", {"freeze": 1_700_000_000}))[1] == {"now": 1_700_000_000, "frozen": True}
    assert (await call(edge, "POST", "clock", {"unfreeze": True}))[1]["frozen"] is False
    status, body = await call(edge, "POST", "clock", {"skew": -60})
    assert status == 200
    assert (await call(edge, "POST", "clock", {"reset": True}))[1]["frozen"] is False
    assert await call(edge, "POST", "clock", {"advance": 1, "skew": 2}) == (
        400,
        {"error": "give one action: advance, skew, freeze, unfreeze, reset"},
    )
    assert await call(edge, "POST", "clock", {"freeze": "now"}) == (
        400,
        {"error": "freeze: expected true (now) or seconds since the epoch"},
    )


async def test_requests_are_off_until_asked_for(fakeedge: FakeEdgeFactory) -> None:
    edge = await fakeedge(config=config_for(whoami()), record=False)  # as `fakeedge serve` runs
    assert await call(edge, "GET", "requests") == (200, {"recording": False, "requests": []})
    assert await call(edge, "POST", "requests", {"record": True}) == (200, {"recording": True, "requests": []})
    async with edge.client().get(edge.url("Sentry", "/api/1/"), headers=edge.service_token("ci-deploy-bot")):
        pass
    _, body = await call(edge, "GET", "requests")
    (entry,) = body["requests"]
    assert (entry["method"], entry["host"], entry["path"], entry["app"], entry["policy"]) == (
        "GET",
        "sentry.acme.test",
        "/api/1/",
        "Sentry",
        "bots",
    )
    assert entry["claims"]["common_name"] == BOT_ID
    assert entry["headers"]["cf-access-jwt-assertion"].count(".") == 2
    assert await call(edge, "DELETE", "requests") == (200, {"recording": True, "requests": []})
    assert await call(edge, "POST", "requests", {"record": False}) == (200, {"recording": False, "requests": []})
    assert await call(edge, "POST", "requests", {"record": "yes"}) == (
        400,
        {"error": 'record: expected true or false, as in {"record": true}'},
    )


async def test_certs_fault(edge: FakeEdge) -> None:
    status, body = await call(edge, "POST", "certs/fault", {"mode": "failing", "times": 1})
    assert (status, body["mode"], body["times"], body["served"]) == (200, "failing", 1, 0)
    async with edge.client().get(edge.certs_url) as resp:
        assert resp.status == 500
    async with edge.client().get(edge.certs_url) as resp:
        assert resp.status == 200
    assert await call(edge, "GET", "certs/fault") == (200, {"mode": None})
    await call(edge, "POST", "certs/fault", {"mode": "empty"})
    async with edge.client().get(edge.certs_url) as resp:
        assert await resp.json() == {"keys": [], "public_certs": []}
    assert await call(edge, "POST", "certs/fault", {"mode": None}) == (200, {"mode": None})
    assert await call(edge, "POST", "certs/fault", {"mode": "down"}) == (
        400,
        {"error": "unknown certs fault 'down'; valid: slow, empty, failing"},
    )


async def test_endpoint_and_method_mistakes(edge: FakeEdge) -> None:
    assert await call(edge, "GET", "tokens") == (
        404,
        {
            "error": "no control endpoint '/cdn-cgi/fakeedge/tokens'; "
            "endpoints: token, keys, keys/rotate, clock, requests, sessions, sessions/revoke, explain, personas, "
            "certs/fault, audit, oauth, oauth/revoke, login, approvals"
        },
    )
    url = f"{edge.team_domain}/cdn-cgi/fakeedge/token"
    async with edge.client().get(url) as resp:
        assert (resp.status, resp.headers["Allow"]) == (405, "POST")
        assert await resp.json() == {"error": "/cdn-cgi/fakeedge/token takes POST, not GET"}
    async with edge.client().post(url, data='{"email": "a@acme.test", "app": "Admin"}') as resp:
        assert resp.status == 415  # what a cross-site form or no-cors fetch would send
        assert await resp.json() == {
            "error": "send Content-Type: application/json (it keeps web pages in a browser from calling the control API)"
        }
    async with edge.client().post(f"{edge.team_domain}/cdn-cgi/fakeedge/keys/rotate") as resp:
        assert resp.status == 415  # no body, no Content-Type: what fetch(url, {method: "POST", mode: "no-cors"}) sends
    async with edge.client().post(url, data="{", headers={"Content-Type": "application/json"}) as resp:
        assert (resp.status, await resp.json()) == (400, {"error": "the body is not JSON"})


async def test_a_body_over_4_mib_is_refused_unread(edge: FakeEdge) -> None:
    """Declared or streamed (chunked, no length): never buffered past the limit."""
    url = f"{edge.team_domain}/cdn-cgi/fakeedge/token"
    refused = (413, {"error": "the body is larger than 4194304 bytes"})
    declared = b'{"email": "' + b"a" * (4 << 20) + b'"}'
    async with edge.client().post(url, data=io.BytesIO(declared), headers={"Content-Type": "application/json"}) as resp:
        assert (resp.status, await resp.json()) == refused

    async def streamed() -> AsyncIterator[bytes]:
        yield b'{"email": "'
        for _ in range(65):  # 65 x 64 KiB: just over the limit
            yield b"a" * (64 << 10)

    async with edge.client().post(url, data=streamed(), headers={"Content-Type": "application/json"}) as resp:
        assert (resp.status, await resp.json()) == refused
    # the limit is a limit, not a ban: a body just under it is read and judged
    under = b'{"email": "' + b"a" * ((4 << 20) - 100) + b'"}'
    async with edge.client().post(url, data=io.BytesIO(under), headers={"Content-Type": "application/json"}) as resp:
        assert (resp.status, await resp.json()) == (400, {"error": "app: expected a non-empty string"})


async def test_only_on_the_team_domain(edge: FakeEdge) -> None:
    async with edge.client().get(edge.url("Admin", "/cdn-cgi/fakeedge/clock"), allow_redirects=False) as resp:
        assert resp.status == 302  # on an app host it is just a path behind Access


# --- who may use it ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("remote", "authorization", "admin_token", "allowed"),
    [
        ("127.0.0.1", None, None, True),
        ("127.8.9.10", None, None, True),
        ("::1", None, None, True),
        ("::ffff:127.0.0.1", None, None, True),
        ("192.168.1.10", None, None, False),
        ("10.0.0.1", f"Bearer {ADMIN_TOKEN}", None, False),
        ("::ffff:10.0.0.1", None, None, False),
        ("fe80::1%eth0", None, None, False),
        (None, None, None, False),
        ("not an address", None, None, False),
        ("127.0.0.1", None, ADMIN_TOKEN, False),
        ("127.0.0.1", f"Bearer {ADMIN_TOKEN}", ADMIN_TOKEN, True),
        ("203.0.113.5", f"Bearer {ADMIN_TOKEN}", ADMIN_TOKEN, True),
        ("203.0.113.5", f"bearer  {ADMIN_TOKEN}", ADMIN_TOKEN, True),
        ("203.0.113.5", "Bearer wrong-token", ADMIN_TOKEN, False),
        ("203.0.113.5", f"Basic {ADMIN_TOKEN}", ADMIN_TOKEN, False),
        ("203.0.113.5", None, ADMIN_TOKEN, False),
    ],
    ids=[
        "loopback",
        "loopback /8",
        "ipv6 loopback",
        "v4-mapped loopback",
        "lan",
        "lan with a token nobody configured",
        "v4-mapped lan",
        "link-local",
        "no address",
        "garbage",
        "token set: loopback without it",
        "token set: loopback with it",
        "token set: remote with it",
        "token set: scheme case and spaces",
        "token set: wrong token",
        "token set: wrong scheme",
        "token set: remote without it",
    ],
)
def test_who_may_use_it(remote: str | None, authorization: str | None, admin_token: str | None, allowed: bool) -> None:
    assert control_allowed(remote, authorization, admin_token) is allowed


async def test_admin_token_over_a_real_request(fakeedge: FakeEdgeFactory) -> None:
    cfg = config_for(whoami())
    cfg["admin_token"] = ADMIN_TOKEN
    edge = await fakeedge(config=cfg)
    url = f"{edge.team_domain}/cdn-cgi/fakeedge/clock"
    async with edge.client().get(url) as resp:
        assert (resp.status, resp.headers["WWW-Authenticate"]) == (401, 'Bearer realm="fakeedge"')
        assert await resp.json() == {"error": "the fakeedge control API needs Authorization: Bearer <admin_token>"}
    async with edge.client().get(url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as resp:
        assert resp.status == 200
        assert (await resp.json())["frozen"] is False


def test_admin_token_must_be_long() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config({"team": "acme", "admin_token": "short"}, source="fakeedge.yml")
    assert str(exc.value) == "fakeedge.yml: admin_token: expected a secret of at least 16 characters, got str 'short'"


async def raw_call(edge: FakeEdge, name: str, body: bytes) -> tuple[int, dict[str, Any]]:
    url = f"{edge.team_domain}/cdn-cgi/fakeedge/{name}"
    async with edge.client().post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
        return resp.status, await resp.json()


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("clock", b'{"advance": NaN}'),
        ("clock", b'{"advance": Infinity}'),
        ("clock", b'{"advance": 1e300}'),
        ("clock", b'{"freeze": 1e300}'),
        ("token", b'{"email": "a@acme.test", "app": "Admin", "lifetime": 1e309}'),
        ("token", b'{"email": "a@acme.test", "app": "Admin", "expired": "yes"}'),
        ("keys/rotate", b'{"grace": 1e309}'),
        ("certs/fault", b'{"mode": "slow", "delay": NaN}'),
        ("certs/fault", b'{"mode": "slow", "delay": 1e9}'),
        ("clock", b"[" * 100_000),
    ],
    ids=[
        "nan",
        "infinity",
        "huge advance",
        "huge freeze",
        "huge lifetime",
        "flag not a boolean",
        "huge grace",
        "nan delay",
        "huge delay",
        "deep json",
    ],
)
async def test_odd_numbers_and_shapes_are_refused(edge: FakeEdge, name: str, body: bytes) -> None:
    status, answer = await raw_call(edge, name, body)
    assert status == 400, answer
    # and the edge still works
    status, answer = await call(edge, "GET", "clock")
    assert status == 200 and answer["now"] > 1_700_000_000
    client = await edge.login("alice@acme.test", app="Admin")
    async with client.get(edge.url("Admin")) as resp:
        assert resp.status == 200


async def test_a_refused_fault_leaves_the_running_one(edge: FakeEdge) -> None:
    assert (await call(edge, "POST", "certs/fault", {"mode": "failing"}))[0] == 200
    assert (await call(edge, "POST", "certs/fault", {"mode": "failing", "times": 0}))[0] == 400
    assert (await call(edge, "GET", "certs/fault"))[1]["mode"] == "failing"
