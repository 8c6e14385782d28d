"""An origin written with a stock verifier runs unmodified behind fakeedge (spec §10).

The origin is ``examples/compose/admin_api.py``, the compose stack's admin API, imported as is:
PyJWT's ``PyJWKClient`` on ``https://acme.cloudflareaccess.com/cdn-cgi/access/certs``,
``issuer="https://acme.cloudflareaccess.com"``, the app's ``aud``. Two things differ from
production, and neither is in the origin: the name resolves to the test's edge (``socket.getaddrinfo``
is patched for that one name, port 443 mapped to the TLS listener's; ``/etc/hosts`` is untouched),
and the CA is trusted through ``SSL_CERT_FILE``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import socket
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import jwt
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa

from fakeedge import tokens
from fakeedge.config import parse_config
from fakeedge.edge import Edge
from fakeedge.testing import browser_login

from .tls_support import MakeTLSEdge, TLSEdge, make_tls_edge

__all__ = ["make_tls_edge"]
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "compose"
TEAM_HOST = "acme.cloudflareaccess.com"
TEAM = f"https://{TEAM_HOST}"


@pytest.fixture(scope="module")
def admin_api() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("admin_api_example", EXAMPLE / "admin_api.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def example_config(origin_url: str) -> dict[str, Any]:
    """The compose stack's fakeedge.yml, with the ingress pointed at this test's origin and a second app."""
    raw: dict[str, Any] = yaml.safe_load((EXAMPLE / "fakeedge.yml").read_text())
    for key in ("listen", "tls_listen", "keys_dir", "ingress_file"):
        del raw[key]
    raw["apps"].append(
        {
            "name": "Grafana",
            "domain": "grafana.acme.test",
            "policies": [
                {"name": "staff", "decision": "allow", "include": [{"email_domain": {"domain": "acme.test"}}]}
            ],
        }
    )
    raw["ingress"] = [{"hostname": "admin-api.acme.test", "service": origin_url}, {"service": "http_status:404"}]
    return raw


@dataclass
class Stack:
    edge: TLSEdge
    origin_url: str
    config: dict[str, Any]

    async def direct(self, token: str) -> tuple[int, dict[str, Any]]:
        """Call the origin directly with an assertion, as someone bypassing the edge would."""
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.origin_url}/deploys", headers={"Cf-Access-Jwt-Assertion": token}) as resp,
        ):
            return resp.status, await resp.json()


@pytest.fixture
async def stack(
    make_tls_edge: MakeTLSEdge, admin_api: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Stack]:
    aud = yaml.safe_load((EXAMPLE / "fakeedge.yml").read_text())["apps"][0]["aud"]
    server = admin_api.make_server("127.0.0.1", 0, admin_api.AccessVerifier(TEAM_HOST, aud))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    origin_url = f"http://127.0.0.1:{server.server_address[1]}"
    config = example_config(origin_url)
    running = await make_tls_edge(config)

    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == TEAM_HOST and str(port) == "443":
            return real_getaddrinfo("127.0.0.1", running.tls_port, *args, **kwargs)
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setenv("SSL_CERT_FILE", str(running.ca.cert_path))
    yield Stack(running, origin_url, config)
    await asyncio.to_thread(server.shutdown)
    server.server_close()
    thread.join(timeout=5)


async def test_good_tokens_pass(stack: Stack) -> None:
    edge = stack.edge
    assert edge.team == TEAM
    # a person signs in through the edge; the origin verifies the assertion it forwards
    resp = await browser_login(edge.client, edge.url("admin-api.acme.test", "/deploys", port=False), "alice@acme.test")
    assert (resp.status, await resp.json()) == (200, {"service": "admin-api", "user": "alice@acme.test"})
    # a service token, as CI would send it
    (token,) = stack.config["service_tokens"]
    resp = await edge.client.get(
        edge.url("admin-api.acme.test", "/deploys", port=False),
        headers={"CF-Access-Client-Id": token["client_id"], "CF-Access-Client-Secret": token["client_secret"]},
    )
    assert (resp.status, await resp.json()) == (200, {"service": "admin-api", "service_token": token["client_id"]})


@pytest.fixture
async def user_token(stack: Stack) -> str:
    """A real assertion for Alice on the Admin API, presented directly to the origin as well."""
    edge = stack.edge.edge
    resp = await browser_login(
        stack.edge.client, stack.edge.url("admin-api.acme.test", "/", port=False), "alice@acme.test"
    )
    assert resp.status == 200
    (session,) = edge.sessions.values()
    token, _ = edge.app_jwt(session, edge.app("Admin API"), None)
    assert await stack.direct(token) == (200, {"service": "admin-api", "user": "alice@acme.test"})
    return token


def other_team(stack: Stack, tmp_path: Path, *, share_keys: bool) -> Edge:
    """An edge for team 'other' (https://other.cloudflareaccess.com); with its own keys unless ``share_keys``."""
    raw = {**stack.config, "team": "other", "team_domain": "https://other.cloudflareaccess.com"}
    raw["keys_dir"] = str(stack.edge.edge.config.keys_dir if share_keys else tmp_path / "other-keys")
    return Edge.create(parse_config(raw, source="other.yml"))


async def test_a_token_signed_by_another_key_is_refused(stack: Stack, user_token: str) -> None:
    claims = jwt.decode(user_token, options={"verify_signature": False})
    store = stack.edge.edge.keys
    foreign = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    # the edge's kid, someone else's key
    forged = tokens.sign(claims, store.current, private_key=foreign)
    assert await stack.direct(forged) == (401, {"error": "InvalidSignatureError: Signature verification failed"})


async def test_tokens_from_another_team_are_refused(stack: Stack, user_token: str, tmp_path: Path) -> None:
    aud = stack.edge.aud("Admin API")
    # another team's edge, its own keys: its kid is not in acme's certs, even after a refetch
    other = other_team(stack, tmp_path, share_keys=False)
    (service_token,) = other.config.service_tokens
    token, _ = other.service_jwt(service_token, other.app("Admin API"))
    assert jwt.decode(token, options={"verify_signature": False})["aud"] == aud  # same AUD, other team
    kid = other.keys.current.kid
    assert await stack.direct(token) == (
        401,
        {"error": f'PyJWKClientError: Unable to find a signing key that matches: "{kid}"'},
    )
    # another team whose token acme's key signed: the issuer gives it away
    twin = other_team(stack, tmp_path, share_keys=True)
    token, _ = twin.service_jwt(service_token, twin.app("Admin API"))
    assert await stack.direct(token) == (401, {"error": "InvalidIssuerError: Invalid issuer"})


async def test_a_token_for_another_app_is_refused(stack: Stack, user_token: str) -> None:
    edge = stack.edge.edge
    (session,) = edge.sessions.values()
    grafana, _ = edge.app_jwt(session, edge.app("Grafana"), None)
    assert await stack.direct(grafana) == (401, {"error": "InvalidAudienceError: Audience doesn't match"})


async def test_no_assertion_is_refused(stack: Stack) -> None:
    async with aiohttp.ClientSession() as session, session.get(f"{stack.origin_url}/deploys") as resp:
        assert (resp.status, await resp.json()) == (403, {"error": "missing Cf-Access-Jwt-Assertion"})
