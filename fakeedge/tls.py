"""The local certificate authority: made once with trustme, kept in ``keys_dir``, leaves chosen by SNI.

Origins that hard-code ``https://<team>.cloudflareaccess.com`` (spec §10) only talk to fakeedge
if fakeedge answers as that name over TLS they trust. This module keeps one CA per ``keys_dir``,
the way mitmproxy keeps its own: created on first use, private files owner-only, the certificate
public so that origins in other containers or run by other users can trust it::

    keys_dir/ca/            0700, created once (atomically: built aside, then renamed)
        ca.key              0600  the CA's private key
        ca.pem                    the CA certificate (the copy the CA is loaded from)
    keys_dir/ca-cert/       0755  what origins trust: mount or copy this folder, never ca/
        ca.pem              0644  (``fakeedge ca path``)

Leaf certificates are not stored: they are issued at start, one per configured host name, and
picked by SNI. One leaf per name, rather than one leaf listing every name, so that a client
asking for a name fakeedge does not serve gets a certificate for another name and fails, as it
would against the real edge, and so that each name's certificate is what a browser shows for it.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import shutil
import ssl
import stat
from collections.abc import Iterable
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key

from .config import Config
from .errors import KeyStoreError
from .keys import make_keys_dir

CA_DIR = "ca"
CA_CERT_DIR = "ca-cert"
CA_FILE = "ca.pem"
KEY_FILE = "ca.key"
CA_ENV_VARS = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "CURL_CA_BUNDLE")

# Apple platforms refuse TLS server certificates valid for more than 825 days, even under a
# user-trusted root; leaves are re-issued at every start, so a short life costs nothing.
LEAF_LIFETIME = dt.timedelta(days=90)
DER, SPKI = Encoding.DER, PublicFormat.SubjectPublicKeyInfo


class LocalCA:
    """fakeedge's certificate authority, loaded from (or created in) ``keys_dir``.

    Build it with :meth:`LocalCA.load`.

    Attributes:
        cert_path: the public CA certificate (``keys_dir/ca-cert/ca.pem``), the file origins trust.
    """

    def __init__(self, ca: trustme.CA, cert_path: Path) -> None:
        self._ca = ca
        self.cert_path = cert_path

    @classmethod
    def load(cls, keys_dir: Path) -> LocalCA:
        """Load the CA kept in ``keys_dir``, creating it on first use.

        Safe when two processes start at once (``fakeedge serve`` and ``fakeedge ca path`` in a
        container's health check): both end up with the same CA.

        Raises:
            KeyStoreError: the folder cannot be created, or holds a CA that cannot be read.
        """
        private_dir = keys_dir / CA_DIR
        try:
            make_keys_dir(keys_dir)
            if not (private_dir / KEY_FILE).exists():
                _create(keys_dir, private_dir)
        except OSError as exc:
            raise KeyStoreError(f"{private_dir}: cannot create the local CA ({exc.strerror})") from None
        key_path, cert_file = private_dir / KEY_FILE, private_dir / CA_FILE
        try:
            if stat.S_IMODE(key_path.stat().st_mode) & 0o077:
                os.chmod(key_path, 0o600)  # a private key must be readable by its owner only
            key_pem, cert_pem = key_path.read_bytes(), cert_file.read_bytes()
            cert_spki = x509.load_pem_x509_certificate(cert_pem).public_key().public_bytes(DER, SPKI)
            if load_pem_private_key(key_pem, password=None).public_key().public_bytes(DER, SPKI) != cert_spki:
                raise ValueError(f"{CA_FILE} does not belong to {KEY_FILE}")
        except (OSError, ValueError) as exc:
            raise KeyStoreError(
                f"{private_dir}: unreadable local CA ({exc}); delete {private_dir} to make a new one "
                "(origins must then trust the new certificate)"
            ) from None
        public = _publish(keys_dir / CA_CERT_DIR, cert_pem)
        return cls(trustme.CA.from_pem(cert_pem, key_pem), public)

    @property
    def cert_pem(self) -> bytes:
        """The CA certificate, PEM-encoded."""
        return self._ca.cert_pem.bytes()

    def issue(self, *names: str, now: dt.datetime | None = None) -> trustme.LeafCert:
        """A server certificate for ``names`` (host names, ``*.`` wildcards or IP addresses)."""
        now = now or dt.datetime.now(dt.UTC)
        return self._ca.issue_cert(
            *names,
            common_name=names[0],  # ignored by verifiers (RFC 6125), shown by browsers' certificate viewers
            organization_name="fakeedge",
            organization_unit_name="fakeedge leaf",
            not_before=now - dt.timedelta(days=1),
            not_after=now + LEAF_LIFETIME,
        )

    def configure_trust(self, ctx: ssl.SSLContext) -> None:
        """Make a client context trust this CA (as trustme's ``CA.configure_trust``)."""
        self._ca.configure_trust(ctx)

    def server_context(self, names: Iterable[str], *, default: str) -> ssl.SSLContext:
        """An SSL context presenting one leaf per name, chosen by the client's SNI.

        Args:
            names: host names as configured: exact names, ``*.``-wildcards, IP addresses.
            default: the name whose leaf a client gets when it sends no SNI (it connected to an
                IP address) or a name that is not served; such a client then fails to verify,
                unless it asked for ``default`` itself.

        Returns:
            The context to hand to the TLS listener.
        """
        contexts: dict[str, ssl.SSLContext] = {}
        for name in dict.fromkeys([default, *names]):
            ctx = _new_server_context()
            self.issue(name).configure_cert(ctx)
            contexts[name] = ctx
        outer = contexts[default]

        def choose(sslobj: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
            if server_name is None:
                return
            name = server_name.lower().rstrip(".")
            chosen = contexts.get(name) or contexts.get("*." + name.partition(".")[2])
            if chosen is not None:
                sslobj.context = chosen

        outer.sni_callback = choose
        return outer


def _new_server_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])  # aiohttp's server speaks HTTP/1.1 only
    return ctx


def _create(keys_dir: Path, private_dir: Path) -> None:
    """Write a new CA into a folder of its own, then rename it into place.

    The rename either wins or finds ``ca/`` already there (another process won); either way
    every process then loads the same files.
    """
    ca = trustme.CA(organization_name="fakeedge", organization_unit_name=f"fakeedge local CA {secrets.token_hex(4)}")
    staging = keys_dir / f".ca-{os.getpid()}-{secrets.token_hex(4)}"
    staging.mkdir(mode=0o700)
    try:
        _write(staging / KEY_FILE, ca.private_key_pem.bytes(), 0o600)
        _write(staging / CA_FILE, ca.cert_pem.bytes(), 0o644)
        try:
            os.rename(staging, private_dir)
        except OSError:
            if not (private_dir / KEY_FILE).exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _publish(public_dir: Path, cert_pem: bytes) -> Path:
    """Keep ``ca-cert/ca.pem`` world-readable and equal to the CA's certificate."""
    path = public_dir / CA_FILE
    try:
        public_dir.mkdir(mode=0o755, exist_ok=True)
        os.chmod(public_dir, 0o755)
        if not path.exists() or path.read_bytes() != cert_pem:
            tmp = public_dir / f".{CA_FILE}.{os.getpid()}.tmp"
            _write(tmp, cert_pem, 0o644)
            os.replace(tmp, path)
        os.chmod(path, 0o644)
    except OSError as exc:
        raise KeyStoreError(f"{path}: cannot publish the CA certificate ({exc.strerror})") from None
    return path


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` with ``mode`` from the first byte (a key is never briefly world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, mode)  # the umask may have taken bits away from a public file


def ca_path(keys_dir: Path) -> Path:
    """Where the public CA certificate of ``keys_dir`` is (whether or not it exists yet)."""
    return keys_dir / CA_CERT_DIR / CA_FILE


def ca_env(cert_path: Path | str) -> dict[str, str]:
    """The variables that make common clients trust the CA at ``cert_path``.

    ``SSL_CERT_FILE`` (OpenSSL: Python's ``ssl``, PyJWT's ``PyJWKClient``, Ruby, Go on Linux),
    ``REQUESTS_CA_BUNDLE`` (requests), ``CURL_CA_BUNDLE`` (curl) *replace* the trust store, so an
    origin that also calls the internet needs a bundle of both; ``NODE_EXTRA_CA_CERTS`` adds.
    """
    return dict.fromkeys(CA_ENV_VARS, str(cert_path))


def tls_hostnames(config: Config, team_host: str) -> list[str]:
    """Every name the TLS listener answers for, as certificate names, team domain first.

    The team domain's host, ``<team>.cloudflareaccess.com``, each app destination's host and each
    ingress rule's hostname. A wildcard becomes a one-label ``*.`` wildcard, as Cloudflare's
    Universal SSL certificates are: ``a.b.example.com`` is not covered by ``*.example.com``.
    """
    names = [team_host, f"{config.team}.cloudflareaccess.com"]
    names += [dest.host for app in config.apps for dest in app.destinations]
    names += [rule.hostname for rule in config.ingress if rule.hostname is not None and rule.hostname != "*"]
    out: list[str] = []
    for name in names:
        name = name.strip("[]")  # an IPv6 literal in URL form
        first, _, rest = name.partition(".")
        if "*" in first:
            if "." not in rest:
                continue  # *.com: no client accepts a wildcard over a public suffix
            name = "*." + rest
        out.append(name)
    return list(dict.fromkeys(out))


def edge_context(config: Config, team_host: str) -> ssl.SSLContext:
    """The TLS listener's context: the local CA of ``config.keys_dir``, a leaf per served name.

    Args:
        config: the edge's configuration (apps, ingress, team, keys_dir).
        team_host: the team domain's host, also the leaf for clients that send no SNI.

    Raises:
        KeyStoreError: the CA cannot be read or created.
    """
    ca = LocalCA.load(config.keys_dir)
    return ca.server_context(tls_hostnames(config, team_host), default=team_host.strip("[]"))
