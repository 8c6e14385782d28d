"""The built-in demo: one protected app on ``localhost`` in front of a whoami origin.

The app lives on ``localhost`` and the team domain on ``127.0.0.1``, two different hosts to a
browser, so the whole flow runs in a stock browser without touching ``/etc/hosts``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from html import escape
from typing import Any

import aiohttp
import jwt
from aiohttp import web

from . import headers as h
from .config import Config, parse_config
from .keys import user_cache_dir

DEMO_APP = "Demo app"
DEMO_CLIENT_ID = "0123456789abcdef0123456789abcdef.access"
DEMO_CLIENT_SECRET = "demo-secret-not-for-production"
# what the demo's policy admits, said on its sign-in page and in the README
DEMO_ADMITS = "Demo: any @example.com address gets in; any other address gets the block page."


def demo_config(origin_url: str, listen: tuple[str, int]) -> Config:
    """The demo's config, with the whoami origin at ``origin_url``."""
    keys_dir = user_cache_dir() / "fakeedge" / "demo-keys"
    raw: dict[str, Any] = {
        "team": "demo",
        "branding": {"description": DEMO_ADMITS},
        "listen": f"{listen[0]}:{listen[1]}",
        "keys_dir": str(keys_dir),
        "users": [
            {
                "email": "alice@example.com",
                "name": "Alice (admin)",
                "groups": ["admins"],
                "github_orgs": ["example"],
                "country": "GB",
            },
            {"email": "bob@example.com", "name": "Bob", "country": "US"},
            {"email": "mallory@evil.test", "name": "Mallory (will be blocked)", "country": "RU"},
        ],
        "service_tokens": [{"name": "demo-bot", "client_id": DEMO_CLIENT_ID, "client_secret": DEMO_CLIENT_SECRET}],
        "apps": [
            {
                "name": DEMO_APP,
                "domain": "localhost",
                "session_duration": "24h",
                "policies": [
                    {
                        "name": "example staff",
                        "decision": "allow",
                        "include": [{"email_domain": {"domain": "example.com"}}],
                    },
                    {
                        "name": "bots",
                        "decision": "non_identity",
                        "include": [{"service_token": {"token_id": "demo-bot"}}],
                    },
                ],
            }
        ],
        "ingress": [{"hostname": "localhost", "service": origin_url}, {"service": "http_status:404"}],
    }
    return parse_config(raw, source="<built-in demo>")


# the whoami origin's port is only known once serving; port 9 (discard) stands for it, as a
# service URL must name a real port
DEMO_ORIGIN_UNKNOWN = "http://127.0.0.1:9"


def offline_demo_config() -> Config:
    """The demo's config for commands that do not serve (``token``, ``explain``, ``keys``): its
    default listener, so tokens carry the ``iss`` a default ``fakeedge serve`` has, and its keys."""
    return demo_config(DEMO_ORIGIN_UNKNOWN, ("127.0.0.1", 8787))


class _Verifier:
    """Verifies assertions the way an origin should: PyJWT against the team domain's certs."""

    def __init__(self) -> None:
        self.jwks: jwt.PyJWKSet | None = None

    async def verify(self, token: str, issuer: str, audience: str, session: aiohttp.ClientSession) -> dict[str, Any]:
        kid = jwt.get_unverified_header(token).get("kid")
        if self.jwks is None or kid not in {k.key_id for k in self.jwks.keys}:
            async with session.get(f"{issuer}/cdn-cgi/access/certs") as resp:
                self.jwks = jwt.PyJWKSet.from_dict(await resp.json())
        key = next((k for k in self.jwks.keys if k.key_id == kid), None)
        if key is None:
            raise jwt.InvalidKeyError(f"no key {kid!r} in {issuer}/cdn-cgi/access/certs")
        claims: dict[str, Any] = jwt.decode(token, key.key, algorithms=["RS256"], audience=audience, issuer=issuer)
        return claims


def whoami_app(issuer: Callable[[], str], audience: str) -> web.Application:
    """An origin that shows the headers it received and the verified, decoded assertion.

    Args:
        issuer: returns the team domain, as an origin's configuration would hold it; the
            assertion must carry it as ``iss`` and be signed by a key from its certs.
        audience: the app's AUD tag, which the assertion's ``aud`` must hold.
    """
    app = web.Application()
    verifier = _Verifier()

    async def handle(request: web.Request) -> web.Response:
        if request.path == "/favicon.ico":
            return web.Response(status=204)  # not a page: no whoami for the browser's icon request
        token = request.headers.get(h.JWT_ASSERTION)
        verdict: str
        team = issuer()
        claims: dict[str, Any] | None = None
        if token is None:
            verdict = "no Cf-Access-Jwt-Assertion header: this request did not come through Access"
        else:
            try:
                async with aiohttp.ClientSession() as session:
                    claims = await verifier.verify(token, team, audience, session)
                verdict = f"verified by PyJWT against {team}/cdn-cgi/access/certs (signature, aud, iss, exp)"
            except (jwt.PyJWTError, aiohttp.ClientError, KeyError) as exc:
                verdict = f"REJECTED: {type(exc).__name__}: {exc}"
        if "application/json" in request.headers.get("Accept", ""):
            return web.json_response({"headers": dict(request.headers), "assertion": claims, "verdict": verdict})
        rows = "".join(
            f"<tr><th>{escape(k)}</th><td><code>{escape(v)}</code></td></tr>" for k, v in request.headers.items()
        )
        who = (
            escape(claims["email"])
            if claims and claims.get("email")
            else escape(str(claims.get("common_name")))
            if claims
            else "nobody"
        )
        body = f"""<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>whoami · {who}</title>
<style>body{{font:15px/1.5 system-ui,sans-serif;margin:2rem;max-width:70rem}}th{{text-align:left;padding-right:1rem;vertical-align:top}}
td code{{word-break:break-all}}pre{{background:#8881;padding:1rem;overflow:auto}}</style></head><body>
<h1>Hello, <span id="who">{who}</span></h1>
<p id="verdict">{escape(verdict)}</p>
<h2>Verified assertion</h2><pre id="assertion">{escape(json.dumps(claims, indent=2)) if claims else "none"}</pre>
<h2>Headers the origin received</h2><table>{rows}</table>
<p><a href="/cdn-cgi/access/get-identity">get-identity</a> · <a href="/cdn-cgi/access/logout">log out</a></p>
</body></html>"""
        return web.Response(text=body, content_type="text/html")

    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def start_whoami(
    issuer: Callable[[], str], audience: str, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, str]:
    """Start the whoami origin on a free port; returns the runner and its URL."""
    runner = web.AppRunner(whoami_app(issuer, audience), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    bound_port = runner.addresses[0][1]
    return runner, f"http://{host}:{bound_port}"
