"""The inspector page and its event stream over the wire: who may open them, their headers, the stream."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from fakeedge.config import parse_config
from fakeedge.edge import Edge
from fakeedge.testing import FakeEdge, FakeEdgeFactory, loopback_session
from fakeedge.web_app import start
from fakeedge.web_control import control_allowed

from .conftest import base_config, copy_test_key
from .origins import config_for, whoami

ADMIN_TOKEN = "a-long-admin-token-for-tests-0123"


def basic(password: str, user: str = "me") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("authorization", "allowed"),
    [
        (basic(ADMIN_TOKEN), True),
        (basic(ADMIN_TOKEN, user=""), True),
        (basic("wrong-token-wrong-token"), False),
        (basic(ADMIN_TOKEN + "x"), False),
        ("Basic !!!", False),
        ("Basic " + base64.b64encode(b"\xff:\xfe").decode(), False),
    ],
    ids=["basic", "no user name", "wrong", "longer", "not base64", "not utf-8"],
)
def test_a_browser_sends_the_admin_token_as_a_password(authorization: str, allowed: bool) -> None:
    assert control_allowed("203.0.113.5", authorization, ADMIN_TOKEN) is allowed


async def test_with_an_admin_token_the_browser_is_asked_for_it(fakeedge: FakeEdgeFactory) -> None:
    edge = await fakeedge(config={**config_for(whoami()), "admin_token": ADMIN_TOKEN})
    page = f"{edge.team_domain}/cdn-cgi/fakeedge/"
    async with edge.client().get(page) as resp:
        assert (resp.status, resp.headers["WWW-Authenticate"]) == (401, 'Basic realm="fakeedge"')
    for authorization in (basic(ADMIN_TOKEN), f"Bearer {ADMIN_TOKEN}"):
        async with edge.client().get(page, headers={"Authorization": authorization}) as resp:
            assert resp.status == 200
            assert "<title>fakeedge inspector</title>" in await resp.text()
        async with edge.client().get(page + "requests", headers={"Authorization": authorization}) as resp:
            assert resp.status == 200


async def test_the_page_cannot_be_framed_and_runs_only_its_own_script(fakeedge: FakeEdgeFactory) -> None:
    edge = await fakeedge(config=config_for(whoami()))
    async with edge.client().get(f"{edge.team_domain}/cdn-cgi/fakeedge/") as resp:
        assert resp.status == 200
        text = await resp.text()
        csp = resp.headers["Content-Security-Policy"]
        nonce = csp.split("script-src 'nonce-", 1)[1].split("'", 1)[0]
        assert csp == (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; "
            "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        )
        assert text.count(f'nonce="{nonce}"') == 2  # the one style and the one script
        assert {k: resp.headers[k] for k in ("X-Frame-Options", "Cross-Origin-Resource-Policy")} == {
            "X-Frame-Options": "DENY",
            "Cross-Origin-Resource-Policy": "same-origin",
        }
        assert "Access-Control-Allow-Origin" not in resp.headers
    async with edge.client().get(f"{edge.team_domain}/cdn-cgi/fakeedge/") as resp:
        assert nonce not in resp.headers["Content-Security-Policy"]  # a new nonce every time


async def read_events(resp: aiohttp.ClientResponse, count: int) -> list[dict[str, str]]:
    """``count`` events (not comments) off a server-sent event stream, within 10 s."""
    events: list[dict[str, str]] = []
    current: dict[str, str] = {}
    async with asyncio.timeout(10):
        while len(events) < count:
            line = (await resp.content.readline()).decode().rstrip("\n")
            if not line:
                if current:
                    events.append(current)
                current = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                current[name] = value
    return events


async def test_events_replay_the_journal_then_follow_it(fakeedge: FakeEdgeFactory) -> None:
    edge: FakeEdge = await fakeedge(config=config_for(whoami()))
    client = edge.client()
    for path in ("/1", "/2"):
        async with client.get(edge.url("public.acme.test", path)):
            pass
    events_url = f"{edge.team_domain}/cdn-cgi/fakeedge/events?since=1"
    async with loopback_session() as watcher, watcher.get(events_url) as resp:
        assert resp.headers["Content-Type"] == "text/event-stream"
        (first,) = await read_events(resp, 1)
        assert (first["id"], first["event"], json.loads(first["data"])["path"]) == ("2", "request", "/2")
        async with client.get(edge.url("Admin", "/3"), allow_redirects=False):
            pass
        (live,) = await read_events(resp, 1)
        data = json.loads(live["data"])
        assert (live["id"], data["path"], data["decision"], data["status"]) == ("3", "/3", "login", 302)
    async with client.get(f"{edge.team_domain}/cdn-cgi/fakeedge/events", headers={"Last-Event-ID": "2"}) as resp:
        (again,) = await read_events(resp, 1)
        assert again["id"] == "3"
    async with client.get(f"{edge.team_domain}/cdn-cgi/fakeedge/events?since=x") as resp:
        assert (resp.status, await resp.json()) == (
            400,
            {"error": "since: expected the seq of the last request seen (0 or more), got 'x'"},
        )


async def test_with_the_journal_off_the_stream_says_so(fakeedge: FakeEdgeFactory) -> None:
    edge = await fakeedge(config=config_for(whoami()), record=False)
    async with edge.client().get(f"{edge.team_domain}/cdn-cgi/fakeedge/events") as resp:
        (off,) = await read_events(resp, 1)
        assert off == {"event": "off", "data": '{"error": "the journal is off (journal: 0)"}'}


async def test_an_open_stream_does_not_hold_the_edge_up_when_it_stops(tmp_path: Path) -> None:
    cfg = {**base_config("http://127.0.0.1:9"), "keys_dir": str(copy_test_key(tmp_path / "keys"))}
    edge = Edge.create(parse_config(cfg, source="test.yml"))
    runner, _ = await start(edge, "127.0.0.1", 0)
    async with loopback_session() as watcher:
        resp = await watcher.get(f"{edge.team_domain}/cdn-cgi/fakeedge/events")
        assert resp.status == 200
        async with asyncio.timeout(10):  # aiohttp would otherwise wait its 60 s shutdown timeout
            await runner.cleanup()
        resp.close()


async def test_fakeedge_serve_names_the_inspector_and_serves_it(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "fakeedge.cli", "serve", "--listen", "127.0.0.1:0"],
        cwd=tmp_path,
        env={"XDG_CACHE_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        url = None
        for _ in range(50):  # bounded: the banner is a handful of lines
            line = proc.stderr.readline()
            found = re.fullmatch(
                r"fakeedge: inspector at (http://127\.0\.0\.1:\d+/cdn-cgi/fakeedge/) \(from this machine\)\n", line
            )
            if found or not line:
                url = found and found.group(1)
                break
        assert url, "fakeedge serve did not print the inspector's URL"
        async with loopback_session() as client, client.get(url) as resp:
            assert resp.status == 200
            assert "<title>fakeedge inspector</title>" in await resp.text()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()
