"""The one place that signs and verifies JWTs.

Signing is done by hand rather than through ``jwt.encode`` so that the header and payload keep
Cloudflare's member order byte for byte (spec §2.1: user tokens ``{alg,kid}``, service tokens
``{kid,alg,typ}``). Verification uses PyJWT, as origins do.
"""

from __future__ import annotations

import base64
import hmac
import json
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .keys import KeyStore, SigningKey


def secrets_equal(given: str, expected: str) -> bool:
    """Compare a client-supplied secret in constant time, whatever characters it holds.

    ``hmac.compare_digest`` refuses non-ASCII ``str``; encoding both sides (lone surrogates
    included, as undecodable header bytes arrive) keeps odd input an ordinary mismatch.
    """
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _json(obj: Any, *, escape_slashes: bool = False) -> bytes:
    text = json.dumps(obj, separators=(",", ":"))
    if escape_slashes:
        # real service-token payloads escape '/' ("https:\/\/team...") (spec §2.3); same JSON value
        text = text.replace("/", "\\/")
    return text.encode()


def sign(
    payload: dict[str, Any],
    key: SigningKey,
    *,
    header: dict[str, Any] | None = None,
    escape_slashes: bool = False,
    private_key: rsa.RSAPrivateKey | None = None,
) -> str:
    """RS256-sign ``payload``. ``header`` defaults to the user-token shape (:func:`user_header`).

    ``private_key`` signs with another key while keeping ``key``'s kid (a forged token).
    """
    head = header if header is not None else user_header(key)
    signing_input = f"{b64url(_json(head))}.{b64url(_json(payload, escape_slashes=escape_slashes))}"
    signature = (private_key or key.private_key).sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url(signature)}"


def user_header(key: SigningKey) -> dict[str, Any]:
    """The user-token header (app and org tokens): no ``typ`` (spec §2.1)."""
    return {"alg": "RS256", "kid": key.kid}


def service_header(key: SigningKey) -> dict[str, Any]:
    """The service-token header, in the order real ones have (spec §2.1)."""
    return {"kid": key.kid, "alg": "RS256", "typ": "JWT"}


def verify(token: str, store: KeyStore, now: float, *, leeway: float = 0) -> tuple[str, dict[str, Any]] | None:
    """The kid and claims of a token this edge signed and that is valid at ``now`` (exp, nbf); else None.

    The caller checks ``aud`` and the session; expiry is checked against the edge clock, not the
    wall clock, so that a test can move time. ``leeway`` accepts a token that expired that many
    seconds ago.
    """
    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except jwt.PyJWTError:
        return None
    if not isinstance(kid, str):
        return None
    key = store.find(kid, now)
    if key is None:
        return None
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key.public_key,
            algorithms=["RS256"],
            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False, "verify_aud": False},
        )
    except jwt.PyJWTError:
        return None
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or exp <= now - leeway:
        return None
    nbf = claims.get("nbf")
    if isinstance(nbf, int | float) and nbf > now:
        return None  # not valid yet on the edge's clock, as a verifying origin would judge it (spec §10)
    return kid, claims
