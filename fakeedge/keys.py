"""The signing keys: RSA-2048 on disk, owner-only, kid = SHA-256 of the SPKI DER (spec §3).

The store keeps a current key and, after a rotation, the previous one for a grace period
(Cloudflare: 7 days). Cloudflare's certs always list two keys, also on a fresh account (spec §14.7):
outside a grace period the first one is a *standby* key, made with the store, that never signs and
that the edge never accepts, so a verifier that picks the only key of a one-key set (and would take a
token without ``kid``) fails here as it does against Cloudflare. Keys are loaded once as key objects: PyJWT handed a PEM string re-parses it
on every call (42 ms here, against 0.7 ms for a loaded key).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from .errors import KeyStoreError

__all__ = ["ROTATION_GRACE", "KeyStore", "SigningKey", "kid_of", "make_keys_dir", "new_key", "user_cache_dir"]

log = logging.getLogger("fakeedge")

ROTATION_GRACE = 7 * 24 * 3600  # spec §3: the previous key stays valid for 7 days
STATE_FILE = "state.json"
LOCK_FILE = ".lock"
KID = re.compile(r"[0-9a-f]{64}")
STALE_TMP = re.compile(r"\.(state\.json|[0-9a-f]{64}\.(key|crt))\.\d+\.tmp")  # as _write_file names them


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    private_key: rsa.RSAPrivateKey
    cert_pem: str

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        return self.private_key.public_key()

    def jwk(self) -> dict[str, str]:
        """The JWK in Cloudflare's member order: kid, kty, alg, use, e, n (spec §3)."""
        numbers = self.public_key.public_numbers()
        return {
            "kid": self.kid,
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "e": _b64int(numbers.e),
            "n": _b64int(numbers.n),
        }


def _b64int(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def kid_of(public_key: rsa.RSAPublicKey) -> str:
    """Lower-case hex SHA-256 of the DER SubjectPublicKeyInfo, as Cloudflare computes it (spec §3)."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def new_key(now: float) -> SigningKey:
    """A fresh RSA-2048 key with Cloudflare's self-signed 60-day certificate (spec §3)."""
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "Texas"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Austin"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Cloudflare"),
            x509.NameAttribute(NameOID.COMMON_NAME, "cloudflareaccess.com"),
        ]
    )
    start = dt.datetime.fromtimestamp(int(now), dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=60))
        .sign(private_key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    return SigningKey(kid_of(private_key.public_key()), private_key, pem)


class KeyStore:
    """Current and previous signing keys, persisted in ``keys_dir`` and loaded once.

    Several processes may share one ``keys_dir`` (edges, ``fakeedge keys rotate``, pytest-xdist
    workers): every change happens under an exclusive ``flock`` on ``keys_dir/.lock`` and every
    read of ``state.json`` under a shared one; files are written to a temporary name, fsynced and
    renamed into place, and a key file is deleted only once ``state.json`` no longer names it. So
    ``state.json`` never names a missing key, two processes starting on a fresh directory end up
    with the same key, and a rotation builds on the latest state on disk.

    Args:
        directory: created on first use with mode 0711; private keys are written 0600.
        now: the edge clock's time, used for a new key's certificate and for rotation expiry.

    Raises:
        KeyStoreError: the directory cannot be created or locked, or its state is unreadable.
    """

    def __init__(self, directory: Path, now: float) -> None:
        self.directory = directory
        self.current: SigningKey
        self.previous: SigningKey | None = None
        self.previous_until = 0.0
        self.standby: SigningKey | None = None  # listed in certs outside a grace, never signs (§14.7)
        self._certs: bytes | None = None
        self._state_id: tuple[int, int, int] | None = None  # (inode, mtime, size) of the state read last
        self._load_or_create(now)

    # -- public API --

    def keys(self, now: float) -> tuple[SigningKey, ...]:
        """The keys that verify tokens now: the previous one (during its grace) first, then current."""
        if self.previous is not None and now < self.previous_until:
            return (self.previous, self.current)
        return (self.current,)

    def find(self, kid: str, now: float) -> SigningKey | None:
        for key in self.keys(now):
            if key.kid == kid:
                return key
        return None

    def listed(self, now: float) -> tuple[SigningKey, ...]:
        """The keys certs lists: always two, previous first (the standby key outside a grace,
        spec §14.7), current last. One only for an old read-only store without a standby key."""
        keys = self.keys(now)
        if len(keys) == 1 and self.standby is not None:
            return (self.standby, self.current)
        return keys

    def certs_document(self, now: float) -> bytes:
        """``/cdn-cgi/access/certs``: compact JSON, previous key first, current last (spec §3, §14.7)."""
        if self.previous is not None and now >= self.previous_until and self._certs is not None:
            self._certs = None  # the grace period ended: drop the previous key from the document
        if self._certs is None:
            keys = self.listed(now)
            doc: dict[str, Any] = {
                "keys": [k.jwk() for k in keys],
                "public_cert": {"kid": self.current.kid, "cert": self.current.cert_pem},
                "public_certs": [{"kid": k.kid, "cert": k.cert_pem} for k in keys],
            }
            self._certs = json.dumps(doc, separators=(",", ":")).encode()
        return self._certs

    def rotate(self, now: float, grace: float = ROTATION_GRACE) -> SigningKey:
        """Make a new current key; the old one keeps verifying for ``grace`` seconds.

        The old key is the current one on disk, which another process may have rotated to.
        """
        fresh = new_key(now)  # the slow part, outside the lock
        with self._lock(exclusive=True):
            if self._state_changed():
                self._read_state()
            self._write_key(fresh)
            old = self.current
            self.previous, self.previous_until, self.current = old, now + grace, fresh
            self._write_state()
            self._remove_unused()  # only now that state.json no longer names them
        self._certs = None
        return fresh

    def refresh(self) -> bool:
        """Load the keys again if another process changed ``state.json`` (a rotation); True if it did.

        One ``stat`` when nothing changed. A state that cannot be read keeps the keys in memory.
        """
        if not self._state_changed():
            return False
        try:
            with self._lock(exclusive=False):
                self._read_state()
        except (OSError, ValueError, KeyError, TypeError, KeyStoreError):
            return False
        self._certs = None
        return True

    # -- disk --

    def _load_or_create(self, now: float) -> None:
        try:
            make_keys_dir(self.directory)
        except OSError as exc:
            raise KeyStoreError(f"{self.directory}: cannot create the keys directory ({exc.strerror})") from None
        state_path = self.directory / STATE_FILE
        if state_path.exists() and not os.access(self.directory, os.W_OK):
            # a read-only keys_dir (a volume mounted :ro): nothing to create or tidy up
            with self._lock(exclusive=False):
                self._load(state_path)
            return
        # exclusive even to read: of two processes starting on a fresh directory, one creates
        # the key and the other loads it
        with self._lock(exclusive=True):
            self._remove_stale_tmp()
            if not state_path.exists():
                # a fresh store makes both keys certs lists (spec §14.7)
                self.current, self.standby = new_key(now), new_key(now)
                self._write_key(self.current)
                self._write_key(self.standby)
                self._write_state()
                return
            self._load(state_path)
            if self.standby is None:  # a store from before §14.7: add its standby key once
                self.standby = new_key(now)
                self._write_key(self.standby)
                self._write_state()

    def _load(self, state_path: Path) -> None:
        try:
            self._read_state()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise KeyStoreError(
                f"{state_path}: unreadable key state ({exc}); delete {self.directory} to start with new keys"
            ) from None

    @contextlib.contextmanager
    def _lock(self, *, exclusive: bool) -> Iterator[None]:
        """``flock`` on ``keys_dir/.lock``, released when the block ends (or the process dies)."""
        path = self.directory / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            if exclusive or exc.errno not in (errno.EROFS, errno.EACCES):
                raise KeyStoreError(f"{path}: cannot lock the keys directory ({exc.strerror})") from None
            yield  # a read-only keys_dir: no process can change it, so reading needs no lock
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    def _state_changed(self) -> bool:
        try:
            st = os.stat(self.directory / STATE_FILE)
        except OSError:
            return False
        return (st.st_ino, st.st_mtime_ns, st.st_size) != self._state_id

    def _read_state(self) -> None:
        """Load the keys ``state.json`` names (the caller holds the lock)."""
        state_path = self.directory / STATE_FILE
        with open(state_path, "rb") as f:
            st = os.fstat(f.fileno())
            state = json.loads(f.read())
        current = self._read_key(state["current"])
        previous = self._read_key(state["previous"]) if state.get("previous") else None
        previous_until = float(state["previous_until"]) if previous is not None else 0.0
        standby = self._read_key(state["standby"]) if state.get("standby") else None
        self.current, self.previous, self.previous_until = current, previous, previous_until
        self.standby = standby
        self._state_id = (st.st_ino, st.st_mtime_ns, st.st_size)

    def _read_key(self, kid: str) -> SigningKey:
        if not isinstance(kid, str) or not KID.fullmatch(kid):
            raise ValueError(f"{kid!r} is no key id")
        key_path = self.directory / f"{kid}.key"
        mode = stat.S_IMODE(key_path.stat().st_mode)
        if mode & 0o077:
            os.chmod(key_path, 0o600)  # a private key must be readable by its owner only
        private_key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(private_key, rsa.RSAPrivateKey) or kid_of(private_key.public_key()) != kid:
            raise ValueError(f"{key_path.name} does not hold the RSA key {kid}")
        return SigningKey(kid, private_key, (self.directory / f"{kid}.crt").read_text())

    def _write_key(self, key: SigningKey) -> None:
        pem = key.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        _write_private(self.directory / f"{key.kid}.key", pem)
        _write_file(self.directory / f"{key.kid}.crt", key.cert_pem.encode(), 0o644)

    def _write_state(self) -> None:
        """Replace ``state.json`` (the caller holds the exclusive lock, the keys it names are on disk)."""
        state = {
            "current": self.current.kid,
            "previous": self.previous.kid if self.previous else None,
            "previous_until": self.previous_until,
            "standby": self.standby.kid if self.standby else None,
        }
        path = self.directory / STATE_FILE
        _write_private(path, json.dumps(state, indent=2).encode())
        st = os.stat(path)
        self._state_id = (st.st_ino, st.st_mtime_ns, st.st_size)

    def _remove_stale_tmp(self) -> None:
        """Temporary files of a write that was killed midway (the caller holds the exclusive lock,
        so no write is under way)."""
        for path in self.directory.glob(".*.tmp"):
            if STALE_TMP.fullmatch(path.name):
                path.unlink(missing_ok=True)

    def _remove_unused(self) -> None:
        keep = {self.current.kid} | {k.kid for k in (self.previous, self.standby) if k is not None}
        for path in self.directory.glob("*.key"):
            if path.stem not in keep:
                path.unlink(missing_ok=True)
                path.with_suffix(".crt").unlink(missing_ok=True)


GITIGNORE = "# fakeedge: private signing keys and CA; never commit them\n*\n"


def make_keys_dir(directory: Path) -> None:
    """Create ``keys_dir`` mode 0711: others may reach the public CA copy in ``ca-cert/`` by its
    path, but never list the folder or read a private file (those are 0600).

    A new folder gets a ``.gitignore`` that ignores everything in it, and a warning is logged:
    it usually appears beside a config that is itself committed. Not for a folder in the user's
    cache (the demo's keys): nobody commits that, and the demo's first line is the URL to open.
    """
    if not directory.is_dir():
        directory.mkdir(mode=0o711, parents=True, exist_ok=True)
        os.chmod(directory, 0o711)  # whatever the umask
        _write_file(directory / ".gitignore", GITIGNORE.encode(), 0o644)
        if not directory.resolve().is_relative_to(user_cache_dir().resolve()):
            log.warning("fakeedge: created %s for private keys; its .gitignore keeps them out of git", directory)


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME``, else ``~/.cache``: where the demo keeps its keys."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def _write_private(path: Path, data: bytes) -> None:
    """Write atomically with mode 0600 from the start (never briefly world-readable)."""
    _write_file(path, data, 0o600)


def _write_file(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` whole or not at all, durably: a temporary file in the same directory,
    fsynced, renamed over it, and the directory fsynced so the rename survives a crash."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # whatever the umask
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
