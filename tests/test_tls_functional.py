"""The TLS listener on real sockets: https everywhere for TLS requests, trusted only for served names."""

from __future__ import annotations

import json
import re
import ssl
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest
import trustme

from fakeedge.config import parse_config
from fakeedge.errors import ConfigError
from fakeedge.testing import browser_login, loopback_session

from .conftest import BOT_ID, BOT_SECRET, Origin, base_config
from .tls_support import MakeTLSEdge, TLSEdge, make_tls_edge, sign_in_across_ports

__all__ = ["make_tls_edge"]  # the fixture, imported for pytest
BOT = {"CF-Access-Client-Id": BOT_ID, "CF-Access-Client-Secret": BOT_SECRET}


@pytest.fixture
async def tls_edge(make_tls_edge: MakeTLSEdge, origin: Origin) -> TLSEdge:
    return await make_tls_edge(base_config(origin.url))


async def test_unauthenticated_tls_request_gets_https_urls_and_a_secure_cookie(tls_edge: TLSEdge) -> None:
    resp = await tls_edge.client.get(tls_edge.url("admin.acme.test", "/api/x?y=1"), allow_redirects=False)
    assert resp.status == 302
    # no team_domain configured: it defaults to the TLS listener
    assert tls_edge.team == f"https://127.0.0.1:{tls_edge.tls_port}"
    location = urlsplit(resp.headers["Location"])
    assert (location.scheme, location.netloc) == ("https", f"127.0.0.1:{tls_edge.tls_port}")
    assert location.path == f"/cdn-cgi/access/login/admin.acme.test:{tls_edge.tls_port}"
    assert resp.headers["WWW-Authenticate"] == (
        f'Cloudflare-Access resource_metadata="https://admin.acme.test:{tls_edge.tls_port}'
        '/.well-known/cloudflare-access-protected-resource/api/x"'
    )
    assert re.fullmatch(
        r"CF_AppSession=n[0-9a-f]{16}; Expires=[^;]+ GMT; Path=/; Secure; HttpOnly", resp.headers["Set-Cookie"]
    )


async def test_sign_in_over_tls_is_https_end_to_end(tls_edge: TLSEdge, origin: Origin) -> None:
    client = tls_edge.client
    hops: list[str] = []

    async def on_request_start(_session: object, _ctx: object, params: aiohttp.TraceRequestStartParams) -> None:
        hops.append(str(params.url))

    client.trace_configs.append(aiohttp.TraceConfig())
    client.trace_configs[-1].on_request_start.append(on_request_start)
    client.trace_configs[-1].freeze()
    resp = await browser_login(client, tls_edge.url("admin.acme.test", "/dash?tab=1"), "alice@acme.test")
    assert resp.status == 200
    assert all(hop.startswith("https://") for hop in hops), hops
    callback = f"https://admin.acme.test:{tls_edge.tls_port}/cdn-cgi/access/authorized?nonce="
    assert any(hop.startswith(callback) for hop in hops), hops
    assert hops[-1] == f"https://admin.acme.test:{tls_edge.tls_port}/dash?tab=1"

    received = origin.last
    assert received.headers["X-Forwarded-Proto"] == "https"
    assert received.headers["CF-Visitor"] == '{"scheme":"https"}'
    assert received.headers["Host"] == f"admin.acme.test:{tls_edge.tls_port}"
    # the cookies the browser was given: Secure, SameSite=None on both hosts
    cookies = {(c.key, c["domain"] or urlsplit(tls_edge.team).hostname): c for c in client.cookie_jar}
    app_cookie = cookies["CF_Authorization", "admin.acme.test"]
    assert app_cookie["secure"] is True and app_cookie["samesite"] == "none"
    org_cookie = cookies["CF_Authorization", "127.0.0.1"]
    assert org_cookie["secure"] is True and org_cookie["samesite"] == "none"


async def test_service_token_over_tls_forwards_https(tls_edge: TLSEdge, origin: Origin) -> None:
    resp = await tls_edge.client.get(
        tls_edge.url("admin.acme.test", "/deploy"),
        headers={**BOT, "X-Forwarded-Proto": "http", "CF-Visitor": '{"scheme":"http"}'},
    )
    assert resp.status == 200
    assert origin.last.headers["X-Forwarded-Proto"] == "https"  # the client's value is overwritten (spec §8)
    assert origin.last.headers["CF-Visitor"] == '{"scheme":"https"}'
    assert re.fullmatch(
        r"CF_Authorization=[\w.-]+; Expires=[^;]+ GMT; Path=/; Secure; HttpOnly; SameSite=none",
        resp.headers["Set-Cookie"],
    )


async def test_plain_listener_alongside_stays_http(tls_edge: TLSEdge, origin: Origin) -> None:
    client = loopback_session(ssl=tls_edge.fake.ssl_context(), ports={443: tls_edge.tls_port})
    async with client:
        resp = await client.get(
            tls_edge.plain_url("admin.acme.test", "/x"), headers={"X-Forwarded-Proto": "https"}, allow_redirects=False
        )
        assert resp.status == 302
        assert "Secure" not in resp.headers["Set-Cookie"]
        # the login itself happens on the (https) team domain; the callback returns to the plain port
        resp = await sign_in_across_ports(client, tls_edge.plain_url("admin.acme.test", "/x"), "bob@acme.test")
        assert resp.status == 200
        assert str(resp.url) == tls_edge.plain_url("admin.acme.test", "/x")
    assert origin.last.headers["X-Forwarded-Proto"] == "http"
    assert origin.last.headers["CF-Visitor"] == '{"scheme":"http"}'


async def test_tls_only_edge(make_tls_edge: MakeTLSEdge, origin: Origin) -> None:
    running = await make_tls_edge(base_config(origin.url), plain=False)
    assert running.edge.ports == {running.tls_port}
    resp = await running.client.get(running.url("public.acme.test", "/hello"))
    assert resp.status == 200
    assert json.loads(await resp.text()) == {"path": "/hello", "size": 0}


async def test_wrong_host_and_untrusted_ca_fail_on_the_socket(tls_edge: TLSEdge) -> None:
    # a name fakeedge does not serve gets the team domain's leaf: the client refuses it
    with pytest.raises(aiohttp.ClientConnectorCertificateError) as err:
        await tls_edge.client.get(tls_edge.url("evil.test"))
    assert err.value.certificate_error.verify_message == (  # type: ignore[attr-defined]
        "Hostname mismatch, certificate is not valid for 'evil.test'."
    )
    # the right name, but a client that does not trust fakeedge's CA
    async with loopback_session(ssl=trusting_other(), ports={443: tls_edge.tls_port}) as stranger:
        with pytest.raises(aiohttp.ClientConnectorCertificateError) as err:
            await stranger.get(tls_edge.url("admin.acme.test"))
    assert err.value.certificate_error.verify_message == "unable to get local issuer certificate"  # type: ignore[attr-defined]
    # and the right name with the CA trusted passes
    resp = await tls_edge.client.get(tls_edge.url("public.acme.test"))
    assert resp.status == 200


def trusting_other() -> ssl.SSLContext:
    """A client that trusts some other CA, not fakeedge's."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    trustme.CA().configure_trust(ctx)
    return ctx


def test_tls_listen_config(tmp_path: Path) -> None:
    config = parse_config({"team": "acme", "tls_listen": "0.0.0.0"}, source="f.yml", base_dir=tmp_path)
    assert (config.listen, config.tls_listen) == (("127.0.0.1", 8787), ("0.0.0.0", 8443))
    config = parse_config({"team": "acme", "listen": False, "tls_listen": ":443"}, source="f.yml")
    assert (config.listen, config.tls_listen) == (None, ("127.0.0.1", 443))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"tls_listen": "host:https"},
            "f.yml: tls_listen: expected HOST:PORT such as 127.0.0.1:8787, got 'host:https'",
        ),
        (
            {"listen": False},
            "f.yml: listen: is off, so tls_listen is required (such as 127.0.0.1:8443); fakeedge would not listen",
        ),
        ({"tls_listen": True}, "f.yml: tls_listen: expected a non-empty string, got a boolean (true)"),
    ],
    ids=["bad-port", "nothing-to-listen-on", "not-a-string"],
)
def test_tls_listen_errors(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"team": "acme", **raw}, source="f.yml")
    assert str(err.value) == message
