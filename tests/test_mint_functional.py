"""Minted tokens against PyJWT's standard verification (PyJWKClient on the served certs) and the edge.

The table is the documentation: which check of a stock origin catches each bad variant.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from fakeedge.errors import UnknownName
from fakeedge.mint import GOOD_VARIANTS, TAMPERED_EMAIL, VARIANTS
from fakeedge.testing import FakeEdge, FakeEdgeFactory

from .origins import config_for, verify, whoami

# variant -> (what standard verification raises, its message, the check that catches it); None: accepted
TABLE: dict[str, tuple[type[Exception], str, str] | None] = {
    "valid": None,
    "aud_string": None,  # PyJWT takes aud as a string or a list, as every verifier in spec §10 does
    "aud_array": None,
    "expired": (jwt.ExpiredSignatureError, "Signature has expired", "exp"),
    "not_yet_valid": (
        jwt.ImmatureSignatureError,
        "The token is not yet valid (iat)",
        "iat (PyJWT checks it before nbf; without the iat check, nbf catches it)",
    ),
    "wrong_aud": (jwt.InvalidAudienceError, "Audience doesn't match", "aud against audience="),
    "wrong_iss": (jwt.InvalidIssuerError, "Invalid issuer", "iss against issuer="),
    "foreign_key": (jwt.InvalidSignatureError, "Signature verification failed", "the RS256 signature"),
    "unknown_kid": (
        jwt.PyJWKClientError,
        'Unable to find a signing key that matches: "{kid}"',
        "PyJWKClient's kid lookup, after one refetch of certs",
    ),
    "no_kid": (
        jwt.PyJWKClientError,
        'Unable to find a signing key that matches: "None"',
        "PyJWKClient's kid lookup (a client that tries every key accepts it: the signature is genuine)",
    ),
    "alg_none": (jwt.InvalidAlgorithmError, "The specified alg value is not allowed", "algorithms=['RS256']"),
    "hs256_public_key": (
        jwt.InvalidAlgorithmError,
        "The specified alg value is not allowed",
        "algorithms=['RS256']",
    ),
    "tampered": (jwt.InvalidSignatureError, "Signature verification failed", "the RS256 signature"),
}
WHO: dict[str, dict[str, Any]] = {"user": {"email": "alice@acme.test"}, "service": {"service_token": "ci-deploy-bot"}}


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Header and payload as serialised (member order kept), and the raw payload JSON."""
    head, body, _ = token.split(".")
    raw_body = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
    raw_head = base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)).decode()
    return json.loads(raw_head), json.loads(raw_body), raw_body


def test_the_table_covers_every_variant() -> None:
    assert list(TABLE) == list(VARIANTS)
    assert {v for v, outcome in TABLE.items() if outcome is None} == GOOD_VARIANTS


@pytest.fixture
async def edge(fakeedge: FakeEdgeFactory) -> FakeEdge:
    return await fakeedge(config=config_for(whoami()))


@pytest.mark.parametrize("kind", ["user", "service"])
@pytest.mark.parametrize("variant", list(TABLE))
async def test_standard_verification(edge: FakeEdge, variant: str, kind: str) -> None:
    token = edge.mint(app="Admin", variant=variant, **WHO[kind])
    expected = TABLE[variant]
    check = verify(edge.certs_url, token, audience=edge.aud("Admin"), issuer=edge.team_domain)
    if expected is None:
        claims = await check
        assert claims["aud"] in (edge.aud("Admin"), [edge.aud("Admin")])
        return
    error, message, _caught_by = expected
    with pytest.raises(error) as exc:
        await check
    assert str(exc.value) == message.format(kid=jwt.get_unverified_header(token).get("kid"))


@pytest.mark.parametrize("kind", ["user", "service"])
@pytest.mark.parametrize("variant", list(TABLE))
async def test_the_edge_agrees(edge: FakeEdge, variant: str, kind: str) -> None:
    """The edge takes a minted token as Cf-Access-Token exactly when a stock origin would."""
    token = edge.mint(app="Admin", variant=variant, **WHO[kind])
    async with edge.client().get(edge.url("Admin"), headers={"Cf-Access-Token": token}, allow_redirects=False) as resp:
        assert resp.status == (200 if TABLE[variant] is None else 302)


async def test_shapes_follow_the_spec(edge: FakeEdge) -> None:
    head, payload, _ = parts(edge.mint(app="Admin", email="alice@acme.test"))
    assert list(head) == ["alg", "kid"]  # spec §2.1: user tokens have no typ
    assert list(payload) == ["aud", "email", "exp", "iat", "nbf", "iss", "type", "identity_nonce", "sub", "country"]
    assert payload["aud"] == [edge.aud("Admin")]
    assert payload["exp"] - payload["iat"] == 3600  # Admin's session_duration

    head, payload, raw = parts(edge.mint(app="Sentry", service_token="ci-deploy-bot"))
    assert list(head) == ["kid", "alg", "typ"]
    assert list(payload) == ["type", "aud", "exp", "iss", "common_name", "iat", "sub"]
    assert payload["aud"] == edge.aud("Sentry")
    assert '"iss":"http:\\/\\/127.0.0.1:' in raw  # spec §2.3: escaped slashes


async def test_variants_change_only_what_they_name(edge: FakeEdge) -> None:
    now = time.time()
    _, expired, _ = parts(edge.mint(app="Admin", email="alice@acme.test", variant="expired"))
    assert now - 3600 - 5 <= expired["exp"] <= now - 3600 + 5
    assert expired["nbf"] == expired["iat"] == expired["exp"] - 3600
    _, early, _ = parts(edge.mint(app="Admin", service_token="ci-deploy-bot", variant="not_yet_valid"))
    assert early["nbf"] == early["iat"] >= now + 3600 - 5
    head, _, _ = parts(edge.mint(app="Admin", email="alice@acme.test", variant="no_kid"))
    assert head == {"alg": "RS256"}
    _, payload, _ = parts(edge.mint(app="Admin", email="alice@acme.test", variant="tampered"))
    assert payload["email"] == TAMPERED_EMAIL
    _, payload, _ = parts(edge.mint(app="Admin", email="alice@acme.test", variant="wrong_iss"))
    assert payload["iss"] == "https://not-acme.cloudflareaccess.com"


async def test_alg_none_and_hs256_are_what_they_say(edge: FakeEdge) -> None:
    none = edge.mint(app="Admin", email="alice@acme.test", variant="alg_none")
    assert none.endswith(".")
    assert jwt.get_unverified_header(none)["alg"] == "none"

    token = edge.mint(app="Admin", email="alice@acme.test", variant="hs256_public_key")
    pem = edge.core.keys.current.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input, _, signature = token.rpartition(".")
    expected = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)) == expected
    # why it is built by hand: PyJWT will not use a PEM as an HMAC secret, even when asked to
    with pytest.raises(jwt.InvalidKeyError) as exc:
        jwt.decode(token, pem, algorithms=["HS256"])
    assert str(exc.value) == (
        "The specified key is an asymmetric key or x509 certificate and should not be used as an HMAC secret."
    )


async def test_claim_and_header_overrides(edge: FakeEdge) -> None:
    token = edge.mint(
        app="Admin",
        email="alice@acme.test",
        claims={"country": "DE", "nbf": None, "custom": {"groups": ["ops"]}},
        header={"typ": "JWT"},
        lifetime="10m",
    )
    head, payload, _ = parts(token)
    assert head == {"alg": "RS256", "kid": edge.core.keys.current.kid, "typ": "JWT"}
    assert payload["country"] == "DE"
    assert "nbf" not in payload
    assert payload["custom"] == {"groups": ["ops"]}
    assert payload["exp"] - payload["iat"] == 600
    claims = await verify(edge.certs_url, token, audience=edge.aud("Admin"), issuer=edge.team_domain)
    assert claims["country"] == "DE"


async def test_a_token_naming_another_user_than_its_session_is_refused(edge: FakeEdge) -> None:
    # claims= can put bob's email in a token of alice's session: the edge would admit alice while
    # the origin reads bob from the very assertion it forwards; such a token is nobody's
    url = edge.url("Admin")
    for claims, status in (({}, 200), ({"email": "bob@acme.test"}, 302)):
        token = edge.mint(app="Admin", email="alice@acme.test", claims=claims)
        async with edge.client().get(url, headers={"Cf-Access-Token": token}, allow_redirects=False) as resp:
            assert resp.status == status, claims


async def test_mint_mistakes(edge: FakeEdge) -> None:
    with pytest.raises(ValueError) as exc:
        edge.mint(app="Admin", email="alice@acme.test", variant="wrong-audience")
    assert str(exc.value) == (
        "unknown token variant 'wrong-audience'; did you mean 'wrong_aud'? valid: valid, aud_string, aud_array, "
        "expired, not_yet_valid, wrong_aud, wrong_iss, foreign_key, unknown_kid, no_kid, alg_none, "
        "hs256_public_key, tampered"
    )
    with pytest.raises(ValueError) as exc:
        edge.mint(app="Admin")
    assert str(exc.value) == (
        "mint(): give email=... for a user token or service_token=... for a service token, not both"
    )
    with pytest.raises(UnknownName) as name_exc:
        edge.mint(email="alice@acme.test")
    assert str(name_exc.value) == "mint(): name the app with app=...; apps: Admin, Sentry, Grafana"
    # the CLI's spelling works too
    assert edge.mint(app="Admin", email="alice@acme.test", variant="wrong-aud")
