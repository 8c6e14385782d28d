"""Origins for toolkit tests: real aiohttp apps that verify what the edge sends, as users' origins do."""

from __future__ import annotations

import asyncio
from typing import Any

import jwt
from aiohttp import web

from .conftest import base_config

hits_key = web.AppKey("hits_key", list)


def whoami() -> web.Application:
    """An origin that answers with the path, the email header and the assertion it received."""

    async def handle(request: web.Request) -> web.Response:
        request.app[hits_key].append(request.path_qs)
        return web.json_response(
            {
                "path": request.path_qs,
                "email": request.headers.get("Cf-Access-Authenticated-User-Email"),
                "assertion": request.headers.get("Cf-Access-Jwt-Assertion"),
            }
        )

    app = web.Application()
    app[hits_key] = []
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def config_for(app: Any) -> dict[str, Any]:
    """The shared test config (Admin, Sentry, Grafana, public) with ``app`` as every origin's service."""
    cfg = base_config("http://127.0.0.1:9")
    for rule in cfg["ingress"]:
        if rule["service"].startswith("http://"):
            rule["service"] = app
    return cfg


def verify_sync(certs_url: str, token: str, *, audience: str, issuer: str, **client: Any) -> dict[str, Any]:
    """PyJWT's standard verification: the key from PyJWKClient by kid, then RS256, exp, nbf, iat, aud, iss."""
    jwks = jwt.PyJWKClient(certs_url, **({"cache_jwk_set": False} | client))
    key = jwks.get_signing_key_from_jwt(token)
    claims: dict[str, Any] = jwt.decode(token, key.key, algorithms=["RS256"], audience=audience, issuer=issuer)
    return claims


async def verify(certs_url: str, token: str, *, audience: str, issuer: str, **client: Any) -> dict[str, Any]:
    """:func:`verify_sync` in a thread: urllib must not block the loop that also runs the edge."""
    return await asyncio.to_thread(verify_sync, certs_url, token, audience=audience, issuer=issuer, **client)


class Verifier:
    """An origin's JWT check: PyJWKClient on the edge's certs, then RS256, aud and iss.

    Built before the edge starts (the origin is part of its config) and pointed at the edge once
    it runs; counts the times it fetched certs.
    """

    def __init__(self, **client: Any) -> None:
        self.client = client
        self.fetches = 0
        self.jwks: jwt.PyJWKClient | None = None
        self.audience = self.issuer = ""

    def point_at(self, certs_url: str, *, audience: str, issuer: str) -> None:
        verifier = self

        class CountingClient(jwt.PyJWKClient):
            def fetch_data(self) -> Any:
                verifier.fetches += 1
                return super().fetch_data()

        self.jwks = CountingClient(certs_url, **self.client)
        self.audience, self.issuer = audience, issuer

    def check(self, token: str) -> dict[str, Any]:
        assert self.jwks is not None, "point_at() first"
        key = self.jwks.get_signing_key_from_jwt(token)
        claims: dict[str, Any] = jwt.decode(
            token, key.key, algorithms=["RS256"], audience=self.audience, issuer=self.issuer
        )
        return claims


def verifying_origin(verifier: Verifier) -> web.Application:
    """An origin that verifies ``Cf-Access-Jwt-Assertion``: 200 with the email and kid, or 401 with PyJWT's error."""

    async def handle(request: web.Request) -> web.Response:
        token = request.headers.get("Cf-Access-Jwt-Assertion")
        if token is None:
            return web.json_response({"error": "no assertion"}, status=401)
        try:
            claims = await asyncio.to_thread(verifier.check, token)
        except jwt.PyJWTError as exc:
            return web.json_response({"error": f"{type(exc).__name__}: {exc}"}, status=401)
        return web.json_response({"email": claims.get("email"), "kid": jwt.get_unverified_header(token)["kid"]})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app
