"""Managed OAuth's rules and state (spec §14.2): redirect URIs, PKCE, clients, codes and grants.

Pure: no aiohttp, no clock (every method takes ``now``). Secrets (codes, tokens, client secrets)
are kept only as SHA-256 digests, so a lookup by value leaks nothing about stored values through
timing and a dump of the store holds nothing a client could present.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
import secrets
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from .config import DynamicClientRegistration
from .expiring import Expiring
from .policy import Identity

ACCESS_PREFIX = "oauth:"  # spec §2.5: managed-OAuth access tokens are opaque "oauth:…" strings
CODE_TTL = 60  # RFC 6749 §4.1.2: "a maximum authorization code lifetime of 10 minutes is RECOMMENDED"
CLIENT_LIMIT = 1000
CODE_LIMIT = 1000
GRANT_LIMIT = 10_000
ACCESS_LIMIT = 10 * GRANT_LIMIT  # access tokens live an hour or so; a grant may hold several
AuthMethod = Literal["none", "client_secret_basic", "client_secret_post"]
AUTH_METHODS: tuple[AuthMethod, ...] = ("none", "client_secret_basic", "client_secret_post")
_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")  # RFC 7636 §4.1


def digest(value: str) -> str:
    """The SHA-256 a secret is stored and looked up by."""
    return hashlib.sha256(value.encode()).hexdigest()


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def redirect_uri_refusal(uri: str, dcr: DynamicClientRegistration) -> str | None:
    """Why ``uri`` may not be registered under ``dcr``'s rules (spec §14.2), or None when it may.

    ``allow_any_on_localhost`` admits any http(s) URL on ``localhost``, ``allow_any_on_loopback``
    any on 127.0.0.0/8 or ``[::1]``, whatever the port and path; otherwise the URI must equal an
    ``allowed_uris`` entry, or start with an http(s) entry's prefix before its final ``*``. URIs
    with a fragment, credentials or dot segments are refused whatever the lists say: they are how
    a code gets redirected somewhere the allow-list did not mean.
    """
    if len(uri) > 2048 or any(ord(c) <= 0x20 or ord(c) == 0x7F for c in uri):
        return "is not a valid URI"
    parts = urlsplit(uri)
    if not parts.scheme or "#" in uri:
        return "must be an absolute URI without a fragment"
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        try:
            host, _ = parts.hostname, parts.port  # a bad port raises
        except ValueError:
            return "is not a valid URL"
        if not host or parts.username is not None or parts.password is not None or "\\" in uri:
            return "must name a host and carry no credentials"
        if any(seg in (".", "..") for seg in parts.path.split("/")) or "%2e" in parts.path.lower():
            return "must not contain dot segments"
        if dcr.allow_any_on_localhost and host == "localhost":
            return None
        if dcr.allow_any_on_loopback and _is_loopback(host):
            return None
    for entry in dcr.allowed_uris:
        if entry.endswith("/*") and entry.split(":", 1)[0].lower() in ("http", "https"):
            if uri.startswith(entry[:-1]):
                return None
        elif uri == entry:
            return None
    return "is not allowed by the app's dynamic_client_registration settings"


def pkce_matches(verifier: str, challenge: str) -> bool:
    """RFC 7636 §4.6 with S256: BASE64URL(SHA256(verifier)) == challenge, in constant time."""
    if not _VERIFIER.fullmatch(verifier):
        return False
    computed = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()
    return hmac.compare_digest(computed, challenge)


@dataclass(frozen=True, slots=True)
class Client:
    """A client registered through RFC 7591 dynamic client registration, for one app."""

    client_id: str
    aud: str  # the app it registered with; good on all of that app's domains
    redirect_uris: tuple[str, ...]
    auth_method: AuthMethod
    secret_digest: str | None
    issued_at: int


@dataclass(frozen=True, slots=True)
class Code:
    """An authorization code: one use, bound to its client, redirect URI, PKCE challenge and app."""

    client_id: str
    aud: str
    redirect_uri: str
    challenge: str
    resource: str | None
    login_nonce: str  # the browser session that signed in
    identity: Identity
    expires: float


@dataclass(slots=True)
class Grant:
    """What one authorization produced: a session for the app JWTs, access and refresh tokens."""

    id: str
    client_id: str
    aud: str
    identity: Identity
    session_nonce: str  # the grant's own session: its app JWTs carry this identity_nonce
    login_nonce: str  # the browser session it came from: logging that out ends the grant
    expires: float  # grant.session_duration: no refresh after this
    access: set[str] = field(default_factory=set)  # digests of its live access tokens
    refresh: str | None = None  # digest of its one current refresh token


@dataclass(slots=True)
class OAuthStore:
    """Every client, code and grant of the edge, bounded and expiring.

    Codes, grants and tokens live in :class:`~fakeedge.expiring.Expiring` stores: each goes when
    it expires, at a cost that does not grow with how many there are (issue 16), and past its
    limit the oldest goes first (an evicted grant's tokens with it).
    """

    clients: dict[str, Client] = field(default_factory=dict)
    codes: Expiring[str, Code] = field(default_factory=lambda: Expiring(CODE_LIMIT))  # digest -> code
    # used code digest -> grant id, for replays (RFC 6749 §4.1.2), as long as the grant lives
    spent: Expiring[str, str | None] = field(default_factory=lambda: Expiring(CODE_LIMIT))
    grants: Expiring[str, Grant] = field(default_factory=lambda: Expiring(GRANT_LIMIT))
    access: Expiring[str, str] = field(default_factory=lambda: Expiring(ACCESS_LIMIT))  # digest -> grant id
    refresh: Expiring[str, str] = field(default_factory=lambda: Expiring(GRANT_LIMIT))  # digest -> grant id
    by_session: Expiring[str, str] = field(default_factory=lambda: Expiring(GRANT_LIMIT))  # session nonce -> grant id

    def clear(self) -> None:
        """Forget everything (a reset)."""
        self.clients.clear()
        for store in (self.codes, self.spent, self.grants, self.access, self.refresh, self.by_session):
            store.clear()

    # -- clients --

    def register(
        self, aud: str, redirect_uris: tuple[str, ...], auth_method: AuthMethod, now: float
    ) -> tuple[Client, str | None]:
        """A new client and its secret (None for public clients)."""
        secret = secrets.token_urlsafe(32) if auth_method != "none" else None
        client_id = secrets.token_urlsafe(24)
        client = Client(
            client_id,
            aud,
            redirect_uris,
            auth_method,
            digest(secret) if secret else None,
            int(now),
        )
        _bound(self.clients, CLIENT_LIMIT)
        self.clients[client_id] = client
        return client, secret

    def client(self, client_id: str, aud: str) -> Client | None:
        """The client ``client_id`` registered with the app ``aud``."""
        client = self.clients.get(client_id)
        return client if client is not None and client.aud == aud else None

    @staticmethod
    def secret_ok(client: Client, secret: str | None) -> bool:
        """Whether ``secret`` authenticates ``client`` (always True for public clients)."""
        if client.secret_digest is None:
            return True
        return hmac.compare_digest(digest(secret or ""), client.secret_digest)

    # -- codes --

    def add_code(self, code: Code, now: float) -> str:
        value = secrets.token_urlsafe(32)
        self.codes.put(digest(value), code, code.expires, now)
        return value

    def take_code(self, value: str, now: float) -> tuple[Code | None, bool]:
        """Pop a code: (code, False) once; (None, True) when it was already used, (None, False) if unknown."""
        key = digest(value)
        code = self.codes.pop(key, now)  # None when expired, too
        if code is None:
            return None, key in self.spent
        self.spent.put(key, None, code.expires, now)
        return code, False

    def grant_of_spent_code(self, value: str) -> str | None:
        """The grant a used code produced (RFC 6749 §4.1.2: a replay should revoke it)."""
        return self.spent.peek(digest(value))

    def spend(self, value: str, grant_id: str, now: float) -> None:
        """Remember which grant a used code produced, so that a replay can revoke it."""
        grant = self.grants.peek(grant_id)
        key = digest(value)
        if grant is not None and key in self.spent:
            self.spent.put(key, grant_id, grant.expires, now)

    # -- grants and tokens --

    def add_grant(self, grant: Grant, now: float) -> None:
        evicted = self.grants.put(grant.id, grant, grant.expires, now)
        if evicted is not None:
            self._drop_tokens(evicted)
        self.by_session.put(grant.session_nonce, grant.id, grant.expires, now)

    def issue(self, grant: Grant, now: float, lifetime: float) -> tuple[str, str]:
        """A new access token (good for ``lifetime``) and a new refresh token; the old refresh token dies."""
        access = ACCESS_PREFIX + secrets.token_urlsafe(32)
        refresh = secrets.token_urlsafe(32)
        key = digest(access)
        self.access.put(key, grant.id, now + lifetime, now)
        grant.access = {k for k in grant.access if self.access.get(k, now) is not None}  # the live ones
        grant.access.add(key)
        if grant.refresh is not None:
            self.refresh.discard(grant.refresh)
        grant.refresh = digest(refresh)
        self.refresh.put(grant.refresh, grant.id, grant.expires, now)
        return access, refresh

    def grant_for_access(self, token: str, now: float) -> Grant | None:
        """The live grant an access token belongs to, or None (unknown, expired or revoked)."""
        grant_id = self.access.get(digest(token), now)
        return self.grants.get(grant_id, now) if grant_id is not None else None

    def grant_for_refresh(self, token: str, now: float) -> Grant | None:
        """The live grant a refresh token belongs to, or None."""
        grant_id = self.refresh.get(digest(token), now)
        return self.grants.get(grant_id, now) if grant_id is not None else None

    def revoke(self, grant_id: str) -> Grant | None:
        """End a grant: its access and refresh tokens stop working at once."""
        grant = self.grants.discard(grant_id)
        if grant is not None:
            self._drop_tokens(grant)
        return grant

    def _drop_tokens(self, grant: Grant) -> None:
        for key in grant.access:
            self.access.discard(key)
        if grant.refresh is not None:
            self.refresh.discard(grant.refresh)
        self.by_session.discard(grant.session_nonce)

    def grant_of_session(self, session_nonce: str) -> Grant | None:
        """The grant whose own session has this ``identity_nonce``, if any."""
        grant_id = self.by_session.peek(session_nonce)
        return self.grants.peek(grant_id) if grant_id is not None else None

    def grants_of_login(self, login_nonce: str) -> list[Grant]:
        return [g for g in self.grants.values() if g.login_nonce == login_nonce]

    def prune(self, now: float) -> None:
        """Drop every code, grant and token that has expired by ``now``."""
        for store in (self.codes, self.spent, self.grants, self.access, self.refresh, self.by_session):
            store.prune(now)


def _bound(store: dict[str, Any], limit: int) -> None:
    # dicts keep insertion order: drop the oldest entries to stay within the limit
    while len(store) >= limit:
        del store[next(iter(store))]
