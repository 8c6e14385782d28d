"""The request journal: every request with its reason in words, in a bounded ring, as JSON and in the access log."""

from __future__ import annotations

import asyncio
import io
import json
import random
import re
import socket
import string
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from fakeedge.config import parse_config
from fakeedge.edge import Edge
from fakeedge.record import RequestLog, mask_header, mask_url, mask_value
from fakeedge.testing import FakeEdge, FakeEdgeFactory, loopback_session
from fakeedge.web_app import AccessLog, EdgeRunner, start

from .conftest import BOT_ID, BOT_SECRET, MakeEdge, base_config, copy_test_key
from .origins import config_for, whoami

BOT = {"CF-Access-Client-Id": BOT_ID, "CF-Access-Client-Secret": BOT_SECRET}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Logged:
    edge: Edge
    port: int
    log: AccessLog
    client: aiohttp.ClientSession
    runner: EdgeRunner

    def url(self, host: str, path: str = "/") -> str:
        return f"http://{host}:{self.port}{path}"

    async def control(self, method: str, name: str, body: Any = None) -> tuple[int, Any]:
        url = f"{self.edge.team_domain}/cdn-cgi/fakeedge/{name}"
        async with self.client.request(method, url, json=body) as resp:
            return resp.status, await resp.json()

    async def lines(self) -> list[str]:
        self.log.flush()
        assert isinstance(self.log.stream, io.StringIO)
        return self.log.stream.getvalue().splitlines()


@pytest.fixture
async def logged(tmp_path: Path) -> AsyncIterator[Logged]:
    """An edge with an access log in memory, an origin, one that never answers and one that refuses."""
    hang = asyncio.Event()

    async def origin(request: web.Request) -> web.Response:
        if request.path == "/hang":
            await hang.wait()
        return web.json_response({"path": request.path_qs})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", origin)
    origin_runner = web.AppRunner(app, access_log=None)
    await origin_runner.setup()
    await web.TCPSite(origin_runner, "127.0.0.1", 0).start()
    cfg = base_config(f"http://127.0.0.1:{origin_runner.addresses[0][1]}")
    cfg["ingress"].insert(0, {"hostname": "down.acme.test", "service": f"http://127.0.0.1:{_free_port()}"})
    cfg["keys_dir"] = str(copy_test_key(tmp_path / "keys"))
    cfg["origin_timeout"] = "300ms"
    edge = Edge.create(parse_config(cfg, source="test.yml"))
    log = AccessLog(io.StringIO())
    runner, (_, port) = await start(edge, "127.0.0.1", 0, access_log=log)
    client = loopback_session()
    try:
        yield Logged(edge, port, log, client, runner)
    finally:
        hang.set()
        await client.close()
        await runner.cleanup()
        await origin_runner.cleanup()


async def raw(port: int, head: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        await writer.drain()
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    finally:
        writer.close()


def _reason_in(line: str) -> str | None:
    found = re.search(r' reason="([^"]*)"', line)
    return found.group(1) if found else None


async def test_every_refusal_and_failure_says_why_in_the_journal_and_the_log(logged: Logged) -> None:
    status, minted = await logged.control("POST", "token", {"email": "mallory@evil.test", "app": "Admin"})
    assert status == 200
    mallory = {"Cookie": f"CF_Authorization={minted['token']}"}
    status, minted = await logged.control("POST", "token", {"email": "alice@acme.test", "app": "Admin"})
    alice = {"Cookie": f"CF_Authorization={minted['token']}"}
    wrong = {**BOT, "CF-Access-Client-Secret": "not-the-secret"}
    staff = "Allow policy 'staff'"
    bots = f"Service Auth policy 'bots': no include rule matched (service_token {BOT_ID})"
    login_link = f"{logged.edge.team_domain}/cdn-cgi/access/login/admin.acme.test:{logged.port}?kid={logged.edge.app('Admin').aud}"
    # (what is sent, status, decision or kind, reason in the journal, reason in the access log)
    cases: list[tuple[Any, int, str, str, str]] = [
        (
            ("admin.acme.test", "/", alice),
            200,
            "allow",
            f"{staff} matched email_domain acme.test",
            "matched email_domain acme.test",
        ),
        (("admin.acme.test", "/", {}), 302, "login", f"not signed in: {staff} needs a login", "not signed in"),
        (
            ("admin.acme.test", "/", {"X-Requested-With": "XMLHttpRequest"}),
            401,
            "login",
            f"not signed in: {staff} needs a login; X-Requested-With: XMLHttpRequest gets 401 rather than the redirect",
            "not signed in; X-Requested-With: XMLHttpRequest gets 401 rather than the redirect",
        ),
        (
            ("admin.acme.test", "/", mallory),
            403,
            "deny",
            f"no policy admits mallory@evil.test: {staff}: no include rule matched "
            "(email_domain acme.test, github-organization acme)",
            "no policy admits mallory@evil.test",
        ),
        (
            ("sentry.acme.test", "/", {}),
            403,
            "forbidden",
            f"no policy can admit this request: {bots}",
            "no policy can admit this request",
        ),
        (
            ("sentry.acme.test", "/", wrong),
            403,
            "forbidden",
            "service-token headers sent but not valid (malformed, unknown client id or wrong secret); "
            f"no policy can admit this request: {bots}",
            "bad service token; no policy can admit this request",
        ),
        (
            ("sentry.acme.test", "/", BOT),
            200,
            "service",
            f"Service Auth policy 'bots' matched service_token {BOT_ID}",
            f"matched service_token {BOT_ID}",
        ),
        (
            ("public.acme.test", "/", {}),
            200,
            "route",
            "no Access application covers this host and path",
            "no Access application covers this host and path",
        ),
        (
            ("teapot.acme.test", "/", {}),
            418,
            "route",
            "the ingress rule for this host and path answers 418 (http_status)",
            "the ingress rule for this host and path answers 418 (http_status)",
        ),
        (
            ("down.acme.test", "/", {}),
            502,
            "route",
            "no Access application covers this host and path; then the origin failed: connection refused",
            "origin failed: connection refused",
        ),
        (
            ("admin.acme.test", "/hang", alice),
            504,
            "allow",
            f"{staff} matched email_domain acme.test; then the origin failed: no answer within 0.3s",
            "origin failed: no answer within 0.3s",
        ),
        (
            login_link,
            400,
            "team",
            "Invalid login link: This sign-in link was not issued to your browser by the application, "
            "or it has expired. Please go to the URL of your application again.",
            "Invalid login link: This sign-in link was not issued to your browser by the application, "
            "or it has expired. Please go to the URL of your application again.",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: bad host\r\nConnection: close\r\n\r\n",
            400,
            "bad-request",
            "the Host header is no host name",
            "the Host header is no host name",
        ),
        (
            b"GET http://admin.acme.test/ HTTP/1.1\r\nHost: admin.acme.test\r\nConnection: close\r\n\r\n",
            400,
            "bad-request",
            "the request target is not a path (absolute-form)",
            "the request target is not a path (absolute-form)",
        ),
        (
            b"GET /private#/../public HTTP/1.1\r\nHost: admin.acme.test\r\nConnection: close\r\n\r\n",
            400,
            "bad-request",
            "the request target holds a '#' (a fragment has no place in a request)",
            "the request target holds a '#' (a fragment has no place in a request)",
        ),
    ]
    for sent, status, _, _, _ in cases:
        if isinstance(sent, bytes):
            head = await raw(logged.port, sent)
            assert head.startswith(f"HTTP/1.1 {status} ".encode()), head
            continue
        url = sent if isinstance(sent, str) else logged.url(sent[0], sent[1])
        headers = {} if isinstance(sent, str) else sent[2]
        async with logged.client.get(url, headers=headers, allow_redirects=False) as resp:
            assert resp.status == status, (sent, await resp.text())

    assert logged.edge.recorder is not None
    records = [r for r in logged.edge.recorder.all() if r.kind != "control"]
    assert [(r.status, r.decision or r.kind, r.reason) for r in records] == [(c[1], c[2], c[3]) for c in cases]
    lines = [line for line in await logged.lines() if "/cdn-cgi/fakeedge/" not in line]
    statuses = [re.search(r" (\d{3}) app=", line) for line in lines]
    assert [(m and m.group(1), _reason_in(line)) for m, line in zip(statuses, lines, strict=True)] == [
        (str(c[1]), c[4]) for c in cases
    ]
    assert "app=Admin policy=- decision=deny reason=" in lines[3]
    assert "app=Sentry policy=bots decision=service reason=" in lines[6]
    # the same, over the control API: the masked JSON
    status, body = await logged.control("GET", "requests")
    assert status == 200
    assert [(e["status"], e["reason"]) for e in body["requests"]] == [(c[1], c[3]) for c in cases]


async def test_strict_service_token_auth_says_which_check_refused(make_edge: MakeEdge) -> None:
    running = await make_edge({**base_config("http://127.0.0.1:9"), "strict_service_token_auth": True})
    for headers, status in (({**BOT, "CF-Access-Client-Secret": "wrong"}, 401), (BOT, 403)):
        async with running.client.get(running.url("grafana.acme.test"), headers=headers) as resp:
            assert resp.status == status
    unknown, refused = running.fake.requests.all()
    assert (unknown.status, unknown.reason) == (
        401,
        "strict service-token auth: the headers are malformed, or the id or secret is wrong",
    )
    assert (refused.status, refused.identity, refused.reason) == (
        403,
        "service token ci-deploy-bot",
        "strict service-token auth: no Service Auth or Bypass policy admits this service token",
    )


@pytest.fixture
async def edge(fakeedge: FakeEdgeFactory) -> FakeEdge:
    return await fakeedge(config=config_for(whoami()))


async def get_journal(edge: FakeEdge, query: str = "") -> tuple[int, Any]:
    async with edge.client().get(f"{edge.team_domain}/cdn-cgi/fakeedge/requests{query}") as resp:
        return resp.status, await resp.json()


async def test_the_json_journal_shows_what_the_client_sent_what_the_edge_removed_and_added(edge: FakeEdge) -> None:
    client = await edge.login("alice@acme.test", app="Admin")
    edge.requests.clear()
    spoof = {"Cf-Access-Authenticated-User-Email": "ceo@acme.test", "CF-Connecting-IP": "6.6.6.6"}
    async with client.get(edge.url("Admin", "/api?x=1"), headers=spoof) as resp:
        assert resp.status == 200
        ray = resp.headers["CF-Ray"]
    status, body = await get_journal(edge)
    assert status == 200 and body["recording"] is True
    (entry,) = body["requests"]
    assert {k: entry[k] for k in ("method", "host", "path", "status", "app", "policy", "decision", "identity")} == {
        "method": "GET",
        "host": "admin.acme.test",
        "path": "/api?x=1",
        "status": 200,
        "app": "Admin",
        "policy": "staff",
        "decision": "allow",
        "identity": "alice@acme.test",
    }
    assert (entry["ray"], entry["kind"], entry["forwarded"], entry["client"]) == (ray, "app", True, "127.0.0.1")
    assert entry["reason"] == "Allow policy 'staff' matched email_domain acme.test"
    assert 0 < entry["latency_ms"] < 10_000 and entry["seq"] >= 1
    assert ["Cf-Access-Authenticated-User-Email", "ceo@acme.test"] in entry["request_headers"]
    assert {"name": "Cf-Access-Authenticated-User-Email", "value": "ceo@acme.test", "spoofed": True} in entry["removed"]
    assert {"name": "CF-Connecting-IP", "value": "6.6.6.6", "spoofed": True} in entry["removed"]
    added = dict(entry["added"])
    assert added["Cf-Access-Authenticated-User-Email"] == "alice@acme.test"
    assert added["CF-Connecting-IP"] == "127.0.0.1"
    assert added["Cf-Access-Jwt-Assertion"].endswith(".<signature masked>")
    assert entry["headers"]["cf-access-authenticated-user-email"] == "alice@acme.test"
    assert entry["claims"]["email"] == "alice@acme.test"
    assert entry["claims"]["aud"] == [edge.aud("Admin")]
    # the same record for pytest, unmasked
    rec = edge.requests.all()[-1]
    assert (rec.reason, rec.identity, rec.status) == (entry["reason"], "alice@acme.test", 200)
    assert ("Cf-Access-Authenticated-User-Email", "ceo@acme.test") in rec.removed


async def test_the_journal_is_a_bounded_ring_read_since_a_seq(fakeedge: FakeEdgeFactory) -> None:
    edge = await fakeedge(config={**config_for(whoami()), "journal": 3})
    edge.core.recorder = RequestLog(edge.config.journal)  # as `fakeedge serve` builds it from the config
    client = edge.client()
    for i in range(5):
        async with client.get(edge.url("public.acme.test", f"/{i}")):
            pass
    _, body = await get_journal(edge)
    assert [(e["seq"], e["path"]) for e in body["requests"]] == [(3, "/2"), (4, "/3"), (5, "/4")]
    _, body = await get_journal(edge, "?since=4")
    assert [e["path"] for e in body["requests"]] == ["/4"]
    assert await get_journal(edge, "?since=5") == (200, {"recording": True, "requests": []})
    assert await get_journal(edge, "?since=-1") == (
        400,
        {"error": "since: expected the seq of the last request seen (0 or more), got '-1'"},
    )
    assert await get_journal(edge, "?after=1") == (400, {"error": "unknown key(s) after; valid: since"})
    assert len(edge.requests.all()) == 3  # and for pytest: the same ring


async def test_refusals_are_in_the_journal_but_not_in_what_origins_received(edge: FakeEdge) -> None:
    async with edge.client().get(edge.url("Admin"), allow_redirects=False) as resp:
        assert resp.status == 302
    assert len(edge.requests) == 0
    (refused,) = edge.requests.all()
    assert (refused.status, refused.decision, refused.forwarded, refused.identity) == (302, "login", False, None)
    assert refused.location is not None and refused.location.startswith(f"{edge.team_domain}/cdn-cgi/access/login/")
    assert [c.split("=", 1)[0] for c in refused.cookies_set] == ["CF_AppSession"]


async def test_secrets_and_tokens_are_masked(edge: FakeEdge) -> None:
    client = await edge.login("alice@acme.test", app="Admin")
    cookie = edge.cookies(client)["CF_Authorization"]
    async with edge.client().get(edge.url("Sentry", "/"), headers=BOT) as resp:
        assert resp.status == 200
    async with client.get(edge.url("Admin", "/"), headers={"Authorization": "Bearer abcdefgh12345678"}) as resp:
        assert resp.status == 200
    _, body = await get_journal(edge)
    text = json.dumps(body)
    signature = cookie.rsplit(".", 1)[1]
    for secret in (BOT_SECRET, cookie, signature, "abcdefgh12345678"):
        assert secret not in text
    bot = next(e for e in body["requests"] if e["identity"] == "service token ci-deploy-bot")
    assert dict(bot["request_headers"])["CF-Access-Client-Secret"] == mask_value(BOT_SECRET)
    assert mask_value(BOT_SECRET) == f"<masked {len(BOT_SECRET)} chars #{mask_value(BOT_SECRET)[-9:-1]}>"
    assert bot["cookies_set"][0].startswith("CF_Authorization=") and "<signature masked>" in bot["cookies_set"][0]
    callback = next(e for e in body["requests"] if e["path"].startswith("/cdn-cgi/access/authorized"))
    assert re.fullmatch(
        r"/cdn-cgi/access/authorized\?nonce=<masked \d+ chars #[0-9a-f]{8}>&state=\S+", callback["path"]
    )
    logins = [e for e in body["requests"] if e["path"].startswith("/cdn-cgi/access/login/")]
    assert logins and all("meta=" in e["path"] and "<signature masked>" in e["path"] for e in logins)


@pytest.mark.parametrize(
    ("name", "value", "shown"),
    [
        ("CF-Access-Client-Secret", "s3cret", f"<masked 6 chars #{mask_value('s3cret')[-9:-1]}>"),
        ("Authorization", "Basic dXNlcjpwYXNz", f"Basic {mask_value('dXNlcjpwYXNz')}"),
        ("Cookie", "a=1; CF_Authorization=x.y.z", f"a={mask_value('1')}; CF_Authorization=x.y.<signature masked>"),
        ("Set-Cookie", "CF_Binding=abc; Path=/; HttpOnly", f"CF_Binding={mask_value('abc')}; Path=/; HttpOnly"),
        (
            "X-Service-Token",
            '{"cf-access-client-id": "id.access", "cf-access-client-secret": "sec"}',
            f'{{"cf-access-client-id": "id.access", "cf-access-client-secret": "{mask_value("sec")}"}}',
        ),
        ("Cf-Access-Token", "aaa.bbb.ccc", "aaa.bbb.<signature masked>"),
        ("Accept", "text/html", "text/html"),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 25 else None,
)
def test_mask_header(name: str, value: str, shown: str) -> None:
    assert mask_header(name, value) == shown


def test_mask_url() -> None:
    assert mask_url("/cb?nonce=abc&x=1") == f"/cb?nonce={mask_value('abc')}&x=1"
    assert mask_url("/p") == "/p"


async def test_sessions_listed_and_revoked_through_the_control_api(edge: FakeEdge) -> None:
    client = await edge.login("alice@acme.test", app="Admin")
    url = f"{edge.team_domain}/cdn-cgi/fakeedge/"
    async with edge.client().get(url + "sessions") as resp:
        (session,) = (await resp.json())["sessions"]
    assert (session["email"], session["apps"]) == ("alice@acme.test", ["Admin"])
    async with edge.client().post(url + "sessions/revoke", json={"id": "nope"}) as resp:
        assert (resp.status, await resp.json()) == (400, {"error": "no live session with id 'nope'"})
    async with edge.client().post(url + "sessions/revoke", json={"id": session["id"]}) as resp:
        assert (await resp.json()) == {"revoked": [session["id"]], "sessions": []}
    async with client.get(edge.url("Admin"), allow_redirects=False) as resp:
        assert resp.status == 302


async def test_explain_over_the_control_api_for_a_journal_request_and_for_everyone(edge: FakeEdge) -> None:
    async with edge.client().get(edge.url("Admin", "/x"), allow_redirects=False) as resp:
        ray = resp.headers["CF-Ray"]
    url = f"{edge.team_domain}/cdn-cgi/fakeedge/explain"
    async with edge.client().post(url, json={"ray": ray, "email": "alice@acme.test"}) as resp:
        body = await resp.json()
    assert (body["url"], body["decision"], body["admitted"], body["policy"]) == (
        "http://admin.acme.test/x",
        "allow",
        True,
        "staff",
    )
    async with edge.client().post(url, json={"ray": ray, "all": True}) as resp:
        rows = (await resp.json())["judgements"]
    assert [(r["caller"], r["admitted"], r["policy"]) for r in rows] == [
        ("no credentials", False, "staff"),
        ("alice@acme.test", True, "staff"),
        ("bob@acme.test", True, "staff"),
        ("octo@github.test", True, "staff"),
        ("mallory@evil.test", False, None),
        ("service token ci-deploy-bot", True, "bots"),
        ("service token other-bot", False, "staff"),
    ]
    async with edge.client().post(url, json={"ray": "nope", "all": True}) as resp:
        assert (resp.status, await resp.json()) == (400, {"error": "no request with ray 'nope' in the journal"})


async def test_a_cross_site_request_is_refused_whatever_it_asks(edge: FakeEdge) -> None:
    for path in ("", "requests", "events"):
        url = f"{edge.team_domain}/cdn-cgi/fakeedge/{path}"
        async with edge.client().get(url, headers={"Sec-Fetch-Site": "cross-site"}) as resp:
            assert (resp.status, await resp.json()) == (
                403,
                {"error": "the fakeedge control API answers its own page only, not another site's"},
            )
            assert "Access-Control-Allow-Origin" not in resp.headers


def test_no_secret_survives_masking_in_any_place_it_can_travel() -> None:
    """A bounded random search (seeded: the same cases every run): the oracle is that the secret is gone."""
    rng = random.Random(14)
    alphabet = string.ascii_lowercase + string.digits
    for _ in range(200):
        secret = "".join(rng.choice(alphabet) for _ in range(rng.randint(12, 64)))
        jwt_head = "".join(rng.choice("ABCDEFGH-_") for _ in range(rng.randint(4, 40)))
        places = [
            mask_header("CF-Access-Client-Secret", secret),
            mask_header("cf-access-client-secret", f" {secret} "),
            mask_header("Authorization", f"Bearer {secret}"),
            mask_header("Cookie", f"a=b; CF_AppSession={secret}; CF_Authorization={jwt_head}.{jwt_head}.{secret}"),
            mask_header("Cookie", f'CF_Binding="{secret}"'),
            mask_header("Set-Cookie", f"CF_Authorization={jwt_head}.{jwt_head}.{secret}; Path=/; HttpOnly"),
            mask_header("X-Token", json.dumps({"cf-access-client-id": "x", "cf-access-client-secret": secret})),
            mask_header("Cf-Access-Jwt-Assertion", f"{jwt_head}.{jwt_head}.{secret}"),
            mask_url(f"/cdn-cgi/access/authorized?nonce={secret}&state=x"),
            mask_url(f"/cdn-cgi/access/login/h?kid=k&meta={jwt_head}.{jwt_head}.{secret}&redirect_url=/"),
            mask_header("Location", f"http://h/cdn-cgi/access/authorized?nonce={secret}"),
        ]
        for shown in places:
            assert secret not in shown, shown


async def test_personas_added_through_the_control_api_sign_in_and_are_judged(edge: FakeEdge) -> None:
    url = f"{edge.team_domain}/cdn-cgi/fakeedge/"
    persona = {"email": "carol@partner.test", "name": "Carol", "github_orgs": ["acme"], "country": "DE"}
    async with edge.client().post(url + "personas", json=persona) as resp:
        body = await resp.json()
    assert {
        "email": "carol@partner.test",
        "name": "Carol",
        "groups": [],
        "github_orgs": ["acme"],
        "country": "DE",
        "idp": "fakeedge",
    } in body["personas"]
    async with edge.client().post(
        url + "explain", json={"url": edge.url("Admin"), "email": "carol@partner.test"}
    ) as resp:
        assert (await resp.json())["reason"] == "Allow policy 'staff' matched github-organization acme"
    client = await edge.login("carol@partner.test", app="Admin")
    async with client.get(edge.url("Admin")) as resp:
        assert resp.status == 200
    assert edge.requests.last.claims is not None and edge.requests.last.claims["country"] == "DE"
    async with edge.client().post(url + "personas", json={"email": "dave@x.test", "colour": "red"}) as resp:
        assert (resp.status, await resp.json()) == (
            400,
            {"error": "unknown key(s) colour; valid: email, name, groups, github_orgs, country, amr, idp, custom"},
        )
    async with edge.client().post(url + "personas", json={"email": "dave@x.test", "country": "Germany"}) as resp:
        assert (resp.status, await resp.json()) == (
            400,
            {
                "error": "personas: users[0].country: expected an ISO 3166 alpha-2 country code such as US, got 'Germany'"
            },
        )


async def test_a_recurring_verdict_logs_the_same_line_as_its_first_request(logged: Logged) -> None:
    """The access log writes an app's cached verdict's part of the line once (issue 16): every
    request after the first must still get the line the reason's own words make, per app and verdict."""
    status, minted = await logged.control("POST", "token", {"email": "alice@acme.test", "app": "Admin"})
    assert status == 200
    alice = {"Cookie": f"CF_Authorization={minted['token']}"}
    status, minted = await logged.control("POST", "token", {"email": "mallory@evil.test", "app": "Admin"})
    mallory = {"Cookie": f"CF_Authorization={minted['token']}"}
    sent = [
        ("admin.acme.test", alice, 200),
        ("sentry.acme.test", BOT, 200),
        ("admin.acme.test", mallory, 403),
        ("admin.acme.test", {}, 302),  # a second cached verdict of the same app
    ]
    for host, headers, want in sent * 3:
        async with logged.client.get(logged.url(host), headers=headers, allow_redirects=False) as resp:
            assert resp.status == want
    assert logged.edge.recorder is not None
    records = [r for r in logged.edge.recorder.all() if r.kind != "control"]
    lines = [line for line in await logged.lines() if "/cdn-cgi/fakeedge/" not in line]
    assert len(records) == len(lines) == 12
    for record, line in zip(records, lines, strict=True):
        # the oracle: the journal's record writes its short reason afresh, without the line's cache
        assert line == (
            f"GET {record.host}:{logged.port}/ {record.status} app={record.app} policy={record.policy or '-'} "
            f'decision={record.decision} reason="{record.short_reason}" {record.latency_ms:.1f}ms ray={record.ray}'
        )
    assert [(r.app, r.policy, r.decision) for r in records[:4]] == [
        ("Admin", "staff", "allow"),
        ("Sentry", "bots", "service"),
        ("Admin", None, "deny"),
        ("Admin", "staff", "login"),
    ]
    for first in range(4):
        assert lines[first].split(" ")[2:-2] == lines[first + 4].split(" ")[2:-2] == lines[first + 8].split(" ")[2:-2]
