"""Real team domain mode: fakeedge answers as https://acme.cloudflareaccess.com over trusted TLS."""

from __future__ import annotations

import asyncio
import json
import ssl

import aiohttp
import jwt
import pytest
from cryptography import x509

from fakeedge.testing import browser_login

from .conftest import Origin, base_config
from .tls_support import MakeTLSEdge, TLSEdge, make_tls_edge

__all__ = ["make_tls_edge"]
TEAM = "https://acme.cloudflareaccess.com"


@pytest.fixture
async def acme(make_tls_edge: MakeTLSEdge, origin: Origin) -> TLSEdge:
    return await make_tls_edge({**base_config(origin.url), "team_domain": TEAM + "/"})


async def leaf_for(running: TLSEdge, server_hostname: str) -> x509.Certificate:
    """The certificate the TLS listener presents for ``server_hostname`` (SNI), verified by the CA."""
    _, writer = await asyncio.open_connection(
        "127.0.0.1", running.tls_port, ssl=running.fake.ssl_context(), server_hostname=server_hostname
    )
    ssl_object: ssl.SSLObject = writer.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True)
    writer.close()
    await writer.wait_closed()
    assert der is not None
    return x509.load_der_x509_certificate(der)


async def test_login_certs_and_identity_are_served_as_the_real_team_domain(acme: TLSEdge, origin: Origin) -> None:
    assert acme.team == TEAM  # normalised: no trailing slash, as `iss` must be (spec §1.1)
    leaf = await leaf_for(acme, "acme.cloudflareaccess.com")
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["acme.cloudflareaccess.com"]

    resp = await acme.client.get(acme.url("admin.acme.test", "/", port=False), allow_redirects=False)
    assert resp.headers["Location"].startswith(f"{TEAM}/cdn-cgi/access/login/admin.acme.test?kid={acme.aud('Admin')}&")

    resp = await browser_login(acme.client, acme.url("admin.acme.test", "/dash", port=False), "alice@acme.test")
    assert resp.status == 200
    token = origin.last.headers["Cf-Access-Jwt-Assertion"]
    assert jwt.decode(token, options={"verify_signature": False})["iss"] == TEAM

    resp = await acme.client.get(f"{TEAM}/cdn-cgi/access/certs", allow_redirects=False)
    assert resp.status == 200
    keys = jwt.PyJWKSet.from_dict(json.loads(await resp.text()))
    key = keys[jwt.get_unverified_header(token)["kid"]]  # by kid: certs lists two keys (§14.7)
    claims = jwt.decode(token, key.key, algorithms=["RS256"], audience=acme.aud("Admin"), issuer=TEAM)
    assert claims["email"] == "alice@acme.test"

    # the org session cookie lives on the team domain, and get-identity answers there over TLS
    resp = await acme.client.get(f"{TEAM}/cdn-cgi/access/get-identity", allow_redirects=False)
    assert resp.status == 200
    assert (await resp.json())["email"] == "alice@acme.test"
    team_cookies = [c for c in acme.client.cookie_jar if c["domain"] == "acme.cloudflareaccess.com"]
    assert {c.key for c in team_cookies} == {"CF_Authorization", "CF_Session"}
    assert all(c["secure"] for c in team_cookies)


async def test_another_team_is_not_this_edge(acme: TLSEdge) -> None:
    # other.cloudflareaccess.com has no certificate here: the client refuses the connection
    with pytest.raises(aiohttp.ClientConnectorCertificateError) as err:
        await acme.client.get("https://other.cloudflareaccess.com/cdn-cgi/access/certs")
    assert err.value.certificate_error.verify_message == (  # type: ignore[attr-defined]
        "Hostname mismatch, certificate is not valid for 'other.cloudflareaccess.com'."
    )
