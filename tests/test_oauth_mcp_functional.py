"""Managed OAuth with the unmodified official MCP Python SDK (spec §14.2, issue 12).

The SDK's client and OAuth provider talk to an MCP server (the SDK's own ``MCPServer``, streamable
HTTP, served by uvicorn on 127.0.0.1) behind fakeedge. The provider's redirect handler plays the
person: it follows the authorization URL with a real HTTP client, signs in on fakeedge's SSO page
and hands the code back. The tool verifies the ``Cf-Access-Jwt-Assertion`` it receives against the
edge's JWKS with PyJWKClient and answers with the email inside.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx2
import jwt
import pytest
import uvicorn
from mcp import Client
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider, OAuthRegistrationError
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

from fakeedge.testing import browser_login, loopback_session

from .conftest import RunningEdge

REDIRECT_URI = "http://localhost:9/callback"  # never contacted: the handler reads the code off the 302


def mcp_config(origin_url: str, *, allow_localhost: bool = True) -> dict[str, Any]:
    return {
        "team": "acme",
        "users": [{"email": "alice@acme.test", "name": "Alice"}, {"email": "mallory@evil.test"}],
        "apps": [
            {
                "name": "Tools",
                "domain": "localhost",
                "policies": [
                    {"name": "staff", "decision": "allow", "include": [{"email_domain": {"domain": "acme.test"}}]}
                ],
                "oauth_configuration": {
                    "enabled": True,
                    "dynamic_client_registration": {"allow_any_on_localhost": allow_localhost},
                },
            }
        ],
        "ingress": [{"hostname": "localhost", "service": origin_url}, {"service": "http_status:404"}],
    }


class MemoryStorage:
    """The SDK's TokenStorage protocol, in memory."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


class Person:
    """The provider's redirect and callback handlers: sign in over HTTP, return the code."""

    def __init__(self, email: str) -> None:
        self.email = email
        self.browser = loopback_session()  # keeps the SSO cookies between authorizations
        self.result: AuthorizationCodeResult | None = None
        self.authorizations = 0

    async def redirect(self, url: str) -> None:
        self.authorizations += 1
        resp = await browser_login(self.browser, url, self.email)
        assert resp.status == 302, (resp.status, await resp.text())
        location = resp.headers["Location"]
        assert location.startswith(REDIRECT_URI + "?"), location
        query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
        self.result = AuthorizationCodeResult(code=query["code"], state=query.get("state"), iss=query.get("iss"))

    async def callback(self) -> AuthorizationCodeResult:
        assert self.result is not None
        result, self.result = self.result, None
        return result


def make_server(verifier: dict[str, Any]) -> MCPServer:
    """The origin; ``verifier`` gets the edge's ``jwks`` (a PyJWKClient) and ``aud`` once it runs."""
    server = MCPServer("fakeedge-test")

    @server.tool()
    async def whoami(ctx: Context) -> str:
        """The verified email of the caller, from the edge's assertion."""
        headers = ctx.headers or {}
        assertion = headers.get("cf-access-jwt-assertion")
        if assertion is None:
            return "no assertion"
        # PyJWKClient fetches synchronously from the edge, which runs on this very loop
        key = await anyio.to_thread.run_sync(verifier["jwks"].get_signing_key_from_jwt, assertion)
        claims = jwt.decode(assertion, key.key, algorithms=["RS256"], audience=verifier["aud"])
        return str(claims["email"])

    return server


async def serve_mcp(server: MCPServer) -> AsyncGenerator[str]:
    # the socket is bound and listening before uvicorn starts: no waiting for it to come up
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    security = TransportSecuritySettings(enable_dns_rebinding_protection=False)  # the edge forwards Host
    app = server.streamable_http_app(transport_security=security)
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    runner = uvicorn.Server(config)
    task = asyncio.create_task(runner.serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        runner.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


@pytest.fixture
async def mcp_origin() -> AsyncIterator[tuple[str, dict[str, Any]]]:
    verifier: dict[str, Any] = {}
    agen = serve_mcp(make_server(verifier))
    url = await agen.__anext__()
    yield url, verifier
    await agen.aclose()


@pytest.fixture
async def mcp_edge(
    make_edge: Callable[..., Awaitable[RunningEdge]], mcp_origin: tuple[str, dict[str, Any]]
) -> RunningEdge:
    url, verifier = mcp_origin
    edge = await make_edge(mcp_config(url))
    verifier["jwks"] = jwt.PyJWKClient(f"{edge.team}/cdn-cgi/access/certs")
    verifier["aud"] = edge.aud("Tools")
    return edge


def provider(edge: RunningEdge, person: Person, storage: MemoryStorage) -> OAuthClientProvider:
    return OAuthClientProvider(
        server_url=edge.url("localhost", "/mcp"),
        client_metadata=OAuthClientMetadata(
            client_name="fakeedge test",
            redirect_uris=[REDIRECT_URI],  # type: ignore[list-item]
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
        ),
        storage=storage,
        redirect_handler=person.redirect,
        callback_handler=person.callback,
    )


async def call_whoami(edge: RunningEdge, auth: OAuthClientProvider) -> tuple[list[str], str]:
    async with (
        httpx2.AsyncClient(auth=auth, timeout=30) as http,
        Client(streamable_http_client(edge.url("localhost", "/mcp"), http_client=http)) as client,
    ):
        tools = await client.list_tools()
        result = await client.call_tool("whoami", {})
    text = result.content[0].text  # type: ignore[union-attr]
    return [t.name for t in tools.tools], text


def leaf(exc: BaseException) -> BaseException:
    """The one exception inside the SDK's (nested) task-group exception groups."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


async def test_sdk_discovers_registers_signs_in_and_calls_a_tool(mcp_edge: RunningEdge) -> None:
    person, storage = Person("alice@acme.test"), MemoryStorage()
    try:
        names, email = await call_whoami(mcp_edge, provider(mcp_edge, person, storage))
    finally:
        await person.browser.close()
    assert names == ["whoami"]
    assert email == "alice@acme.test"
    assert person.authorizations == 1
    assert storage.tokens is not None and storage.tokens.access_token.startswith("oauth:")
    assert storage.client_info is not None and storage.client_info.redirect_uris is not None
    assert [str(u) for u in storage.client_info.redirect_uris] == [REDIRECT_URI]
    assert len(mcp_edge.edge.oauth.grants) == 1


async def test_sdk_refreshes_an_expired_access_token_without_the_person(mcp_edge: RunningEdge) -> None:
    person, storage = Person("alice@acme.test"), MemoryStorage()
    try:
        auth = provider(mcp_edge, person, storage)
        await call_whoami(mcp_edge, auth)
        first = storage.tokens
        assert first is not None
        # 16 minutes on: past the default 15-minute access token, on the edge's clock and the client's
        mcp_edge.clock.advance(16 * 60)
        # the SDK judges expiry by time.time(), which the edge's clock does not move: tell it too
        auth.context.token_expiry_time = time.time() - 1
        _, email = await call_whoami(mcp_edge, auth)
    finally:
        await person.browser.close()
    assert email == "alice@acme.test"
    assert person.authorizations == 1  # refreshed, not signed in again
    assert storage.tokens is not None and storage.tokens.access_token != first.access_token
    assert storage.tokens.refresh_token != first.refresh_token  # rotated


async def test_sdk_registration_refused_for_a_disallowed_redirect_uri(
    make_edge: Callable[..., Awaitable[RunningEdge]],
) -> None:
    edge = await make_edge(mcp_config("http://127.0.0.1:9", allow_localhost=False))
    person = Person("alice@acme.test")
    try:
        with pytest.raises(BaseException) as info:
            await call_whoami(edge, provider(edge, person, MemoryStorage()))
    finally:
        await person.browser.close()
    error = leaf(info.value)
    assert isinstance(error, OAuthRegistrationError)
    assert str(error) == (
        "Registration failed: 400 "
        '{"error": "invalid_redirect_uri", "error_description": "redirect_uri '
        "'http://localhost:9/callback' is not allowed by the app's dynamic_client_registration settings\"}"
    )
    assert person.authorizations == 0


NODE_DIR = Path(__file__).resolve().parent / "node"


@pytest.mark.skipif(
    not (NODE_DIR / "node_modules" / "@modelcontextprotocol" / "sdk").exists(),
    reason="needs the TypeScript SDK: npm ci --prefix tests/node (.ci/run does it)",
)
async def test_typescript_sdk_does_the_same_flow(mcp_edge: RunningEdge) -> None:
    """The official TypeScript SDK (@modelcontextprotocol/sdk) through the same steps, once."""
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(NODE_DIR / "mcp_client.mjs"),
        mcp_edge.url("localhost", "/mcp"),
        REDIRECT_URI,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    person = Person("alice@acme.test")
    try:
        first = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30) or b"{}")
        assert "authorize" in first, (first, await proc.stderr.read())
        await person.redirect(first["authorize"])
        result = await person.callback()
        assert result.state == "node-state"
        proc.stdin.write(result.code.encode() + b"\n")
        await proc.stdin.drain()
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        await person.browser.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    assert json.loads(out) == {"tools": ["whoami"], "text": "alice@acme.test", "token": "oauth:"}
