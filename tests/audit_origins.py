"""Origins for the audit's tests: one correct verifier and one deliberately flawed one per flaw.

Each is a real aiohttp app that verifies with PyJWT's ``PyJWKClient`` against the edge's certs,
the way teams write them; a flaw is one wrong line in an otherwise correct check. ``FLAWS`` maps
each flaw to the audit rows that must catch it and no others.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from jwt.types import Options

from fakeedge.audit import TOKEN_CASES
from fakeedge.testing import FakeEdge

SIGNATURE_CASES = frozenset({"foreign_key", "unknown_kid", "alg_none", "hs256_public_key", "tampered"})
REFUSE_CASES = frozenset(
    {"no_assertion", "email_header_only", *TOKEN_CASES, "certs_failing", "certs_empty", "certs_slow"}
) - {"no_kid"}

FLAWS: dict[str, frozenset[str]] = {
    "trusts_email_header": frozenset({"email_header_only", "email_header_disagrees"}),
    "email_over_token": frozenset({"email_header_disagrees"}),
    "no_aud": frozenset({"wrong_aud", "other_app"}),
    "no_iss": frozenset({"wrong_iss"}),
    "alg_none": frozenset({"alg_none"}),
    "ignores_exp": frozenset({"expired"}),
    "ignores_nbf": frozenset({"not_yet_valid"}),
    "any_key": frozenset({"unknown_kid"}),
    "fails_open_certs": frozenset({"certs_failing", "certs_empty", "certs_slow"}),
    "hs256": frozenset({"hs256_public_key"}),
    "service_token_as_user": frozenset({"service_token"}),
    # it never needs a key, so a token whose key is unreachable passes too
    "no_signature": SIGNATURE_CASES | {"certs_failing", "certs_empty", "certs_slow"},
    "cookie_unverified": frozenset(TOKEN_CASES) - {"no_kid"},
    "serves_anyone": REFUSE_CASES | {"email_header_disagrees"},
}
# the flaws that also take a genuinely signed token without a kid: a warning, not a failure
NO_KID_ACCEPTED = frozenset({"any_key", "no_signature", "cookie_unverified", "serves_anyone"})
CERTS_TIMEOUT = 4.0  # the origins' certs fetch timeout: generous on a loaded machine (2 s timed out under load); certs_slow stalls longer


class Refused(Exception):
    pass


class Checker:
    """An origin's Access check with at most one flaw; ``flaw=None`` is the correct one."""

    def __init__(self, issuer: str, audience: str, flaw: str | None, *, cooldown: float = 0.0) -> None:
        assert flaw is None or flaw in FLAWS, flaw
        self.flaw = flaw
        self.audience = audience
        self.issuer = issuer
        # cooldown 0: refetch on every unknown kid, so that a rotated key is found at once (PyJWT's default waits 30 s)
        certs = f"{issuer}/cdn-cgi/access/certs"
        self.jwks = jwt.PyJWKClient(certs, timeout=CERTS_TIMEOUT, cooldown_duration=cooldown)

    def identity(self, headers: Any, cookie: str | None) -> str:
        """The user's email, or Refused."""
        header_email = headers.get("Cf-Access-Authenticated-User-Email")
        if self.flaw == "trusts_email_header":
            if not header_email:
                raise Refused("no email header")
            return str(header_email)
        if self.flaw == "serves_anyone":
            return str(header_email or "")
        token = headers.get("Cf-Access-Jwt-Assertion")
        if token is None and cookie is not None:
            if self.flaw == "cookie_unverified":
                return str(jwt.decode(cookie, options={"verify_signature": False}).get("email"))
            token = cookie
        if not token:
            raise Refused("no token")
        claims = self.verify(token)
        if self.flaw == "service_token_as_user":
            return str(claims.get("email") or claims.get("common_name"))
        if not claims.get("sub") or not claims.get("email"):
            raise Refused("not a user token")
        if self.flaw == "email_over_token" and header_email:
            return str(header_email)
        return str(claims["email"])

    def verify(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Refused(str(exc)) from None
        checks: Options = {"require": ["exp", "iat", "iss", "aud"]}
        if self.flaw == "ignores_exp":
            checks["verify_exp"] = False
        if self.flaw == "ignores_nbf":
            checks["verify_nbf"] = checks["verify_iat"] = False
        if self.flaw == "no_aud":
            checks["verify_aud"] = False
        audience = self.audience
        issuer = None if self.flaw == "no_iss" else self.issuer
        if self.flaw == "no_signature" or (self.flaw == "alg_none" and header.get("alg") == "none"):
            checks.update({"verify_signature": False, "verify_exp": True, "verify_nbf": True, "verify_aud": True, "verify_iss": True})
            return self.decode(token, None, checks, audience, issuer)
        if self.flaw == "hs256" and header.get("alg") == "HS256":
            return self.hs256(token, header)
        if self.flaw == "any_key":
            for refresh in (False, True):
                for key in self.jwks.get_signing_keys(refresh=refresh):
                    try:
                        return self.decode(token, key.key, checks, audience, issuer)
                    except Refused:
                        continue
            raise Refused("no key verifies")
        try:
            key = self.jwks.get_signing_key_from_jwt(token)
        except (jwt.PyJWKClientError, jwt.PyJWKSetError) as exc:
            if self.flaw == "fails_open_certs" and "Unable to find a signing key" not in str(exc):
                # the flaw: "certs are down, let them in rather than lock everyone out"
                checks.update({"verify_signature": False, "verify_exp": True, "verify_aud": True, "verify_iss": True})
                return self.decode(token, None, checks, audience, issuer)
            raise Refused(f"{type(exc).__name__}: {exc}") from None
        return self.decode(token, key.key, checks, audience, issuer)

    def decode(self, token: str, key: Any, checks: Options, audience: str, issuer: str | None) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=["RS256"], audience=audience, issuer=issuer, options=checks
            )
        except jwt.PyJWTError as exc:
            raise Refused(f"{type(exc).__name__}: {exc}") from None
        return claims

    def hs256(self, token: str, header: dict[str, Any]) -> dict[str, Any]:
        """The flaw: HS256 with the JWK's public key as the secret (what a "key or secret" verifier does)."""
        key = self.jwks.get_signing_key(str(header.get("kid")))
        pem = key.key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        signing_input, _, signature = token.rpartition(".")
        expected = jwt.utils.base64url_encode(hmac.new(pem, signing_input.encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(expected, signature.encode()):
            raise Refused("bad HS256 signature")
        claims: dict[str, Any] = json.loads(jwt.utils.base64url_decode(signing_input.split(".")[1]))
        return claims


def audit_origin(app: str, flaw: str | None = None, **options: Any) -> Callable[[FakeEdge], web.Application]:
    """An ingress ``service`` for the fakeedge fixture: the origin, pointed at the running edge."""
    return lambda edge: origin_app(edge.team_domain, edge.aud(app), flaw, **options)


def origin_app(issuer: str, audience: str, flaw: str | None = None, **options: Any) -> web.Application:
    """The origin: ``GET /api/me`` answers ``{"email": ...}`` for a user it accepts, else 401."""
    checker = Checker(issuer, audience, flaw, **options)

    async def handle(request: web.Request) -> web.Response:
        cookie = request.cookies.get("CF_Authorization")
        try:
            # PyJWKClient fetches with urllib: in a thread, not in the loop that also runs the edge
            email = await asyncio.to_thread(checker.identity, request.headers, cookie)
        except (Refused, jwt.PyJWTError) as exc:
            return web.Response(status=401, text=f"Authentication error: {exc}")
        return web.json_response({"email": email})

    web_app = web.Application()
    web_app.router.add_get("/api/me", handle)
    return web_app
