"""The edge's state: sessions, pending logins and the tokens it has signed. No HTTP here.

Tokens are signed once per session (or service token) and app, then reused until close to expiry;
tokens that come back in cookies are verified once and remembered, so a request costs a dict
lookup, not an RSA operation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from . import claims, tokens
from .clock import Clock
from .config import App, Config, IngressRule, Policy, ServiceToken, sub_for
from .keys import ROTATION_GRACE, KeyStore, SigningKey
from .policy import AppIndex, Identity, IngressIndex, Verdict

if TYPE_CHECKING:
    from .faults import CertsFault
    from .record import RequestLog

REUSE_MARGIN = 60  # re-sign a cached token when it has less than this many seconds left
CACHE_LIMIT = 10_000
LOGIN_NONCE_TTL = 120


@dataclass(slots=True)
class Session:
    """One sign-in: the org session on the team domain and every app token minted from it."""

    nonce: str  # the JWT identity_nonce, shared by every token of this session
    identity: Identity
    sub: str
    iat: int
    exp: int
    org_token: str = ""
    revoked_at: float | None = None

    def alive(self, now: float) -> bool:
        return now < self.exp and (self.revoked_at is None or now < self.revoked_at)


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
    app_session_hash: str | None
    expires: float
    final: str | None = None  # eager chain (spec §1.4): where the last hop sends the browser
    chain: tuple[str, ...] | None = None  # app hosts still to visit; None before the first hop


@dataclass(slots=True)
class Edge:
    """Everything the web handlers share. Build with :func:`Edge.create`."""

    config: Config
    clock: Clock
    keys: KeyStore
    index: AppIndex
    ingress: IngressIndex
    team_domain: str = ""
    _team_hostname: tuple[str, str] = ("", "")  # (team_domain it was derived from, host name)
    ports: set[int] = field(default_factory=set)
    tls_ports: set[int] = field(default_factory=set)  # the subset of ports that speak TLS
    sessions: dict[str, Session] = field(default_factory=dict)
    logins: dict[str, PendingLogin] = field(default_factory=dict)
    otps: dict[str, tuple[str, str, float]] = field(default_factory=dict)  # id -> (email, code, expires)
    otp_failures: dict[str, int] = field(default_factory=dict)
    _verified: dict[str, Credential] = field(default_factory=dict)
    verdicts: dict[tuple[str, str | None, str, str, str | None], Verdict] = field(default_factory=dict)
    _app_tokens: dict[tuple[str, str], tuple[str, float]] = field(default_factory=dict)
    _apps_by_aud: dict[str, App] = field(default_factory=dict)
    _tokens_by_client_id: dict[str, ServiceToken] = field(default_factory=dict)
    certs_fault: CertsFault | None = None  # tests: /cdn-cgi/access/certs slow, empty or failing
    recorder: RequestLog | None = None  # tests: what origins received; off by default

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
        if config.team_domain:
            edge.team_domain = config.team_domain
        return edge

    def reconfigure(self, config: Config) -> None:
        """Use ``config`` from now on, with every lookup built from it (tests fill in origin URLs)."""
        self.config = config
        self.index = AppIndex(config.apps)
        self.ingress = IngressIndex(config.ingress)
        self._apps_by_aud = {a.aud: a for a in config.apps}
        self._tokens_by_client_id = {t.client_id: t for t in config.service_tokens}
        self.verdicts.clear()

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
        for app in self.config.apps:
            if app.name == name:
                return app
        raise KeyError(f"no app named {name!r}; apps: {', '.join(a.name for a in self.config.apps) or 'none'}")

    def rotate_keys(self, grace: float = ROTATION_GRACE) -> SigningKey:
        """A new current signing key; the previous one stays in certs for ``grace`` seconds (spec §3)."""
        key = self.keys.rotate(self.clock.now(), grace)
        self._app_tokens.clear()  # tokens signed from now on use the new key
        return key

    # -- service tokens --

    def service_token(self, client_id: str, client_secret: str) -> ServiceToken | None:
        """The service token these credentials belong to, secret compared in constant time."""
        token = self._tokens_by_client_id.get(client_id)
        if token is None:
            # compare anyway so that an unknown id costs the same as a wrong secret
            tokens.secrets_equal(client_secret, "\0" * 32)
            return None
        if tokens.secrets_equal(client_secret, token.client_secret):
            return token
        return None

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
        payload = claims.service_claims(
            aud=app.aud, now=iat, exp=exp, iss=self.team_domain, common_name=token.client_id
        )
        signing_key = self.keys.current
        jwt = tokens.sign(payload, signing_key, header=tokens.service_header(signing_key), escape_slashes=True)
        self._remember(
            Credential(jwt, "service", payload, exp, frozenset([app.aud]), signing_key.kid, service_token=token)
        )
        self._app_tokens[key] = (jwt, exp)
        return jwt, exp

    # -- sessions --

    def login(self, identity: Identity) -> Session:
        """Start a session (an org token on the team domain) for a signed-in identity."""
        now = int(self.clock.now())
        nonce = claims.identity_nonce()
        session = Session(nonce, identity, sub_for(self.config.team, identity.email), now, now + 24 * 3600)
        payload = claims.user_claims(
            aud=self.org_aud,
            email=identity.email,
            now=now,
            exp=session.exp,
            iss=self.team_domain,
            nonce=nonce,
            sub=session.sub,
            country=identity.country,
            token_type="org",
        )
        session.org_token = tokens.sign(payload, self.keys.current)
        self.sessions[nonce] = session
        self._remember(
            Credential(
                session.org_token,
                "org",
                payload,
                session.exp,
                frozenset([self.org_aud]),
                self.keys.current.kid,
                session,
            )
        )
        self._prune(now)
        return session

    @property
    def org_aud(self) -> str:
        return hashlib.sha256(f"fakeedge:org:{self.config.team}".encode()).hexdigest()

    def app_jwt(self, session: Session, app: App, policy: Policy | None) -> tuple[str, float]:
        """The user app JWT (spec §2.2) for a session, signed once per session and app."""
        now = self.clock.now()
        key = (session.nonce, app.aud)
        cached = self._app_tokens.get(key)
        if cached is not None and cached[1] - now > REUSE_MARGIN:
            return cached
        iat = int(now)
        duration = policy.session_duration if policy and policy.session_duration is not None else app.session_duration
        exp = iat + duration
        who = session.identity
        payload = claims.user_claims(
            aud=app.aud,
            email=who.email,
            now=iat,
            exp=exp,
            iss=self.team_domain,
            nonce=session.nonce,
            sub=session.sub,
            country=who.country,
            custom=who.user.custom if who.user else None,
        )
        jwt = tokens.sign(payload, self.keys.current)
        self._remember(Credential(jwt, "app", payload, exp, frozenset([app.aud]), self.keys.current.kid, session))
        self._app_tokens[key] = (jwt, exp)
        return jwt, exp

    def end_sessions(self) -> None:
        """Back to no session (tests: ``reset()``): every session ends now, kept so that its tokens
        stay refused (not adopted again, see ``_adopt``); pending sign-ins, one-time PINs and
        the token caches are dropped."""
        for session in self.sessions.values():
            session.revoked_at = float("-inf")
        for state in (self.logins, self.otps, self.otp_failures, self._verified, self._app_tokens, self.verdicts):
            state.clear()

    def revoke(self, session: Session) -> None:
        """Log a session out everywhere, after ``logout_delay`` (Cloudflare: 20-30 s; default now)."""
        at = self.clock.now() + self.config.logout_delay
        if session.revoked_at is None or at < session.revoked_at:
            session.revoked_at = at

    # -- verification --

    def credential(self, token: str) -> Credential | None:
        """A token this edge signed, still valid now, with its session still alive; else None."""
        now = self.clock.now()
        cred = self._verified.get(token)
        if cred is None:
            cred = self._verify(token, now)
            if cred is None:
                return None
            self._remember(cred)
        if cred.exp <= now or (cred.session is not None and not cred.session.alive(now)):
            return None
        if self.keys.find(cred.kid, now) is None:
            return None  # signed by a key that has left the certs document
        return cred

    def _verify(self, token: str, now: float) -> Credential | None:
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
        session = self.sessions.get(payload.get("identity_nonce", ""))
        if session is None:
            session = self._adopt(payload)
            if session is None:
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
        if not (isinstance(iat, int | float) and isinstance(exp, int | float)):
            return None
        config = self.config
        who = Identity.for_email(email, config.user(email), default_country=config.default_country)
        country = payload.get("country")
        if isinstance(country, str) and country:
            who = dataclasses.replace(who, country=country)
        session = Session(nonce, who, str(payload.get("sub") or sub_for(config.team, email)), int(iat), int(exp))
        self.sessions[nonce] = session
        self._prune(self.clock.now())
        return session

    def remember_verdict(self, key: tuple[str, str | None, str, str, str | None], verdict: Verdict) -> None:
        """Keep a policy verdict for (app, session, address, country, service token), bounded."""
        if len(self.verdicts) >= CACHE_LIMIT:
            self.verdicts.clear()
        self.verdicts[key] = verdict

    def _remember(self, cred: Credential) -> None:
        if len(self._verified) >= CACHE_LIMIT:
            self._verified.clear()
        self._verified[cred.token] = cred

    # -- login nonces --

    def add_login(self, pending_args: dict[str, Any]) -> str:
        nonce = secrets.token_urlsafe(24)
        self.logins[nonce] = PendingLogin(expires=self.clock.now() + LOGIN_NONCE_TTL, **pending_args)
        return nonce

    def take_login(self, nonce: str) -> PendingLogin | None:
        """Pop a callback nonce: whatever happens next, it cannot be used twice."""
        pending = self.logins.pop(nonce, None)
        if pending is None or pending.expires <= self.clock.now():
            return None
        return pending

    def _prune(self, now: float) -> None:
        if len(self.sessions) > CACHE_LIMIT:
            # a revoked session stays until its tokens expire: dropped earlier, its tokens would be
            # adopted again (_adopt) as if never logged out
            for nonce in [n for n, s in self.sessions.items() if now >= s.exp]:
                del self.sessions[nonce]
        for nonce in [n for n, p in self.logins.items() if p.expires <= now]:
            del self.logins[nonce]

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
