"""The local CA: kept on disk once, owner-only keys, leaves chosen by SNI (handshakes in memory)."""

from __future__ import annotations

import datetime as dt
import ssl
import stat
from pathlib import Path

import pytest
import trustme
from cryptography import x509

from fakeedge.config import parse_config
from fakeedge.errors import KeyStoreError
from fakeedge.tls import LocalCA, _create, ca_env, ca_path, tls_hostnames


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, server_hostname: str | None) -> x509.Certificate:
    """A TLS handshake over memory BIOs (as trustme's own tests do); returns the server's leaf."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=server_hostname)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for side, obj in (("client", client), ("server", server)):
            if not done[side]:
                try:
                    obj.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            der = client.getpeercert(binary_form=True)
            assert der is not None
            return x509.load_der_x509_certificate(der)
    raise AssertionError("the handshake did not finish in 10 rounds")


def trusting(ca: LocalCA | trustme.CA) -> ssl.SSLContext:
    """A client context that trusts ``ca`` and nothing else, checking host names."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(ctx)
    return ctx


def sans(cert: x509.Certificate) -> list[str]:
    return [str(n) for n in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value]


def test_ca_is_created_once_with_owner_only_keys(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    first = LocalCA.load(keys)
    assert first.cert_path == keys / "ca-cert" / "ca.pem" == ca_path(keys)
    def mode(p: Path) -> int:
        return stat.S_IMODE(p.stat().st_mode)

    assert mode(keys / "ca") == 0o700
    assert mode(keys / "ca" / "ca.key") == 0o600
    assert mode(keys / "ca-cert") == 0o755
    assert mode(first.cert_path) == 0o644
    assert first.cert_path.read_bytes() == first.cert_pem == (keys / "ca" / "ca.pem").read_bytes()
    assert sorted(p.name for p in keys.iterdir()) == [".gitignore", "ca", "ca-cert"]  # no staging folder left

    again = LocalCA.load(keys)
    assert again.cert_pem == first.cert_pem
    # and a leaf issued after the restart chains to the CA origins already trust
    handshake(again.server_context([], default="admin.acme.test"), trusting(first), "admin.acme.test")

    cert = x509.load_pem_x509_certificate(first.cert_pem)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)[0].value == "fakeedge"


def test_losing_the_creation_race_keeps_the_winners_ca(tmp_path: Path) -> None:
    winner = LocalCA.load(tmp_path)
    _create(tmp_path, tmp_path / "ca")  # a second process that also found no CA a moment ago
    assert LocalCA.load(tmp_path).cert_pem == winner.cert_pem
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca", "ca-cert"]


def test_loose_permissions_are_tightened_and_the_public_copy_restored(tmp_path: Path) -> None:
    ca = LocalCA.load(tmp_path)
    (tmp_path / "ca" / "ca.key").chmod(0o644)
    ca.cert_path.write_text("tampered")
    again = LocalCA.load(tmp_path)
    assert stat.S_IMODE((tmp_path / "ca" / "ca.key").stat().st_mode) == 0o600
    assert again.cert_path.read_bytes() == ca.cert_pem


def test_a_certificate_that_is_not_the_keys_is_refused(tmp_path: Path) -> None:
    LocalCA.load(tmp_path)
    (tmp_path / "ca" / "ca.pem").write_bytes(trustme.CA().cert_pem.bytes())
    with pytest.raises(KeyStoreError) as err:
        LocalCA.load(tmp_path)
    assert str(err.value) == (
        f"{tmp_path}/ca: unreadable local CA (ca.pem does not belong to ca.key); delete {tmp_path}/ca "
        "to make a new one (origins must then trust the new certificate)"
    )


def test_unwritable_keys_dir_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(KeyStoreError) as err:
        LocalCA.load(tmp_path / "file" / "keys")
    assert str(err.value) == f"{tmp_path}/file/keys/ca: cannot create the local CA (Not a directory)"


@pytest.fixture(scope="module")
def local_ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    return LocalCA.load(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def server_ctx(local_ca: LocalCA) -> ssl.SSLContext:
    return local_ca.server_context(
        ["admin.acme.test", "*.apps.acme.test", "127.0.0.1"], default="acme.cloudflareaccess.com"
    )


@pytest.mark.parametrize(
    ("sni", "san"),
    [
        ("acme.cloudflareaccess.com", "acme.cloudflareaccess.com"),
        ("admin.acme.test", "admin.acme.test"),
        ("ADMIN.acme.test", "admin.acme.test"),
        ("grafana.apps.acme.test", "*.apps.acme.test"),
    ],
    ids=["team-domain", "app", "sni-case-folded", "wildcard-one-label"],
)
def test_the_right_host_gets_its_own_leaf(server_ctx: ssl.SSLContext, local_ca: LocalCA, sni: str, san: str) -> None:
    leaf = handshake(server_ctx, trusting(local_ca), sni)
    assert sans(leaf) == [f"<DNSName(value='{san}')>"]
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc <= dt.timedelta(days=91)


@pytest.mark.parametrize(
    "sni",
    ["evil.test", "a.b.apps.acme.test", "apps.acme.test", "other.cloudflareaccess.com"],
    ids=["unknown-host", "wildcard-two-labels", "wildcard-apex", "another-team"],
)
def test_a_wrong_host_fails_verification(server_ctx: ssl.SSLContext, local_ca: LocalCA, sni: str) -> None:
    with pytest.raises(ssl.SSLCertVerificationError) as err:
        handshake(server_ctx, trusting(local_ca), sni)
    assert err.value.verify_message == f"Hostname mismatch, certificate is not valid for '{sni}'."


def test_an_untrusted_ca_fails_verification(server_ctx: ssl.SSLContext) -> None:
    with pytest.raises(ssl.SSLCertVerificationError) as err:
        handshake(server_ctx, trusting(trustme.CA()), "admin.acme.test")
    assert err.value.verify_message == "unable to get local issuer certificate"


def test_no_sni_gets_the_default_leaf(local_ca: LocalCA) -> None:
    ctx = local_ca.server_context(["admin.acme.test"], default="127.0.0.1")
    client = trusting(local_ca)
    leaf = handshake(ctx, client, "127.0.0.1")  # an IP address: clients send no SNI
    assert sans(leaf) == ["<IPAddress(value=127.0.0.1)>"]


def test_tls_hostnames_cover_team_apps_and_ingress() -> None:
    config = parse_config(
        {
            "team": "acme",
            "apps": [
                {"name": "Admin", "domain": "admin.acme.test/api", "policies": []},
                {"name": "Previews", "domains": ["*-preview.acme.test", "*.dev.acme.test"], "policies": []},
            ],
            "ingress": [
                {"hostname": "api.acme.test", "service": "http://127.0.0.1:1"},
                {"hostname": "*.example.com", "service": "http://127.0.0.1:1"},
                {"hostname": "*com", "service": "http://127.0.0.1:1"},
                {"hostname": "admin.acme.test", "service": "http://127.0.0.1:1"},
                {"service": "http_status:404"},
            ],
        }
    )
    assert tls_hostnames(config, "[::1]") == [
        "::1",
        "acme.cloudflareaccess.com",
        "admin.acme.test",
        "*.acme.test",
        "*.dev.acme.test",
        "api.acme.test",
        "*.example.com",
    ]


def test_ca_env_names_every_client_variable() -> None:
    assert ca_env("/x/ca.pem") == {
        "SSL_CERT_FILE": "/x/ca.pem",
        "REQUESTS_CA_BUNDLE": "/x/ca.pem",
        "NODE_EXTRA_CA_CERTS": "/x/ca.pem",
        "CURL_CA_BUNDLE": "/x/ca.pem",
    }
