"""Tokens on demand: what the edge issues, and the broken ones an origin must refuse (spec §2, §10).

Every variant has a name, used alike by ``FakeEdge.mint(variant=...)``, the CLI flags
(``fakeedge token --wrong-aud``) and the control API (``{"variant": "wrong_aud"}``).

Light at import time (the CLI reads :data:`VARIANTS` to build its flags): PyJWT and
cryptography are imported when a token is signed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from functools import cache
from typing import TYPE_CHECKING, Any, Literal, assert_never, get_args

from .config import Config, parse_duration
from .errors import FakeEdgeError, did_you_mean

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import rsa

    from .edge import Edge
    from .keys import SigningKey

__all__ = [
    "GOOD_VARIANTS",
    "TAMPERED_CLIENT_ID",
    "TAMPERED_EMAIL",
    "VARIANTS",
    "Variant",
    "check_variant",
    "mint",
    "offline_edge",
]

Variant = Literal[
    "valid",
    "aud_string",
    "aud_array",
    "expired",
    "not_yet_valid",
    "wrong_aud",
    "wrong_iss",
    "foreign_key",
    "unknown_kid",
    "no_kid",
    "alg_none",
    "hs256_public_key",
    "tampered",
]

VARIANTS: dict[Variant, str] = {
    "valid": "what the edge issues: a user token (spec §2.2) or a service-token token (spec §2.3)",
    "aud_string": "valid, with aud a plain string (the shape service tokens carry)",
    "aud_array": "valid, with aud a one-element array (the shape user tokens carry)",
    "expired": "exp one hour ago (iat and nbf one lifetime before that)",
    "not_yet_valid": "iat and nbf one hour from now",
    "wrong_aud": "aud of no app on this edge",
    "wrong_iss": "iss of another team: https://not-<team>.cloudflareaccess.com",
    "foreign_key": "the current key's kid, signed by a key that is not in certs (a forgery)",
    "unknown_kid": "signed by the current key, with a kid that no key in certs has",
    "no_kid": "signed by the current key, with no kid in the header",
    "alg_none": 'alg "none" and an empty signature',
    "hs256_public_key": "HS256 with the current public key's PEM as the HMAC secret (algorithm confusion)",
    "tampered": "signed, then the payload changed: email (users) or common_name (service tokens)",
}
GOOD_VARIANTS: frozenset[Variant] = frozenset({"valid", "aud_string", "aud_array"})
assert set(VARIANTS) == set(get_args(Variant))

SKEW = 3600  # how far expired / not_yet_valid tokens are from now: beyond any verifier's leeway
TAMPERED_EMAIL = "attacker@evil.test"
TAMPERED_CLIENT_ID = "0" * 32 + ".access"


def check_variant(name: str) -> Variant:
    """``name`` as a :data:`Variant`, accepting the CLI's dashes (``wrong-aud``).

    Raises:
        ValueError: not a variant; the message lists them.
    """
    wanted = name.replace("-", "_")
    for variant in VARIANTS:
        if variant == wanted:
            return variant
    raise ValueError(
        f"unknown token variant {name!r}{did_you_mean(wanted, list(VARIANTS))} valid: {', '.join(VARIANTS)}"
    )


def mint(
    edge: Edge,
    *,
    app: str,
    email: str | None = None,
    service_token: str | None = None,
    variant: str = "valid",
    claims: Mapping[str, Any] | None = None,
    header: Mapping[str, Any] | None = None,
    lifetime: float | str | None = None,
) -> str:
    """A token for ``app``, signed (or deliberately mis-signed) the way ``variant`` names.

    A valid user token belongs to a real session of ``edge``: the edge accepts it too, as a
    ``CF_Authorization`` cookie or a ``Cf-Access-Token`` header.

    Args:
        edge: the edge whose keys, clock and team domain (``iss``) the token uses.
        app: the app's name; its AUD goes in ``aud``.
        email: a user token for this address (attributes from the config's persona, if any).
        service_token: a service-token token for this service token's name, id or client id.
        variant: one of :data:`VARIANTS`.
        claims: claims to set after the variant is applied; a value of ``None`` removes the claim.
        header: header members to set the same way (before signing).
        lifetime: ``exp - iat``, seconds or a duration such as ``10m`` (default: the app's
            ``session_duration``).

    Raises:
        UnknownName: no such app or service token.
        ValueError: an unknown variant, a bad lifetime, or not exactly one of ``email`` and
            ``service_token``.
    """
    chosen = check_variant(variant)
    if (email is None) == (service_token is None):
        raise ValueError("mint(): give email=... for a user token or service_token=... for a service token, not both")
    from . import tokens

    target = edge.app(app)
    now = int(edge.clock.now())
    life = int(target.session_duration if lifetime is None else parse_duration(lifetime))
    key = edge.keys.current
    # the payload and header the edge itself issues (Edge.user_claims, Edge.service_claims), then the variant
    if email is not None:
        payload = edge.user_claims(edge.login(edge.identity(email)), target.aud, now, now + life)
        head = tokens.user_header(key)
        escape = False
    else:
        assert service_token is not None
        payload = edge.service_claims(edge.service_token_named(service_token), target.aud, now, now + life)
        head = tokens.service_header(key)
        escape = True  # spec §2.3: real service tokens escape '/'
    _apply(chosen, payload, head, now=now, life=life, team=edge.config.team)
    _override(payload, claims)
    _override(head, header)
    return _encode(chosen, head, payload, key, escape=escape)


def _apply(variant: Variant, payload: dict[str, Any], head: dict[str, Any], *, now: int, life: int, team: str) -> None:
    """The claim and header changes of ``variant``; the signature is :func:`_encode`'s business."""
    match variant:
        case "aud_string":
            payload["aud"] = _first(payload["aud"])
        case "aud_array":
            payload["aud"] = [_first(payload["aud"])]
        case "expired":
            payload["iat"] = now - SKEW - life
            payload["exp"] = now - SKEW
            if "nbf" in payload:
                payload["nbf"] = payload["iat"]
        case "not_yet_valid":
            payload["iat"] = payload["nbf"] = now + SKEW
            payload["exp"] = now + SKEW + life
        case "wrong_aud":
            other = hashlib.sha256(f"fakeedge:wrong-aud:{_first(payload['aud'])}".encode()).hexdigest()
            payload["aud"] = [other] if isinstance(payload["aud"], list) else other
        case "wrong_iss":
            payload["iss"] = f"https://not-{team}.cloudflareaccess.com"
        case "unknown_kid":
            head["kid"] = secrets.token_hex(32)
        case "no_kid":
            del head["kid"]
        case "alg_none":
            head["alg"] = "none"
        case "hs256_public_key":
            head["alg"] = "HS256"
        case "valid" | "foreign_key" | "tampered":
            pass  # the payload as issued: what changes is the signature (_encode)
        case _:
            assert_never(variant)


def _first(aud: Any) -> Any:
    return aud[0] if isinstance(aud, list) and aud else aud


def _override(target: dict[str, Any], values: Mapping[str, Any] | None) -> None:
    for name, value in (values or {}).items():
        if value is None:
            target.pop(name, None)
        else:
            target[name] = value


def _segment(obj: Mapping[str, Any], *, escape_slashes: bool = False) -> str:
    from .tokens import b64url

    text = json.dumps(obj, separators=(",", ":"))
    if escape_slashes:
        text = text.replace("/", "\\/")
    return b64url(text.encode())


def _encode(variant: Variant, head: dict[str, Any], payload: dict[str, Any], key: SigningKey, *, escape: bool) -> str:
    from cryptography.hazmat.primitives import serialization

    from . import tokens

    match variant:
        case "foreign_key":
            return tokens.sign(payload, key, header=head, escape_slashes=escape, private_key=_foreign_key())
        case "alg_none":
            return f"{_segment(head)}.{_segment(payload, escape_slashes=escape)}."
        case "hs256_public_key":
            # built by hand: PyJWT refuses a PEM as an HMAC secret, which is the point of the attack
            signing_input = f"{_segment(head)}.{_segment(payload, escape_slashes=escape)}"
            pem = key.public_key.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
            return f"{signing_input}.{tokens.b64url(signature)}"
        case "tampered":
            signed = tokens.sign(payload, key, header=head, escape_slashes=escape)
            changed = dict(payload)
            if "email" in changed or changed.get("sub"):
                changed["email"] = TAMPERED_EMAIL
            else:
                changed["common_name"] = TAMPERED_CLIENT_ID
            head_segment, _, kept_signature = signed.split(".")
            return f"{head_segment}.{_segment(changed, escape_slashes=escape)}.{kept_signature}"
    return tokens.sign(payload, key, header=head, escape_slashes=escape)


@cache
def _foreign_key() -> rsa.RSAPrivateKey:
    """One RSA key per process that no fakeedge certs document ever lists."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def offline_edge(config: Config) -> Edge:
    """An edge that does not serve, for minting from the command line with the config's keys.

    Its team domain (the tokens' ``iss``) is the config's ``team_domain``, else the one
    ``fakeedge serve`` would use (:func:`fakeedge.env.team_domain`).

    Raises:
        FakeEdgeError: neither gives a team domain (the listener on port 0).
    """
    from .edge import Edge
    from .env import team_domain
    from .errors import ConfigError

    edge = Edge.create(config)
    if not edge.team_domain:
        try:
            edge.team_domain = team_domain(config)
        except ConfigError:
            raise FakeEdgeError(
                f"{config.source}: the team domain (the tokens' iss) is only known once the edge runs "
                f"({'tls_listen' if config.tls_listen else 'listen'} port 0); "
                "set team_domain, or ask the running edge: POST /cdn-cgi/fakeedge/token"
            ) from None
    return edge
