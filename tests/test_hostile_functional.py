"""Hostile requests from issue 9, on raw sockets: what an HTTP client library would tidy up is sent as is."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import jwt
import pytest
from aiohttp import web

from fakeedge.config import parse_config
from fakeedge.explain import explain

from .conftest import BOT_ID, BOT_SECRET, Origin, RunningEdge, base_config
from .raw_http import Answer, parse_head

ANSWER_TIMEOUT = 10.0  # generous: the machine is shared; a hang is what these tests catch


async def exchange(port: int, request: bytes, timeout: float = ANSWER_TIMEOUT) -> Answer:
    """Send ``request`` byte for byte and read one answer, as a client does: the head, then
    ``Content-Length`` bytes, or everything up to the close when there is none.

    Raises TimeoutError when the answer is not complete within ``timeout``: a hang.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(timeout):
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                raise AssertionError(f"the edge closed the connection without an answer: {exc.partial!r}") from None
            status, headers = parse_head(head)
            length = [v for k, v in headers if k.lower() == "content-length"]
            body = await reader.readexactly(int(length[0])) if length else await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    return Answer(status, headers, body)


def get(target: str, host: str, port: int, extra: str = "") -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}Connection: close\r\n\r\n".encode()


def bypass_config(origin: Origin) -> dict[str, Any]:
    """Admin protects admin.acme.test and a Bypass app opens admin.acme.test/public/*; the same on
    www.acme.test with /public* (a prefix); files.acme.test is unprotected with an ingress rule
    that refuses /internal."""
    cfg = base_config(origin.url)
    everyone = [{"name": "all", "decision": "bypass", "include": [{"everyone": {}}]}]
    staff = [{"name": "staff", "decision": "allow", "include": [{"email_domain": {"domain": "acme.test"}}]}]
    cfg["apps"] += [
        {"name": "Public pages", "domain": "admin.acme.test/public/*", "policies": everyone},
        {"name": "Site", "domain": "www.acme.test", "policies": staff},
        {"name": "Site public", "domain": "www.acme.test/public*", "policies": everyone},
    ]
    cfg["ingress"][:0] = [
        {"hostname": "www.acme.test", "service": origin.url},
        {"hostname": "files.acme.test", "path": "^/internal", "service": "http_status:403"},
        {"hostname": "files.acme.test", "service": origin.url},
    ]
    return cfg


# --- item 1: paths are judged as Cloudflare normalises them (spec §14.1) ------------------------


BORROWED = [
    ("admin.acme.test", "/public\\../private"),
    ("admin.acme.test", "/public/..\\"),
    ("admin.acme.test", "/public\\../admin/x"),
    ("admin.acme.test", "/public%2fsecret"),  # %2F is data: not /public/secret (spec §14.1)
    ("admin.acme.test", "/public%2Fsecret/x"),
    ("admin.acme.test", "/public/%2e%2e\\admin"),
    ("admin.acme.test", "/public//..//..\\private"),
    ("www.acme.test", "/public\\../private"),  # the reproductions, with a /public* Bypass app
    ("www.acme.test", "/public/..\\"),
    ("www.acme.test", "/public\\../admin/x"),
    ("www.acme.test", "/public/x/../..\\private"),
]


@pytest.mark.parametrize(("host", "target"), BORROWED, ids=[h.split(".")[0] + t for h, t in BORROWED])
async def test_a_bypass_path_cannot_be_borrowed_by_another_path(
    make_edge: Callable[..., Awaitable[RunningEdge]], origin: Origin, host: str, target: str
) -> None:
    running = await make_edge(bypass_config(origin))
    answer = await exchange(running.port, get(target, host, running.port))
    assert answer.status == 302  # the protected Admin app judged it: a login first
    assert origin.received == []


async def test_the_bypass_path_itself_still_reaches_the_origin_as_sent(
    make_edge: Callable[..., Awaitable[RunningEdge]], origin: Origin
) -> None:
    running = await make_edge(bypass_config(origin))
    sent = ["/public/page", "/%70ublic/a%2fb", "/public/x/..\\y"]
    for target in sent:
        answer = await exchange(running.port, get(target, "admin.acme.test", running.port))
        assert answer.status == 200, target
        assert "Cf-Access-Jwt-Assertion" not in origin.last.headers
    # Cloudflare's default normalisation scope is "incoming": the origin gets the URL as sent
    assert [r.path for r in origin.received] == sent


@pytest.mark.parametrize("target", ["/x/..\\internal/secret", "/%69nternal", "//internal", "/a/./../internal"])
async def test_ingress_path_rules_see_the_normalised_path(
    make_edge: Callable[..., Awaitable[RunningEdge]], origin: Origin, target: str
) -> None:
    running = await make_edge(bypass_config(origin))
    answer = await exchange(running.port, get(target, "files.acme.test", running.port))
    assert answer.status == 403
    assert origin.received == []


async def test_a_fragment_in_the_request_target_is_refused(
    make_edge: Callable[..., Awaitable[RunningEdge]], origin: Origin
) -> None:
    # "#" cannot appear in a request target (RFC 9112 §3.2); origins cut the path there, so
    # "/private#/../public/x" would be judged as /public/x and served as /private
    running = await make_edge(bypass_config(origin))
    for target in ("/private#/../public/x", "/public/x?a#b"):
        answer = await exchange(running.port, get(target, "admin.acme.test", running.port))
        assert answer.status == 400, target
    assert origin.received == []


def test_explain_judges_the_path_the_edge_judges(origin: Origin) -> None:
    config = parse_config(bypass_config(origin), source="t.yml")
    for url, app in [
        ("http://admin.acme.test/public%2fsecret", "'Admin' via admin.acme.test "),
        ("http://admin.acme.test/public/x", "'Public pages' via admin.acme.test/public/* "),
        ("http://www.acme.test/public\\../private", "'Site' via www.acme.test "),
    ]:
        lines = explain(config, url)
        assert next(line for line in lines if line.startswith("app ")).startswith(f"app       {app}"), lines


# --- item 3: the 302's WWW-Authenticate, Location and meta JWT hold whatever the path is --------

# printable ASCII but '"', "\" and space: what a quoted-string URL can hold without being cut short
METADATA = re.compile(
    r'Cloudflare-Access resource_metadata="(http://admin\.acme\.test:\d+'
    r'/\.well-known/cloudflare-access-protected-resource(/[!#-\[\]-~]*))"'
)
ODD_BYTES = [*range(0x00, 0x20), 0x7F, *range(0x80, 0x100)]


def _verifier(running: RunningEdge) -> Callable[[str], dict[str, Any]]:
    """Verify Access-signed JWTs against the edge's served JWKS, as a stock client does."""
    client = jwt.PyJWKClient(f"{running.team}/cdn-cgi/access/certs", cache_jwk_set=True, lifespan=3600)

    def verify(token: str) -> dict[str, Any]:
        key = client.get_signing_key_from_jwt(token)
        claims: dict[str, Any] = jwt.decode(token, key.key, algorithms=["RS256"], audience=running.aud("Admin"))
        return claims

    return verify


async def _check_login_redirect(running: RunningEdge, verify: Callable[[str], dict[str, Any]], target: str) -> str:
    """One request for ``target`` on the protected Admin app; the checked 302's metadata path."""
    answer = await exchange(running.port, get(target, "admin.acme.test", running.port))
    assert answer.status == 302, target
    [www] = answer.header("WWW-Authenticate")
    match = METADATA.fullmatch(www)
    assert match is not None, (target, www)  # one parameter, and the quoted-string intact
    [location] = answer.header("Location")
    assert "\r" not in location and "\n" not in location and " " not in location
    query = dict(parse_qsl(urlsplit(location).query, keep_blank_values=True))
    assert query["redirect_url"] == target, location  # encodeURIComponent'd path+query, decoded once
    meta = await asyncio.to_thread(verify, query["meta"])
    assert meta["redirect_url"] == target
    return match.group(2)


async def test_www_authenticate_cannot_be_given_a_second_parameter(
    make_edge: Callable[..., Awaitable[RunningEdge]], origin: Origin
) -> None:
    running = await make_edge(bypass_config(origin))
    verify = _verifier(running)
    injected = "/x%22,%20resource_metadata=%22https://evil.test/meta"
    path = await _check_login_redirect(running, verify, injected)
    assert path == "/x%22,%20resource_metadata=%22https:/evil.test/meta"  # normalised, still one value
    assert await _check_login_redirect(running, verify, '/x"y\\z?q="\\') == "/x%22y/z"
    assert await _check_login_redirect(running, verify, "/a/%7e/../b%2f?x") == "/a/b%2F"
    assert origin.received == []


async def test_every_odd_byte_in_the_path_gets_a_well_formed_302(
    make_edge: Callable[..., Awaitable[RunningEdge]], origin: Origin
) -> None:
    # /x%0d, /x%00, /x%01, /x%7f got no answer: the decoded byte went into the header
    running = await make_edge(bypass_config(origin))
    verify = _verifier(running)
    for byte in ODD_BYTES:
        escaped = f"%{byte:02x}"
        assert await _check_login_redirect(running, verify, f"/x{escaped}y") == f"/x{escaped.upper()}y"
    assert origin.received == []


async def test_every_raw_odd_byte_in_the_target_gets_an_answer(
    make_edge: Callable[..., Awaitable[RunningEdge]], origin: Origin
) -> None:
    # unescaped, the HTTP parser refuses them itself; what matters is an answer, never silence
    running = await make_edge(bypass_config(origin))
    for byte in ODD_BYTES:
        request = b"GET /x" + bytes([byte]) + b"y HTTP/1.1\r\nHost: admin.acme.test\r\nConnection: close\r\n\r\n"
        answer = await exchange(running.port, request)
        assert answer.status in (302, 400), byte
        for www in answer.header("WWW-Authenticate"):
            assert METADATA.fullmatch(www.replace("admin.acme.test", f"admin.acme.test:{running.port}")), www
    assert origin.received == []


# --- item 4: Connection may name headers, but not Host or the ones the edge sets -----------------

EDGE_SET = (
    "Host, Cf-Access-Jwt-Assertion, Cf-Access-Authenticated-User-Email, CF-Connecting-IP, X-Forwarded-For, "
    "X-Forwarded-Proto, X-Forwarded-Host, CF-Ray, CF-Visitor, CF-IPCountry, CDN-Loop, Cookie, Content-Length"
)


async def test_connection_cannot_send_a_request_to_another_virtual_host(
    make_edge: Callable[..., Awaitable[RunningEdge]], origin: Origin
) -> None:
    # public.acme.test and admin.acme.test are two virtual hosts of one origin (base_config)
    running = await make_edge(bypass_config(origin))
    for connection in ("close, Host", "Host, close", "close, host", "close\r\nConnection: Host"):
        answer = await exchange(
            running.port,
            f"GET / HTTP/1.1\r\nHost: public.acme.test:{running.port}\r\nConnection: {connection}\r\n\r\n".encode(),
        )
        assert answer.status == 200, connection
        assert origin.last.headers["Host"] == f"public.acme.test:{running.port}", connection


async def test_connection_cannot_remove_what_the_edge_sets(
    make_edge: Callable[..., Awaitable[RunningEdge]], origin: Origin
) -> None:
    running = await make_edge(bypass_config(origin))
    verify = _verifier(running)
    body = b"x" * 89
    request = (
        f"POST /api HTTP/1.1\r\nHost: admin.acme.test:{running.port}\r\n"
        f"CF-Access-Client-Id: {BOT_ID}\r\nCF-Access-Client-Secret: {BOT_SECRET}\r\n"
        "X-Forwarded-For: 203.0.113.7\r\nCookie: a=1\r\nX-Hop: gone\r\nX-Other: gone\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close, X-Hop, {EDGE_SET}\r\nConnection: X-Other\r\n\r\n"
    ).encode() + body
    answer = await exchange(running.port, request)
    assert answer.status == 200
    seen = origin.last.headers
    assert seen["Host"] == f"admin.acme.test:{running.port}"
    claims = await asyncio.to_thread(verify, seen["Cf-Access-Jwt-Assertion"])
    assert claims["common_name"] == BOT_ID
    assert seen["CF-Connecting-IP"] == "127.0.0.1"
    assert seen["X-Forwarded-For"] == "203.0.113.7,127.0.0.1"
    assert seen["X-Forwarded-Proto"] == "http"
    assert seen["CF-Visitor"] == '{"scheme":"http"}'
    assert seen["CDN-Loop"] == "cloudflare"
    assert seen["CF-Ray"] == answer.header("CF-Ray")[0]
    assert seen["Cookie"] == "a=1"
    assert origin.last.body_size == len(body)
    # what Connection names is still removed when it is the client's own hop-by-hop header
    assert "X-Hop" not in seen and "X-Other" not in seen


# --- item 5: a websocket handshake with a body is refused, never half forwarded ------------------

HANDSHAKE = (
    "GET /ws HTTP/1.1\r\nHost: public.acme.test:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
)


async def _websocket_origin(make_origin: Callable[..., Awaitable[Origin]], seen: list[str]) -> Origin:
    async def ws(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("Content-Length", "-"))
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        await socket.close()
        return socket

    return await make_origin(lambda app: app.router.add_get("/ws", ws))


@pytest.mark.parametrize(
    ("extra", "body"),
    [
        ("Content-Length: 89\r\n", b"x" * 89),
        ("Content-Length: 89\r\n", b""),  # the body announced and never sent
        ("Content-Length: 89\r\n", b"x" * 10),
        ("Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
        ("Transfer-Encoding: chunked\r\n", b""),
        ("Transfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
    ],
    ids=["length-sent", "length-unsent", "length-short", "chunked-sent", "chunked-unsent", "chunked-empty"],
)
async def test_websocket_handshake_with_a_body_is_refused(
    make_edge: Callable[..., Awaitable[RunningEdge]],
    make_origin: Callable[..., Awaitable[Origin]],
    extra: str,
    body: bytes,
) -> None:
    seen: list[str] = []
    origin = await _websocket_origin(make_origin, seen)
    running = await make_edge(bypass_config(origin))
    request = HANDSHAKE.format(port=running.port, extra=extra).encode() + body
    answer = await exchange(running.port, request)  # answered and closed within ANSWER_TIMEOUT
    assert answer.status == 400
    assert answer.header("Server") == ["cloudflare"] and answer.header("CF-Ray")
    assert b"A websocket handshake cannot carry a body." in answer.body
    assert seen == []  # the origin never saw the handshake


async def test_websocket_handshake_without_a_body_still_upgrades(
    make_edge: Callable[..., Awaitable[RunningEdge]], make_origin: Callable[..., Awaitable[Origin]]
) -> None:
    seen: list[str] = []
    origin = await _websocket_origin(make_origin, seen)
    running = await make_edge(bypass_config(origin))
    for extra in ("", "Content-Length: 0\r\n"):
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        try:
            writer.write(HANDSHAKE.format(port=running.port, extra=extra).encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), ANSWER_TIMEOUT)
        finally:
            writer.close()
            await writer.wait_closed()
        assert head.startswith(b"HTTP/1.1 101 "), head
    assert seen == ["-", "-"]  # no framing header on a handshake
