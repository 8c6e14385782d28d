"""Attacks on the edge, each one a reproduction from a review: none may reach a protected origin."""

from __future__ import annotations

import asyncio
import io
import json
import re
from typing import Any

import pytest
import yarl
from aiohttp import web

from fakeedge.testing import browser_login

from .conftest import BOT_ID, BOT_SECRET, MakeEdge, MakeOrigin, Origin, RunningEdge, base_config
from .test_login_functional import CSRF


async def raw(port: int, request: bytes, timeout: float = 10) -> tuple[int, bytes]:
    """Send bytes as they are (no client library fixing them up); the status and the whole answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        return int(head.split(b" ", 2)[1]), head
    finally:
        writer.close()
        await writer.wait_closed()


def _with_wildcard_and_path_apps(origin: Origin) -> dict[str, Any]:
    cfg = base_config(origin.url)
    cfg["apps"].append(
        {
            "name": "Previews",
            "domain": "*.preview.acme.test",
            "policies": [
                {"name": "staff", "decision": "allow", "include": [{"email_domain": {"domain": "acme.test"}}]}
            ],
        }
    )
    cfg["apps"].append(
        {
            "name": "Private docs",
            "domain": "docs.acme.test/private",
            "policies": [
                {"name": "staff", "decision": "allow", "include": [{"email_domain": {"domain": "acme.test"}}]}
            ],
        }
    )
    cfg["ingress"][:0] = [
        {"hostname": "*.preview.acme.test", "service": origin.url},
        {"hostname": "docs.acme.test", "service": origin.url},
    ]
    return cfg


async def test_login_host_must_be_a_host_name(make_edge: MakeEdge, origin: Origin) -> None:
    running = await make_edge(_with_wildcard_and_path_apps(origin))
    await browser_login(running.client, running.url("pr-1.preview.acme.test"), "alice@acme.test")
    aud = running.aud("Previews")
    for host in (
        "1572395042%3F.preview.acme.test",
        "evil.test%23.preview.acme.test",
        "x%2Fevil.test%3F.preview.acme.test",
    ):
        url = yarl.URL(
            f"{running.team}/cdn-cgi/access/login/{host}:{running.port}?kid={aud}&redirect_url=%2F", encoded=True
        )
        resp = await running.client.get(url, allow_redirects=False)
        assert resp.status == 404, host  # no callback URL is ever built from it


@pytest.mark.parametrize(
    "target",
    [
        "/x/../private/secret.txt",
        "/x/%2e%2e/private/secret.txt",
        "//private/secret.txt",
        "/./private/secret.txt",
        "/x\\..\\private/secret.txt",
        "/x/..%5c/private/secret.txt".replace("%5c", "\\"),
    ],
)
async def test_dot_segments_and_double_slashes_do_not_escape_a_path_app(make_edge: MakeEdge, origin: Origin, target: str) -> None:
    running = await make_edge(_with_wildcard_and_path_apps(origin))
    status, _ = await raw(
        running.port,
        f"GET {target} HTTP/1.1\r\nHost: docs.acme.test:{running.port}\r\nConnection: close\r\n\r\n".encode(),
    )
    assert status == 302
    assert origin.received == []


async def test_normalised_paths_reach_the_origin_as_sent(make_edge: MakeEdge, make_origin: MakeOrigin) -> None:
    # spec §14.1: Access judges the normalised path, the origin gets the URL as the client sent it
    # (Cloudflare's default scope "incoming")
    seen: list[str] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(request.raw_path)
        return web.Response(text="ok")

    origin = await make_origin(lambda app: app.router.add_get("/{tail:.*}", record))
    running = await make_edge(_with_wildcard_and_path_apps(origin))
    sent = ["/a/../b//c?x=%2F", "/x%2f..%2fprivate/secret.txt", "/%7e/x%5c..\\y"]
    for target in sent:
        status, _ = await raw(
            running.port,
            f"GET {target} HTTP/1.1\r\nHost: docs.acme.test:{running.port}\r\nConnection: close\r\n\r\n".encode(),
        )
        assert status == 200, target  # none is in the private app: "%2F" is data, not a separator
    assert seen == sent


async def test_bypassed_preflight_is_never_a_websocket(make_edge: MakeEdge, make_origin: MakeOrigin) -> None:
    seen: list[str] = []

    async def ws(request: web.Request) -> web.StreamResponse:
        seen.append(request.method)
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        return socket

    origin = await make_origin(lambda app: app.router.add_route("*", "/ws", ws))
    cfg = base_config(origin.url)
    cfg["apps"][0]["options_preflight_bypass"] = True
    running = await make_edge(cfg)
    request = (
        f"OPTIONS /ws HTTP/1.1\r\nHost: admin.acme.test:{running.port}\r\nOrigin: https://x.test\r\n"
        "Access-Control-Request-Method: GET\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    status, _ = await raw(running.port, request.encode())
    assert status != 101
    assert "GET" not in seen


async def test_underscore_spellings_of_identity_headers_are_stripped(edge: RunningEdge, origin: Origin) -> None:
    request = (
        f"GET / HTTP/1.1\r\nHost: public.acme.test:{edge.port}\r\nCf_Access_Authenticated_User_Email: ceo@acme.test\r\n"
        "CF_Connecting_IP: 203.0.113.9\r\nCookie: a=1;CF_Binding=secret\r\nConnection: close\r\n\r\n"
    )
    status, _ = await raw(edge.port, request.encode())
    assert status == 200
    names = {k.lower() for k in origin.last.headers}
    assert "cf_access_authenticated_user_email" not in names and "cf_connecting_ip" not in names
    assert origin.last.headers["Cookie"] == "a=1"


async def test_binding_applies_to_the_token_header_too(make_edge: MakeEdge, origin: Origin) -> None:
    cfg = base_config(origin.url)
    cfg["apps"][0]["enable_binding_cookie"] = True
    running = await make_edge(cfg)
    await browser_login(running.client, running.url("admin.acme.test"), "bob@acme.test")
    token = origin.last.headers["Cf-Access-Jwt-Assertion"]
    running.client.cookie_jar.clear()
    resp = await running.client.get(
        running.url("admin.acme.test"), headers={"Cf-Access-Token": token}, allow_redirects=False
    )
    assert resp.status == 302


async def test_one_time_pin_allows_five_guesses(make_edge: MakeEdge, origin: Origin, caplog: pytest.LogCaptureFixture) -> None:
    cfg = base_config(origin.url)
    cfg["one_time_pin"] = True
    running = await make_edge(cfg)
    resp = await running.client.get(running.url("admin.acme.test"), allow_redirects=False)
    login = resp.headers["Location"]
    csrf = CSRF.search(await (await running.client.get(login)).text())
    assert csrf is not None
    page = await (await running.client.post(login, data={"csrf": csrf.group(1), "email": "bob@acme.test"})).text()
    otp_id = re.search(r'name="otp_id" value="([^"]+)"', page)
    code = re.search(r"one-time PIN for bob@acme.test is (\d{6})", caplog.text)
    assert otp_id is not None and code is not None
    wrong = "000000" if code.group(1) != "000000" else "111111"
    for attempt in range(5):
        resp = await running.client.post(login, data={"csrf": csrf.group(1), "otp_id": otp_id.group(1), "code": wrong})
        assert resp.status == 400, attempt
    assert "Too many wrong codes" in await resp.text()
    resp = await running.client.post(
        login, data={"csrf": csrf.group(1), "otp_id": otp_id.group(1), "code": code.group(1)}, allow_redirects=False
    )
    assert resp.status == 400  # the right code no longer works either


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "[" * 4000},
        {"Authorization": json.dumps({"cf-access-client-id": BOT_ID, "cf-access-client-secret": "\udc80"})},
        {"Authorization": json.dumps({"cf-access-client-id": BOT_ID, "cf-access-client-secret": "é"})},
    ],
)
async def test_malformed_single_header_tokens_are_refused_not_crashed(
    make_edge: MakeEdge, origin: Origin, headers: dict[str, str]
) -> None:
    cfg = base_config(origin.url)
    cfg["apps"][1]["read_service_tokens_from_header"] = "Authorization"
    running = await make_edge(cfg)
    resp = await running.client.get(running.url("sentry.acme.test"), headers=headers, allow_redirects=False)
    assert resp.status == 403


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET / HTTP/1.1\r\nHost: sentry.acme.test:{port}\r\nCF-Access-Client-Id: "
        + BOT_ID.encode()
        + b"\r\nCF-Access-Client-Secret: \xff\xfe\r\nConnection: close\r\n\r\n",
        b"GET http://public.acme.test/ HTTP/1.1\r\nHost: admin.acme.test:{port}\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: admin.acme.test:{port}\r\nCookie: CF_Binding=\xc3\xa9; CF_Authorization=x\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a?b.acme.test\r\nConnection: close\r\n\r\n",
    ],
    ids=["non-utf8-secret", "absolute-form", "non-ascii-binding", "bad-host"],
)
async def test_odd_requests_get_an_answer_not_a_500(edge: RunningEdge, origin: Origin, request_bytes: bytes) -> None:
    status, head = await raw(edge.port, request_bytes.replace(b"{port}", str(edge.port).encode()))
    assert status in (302, 400, 403), head
    assert origin.received == []


async def test_odd_form_values_get_an_answer_not_a_500(edge: RunningEdge) -> None:
    resp = await edge.client.get(edge.url("admin.acme.test"), allow_redirects=False)
    login = resp.headers["Location"]
    await edge.client.get(login)
    resp = await edge.client.post(login, data={"csrf": "é", "email": "alice@acme.test"})
    assert resp.status == 400
    for host in ("admin.acme.test:%C2%B2", "admin.acme.test:%EF%BC%91"):
        url = yarl.URL(f"{edge.team}/cdn-cgi/access/login/{host}?kid={edge.aud('Admin')}", encoded=True)
        assert (await edge.client.get(url)).status == 404


async def test_large_login_posts_are_refused_unread(edge: RunningEdge) -> None:
    resp = await edge.client.get(edge.url("admin.acme.test"), allow_redirects=False)
    resp = await edge.client.post(resp.headers["Location"], data=io.BytesIO(b"email=" + b"a" * (1 << 20)))
    assert resp.status == 413


async def test_websocket_handshake_to_a_silent_origin_times_out(make_edge: MakeEdge) -> None:
    done = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)  # read the handshake and never answer
        try:
            await asyncio.wait_for(done.wait(), 30)
        finally:
            writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        cfg = base_config(f"http://127.0.0.1:{port}")
        cfg["origin_timeout"] = "500ms"
        running = await make_edge(cfg)
        status, _ = await asyncio.wait_for(
            raw(
                running.port,
                f"GET /ws HTTP/1.1\r\nHost: public.acme.test:{running.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode(),
            ),
            10,
        )
        assert status == 504
    finally:
        done.set()
        server.close()
        await server.wait_closed()


async def test_get_identity_on_an_app_host_wants_that_hosts_token(edge: RunningEdge, origin: Origin) -> None:
    await browser_login(edge.client, edge.url("grafana.acme.test"), "alice@acme.test")
    grafana = origin.last.headers["Cf-Access-Jwt-Assertion"]
    resp = await edge.client.get(
        edge.url("admin.acme.test", "/cdn-cgi/access/get-identity"), headers={"Cookie": f"CF_Authorization={grafana}"}
    )
    assert resp.status == 401
    resp = await edge.client.get(edge.url("grafana.acme.test", "/cdn-cgi/access/get-identity"))
    assert resp.status == 200


async def test_service_token_secret_with_odd_bytes_is_just_wrong(edge: RunningEdge) -> None:
    resp = await edge.client.get(
        edge.url("sentry.acme.test"),
        headers={"CF-Access-Client-Id": BOT_ID, "CF-Access-Client-Secret": BOT_SECRET + "é"},
        allow_redirects=False,
    )
    assert resp.status == 403
