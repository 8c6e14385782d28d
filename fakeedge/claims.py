"""Access JWT payloads exactly as Cloudflare issues them (spec §2). Pure: callers pass ``now``."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Mapping
from typing import Any

__all__ = [
    "app_session_hash",
    "identity_nonce",
    "match_claims",
    "meta_claims",
    "service_claims",
    "user_claims",
]


def identity_nonce() -> str:
    """16 characters of ``[A-Za-z0-9]``, the session's key for get-identity (spec §2.2).

    Base64 of random bytes with ``+`` and ``/`` dropped: each character left is uniform over the
    62, as with ``secrets.choice``, at a twentieth of its cost (one per sign-in, issue 16).
    """
    while True:
        text = base64.b64encode(secrets.token_bytes(24)).translate(None, b"+/")
        if len(text) >= 16:  # 32 characters, of which about 31 are kept
            return text[:16].decode()


def user_claims(
    *,
    aud: str,
    email: str,
    now: int,
    exp: int,
    iss: str,
    nonce: str,
    sub: str,
    country: str,
    token_type: str = "app",
    custom: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A user app token (``type: app``) or org session token (``type: org``), spec §2.2 key order."""
    claims: dict[str, Any] = {
        "aud": [aud],
        "email": email,
        "exp": exp,
        "iat": now,
        "nbf": now,
        "iss": iss,
        "type": token_type,
        "identity_nonce": nonce,
        "sub": sub,
        "country": country,
    }
    if custom:
        # Custom OIDC/SAML claims travel in `custom` (spec §2.2: community consensus)
        claims["custom"] = dict(custom)
    return claims


def service_claims(*, aud: str, now: int, exp: int, iss: str, common_name: str) -> dict[str, Any]:
    """A service-token app token (spec §2.3): ``aud`` a plain string, ``sub`` empty, no ``nbf``."""
    return {"type": "app", "aud": aud, "exp": exp, "iss": iss, "common_name": common_name, "iat": now, "sub": ""}


def meta_claims(
    *, aud: str, hostname: str, redirect_url: str, now: int, country: str, app_session: str, service_token_status: bool
) -> dict[str, Any]:
    """The ``meta`` JWT of the login redirect (spec §1.2), valid for five minutes."""
    return {
        "type": "meta",
        "aud": aud,
        "hostname": hostname,
        "redirect_url": redirect_url,
        "service_token_status": service_token_status,
        "is_warp": False,
        "is_gateway": False,
        "exp": now + 300,
        "nbf": now,
        "iat": now,
        "auth_status": "NONE",
        "mtls_auth": {
            "cert_issuer_dn": "",
            "cert_serial": "",
            "cert_issuer_ski": "",
            "cert_presented": False,
            "common_name": "",
            "auth_status": "NONE",
        },
        "real_country": country,
        "app_session_hash": app_session_hash(app_session),
    }


def match_claims(*, aud: str, hostname: str, app_hostname: str, auth_domain: str, now: int) -> dict[str, Any]:
    """The ``cf-access-metadata`` JWT (type ``match``) cloudflared asks for since Aug 2026 (spec §2.5)."""
    return {
        "type": "match",
        "aud": aud,
        "hostname": hostname,
        "app_hostname": app_hostname,
        "auth_domain": auth_domain,
        "iat": now,
        "exp": now + 300,
    }


def app_session_hash(app_session: str) -> str:
    """SHA-256 of the ``CF_AppSession`` value (spec §1.2: the input is our choice)."""
    return hashlib.sha256(app_session.encode()).hexdigest()
