"""One token issuer (issue 17): ``mint()`` issues what the edge itself issues, member for member,
for the team domain ``fakeedge serve`` would use.

The edge's own tokens are taken off the wire: the assertion a real origin receives behind a real
edge on 127.0.0.1 after a real sign-in, or a service token's headers.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from click.testing import CliRunner

from fakeedge.cli import main
from fakeedge.testing import FakeEdgeFactory

DIGEST = hashlib.sha256(b"acme:ci").hexdigest()
BOT_ID, BOT_SECRET = f"{DIGEST[:32]}.access", DIGEST[32:]
ASSERTION = "Cf-Access-Jwt-Assertion"


def _decode(segment: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    return value


def _parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    head, payload, _ = token.split(".")
    return _decode(head), _decode(payload)


def _config(origin: web.Application) -> dict[str, Any]:
    return {
        "team": "acme",
        "strict_service_token_auth": False,
        "users": [{"email": "alice@acme.test", "country": "GB", "custom": {"groups": ["ops"], "tier": 2}}],
        "service_tokens": [{"name": "ci", "client_id": BOT_ID, "client_secret": BOT_SECRET}],
        "apps": [
            {
                "name": "Admin",
                "domain": "admin.acme.test",
                "policies": [
                    {"name": "people", "decision": "allow", "include": [{"email": {"email": "alice@acme.test"}}]},
                    {"name": "bots", "decision": "non_identity", "include": [{"service_token": {"token_id": "ci"}}]},
                ],
            }
        ],
        "ingress": [{"hostname": "admin.acme.test", "service": origin}, {"service": "http_status:404"}],
    }


def _origin() -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        return web.Response(text=request.headers.get(ASSERTION, ""))

    app = web.Application()
    app.router.add_get("/{tail:.*}", echo)
    return app


def _shape(token: str) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
    """Header and payload members in order, with the values that differ from token to token blanked."""
    head, payload = _parts(token)
    varying = {"iat", "nbf", "exp", "identity_nonce"}
    return list(head.items()), [(k, "*" if k in varying else v) for k, v in payload.items()]


async def test_minted_user_token_is_the_edges_own(fakeedge: FakeEdgeFactory) -> None:
    edge = await fakeedge(config=_config(_origin()))
    alice = await edge.login("alice@acme.test", app="Admin")
    async with alice.get(edge.url("Admin")) as resp:
        own = await resp.text()
    minted = edge.mint(app="Admin", email="alice@acme.test")
    assert _shape(minted) == _shape(own)
    head, payload = _parts(minted)
    assert list(head) == ["alg", "kid"]  # spec §2.1: user tokens carry no typ
    assert payload["custom"] == {"groups": ["ops"], "tier": 2} and payload["country"] == "GB"
    assert payload["exp"] - payload["iat"] == 24 * 3600


async def test_minted_service_token_is_the_edges_own(fakeedge: FakeEdgeFactory) -> None:
    edge = await fakeedge(config=_config(_origin()))
    headers = {"CF-Access-Client-Id": BOT_ID, "CF-Access-Client-Secret": BOT_SECRET}
    async with edge.client().get(edge.url("Admin"), headers=headers) as resp:
        own = await resp.text()
    minted = edge.mint(app="Admin", service_token="ci")
    assert _shape(minted) == _shape(own)
    assert list(_parts(minted)[0]) == ["kid", "alg", "typ"]
    segment = minted.split(".")[1]
    assert "\\/" in base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)).decode()  # spec §2.3


@pytest.mark.parametrize(
    ("listeners", "team_domain"),
    [
        ({"listen": "127.0.0.1:8787", "tls_listen": "127.0.0.1:8443"}, "https://127.0.0.1:8443"),
        ({"tls_listen": "0.0.0.0:8443"}, "https://127.0.0.1:8443"),
        ({"listen": "0.0.0.0:80"}, "http://127.0.0.1"),
        ({"listen": "[::]:8787"}, "http://[::1]:8787"),
    ],
    ids=["tls-and-plain", "tls-only", "default-port", "ipv6"],
)
def test_fakeedge_token_signs_for_the_team_domain_serve_uses(
    tmp_path: Path, listeners: dict[str, str], team_domain: str
) -> None:
    """``fakeedge token``'s iss, ``fakeedge env``'s team domain and ``serve``'s default are one rule."""
    cfg = _config(_origin())
    cfg["ingress"][0]["service"] = "http://127.0.0.1:9"
    path = tmp_path / "fakeedge.yml"
    path.write_text(yaml.safe_dump({**cfg, **listeners, "keys_dir": str(tmp_path / "keys")}))
    runner = CliRunner()
    token = runner.invoke(main, ["token", "--config", str(path), "--email", "alice@acme.test", "--app", "Admin"])
    assert token.exit_code == 0, token.output
    assert _parts(token.output.strip())[1]["iss"] == team_domain
    env = runner.invoke(main, ["env", "--config", str(path)])
    assert env.exit_code == 0, env.output
    assert shlex.split(env.output.splitlines()[0]) == [f"FAKEEDGE_TEAM_DOMAIN={team_domain}"]
