"""Exact wire names of the headers and cookies Cloudflare Access uses (spec §1, §2.6, §5, §8)."""

from __future__ import annotations

from typing import Final

# Cookies (spec §1.5)
CF_AUTHORIZATION: Final = "CF_Authorization"
CF_APP_SESSION: Final = "CF_AppSession"
CF_BINDING: Final = "CF_Binding"
CF_SESSION: Final = "CF_Session"

# Request headers the edge sets for the origin (spec §2.6, §8)
JWT_ASSERTION: Final = "Cf-Access-Jwt-Assertion"
AUTHENTICATED_USER_EMAIL: Final = "Cf-Access-Authenticated-User-Email"
CONNECTING_IP: Final = "CF-Connecting-IP"
IP_COUNTRY: Final = "CF-IPCountry"
RAY: Final = "CF-Ray"
VISITOR: Final = "CF-Visitor"
CDN_LOOP: Final = "CDN-Loop"
X_FORWARDED_FOR: Final = "X-Forwarded-For"
X_FORWARDED_PROTO: Final = "X-Forwarded-Proto"
X_FORWARDED_HOST: Final = "X-Forwarded-Host"

# Credentials a client presents (spec §5, §9.2)
CLIENT_ID: Final = "CF-Access-Client-Id"
CLIENT_SECRET: Final = "CF-Access-Client-Secret"
ACCESS_TOKEN: Final = "Cf-Access-Token"
X_REQUESTED_WITH: Final = "X-Requested-With"
METADATA_REQUEST: Final = "cf-access-metadata-request"
METADATA: Final = "cf-access-metadata"

# Response headers on Access-generated answers (spec §1.3, §1.8)
ACCESS_AUD: Final = "cf-access-aud"
ACCESS_DOMAIN: Final = "cf-access-domain"

# Lower-cased names removed from every client request before anything else looks at it:
# a client must not be able to claim an identity, an address or a country (spec §2.6, §8).
SPOOFABLE_EXACT: Final = frozenset(
    {
        "cf-connecting-ip",
        "cf-connecting-ipv6",
        "cf-pseudo-ipv4",
        "cf-ipcountry",
        "cf-ray",
        "cf-visitor",
        "cf-worker",
        "cf-ew-via",
        "true-client-ip",
        "x-real-ip",
        "cdn-loop",
    }
)
SPOOFABLE_PREFIX: Final = "cf-access-"

# Hop-by-hop headers (RFC 9110 §7.6.1) never copied between the two connections.
HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

# Headers the edge sets for the origin (spec §2.6, §8), lower-cased: whatever the client sent under
# these names is replaced (X-Forwarded-For appended to)
EDGE_SET: Final = frozenset(
    name.lower()
    for name in (
        JWT_ASSERTION,
        AUTHENTICATED_USER_EMAIL,
        CONNECTING_IP,
        IP_COUNTRY,
        RAY,
        VISITOR,
        CDN_LOOP,
        X_FORWARDED_FOR,
        X_FORWARDED_PROTO,
        X_FORWARDED_HOST,
    )
)


def edge_headers(ray: str) -> dict[str, str]:
    """Headers on every response the edge sends, its own pages and the origin's answers alike."""
    return {"Server": "cloudflare", RAY: ray}
