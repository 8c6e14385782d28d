"""The edge's state: sessions, pending logins and the tokens it has signed. No HTTP here.

Tokens are signed once per session (or service token) and app, then reused until close to expiry;
tokens that come back in cookies are verified once and remembered, so a request costs a dict
lookup, not an RSA operation.

Everything with a lifetime sits in an :class:`Expiring` store: dropped when it expires, at a cost
that does not grow with how many there are, and capped (oldest out first), so that a long run or
a flood of sign-ins neither grows memory without bound nor slows sign-in down.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import hmac
import ipaddress
import json
import math
import secrets
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from . import claims, tokens
from .clock import Clock
from .config import App, Config, IngressRule, Policy, ServiceToken, sub_for
from .errors import UnknownName
from .expiring import Expiring, PackedExpiring, Record
from .keys import ROTATION_GRACE, KeyStore, SigningKey
from .oauth import Grant, OAuthStore
from .policy import AppIndex, Identity, IngressIndex, Verdict
from .record import RECORD_LIMIT, RequestLog

if TYPE_CHECKING:
    from .faults import CertsFault

REUSE_MARGIN = 60  # re-sign a cached token when it has less than this many seconds left
CACHE_LIMIT = 10_000
LOGIN_NONCE_TTL = 120
SESSION_DURATION = 24 * 3600  # the team-domain (global) session, Cloudflare's default (spec §1.6)
# Hard caps: past them the oldest entry is dropped. 100,000 sessions are ~70 MB at the ~0.7 KiB
# each one costs (one packed record, see SessionStore; its tokens' text is cached apart); an evicted
# session's tokens stop working (sign in again).
SESSION_LIMIT = 100_000
PENDING_LIMIT = 100_000  # callback nonces and chain hops: each lives two minutes
# One-time PINs: five guesses a code (web_login), and at most this many codes not yet redeemed per
# address and per client address in any ten minutes: 25 guesses per address per 10 min, so an even
# chance at a six-digit code takes about 200 days. Redeemed codes give their slot back, so a test
# suite signing the same user in again and again is never held back.
OTP_TTL = 600
OTP_WINDOW = 600
OTP_PER_EMAIL = 5
OTP_PER_CLIENT = 20


# the same user's sessions share one ``sub`` string rather than each making its own (issue 16)
_sub = functools.lru_cache(maxsize=4096)(sub_for)


_NO_TOKENS: Mapping[str, tuple[int, int, str]] = MappingProxyType({})
_NO_REASONS: Mapping[str, str] = MappingProxyType({})


@dataclass(init=False, slots=True, weakref_slot=True)
class Session:
    """One sign-in: the org session on the team domain and every app token minted from it.

    The tokens themselves are not kept here but in the edge's bounded cache: RS256 (PKCS #1 v1.5)
    signatures are deterministic, so the claims' times and the key's id are enough to sign the
    very same token again once the cache has let it go (issue 16).

    The edge holds its sessions packed (:class:`SessionStore`); this object is made from its record
    when asked for, and stays the one object for that session while anything refers to it. Every
    change to it is written back to the record, so ``app_tokens`` and ``justified`` are read-only:
    :meth:`add_app_token` and :meth:`justify` change them.
    """

    nonce: str  # the JWT identity_nonce, shared by every token of this session
    identity: Identity
    sub: str
    iat: int
    exp: int
    org_kid: str  # the key its org token was signed with; "" until first used (a session made to mint never is)
    revoked_at: float | None
    app_tokens: Mapping[str, tuple[int, int, str]]  # aud -> (iat, exp, kid)
    justified: Mapping[str, str]  # aud -> the purpose given (spec §14.5)
    mfa_at: float | None  # when the independent MFA step was passed (spec §14.5)
    _store: SessionStore | None = field(init=False, repr=False, compare=False)  # where changes are written back

    def __init__(
        self,
        nonce: str,
        identity: Identity,
        sub: str,
        iat: int,
        exp: int,
        org_kid: str = "",
        revoked_at: float | None = None,
        app_tokens: Mapping[str, tuple[int, int, str]] = _NO_TOKENS,
        justified: Mapping[str, str] = _NO_REASONS,
        mfa_at: float | None = None,
    ) -> None:
        setattr_ = object.__setattr__  # not __setattr__: nothing to write back to yet
        setattr_(self, "_store", None)
        setattr_(self, "nonce", nonce)
        setattr_(self, "identity", identity)
        setattr_(self, "sub", sub)
        setattr_(self, "iat", iat)
        setattr_(self, "exp", exp)
        setattr_(self, "org_kid", org_kid)
        setattr_(self, "revoked_at", revoked_at)
        setattr_(self, "app_tokens", app_tokens)
        setattr_(self, "justified", justified)
        setattr_(self, "mfa_at", mfa_at)

    def __setattr__(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)
        if self._store is not None:
            self._store.write(self)

    @property
    def last_exp(self) -> float:
        """When the last token this edge signed for the session expires."""
        return max([self.exp, *(exp for _, exp, _ in self.app_tokens.values())])

    def alive(self, now: float) -> bool:
        return now < self.exp and (self.revoked_at is None or now < self.revoked_at)

    def add_app_token(self, aud: str, times: tuple[int, int, str]) -> None:
        """Record the (iat, exp, kid) of the app token signed for ``aud``."""
        self.app_tokens = MappingProxyType({**self.app_tokens, aud: times})

    def justify(self, aud: str, reason: str) -> None:
        """Record the purpose given for ``aud`` (spec §14.5)."""
        self.justified = MappingProxyType({**self.justified, aud: reason})


_IDENTITY_FIELDS = tuple(f.name for f in dataclasses.fields(Identity) if f.name != "user")  # text and tuples of it
_JSON = json.JSONEncoder(separators=(",", ":"), default=dict).encode  # made once (json.dumps makes one a call)


class SessionStore(PackedExpiring[str, Session]):
    """The sessions by nonce, each packed in one record (:class:`PackedExpiring` says why).

    A :class:`Session` object is made from its record when asked for and kept, weakly, so that it
    is the same object while anything refers to it (a logout through one holder is seen by all);
    its changes are written back (:meth:`write`). Its identity is written out field by field but
    for the config's ``User``, which the store keeps while a record refers to it.
    """

    __slots__ = ("_live", "_users")

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self._live: weakref.WeakValueDictionary[str, Session] = weakref.WeakValueDictionary()
        self._users: dict[int, list[Any]] = {}  # id(user) -> [user, records referring to it]

    def put(self, key: str, value: Session, expires: float, now: float) -> Session | None:
        """Keep ``value`` until ``expires``; returns the session the cap pushed out, if any."""
        evicted = super().put(key, value, expires, now)
        object.__setattr__(value, "_store", self)
        self._live[key] = value
        return evicted

    def get(self, key: str, now: float) -> Session | None:
        record = self._find(key, now)
        if record is None:
            return None
        return self._value(record)  # the object in use, else one made

    def write(self, session: Session) -> None:
        """Write ``session``'s fields back to its record (it changed), if it is the one held."""
        if self._live.get(session.nonce) is session:
            self.rewrite(session.nonce, session)

    def clear(self) -> None:
        super().clear()
        self._users = {}

    def _encode(self, value: Session) -> tuple[int, bytes]:
        who = value.identity
        user_id = 0
        if who.user is not None:
            user_id = id(who.user)
            self._users.setdefault(user_id, [who.user, 0])[1] += 1
        fields: list[object] = [getattr(who, name) for name in _IDENTITY_FIELDS]
        fields += [value.sub, value.iat, value.exp, value.org_kid, value.revoked_at, value.app_tokens]
        fields += [value.justified, value.mfa_at]
        # JSON is written at its final size (marshal grows its buffer past 512 bytes, then shrinks
        # it: a hole in the C heap per record, which the record then split)
        return user_id, _JSON(fields).encode()

    def _value(self, record: Record) -> Session:
        nonce = record.key()
        session = self._live.get(nonce)
        if session is not None:
            return session
        fields = json.loads(record.payload())  # the padding is white space
        user_id = record.tag()
        user = self._users[user_id][0] if user_id else None
        size = len(_IDENTITY_FIELDS)
        known = {name: tuple(v) if isinstance(v, list) else v for name, v in zip(_IDENTITY_FIELDS, fields, strict=False)}
        who = Identity(**known, user=user)  # type: ignore[arg-type]
        sub, iat, exp, org_kid, revoked_at, tokens_, why, mfa_at = fields[size:]
        session = Session(
            nonce,
            who,
            sub,
            iat,
            exp,
            org_kid,
            revoked_at,
            MappingProxyType({aud: (t[0], t[1], t[2]) for aud, t in tokens_.items()}) if tokens_ else _NO_TOKENS,
            MappingProxyType(why) if why else _NO_REASONS,
            mfa_at,
        )
        object.__setattr__(session, "_store", self)
        self._live[nonce] = session
        return session

    def _released(self, record: Record) -> None:
        user_id = record.tag()
        if user_id:
            held = self._users[user_id]
            held[1] -= 1
            if not held[1]:
                del self._users[user_id]


class TokenCache(PackedExpiring[tuple[str, str], str]):
    """The tokens signed for sessions by (session nonce, aud; "" for the org token), each packed
    with its key in one record (:class:`PackedExpiring`): a token's text is over 512 bytes anyway,
    so what its entry costs besides is the dict's slot and the heap's."""

    __slots__ = ()

    def _text(self, key: tuple[str, str]) -> str:
        nonce, aud = key
        return f"{aud} {nonce}"  # an AUD has no space

    def _encode(self, value: str) -> tuple[int, bytes]:
        return 0, value.encode("utf-8", "surrogatepass")

    def _value(self, record: Record) -> str:
        return record.payload().rstrip(b" ").decode("utf-8", "surrogatepass")  # a JWT has no space


@dataclass(frozen=True, slots=True)
class Credential:
    """A verified token presented by a client (cookie, Cf-Access-Token or assertion header)."""

    token: str
    kind: Literal["app", "org", "service"]
    claims: dict[str, Any]
    exp: float
    auds: frozenset[str]
    kid: str
    session: Session | None = None
    service_token: ServiceToken | None = None


@dataclass(frozen=True, slots=True)
class PendingLogin:
    """A callback nonce: one use, bound to the app host where the login started (spec §1.4)."""

    session: Session
    app: App
    host: str  # host[:port], lower-case
    redirect_path: str
    policy: Policy | None
    app_session_hash: str  # of the CF_AppSession the browser got with the 302 to the login (spec §1.2)
    final: str | None = None  # eager chain (spec §1.4): where the last hop sends the browser
    chain: tuple[str, ...] | None = None  # app hosts still to visit; None before the first hop


@dataclass(frozen=True, slots=True)
class ChainHop:
    """The next host of an eager cookie chain (spec §1.4), waiting for the browser to arrive there.

    Each host of the chain is signed in like any other: the browser gets that host's own
    ``CF_AppSession`` and signed ``meta``, the team domain completes the login silently from the
    browser's org session, and the callback checks that host's ``CF_AppSession``. The hop only
    says where the chain goes next and for which session, so a leaked hop URL signs nobody in.
    """

    session: Session
    app: App
    host: str  # host[:port], lower-case
    rest: tuple[str, ...]  # hosts after this one
    final: str  # where the browser goes when the chain is done


@dataclass(slots=True)
class OneTimePin:
    """A code sent (printed) for ``email``, asked for from ``client`` (its limit key); five wrong tries and it is gone."""

    email: str
    code: str
    client: str
    failures: int = 0


class IssueLimit:
    """At most ``count`` things issued per key in any ``window`` seconds: a sliding log per key.

    Each key's log holds at most ``count`` (time, id) rows, and the keys live in an
    :class:`Expiring` store that forgets a key once its window is empty.
    """

    def __init__(self, count: int, window: float, keys: int = PENDING_LIMIT) -> None:
        self.count = count
        self.window = window
        self._logs: Expiring[str, list[tuple[float, str]]] = Expiring(keys)

    def _live(self, key: str, now: float) -> list[tuple[float, str]]:
        return [row for row in self._logs.get(key, now) or () if row[0] > now - self.window]

    def wait(self, key: str, now: float) -> float:
        """Seconds until ``key`` may have one more; 0 when it may now."""
        log = self._live(key, now)
        if len(log) < self.count:
            return 0.0
        return log[-self.count][0] + self.window - now

    def record(self, key: str, item: str, now: float) -> None:
        log = self._live(key, now)
        log.append((now, item))
        self._logs.put(key, log, now + self.window, now)

    def clear(self) -> None:
        self._logs.clear()

    def prune(self, now: float) -> None:
        self._logs.prune(now)

    def release(self, key: str, item: str, now: float) -> None:
        """Give ``item``'s slot back (a code that was used as meant)."""
        log = [row for row in self._live(key, now) if row[1] != item]
        if log:
            self._logs.put(key, log, log[-1][0] + self.window, now)
        else:
            self._logs.pop(key, now)


def _client_key(client: str) -> str:
    """The address a client limit counts against: an IPv6 client's /64, which one host commonly owns whole."""
    try:
        ip = ipaddress.ip_address(client)
    except ValueError:
        return client
    return str(ipaddress.ip_network(f"{ip}/64", strict=False)) if ip.version == 6 else str(ip)


APPROVAL_LIMIT = 24 * 3600  # spec §14.5: an approver grants up to 24 h
ApprovalState = Literal["pending", "approved", "denied"]


@dataclass(slots=True)
class Approval:
    """A temporary-authentication request (spec §14.5): one per sign-in and app."""

    id: str
    session_nonce: str
    email: str
    app: str
    reason: str
    requested_at: float
    state: ApprovalState = "pending"
    until: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "email": self.email,
            "app": self.app,
            "reason": self.reason,
            "requested_at": self.requested_at,
            "state": self.state,
            "until": self.until if self.state == "approved" else None,
        }


_NO_SECRET = b"\0" * 32
# ServiceToken.secrets_at, encoded, per token (by identity: a reconfigured token is a new object):
# (token, secrets, from, until) holds for any time in [from, until), where no secret starts or ends
_SECRETS: dict[int, tuple[ServiceToken, tuple[bytes, ...], float, float]] = {}


def _valid_secrets(token: ServiceToken, now: float) -> tuple[bytes, ...]:
    """``token.secrets_at(now)`` encoded for ``hmac.compare_digest``, worked out once per token and
    kept until one of them expires (issue 16: a service-token request paid ~1 µs for it)."""
    cached = _SECRETS.get(id(token))
    if cached is not None and cached[0] is token and cached[2] <= now < cached[3]:
        return cached[1]
    valid = tuple(s.encode("utf-8", "surrogatepass") for s in token.secrets_at(now))
    ends = [until for _, until in token.previous_client_secrets if now < until]
    if token.expires_at is not None and now < token.expires_at:
        ends.append(token.expires_at)
    if len(_SECRETS) >= 1024:
        _SECRETS.clear()
    # the set changes only when the clock crosses an expiry (disabled: never); a clock set back
    # before ``now`` works it out again
    _SECRETS[id(token)] = (token, valid, now, min(ends, default=math.inf))
    return valid


@dataclass(slots=True)
class Edge:
    """Everything the web handlers share. Build with :func:`Edge.create`.

    Its state comes in four kinds, each with one way to reset it:

    - the config and the lookups built from it (``index``, ``ingress``, apps by AUD, service
      tokens by client id): rebuilt by :meth:`reconfigure`;
    - caches, each one only a shortcut to what the config, the keys and the sessions give
      (verified tokens, policy verdicts, signed service-token JWTs): dropped whole by
      :meth:`reconfigure` and :meth:`end_sessions`, the signed JWTs also by a key rotation
      (see :meth:`_drop_caches`). A session's own app JWTs are no cache: their times and key
      are the record of what the session holds (logout keeps the session until the last one
      expires), reused until close to expiry whatever the config says since; only their text
      sits in a bounded cache (``_session_tokens``), kept across a reconfigure, signed again
      identical when it has let one go (RS256 is deterministic);
    - sign-in state (sessions, pending logins, chain hops, one-time PINs and their limits,
      approval requests): ended by :meth:`end_sessions` (tests: ``reset()``);
    - test hooks (a certs fault, the request journal): set only through
      :meth:`set_certs_fault`, :meth:`start_recording` and :meth:`stop_recording`.
    """

    config: Config
    clock: Clock
    keys: KeyStore
    index: AppIndex
    ingress: IngressIndex
    team_domain: str = ""
    _team_hostname: tuple[str, str] = ("", "")  # (team_domain it was derived from, host name)
    ports: set[int] = field(default_factory=set)
    tls_ports: set[int] = field(default_factory=set)  # the subset of ports that speak TLS
    sessions: SessionStore = field(default_factory=lambda: SessionStore(SESSION_LIMIT))
    # sessions the cap pushed out, kept (bounded) until their tokens expire so _adopt refuses them
    _evicted: SessionStore = field(default_factory=lambda: SessionStore(SESSION_LIMIT))
    logins: Expiring[str, PendingLogin] = field(default_factory=lambda: Expiring(PENDING_LIMIT))
    chain_hops: Expiring[str, ChainHop] = field(default_factory=lambda: Expiring(PENDING_LIMIT))
    otps: Expiring[str, OneTimePin] = field(default_factory=lambda: Expiring(PENDING_LIMIT))
    otps_per_email: IssueLimit = field(default_factory=lambda: IssueLimit(OTP_PER_EMAIL, OTP_WINDOW))
    otps_per_client: IssueLimit = field(default_factory=lambda: IssueLimit(OTP_PER_CLIENT, OTP_WINDOW))
    # tokens verified once (until they expire) and policy verdicts (a day at most), CACHE_LIMIT each
    _verified: Expiring[str, Credential] = field(default_factory=lambda: Expiring(CACHE_LIMIT))
    verdicts: Expiring[tuple[str, str | None, str, str, str | None], Verdict] = field(
        default_factory=lambda: Expiring(CACHE_LIMIT)
    )
    _app_tokens: dict[tuple[str, str], tuple[str, float]] = field(default_factory=dict)  # service tokens
    # (session nonce, aud; "" for the org token) -> the token last signed, CACHE_LIMIT of them (see Session)
    _session_tokens: TokenCache = field(default_factory=lambda: TokenCache(CACHE_LIMIT))
    _apps_by_aud: dict[str, App] = field(default_factory=dict)
    _apps_by_name: dict[str, App] = field(default_factory=dict)
    _tokens_by_client_id: dict[str, ServiceToken] = field(default_factory=dict)
    oauth: OAuthStore = field(default_factory=OAuthStore)  # managed OAuth (spec §14.2)
    certs_fault: CertsFault | None = None  # tests: /cdn-cgi/access/certs slow, empty or failing
    handling: int = 0  # requests in handle() now: a sync test waits for 0 before it reads the journal
    recorder: RequestLog | None = None  # the journal of the last `journal` requests (fakeedge.record)
    # (session nonce, aud) -> request, kept as long as the sign-in it belongs to
    approvals: Expiring[tuple[str, str], Approval] = field(default_factory=lambda: Expiring(SESSION_LIMIT))

    def request_approval(self, session: Session, app: App, reason: str) -> Approval:
        """The pending request of this sign-in for ``app``, made now if there is none (spec §14.5)."""
        key = (session.nonce, app.aud)
        now = self.clock.now()
        found = self.approvals.get(key, now)
        if found is None or found.state != "pending":
            found = Approval(secrets.token_hex(8), session.nonce, session.identity.email, app.name, reason, now)
            self.approvals.put(key, found, session.exp, now)
        return found

    def approval(self, session: Session, app: App) -> Approval | None:
        return self.approvals.get((session.nonce, app.aud), self.clock.now())

    def decide_approval(self, approval_id: str, *, approve: bool, duration: float) -> Approval:
        """Grant (for ``duration`` seconds, at most 24 h) or deny a pending request."""
        found = next((a for a in self.approvals.values() if a.id == approval_id), None)
        if found is None:
            raise UnknownName(f"no approval request {approval_id!r}")
        if not 0 < duration <= APPROVAL_LIMIT:
            raise ValueError("duration: expected above zero and at most 24h")
        found.state = "approved" if approve else "denied"
        found.until = self.clock.now() + duration if approve else 0.0
        return found

    @classmethod
    def create(cls, config: Config, clock: Clock | None = None, keys: KeyStore | None = None) -> Edge:
        """An edge for ``config``; ``keys`` (default: loaded from ``config.keys_dir``) lets test
        edges share one loaded key instead of parsing it again (fakeedge.testing)."""
        clock = clock or Clock()
        edge = cls(
            config=config,
            clock=clock,
            keys=keys if keys is not None else KeyStore(config.keys_dir, clock.now()),
            index=AppIndex(config.apps),
            ingress=IngressIndex(config.ingress),
        )
        edge.reconfigure(config)
        if config.journal:
            edge.start_recording(config.journal)
        return edge

    def reconfigure(self, config: Config) -> None:
        """Use ``config`` from now on (tests fill in origin URLs, add personas, reset).

        Every lookup is built again from it and every cache dropped: a credential, a signed
        service-token JWT or a verdict worked out under the old config is worked out again, so
        that a service token, app or policy taken out stops counting with the next request.
        Sessions stay signed in.
        """
        self.config = config
        if config.team_domain:
            self.team_domain = config.team_domain
        self.index = AppIndex(config.apps)
        self.ingress = IngressIndex(config.ingress)
        self._apps_by_aud = {a.aud: a for a in config.apps}
        self._apps_by_name = {a.name: a for a in reversed(config.apps)}  # the first of a name, as a loop finds
        self._tokens_by_client_id = {t.client_id: t for t in config.service_tokens}
        self._drop_caches()

    def _drop_caches(self) -> None:
        """Forget every shortcut: tokens verified, verdicts reached, service-token JWTs signed."""
        for cache in (self._verified, self.verdicts, self._app_tokens):
            cache.clear()

    # -- test hooks (fakeedge.testing, the control API, the audit): their only writers --

    def set_certs_fault(self, fault: CertsFault | None) -> None:
        """Answer ``/cdn-cgi/access/certs`` as ``fault`` says from now on; ``None``: normally again.

        The fault in effect before ends now, so that a slow answer it is holding up goes out.
        """
        if self.certs_fault is not None and self.certs_fault is not fault:
            self.certs_fault.clear()
        self.certs_fault = fault

    def start_recording(self, limit: int = RECORD_LIMIT) -> RequestLog:
        """The request journal in use, else a new one that keeps the last ``limit`` requests."""
        if self.recorder is None:
            self.recorder = RequestLog(limit)
        return self.recorder

    def stop_recording(self) -> None:
        """Keep no journal from now on (the one in use, and its records, are let go)."""
        self.recorder = None

    # -- addresses --

    @property
    def team_host(self) -> str:
        """The team domain's host[:port], lower-case, as a Host header carries it."""
        return urlsplit(self.team_domain).netloc

    @property
    def team_hostname(self) -> str:
        """The team domain's host name alone: cookies, and so sessions, ignore ports.

        Read on every request, so derived once per value of ``team_domain``.
        """
        domain, hostname = self._team_hostname
        if domain != self.team_domain:
            netloc = self.team_host
            hostname = netloc[: netloc.index("]") + 1] if netloc.startswith("[") else netloc.split(":", 1)[0]
            self._team_hostname = (self.team_domain, hostname)
        return hostname

    def route(self, host: str, path: str) -> IngressRule:
        """The ingress rule that routes (host, path)."""
        return self.ingress.route(host, path)[1]

    def app_by_aud(self, aud: str) -> App | None:
        return self._apps_by_aud.get(aud)

    def app(self, name: str) -> App:
        """The app named ``name``: the one lookup of apps by name (the CLI, the control API, tests).

        Raises:
            UnknownName: no app has that name; the message lists those that exist.
        """
        app = self._apps_by_name.get(name)
        if app is None:
            raise UnknownName.among("app", name, [a.name for a in self.config.apps])
        return app

    def service_token_named(self, name: str) -> ServiceToken:
        """The service token whose name, id or client id is ``name``.

        Raises:
            UnknownName: no such service token; the message lists those that exist.
        """
        for token in self.config.service_tokens:
            if name in (token.name, token.id, token.client_id):
                return token
        raise UnknownName.among("service token", name, [t.name for t in self.config.service_tokens])

    def rotate_keys(self, grace: float = ROTATION_GRACE) -> SigningKey:
        """A new current signing key; the previous one stays in certs for ``grace`` seconds (spec §3)."""
        key = self.keys.rotate(self.clock.now(), grace)
        self._app_tokens.clear()  # tokens signed from now on use the new key (sessions' by their kid)
        return key

    def refresh_keys(self) -> bool:
        """Take up keys another process sharing ``keys_dir`` rotated to (one ``stat`` if none did).

        Called before serving the certs document, verifying a new token and signing one, so the
        keys this edge serves and signs with are those on disk.
        """
        if not self.keys.refresh():
            return False
        self._app_tokens.clear()  # signed with a key that may have left the certs document
        return True

    def _signing_key(self) -> SigningKey:
        self.refresh_keys()
        return self.keys.current

    # -- service tokens --

    def service_token(self, client_id: str, client_secret: str) -> ServiceToken | None:
        """The service token these credentials belong to, secret compared in constant time."""
        token = self._tokens_by_client_id.get(client_id)
        if token is None:
            # compare anyway so that an unknown id costs the same as a wrong secret
            tokens.secrets_equal(client_secret, "\0" * 32)
            return None
        # every secret still valid is compared, whichever matches: a rotation's grace (spec §14.3)
        valid = _valid_secrets(token, self.clock.now())  # none for a disabled or expired token
        given = client_secret.encode("utf-8", "surrogatepass")  # as tokens.secrets_equal compares
        matched = False
        for secret in valid or (_NO_SECRET,):
            matched |= hmac.compare_digest(given, secret)
        return token if matched and valid else None

    def service_token_by_client_id(self, client_id: str) -> ServiceToken:
        return self._tokens_by_client_id[client_id]

    def service_jwt(self, token: ServiceToken, app: App) -> tuple[str, float]:
        """The service-token app JWT (spec §2.3), signed once and reused until near expiry."""
        now = self.clock.now()
        key = (token.client_id, app.aud)
        cached = self._app_tokens.get(key)
        if cached is not None and cached[1] - now > REUSE_MARGIN:
            return cached
        iat = int(now)
        exp = iat + app.session_duration
        payload = self.service_claims(token, app.aud, iat, exp)
        signing_key = self._signing_key()
        jwt = tokens.sign(payload, signing_key, header=tokens.service_header(signing_key), escape_slashes=True)
        self._remember(
            Credential(jwt, "service", payload, exp, frozenset([app.aud]), signing_key.kid, service_token=token)
        )
        self._app_tokens[key] = (jwt, exp)
        return jwt, exp

    # -- token payloads: assembled here only; signed here, or by fakeedge.mint with its variants --

    def user_claims(
        self, session: Session, aud: str, iat: int, exp: int, *, token_type: Literal["app", "org"] = "app"
    ) -> dict[str, Any]:
        """The payload of a user token of ``session`` (spec §2.2): an app token for ``aud``, or
        the org session's (``token_type="org"``, no custom claims: those are the apps')."""
        who = session.identity
        return claims.user_claims(
            aud=aud,
            email=who.email,
            now=iat,
            exp=exp,
            iss=self.team_domain,
            nonce=session.nonce,
            sub=session.sub,
            country=who.country,
            token_type=token_type,
            custom=who.user.custom if who.user and token_type == "app" else None,
        )

    def service_claims(self, token: ServiceToken, aud: str, iat: int, exp: int) -> dict[str, Any]:
        """The payload of a service-token app token for ``aud`` (spec §2.3)."""
        return claims.service_claims(aud=aud, now=iat, exp=exp, iss=self.team_domain, common_name=token.client_id)

    def identity(self, email: str) -> Identity:
        """Who ``email`` is by this config: its ``users:`` entry's attributes, else the defaults."""
        config = self.config
        return Identity.for_email(email, config.user(email), default_country=config.default_country)

    # -- sessions --

    def login(self, identity: Identity) -> Session:
        """Start a session (an org session on the team domain) for a signed-in identity."""
        now = int(self.clock.now())
        nonce = claims.identity_nonce()
        session = Session(nonce, identity, _sub(self.config.team, identity.email), now, now + SESSION_DURATION)
        self._keep(session, now)
        return session

    def _keep(self, session: Session, now: float) -> None:
        """Hold ``session`` until its last token expires (a revoked one too: dropped earlier, its
        tokens would be adopted again as if never logged out, see ``_adopt``)."""
        evicted = self.sessions.put(session.nonce, session, session.last_exp, now)
        if evicted is not None:
            evicted.revoked_at = 0.0  # over the cap: its tokens, remembered or not, stop working now
            self._evicted.put(evicted.nonce, evicted, evicted.last_exp, now)
        self.sweep(now)

    def sweep(self, now: float) -> None:
        """Drop whatever has expired in every store, not only in the one written to.

        Run with every sign-in: a store nobody writes to any more (one-time PINs, chain hops,
        OAuth grants) would otherwise hold its expired entries, and their memory, for good. A
        store with nothing expired costs one comparison.
        """
        stores = (
            self._evicted,
            self.logins,
            self.chain_hops,
            self.otps,
            self._verified,
            self.verdicts,
            self._session_tokens,
        )
        for store in (*stores, self.approvals, self.otps_per_email, self.otps_per_client):
            store.prune(now)
        self.oauth.prune(now)

    def org_token(self, session: Session) -> str:
        """The session's org token (the team domain's ``CF_Authorization``), signed on first use."""
        now = self.clock.now()
        cached = self._session_tokens.get((session.nonce, ""), now)
        if cached is not None:
            return cached
        # the same token again when its key is still served (the cache let it go); else a new one
        key = self.keys.find(session.org_kid, now) if session.org_kid else None
        first = key is None
        if key is None:
            key = self._signing_key()
        payload = self.user_claims(session, self.org_aud, session.iat, session.exp, token_type="org")
        token = tokens.sign(payload, key)
        session.org_kid = key.kid
        self._session_tokens.put((session.nonce, ""), token, session.exp, now)
        if first:
            self._remember(Credential(token, "org", payload, session.exp, frozenset([self.org_aud]), key.kid, session))
        return token

    @property
    def org_aud(self) -> str:
        return hashlib.sha256(f"fakeedge:org:{self.config.team}".encode()).hexdigest()

    def app_jwt(self, session: Session, app: App, policy: Policy | None) -> tuple[str, float]:
        """The user app JWT (spec §2.2) for a session, signed once per session and app."""
        now = self.clock.now()
        signing_key = self._signing_key()
        cached = session.app_tokens.get(app.aud)
        # spec §14.5: under temporary authentication, access lasts as long as the approver granted
        # (the token would otherwise outlive the grant by the rest of the app's session duration)
        granted = self.approval(session, app) if policy is not None and policy.approval_required else None
        until = int(granted.until) if granted is not None and granted.state == "approved" else None
        fresh = (
            cached is None
            or cached[1] - now <= REUSE_MARGIN
            or cached[2] != signing_key.kid
            or (until is not None and cached[1] > until)
        )
        if not fresh:
            assert cached is not None
            token = self._session_tokens.get((session.nonce, app.aud), now)
            if token is not None:
                return token, cached[1]
            iat, exp, _ = cached  # signed again below: the very same token, RS256 being deterministic
        else:
            iat = int(now)
            duration = (
                policy.session_duration if policy and policy.session_duration is not None else app.session_duration
            )
            exp = iat + duration if until is None else min(iat + duration, until)
        payload = self.user_claims(session, app.aud, iat, exp)
        jwt = tokens.sign(payload, signing_key, header=tokens.user_header(signing_key))
        if fresh:
            self._remember(Credential(jwt, "app", payload, exp, frozenset([app.aud]), signing_key.kid, session))
            session.add_app_token(app.aud, (iat, exp, signing_key.kid))  # kept with the session, gone with it
        self._session_tokens.put((session.nonce, app.aud), jwt, exp, now)
        return jwt, exp

    def end_sessions(self) -> None:
        """Back to no session (tests: ``reset()``): every session ends now, kept so that its tokens
        stay refused (not adopted again, see ``_adopt``); pending sign-ins, one-time PINs and
        the token caches and the sessions' temporary-authentication requests are dropped."""
        now = self.clock.now()
        for session in list(self.sessions.values()):
            session.revoked_at = float("-inf")
            self._keep(session, now)
        stores = (self.logins, self.chain_hops, self.otps, self.otps_per_email, self.otps_per_client)
        for state in (*stores, self.approvals, self._session_tokens):
            state.clear()
        self._drop_caches()

    def revoke(self, session: Session) -> None:
        """Log a session out everywhere, after ``logout_delay`` (Cloudflare: 20-30 s; default now)."""
        now = self.clock.now()
        at = now + self.config.logout_delay
        if session.revoked_at is None or at < session.revoked_at:
            session.revoked_at = at
        self._keep(session, now)
        for grant in self.oauth.grants_of_login(session.nonce):
            # issue 12: logout ends the OAuth grants the browser session authorised
            grant_session = self.sessions.get(grant.session_nonce, self.clock.now())
            if grant_session is not None and (grant_session.revoked_at is None or at < grant_session.revoked_at):
                grant_session.revoked_at = at

    # -- managed OAuth (spec §14.2) --

    def oauth_session(self, identity: Identity, exp: float) -> Session:
        """A session of its own for an OAuth grant, living as long as its refresh tokens."""
        now = int(self.clock.now())
        nonce = claims.identity_nonce()
        session = Session(nonce, identity, _sub(self.config.team, identity.email), now, int(exp))
        self._keep(session, now)
        return session

    def revoke_grant(self, grant_id: str | None) -> Grant | None:
        """End an OAuth grant now: its tokens, and the app JWTs minted for it, stop working."""
        grant = self.oauth.revoke(grant_id) if grant_id is not None else None
        if grant is not None:
            now = self.clock.now()
            session = self.sessions.get(grant.session_nonce, now)
            if session is not None:
                session.revoked_at = now if session.revoked_at is None else min(now, session.revoked_at)
        return grant

    def revoke_oauth(self, *, grant: str | None = None, email: str | None = None) -> list[Grant]:
        """End the grant with this id, or every grant of this email; the grants ended."""
        wanted = email.lower() if email is not None else None
        ids = [
            g.id
            for g in list(self.oauth.grants.values())
            if g.id == grant or (wanted is not None and g.identity.email.lower() == wanted)
        ]
        return [g for g in (self.revoke_grant(i) for i in ids) if g is not None]

    def oauth_document(self) -> dict[str, Any]:
        """Registered clients and live grants, JSON-ready (the control API's ``GET oauth``)."""
        now = self.clock.now()

        def app_name(aud: str) -> str | None:
            app = self.app_by_aud(aud)
            return app.name if app is not None else None

        return {
            "clients": [
                {
                    "client_id": c.client_id,
                    "app": app_name(c.aud),
                    "redirect_uris": list(c.redirect_uris),
                    "token_endpoint_auth_method": c.auth_method,
                    "client_id_issued_at": c.issued_at,
                }
                for c in self.oauth.clients.values()
            ],
            "grants": [
                {
                    "id": g.id,
                    "client_id": g.client_id,
                    "app": app_name(g.aud),
                    "email": g.identity.email,
                    "expires": g.expires,
                    "access_tokens": sum(1 for k in g.access if self.oauth.access.get(k, now) is not None),
                }
                for g in self.oauth.grants.values()
                if g.expires > now
            ],
        }

    def oauth_grant(self, token: str, app: App) -> Grant | None:
        """The live grant behind an ``oauth:`` access token, if it is good for ``app``.

        A grant obtained on one domain of an app is good on all of them (spec §14.2): only the
        app's AUD has to match.
        """
        now = self.clock.now()
        grant = self.oauth.grant_for_access(token, now)
        if grant is None or grant.aud != app.aud:
            return None
        session = self.sessions.get(grant.session_nonce, now)
        if session is None or not session.alive(now):
            return None
        return grant

    def oauth_credential(self, token: str, app: App) -> Credential | None:
        """The app JWT credential an ``oauth:`` access token stands for at the edge, or None."""
        grant = self.oauth_grant(token, app)
        session = None if grant is None else self.sessions.get(grant.session_nonce, self.clock.now())
        if session is None:
            return None
        jwt, _ = self.app_jwt(session, app, None)
        return self.credential(jwt)

    # -- verification --

    def credential(self, token: str) -> Credential | None:
        """A token this edge signed, still valid now, with its session still alive; else None."""
        now = self.clock.now()
        cred = self._verified.get(token, now)
        if cred is None:
            cred = self._verify(token, now)
            if cred is None:
                return None
            self._remember(cred)
        if cred.exp <= now or (cred.session is not None and not cred.session.alive(now)):
            return None
        if cred.service_token is not None and not _valid_secrets(cred.service_token, now):
            return None  # spec §14.3: a disabled or expired token authenticates nothing, its JWTs neither
        if self.keys.find(cred.kid, now) is None:
            return None  # signed by a key that has left the certs document
        return cred

    def _verify(self, token: str, now: float) -> Credential | None:
        self.refresh_keys()  # a token signed with a key rotated to by another process
        verified = tokens.verify(token, self.keys, now)
        if verified is None:
            return None
        kid, payload = verified
        aud = payload.get("aud")
        auds = frozenset([aud] if isinstance(aud, str) else aud if isinstance(aud, list) else [])
        if payload.get("iss") != self.team_domain:
            return None
        if payload.get("sub") == "":
            st = self._tokens_by_client_id.get(payload.get("common_name", ""))
            if st is None:
                return None
            return Credential(token, "service", payload, payload["exp"], auds, kid, service_token=st)
        session = self.sessions.get(payload.get("identity_nonce", ""), now)
        if session is None:
            session = self._adopt(payload)
            if session is None:
                return None
        elif payload.get("email") != session.identity.email:
            # the edge would decide on the session's identity while the origin reads the token's:
            # a token that names one user and another's session is no one's (minted with claims=)
            return None
        kind: Literal["app", "org"] = "org" if payload.get("type") == "org" else "app"
        return Credential(token, kind, payload, payload["exp"], auds, kid, session)

    def _adopt(self, payload: dict[str, Any]) -> Session | None:
        """The session of a user token signed with our keys elsewhere (``fakeedge token``, another
        process with the same ``keys_dir``, an edge before a restart), kept from now on so that
        logout revokes it like any other. Issue 11: any token the running edge can verify and has
        not revoked is accepted, whoever minted it."""
        nonce, email = payload.get("identity_nonce"), payload.get("email")
        iat, exp = payload.get("iat"), payload.get("exp")
        if not (isinstance(nonce, str) and nonce and isinstance(email, str) and email):
            return None
        if self._evicted.get(nonce, self.clock.now()) is not None:
            return None  # pushed out by the session cap: its tokens stay refused
        if not (isinstance(iat, int | float) and isinstance(exp, int | float)):
            return None
        who = self.identity(email)
        country = payload.get("country")
        if isinstance(country, str) and country:
            who = dataclasses.replace(who, country=country)
        session = Session(nonce, who, str(payload.get("sub") or _sub(self.config.team, email)), int(iat), int(exp))
        self._keep(session, self.clock.now())
        return session

    def remember_verdict(self, key: tuple[str, str | None, str, str, str | None], verdict: Verdict) -> None:
        """Keep a policy verdict for (app, session, address, country, service token), bounded.

        For a day at most, the longest a browser sign-in lives: so that a verdict goes soon after
        its session (its key holds the session's nonce), and the verdicts of sessions that ended
        do not stay behind. Recomputed after that, as on any miss.
        """
        now = self.clock.now()
        self.verdicts.put(key, verdict, now + SESSION_DURATION, now)

    def _remember(self, cred: Credential) -> None:
        self._verified.put(cred.token, cred, cred.exp, self.clock.now())

    # -- login nonces --

    def add_login(self, pending_args: dict[str, Any]) -> str:
        nonce = secrets.token_urlsafe(24)
        now = self.clock.now()
        self.logins.put(nonce, PendingLogin(**pending_args), now + LOGIN_NONCE_TTL, now)
        return nonce

    def take_login(self, nonce: str) -> PendingLogin | None:
        """Pop a callback nonce: whatever happens next, it cannot be used twice."""
        return self.logins.pop(nonce, self.clock.now())

    def add_chain_hop(self, hop_args: dict[str, Any]) -> str:
        hop_id = secrets.token_urlsafe(24)
        now = self.clock.now()
        self.chain_hops.put(hop_id, ChainHop(**hop_args), now + LOGIN_NONCE_TTL, now)
        return hop_id

    def chain_hop(self, hop_id: str, *, take: bool) -> ChainHop | None:
        """The chain hop of that id if it has not expired; ``take`` makes it the last use."""
        now = self.clock.now()
        return self.chain_hops.pop(hop_id, now) if take else self.chain_hops.get(hop_id, now)

    # -- one-time PINs --

    def otp_wait(self, email: str, client: str) -> tuple[float, Literal["email", "client"]]:
        """Seconds before another code may go to ``email`` asked from ``client`` (0: now), and which limit."""
        now = self.clock.now()
        by_email = self.otps_per_email.wait(email.lower(), now)
        by_client = self.otps_per_client.wait(_client_key(client), now)
        return (by_email, "email") if by_email >= by_client else (by_client, "client")

    def add_otp(self, email: str, client: str) -> tuple[str, OneTimePin]:
        """A new code for ``email`` (call :meth:`otp_wait` first): its id and the code."""
        now = self.clock.now()
        otp_id = secrets.token_urlsafe(16)
        pin = OneTimePin(email, f"{secrets.randbelow(10**6):06d}", _client_key(client))
        self.otps.put(otp_id, pin, now + OTP_TTL, now)
        self.otps_per_email.record(email.lower(), otp_id, now)
        self.otps_per_client.record(pin.client, otp_id, now)
        return otp_id, pin

    def otp(self, otp_id: str) -> OneTimePin | None:
        """The code of that id, if it has neither expired nor been used up."""
        return self.otps.get(otp_id, self.clock.now())

    def check_otp(self, otp_id: str, code: str, attempts: int) -> Literal["ok", "wrong", "spent", "expired"]:
        """Try ``code``: right (the code is used up, its slots given back), wrong, or wrong too often."""
        now = self.clock.now()
        pin = self.otps.get(otp_id, now)
        if pin is None:
            return "expired"
        if tokens.secrets_equal(code, pin.code):
            self.otps.pop(otp_id, now)
            self.otps_per_email.release(pin.email.lower(), otp_id, now)
            self.otps_per_client.release(pin.client, otp_id, now)
            return "ok"
        pin.failures += 1
        if pin.failures >= attempts:
            # a six-digit code would fall to guessing well within its lifetime otherwise; its
            # slots stay taken, so the next code for this address waits its turn
            self.otps.pop(otp_id, now)
            return "spent"
        return "wrong"

    # -- identity documents --

    def identity_document(self, cred: Credential, ip: str) -> dict[str, Any]:
        """``get-identity`` (spec §4.1): the composite identity of a session or service token."""
        base: dict[str, Any]
        if cred.session is None:
            st = cred.service_token
            base = {
                "email": "",
                "common_name": st.client_id if st else "",
                "service_token_id": st.id if st else "",
                "service_token_status": True,
            }
        else:
            who = cred.session.identity
            base = {
                "id": cred.session.sub,
                "name": who.name,
                "email": who.email,
                "groups": [{"id": g, "name": g, "email": f"{g}@{who.email.rpartition('@')[2]}"} for g in who.groups],
                "amr": list(who.amr),
                "idp": {"id": who.idp, "type": who.idp},
                "geo": {"country": who.country},
                "user_uuid": cred.session.sub,
                "common_name": "",
                "service_token_id": "",
                "service_token_status": False,
            }
            if who.github_orgs:
                base["github_orgs"] = list(who.github_orgs)
        return {
            **base,
            "account_id": self.account_id,
            "iat": int(cred.claims.get("iat", 0)),
            "ip": ip,
            "auth_status": "NONE",
            "is_warp": False,
            "is_gateway": False,
            "gateway_account_id": "",
            "device_id": "",
            "devicePosture": {},
            "device_sessions": {},
            "mtls_auth": {
                "auth_status": "NONE",
                "cert_issuer_dn": "",
                "cert_issuer_ski": "",
                "cert_presented": False,
                "cert_serial": "",
            },
            "version": 2,
        }

    @property
    def account_id(self) -> str:
        return hashlib.sha256(f"fakeedge:account:{self.config.team}".encode()).hexdigest()[:32]
