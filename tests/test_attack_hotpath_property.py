"""Generated sequences of requests and state changes against the edge's shortcuts (issue 16).

The verdict cache, the verified-token cache, the remembered host checks and app matches hold a
decision for as long as they are kept: a sequence of requests from several users and service
tokens, over kept-alive connections, with sign-outs, an expired session, a removed service token,
a changed persona, strict service-token auth switched on and off and the caches churned in
between, must get the answer each request would get from an edge with no shortcut at all.

The oracle is the test's own reading of the config below (not fakeedge.policy): nothing reaches a
protected origin without an assertion for that app, signed by the edge (verified against its
served JWKS), whose email or service token is that of the credential this request presented, and
with the same email in ``Cf-Access-Authenticated-User-Email``; nothing reaches it when the oracle
says no; the journal names the same identity. ``FAKEEDGE_HYPOTHESIS_EXAMPLES`` sets how many
sequences are tried (100 by default, the file well under 30 s).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from fakeedge.web_app import _split_host

from .conftest import BOT_ID, BOT_SECRET, OTHER_ID, OTHER_SECRET, Origin, RunningEdge, base_config
from .test_hostile_property import reference_path

EXAMPLES = int(os.environ.get("FAKEEDGE_HYPOTHESIS_EXAMPLES", "100"))
ANSWER_TIMEOUT = 10.0  # generous on a shared machine: a hang is a failure, not a wait

T = TypeVar("T")

USERS = {
    "alice": "alice@acme.test",  # groups admins, country GB (base_config)
    "bob": "bob@acme.test",  # no group, country US (the default)
    "octo": "octo@github.test",  # github_orgs acme
    "mallory": "mallory@evil.test",
}
TOKENS = {"bot": (BOT_ID, BOT_SECRET), "other": (OTHER_ID, OTHER_SECRET), "wrong": (BOT_ID, BOT_SECRET[:-1] + "X")}
TOKEN_NAMES = {"bot": "ci-deploy-bot", "other": "other-bot"}
HOSTS = ["admin", "sentry", "grafana", "ops", "uk", "bots", "public"]
APPS = ["Admin", "Admin ops", "Sentry", "Grafana", "Ops", "UK", "Bots"]  # whose tokens can be presented
PATHS = [
    *("/", "/x/y", "/public/x", "/public/..%2fx", "/public/../x", "/public\\..\\x", "/%70ublic/x", "/PUBLIC/x"),
    *("/ops/x", "/ops", "/ops%2fx", "/x/../ops/x", "/x/..%2fops/x", "/ops//x", "/%6Fps/x", "/public/../ops/x"),
]


def attack_config(origin: Origin) -> dict[str, Any]:
    """base_config's Admin (1 h sessions), Sentry and Grafana, and three apps whose verdicts differ
    between users of the same domain or between service tokens."""
    cfg = base_config(origin.url)
    staff = {"email_domain": {"domain": "acme.test"}}
    admins = {
        "name": "admins",
        "decision": "allow",
        "include": [{"oidc": {"claim_name": "groups", "claim_value": "admins"}}],
    }
    cfg["apps"] += [
        {"name": "Admin public", "domain": "admin.acme.test/public/*", "policies": [_everyone("bypass")]},
        {"name": "Admin ops", "domain": "admin.acme.test/ops/*", "policies": [admins]},
        {
            "name": "Ops",
            "domain": "ops.acme.test",
            "policies": [admins],
        },
        {
            "name": "UK",
            "domain": "uk.acme.test",
            "policies": [
                {"name": "uk", "decision": "allow", "include": [staff], "require": [{"geo": {"country_code": "GB"}}]}
            ],
        },
        {
            "name": "Bots",
            "domain": "bots.acme.test",
            "policies": [{"name": "any", "decision": "non_identity", "include": [{"any_valid_service_token": {}}]}],
        },
    ]
    cfg["ingress"] = [{"service": origin.url}]  # every host routed: only Access stands in the way
    return cfg


def _everyone(decision: str) -> dict[str, Any]:
    return {"name": "everyone", "decision": decision, "include": [{"everyone": {}}]}


# --- the oracle: the config above read by hand ------------------------------------------------------


def app_of(host: str, target: str) -> str | None:
    """The app that judges ``target`` on ``host`` (spec §14.1's normalisation, the test's own)."""
    if host == "admin":
        path = reference_path(target)
        return "Admin public" if path.startswith("/public/") else "Admin ops" if path.startswith("/ops/") else "Admin"
    return {"sentry": "Sentry", "grafana": "Grafana", "ops": "Ops", "uk": "UK", "bots": "Bots"}.get(host)


ALLOWED_USERS = {
    "Admin": {"alice", "bob", "octo"},  # acme.test, or the github organisation acme
    "Grafana": {"alice", "bob"},
    "Ops": {"alice"},  # the admins group
    "Admin ops": {"alice"},
    "UK": {"alice"},  # acme.test and GB
}
SERVICE_AUTH = {"Admin": {"bot"}, "Sentry": {"bot"}, "Bots": {"bot", "other"}}
SESSION_HOURS = {"Admin": 1}  # the others: 24 h


@dataclass(frozen=True)
class Cred:
    """A credential a request presents: a user's app token, a service token's headers or its JWT."""

    kind: Literal["user", "headers", "service-jwt"]
    who: str  # a user, or a service token: bot, other, wrong
    app: str | None = None  # whose token (user, service-jwt)
    where: Literal["cookie", "header"] = "cookie"


@dataclass(frozen=True)
class Request:
    host: str
    spelling: tuple[bool, ...]  # upper-case flips of the host's letters
    dot: bool
    port: Literal["", "edge", "other"]
    target: str
    creds: tuple[Cred, ...]
    method: str = "GET"


@dataclass(frozen=True)
class Change:
    what: Literal["revoke", "expire", "remove-other", "persona", "strict", "churn", "reconnect"]
    who: str = ""


Step = Request | Change


@dataclass
class Model:
    """What the oracle knows of the edge's state during one sequence."""

    revoked: set[str] = field(default_factory=set)
    expired: bool = False  # the clock went 2 h on: Admin's 1 h tokens are over
    removed: set[str] = field(default_factory=set)
    strict: bool = False

    def user_valid(self, cred: Cred, app: str) -> bool:
        return cred.app == app and cred.who not in self.revoked and not (self.expired and app in SESSION_HOURS)

    def expect(self, request: Request) -> tuple[str, str | None] | None:
        """None: refused; else (app or "", the identity the assertion must carry or None)."""
        app = app_of(request.host, request.target)
        if app is None:
            return ("", None)
        bypass = app == "Admin public"
        headers = [c for c in request.creds if c.kind == "headers"]
        if headers:
            token = headers[0].who
            valid = token != "wrong" and token not in self.removed
            if self.strict:
                # spec §5: the headers alone decide, 401 when they cannot authenticate, Bypass too;
                # a Bypass policy authorises a valid token, and fakeedge then sends its JWT
                return (app, f"service:{token}") if valid and (bypass or token in SERVICE_AUTH.get(app, ())) else None
            if valid and not bypass:
                return (app, f"service:{token}") if token in SERVICE_AUTH.get(app, ()) else None
        if bypass:
            return (app, None)
        # the first token that is good for this app decides, as if the others were absent (spec §13.6)
        for cred in (
            c for where in ("cookie", "header") for c in request.creds if c.kind != "headers" and c.where == where
        ):
            if cred.kind == "user" and self.user_valid(cred, app):
                return (app, cred.who) if cred.who in ALLOWED_USERS.get(app, ()) else None
            if cred.kind == "service-jwt" and cred.app == app and cred.who not in self.removed:
                if self.expired and app in SESSION_HOURS:
                    continue
                # a service token's JWT counts only where an Allow policy is (spec §5)
                if app in ALLOWED_USERS and cred.who in SERVICE_AUTH.get(app, ()):
                    return (app, f"service:{cred.who}")
                return None
        return None


def get(host: str, *creds: Cred, target: str = "/") -> Request:
    """A plain GET of the corpus."""
    return Request(host, (), False, "", target, creds)


def user(who: str, app: str, where: Literal["cookie", "header"] = "cookie") -> Cred:
    return Cred("user", who, app, where)


def headers(token: str) -> Cred:
    return Cred("headers", token)


def jwt_of(token: str, app: str) -> Cred:
    return Cred("service-jwt", token, app)


# --- generated sequences ---------------------------------------------------------------------------

creds = st.one_of(
    st.builds(
        Cred,
        st.just("user"),
        st.sampled_from(list(USERS)),
        st.sampled_from(APPS),
        st.sampled_from(["cookie", "header"]),
    ),
    st.builds(Cred, st.just("headers"), st.sampled_from(list(TOKENS))),
    st.builds(
        Cred, st.just("service-jwt"), st.sampled_from(["bot", "other"]), st.sampled_from(["Admin", "Sentry", "Bots"])
    ),
)


@st.composite
def requests(draw: st.DrawFn) -> Request:
    host = draw(st.sampled_from(HOSTS))
    presented = draw(st.lists(creds, max_size=3))
    # at most one of each slot, as a client sends them: one cookie, one header, one pair of headers
    slots: dict[tuple[str, str], Cred] = {}
    for cred in presented:
        slots.setdefault(("headers", "") if cred.kind == "headers" else ("token", cred.where), cred)
    return Request(
        host=host,
        spelling=tuple(draw(st.lists(st.booleans(), min_size=len(host), max_size=len(host)))),
        dot=draw(st.booleans()),
        port=draw(st.sampled_from(["", "edge", "other"])),
        target=draw(st.sampled_from(PATHS)) if host == "admin" else draw(st.sampled_from(["/", "/x"])),
        creds=tuple(slots.values()),
        method=draw(st.sampled_from(["GET", "GET", "POST", "HEAD"])),
    )


changes = st.builds(
    Change,
    st.sampled_from(["revoke", "expire", "remove-other", "persona", "strict", "churn", "reconnect"]),
    st.sampled_from(list(USERS)),
)
sequences = st.lists(st.one_of(requests(), requests(), requests(), changes), min_size=1, max_size=14)


# --- the edge, driven from a worker thread ----------------------------------------------------------


class Client:
    """A kept-alive raw connection from the worker thread; a new one when the edge closed it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None
        self.buffer = b""

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock, self.buffer = None, b""

    def exchange(self, data: bytes, method: str) -> tuple[int, dict[str, str]]:
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=ANSWER_TIMEOUT)
        self.sock.sendall(data)
        deadline = time.monotonic() + ANSWER_TIMEOUT
        while b"\r\n\r\n" not in self.buffer:
            self._more(deadline)
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        status = int(lines[0].split(" ", 2)[1])
        if method != "HEAD" and status not in (204, 304):
            assert "content-length" in headers, (status, headers)  # every answer here says its length
            length = int(headers["content-length"])
            while len(self.buffer) < length:
                self._more(deadline)
            self.buffer = self.buffer[length:]
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers

    def _more(self, deadline: float) -> None:
        assert self.sock is not None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no complete answer in time")
        self.sock.settimeout(remaining)
        chunk = self.sock.recv(1 << 16)
        assert chunk, "the edge closed the connection without an answer"
        self.buffer += chunk


@dataclass
class Tokens:
    """The credentials of one sequence, made on the edge's loop before it starts."""

    user: dict[tuple[str, str], str]
    service_jwt: dict[tuple[str, str], str]


def wire(request: Request, tokens: Tokens, port: int) -> bytes:
    base = f"{request.host}.acme.test"
    host = "".join(c.upper() if flip else c for c, flip in zip(base, request.spelling, strict=False))
    host += base[len(request.spelling) :] + ("." if request.dot else "")
    host += {"": "", "edge": f":{port}", "other": ":080"}[request.port]
    lines = [f"{request.method} {request.target} HTTP/1.1", f"Host: {host}"]
    # identity headers a client makes up: never to reach an origin
    lines += ["Cf-Access-Authenticated-User-Email: ceo@acme.test", "cf_access_jwt_assertion: forged"]
    cookies = []
    for cred in request.creds:
        if cred.kind == "headers":
            client_id, secret = TOKENS[cred.who]
            lines += [f"CF-Access-Client-Id: {client_id}", f"CF-Access-Client-Secret: {secret}"]
            continue
        assert cred.app is not None
        token = tokens.user[(cred.who, cred.app)] if cred.kind == "user" else tokens.service_jwt[(cred.who, cred.app)]
        if cred.where == "cookie":
            cookies.append(f"CF_Authorization={token}")
        else:
            lines.append(f"Cf-Access-Token: {token}")
    if cookies:
        lines.append("Cookie: " + "; ".join(cookies))
    if request.method == "POST":
        lines += ["Content-Length: 5", "", "hello"]
        return "\r\n".join(lines).encode()
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.fixture
def hypothesis_home(tmp_path: Path) -> Iterator[None]:
    """Hypothesis's on-disk cache in pytest's temporary directory, not in the checkout."""
    set_hypothesis_home_dir(tmp_path / "hypothesis")
    yield
    set_hypothesis_home_dir(None)


@pytest.mark.usefixtures("hypothesis_home")
async def test_no_shortcut_changes_who_gets_through(
    make_edge: Callable[..., Awaitable[RunningEdge]], origin: Origin
) -> None:
    running = await make_edge(attack_config(origin))
    fake, core = running.fake, running.edge
    loop = asyncio.get_running_loop()
    start_config = core.config
    certs = await (await running.client.get(f"{running.team}/cdn-cgi/access/certs")).json()
    keys = {k.key_id: k for k in jwt.PyJWKSet.from_dict(certs).keys}
    auds = {app.name: app.aud for app in start_config.apps}

    def on_loop(coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(ANSWER_TIMEOUT)

    async def fresh() -> Tokens:
        """The edge as it started, and a session per user with a token for every app."""
        await fake.reset()
        user: dict[tuple[str, str], str] = {}
        for name, email in USERS.items():
            session = core.login(core.identity(email))
            for app in APPS:
                user[(name, app)] = core.app_jwt(session, core.app(app), None)[0]
        service_jwt = {
            (name, app): core.service_jwt(core.service_token_named(TOKEN_NAMES[name]), core.app(app))[0]
            for name in ("bot", "other")
            for app in ("Admin", "Sentry", "Bots")
        }
        return Tokens(user, service_jwt)

    async def change(step: Change, model: Model, tokens: Tokens) -> None:
        config = core.config
        match step.what:
            case "revoke":  # signed out everywhere (logout_delay 0): every token of the session
                nonce = jwt.decode(tokens.user[(step.who, "Admin")], options={"verify_signature": False})[
                    "identity_nonce"
                ]
                session = core.sessions.get(nonce, core.clock.now())
                assert session is not None
                core.revoke(session)
                model.revoked.add(step.who)
            case "expire":
                if not model.expired:
                    core.clock.advance(2 * 3600)
                    model.expired = True
            case "remove-other":
                tokens_left = tuple(t for t in config.service_tokens if t.client_id != OTHER_ID)
                apps = tuple(
                    dataclasses.replace(
                        a,
                        policies=tuple(
                            dataclasses.replace(p, include=tuple(r for r in p.include if r.value != OTHER_ID))
                            for p in a.policies
                        ),
                    )
                    for a in config.apps
                )
                core.reconfigure(dataclasses.replace(config, service_tokens=tokens_left, apps=apps))
                model.removed.add("other")
            case "persona":  # bob joins admins: his session keeps the identity it signed in with
                users = tuple(
                    dataclasses.replace(u, groups=("admins",)) if u.email == USERS["bob"] else u for u in config.users
                )
                core.reconfigure(dataclasses.replace(config, users=users))
            case "strict":
                model.strict = not model.strict
                core.reconfigure(dataclasses.replace(config, strict_service_token_auth=model.strict))
            case "churn":  # more hosts and (host, path) pairs than the caches keep
                for i in range(700):
                    _split_host(f"Churn-{i}.acme.test.")
                    core.index.match(f"churn-{i}.acme.test", f"/{i}")
            case "reconnect":
                pass  # done by the worker thread

    def run(steps: list[Step]) -> None:
        tokens = on_loop(fresh())
        model = Model()
        client = Client(running.port)
        try:
            for step in steps:
                if isinstance(step, Change):
                    on_loop(change(step, model, tokens))
                    if step.what == "reconnect":
                        client.close()
                    continue
                check(client, step, model, tokens)
        finally:
            client.close()

    def check(client: Client, request: Request, model: Model, tokens: Tokens) -> None:
        before = len(origin.received)
        status, answered = client.exchange(wire(request, tokens, running.port), request.method)
        expected = model.expect(request)
        reached = origin.received[before:]
        assert len(reached) <= 1, reached
        assert status != 500, request
        if expected is None:
            assert not reached, (request, model, status, reached)
            return
        assert reached, (request, model, status)
        headers = reached[0].header_items
        assertion = [v for k, v in headers if k.lower() == "cf-access-jwt-assertion"]
        emails = [v for k, v in headers if k.lower() == "cf-access-authenticated-user-email"]
        assert not any(k.lower().replace("_", "-") == "cf-access-jwt-assertion" and v == "forged" for k, v in headers)
        app, identity = expected
        if identity is None:
            assert (assertion, emails) == ([], []), (request, headers)
            return
        assert len(assertion) == 1, (request, headers)
        header = jwt.get_unverified_header(assertion[0])
        claims = jwt.decode(
            assertion[0],
            keys[header["kid"]].key,
            algorithms=["RS256"],
            audience=auds[app],
            issuer=running.team,
            leeway=3 * 3600 if model.expired else 0,  # signed by the edge's clock, 2 h ahead of ours
        )
        if identity.startswith("service:"):
            token = identity.partition(":")[2]
            assert (claims["common_name"], emails) == (TOKENS[token][0], []), (request, model)
            journal_identity = f"service token {TOKEN_NAMES[token]}"
        else:
            assert (claims["email"], emails) == (USERS[identity], [USERS[identity]]), (request, model)
            journal_identity = USERS[identity]
        # the journal's record of this very request (its Ray ID) names the same identity; a streamed
        # answer (HEAD) is recorded once it has ended, which the client may see first
        deadline = time.monotonic() + ANSWER_TIMEOUT
        while (record := next((r for r in fake.requests.all() if r.ray == answered["cf-ray"]), None)) is None:
            assert time.monotonic() < deadline, "the request was never journaled"
            time.sleep(0.01)
        assert (record.path, record.identity, record.email) == (
            request.target,
            journal_identity,
            emails[0] if emails else None,
        )

    # the orders a verdict cache gets wrong, first
    corpus: list[list[Step]] = [
        [get("ops", user("alice", "Ops")), get("ops", user("bob", "Ops"))],  # one domain, two verdicts
        [get("uk", user("alice", "UK")), get("uk", user("bob", "UK"))],  # the country
        [get("admin", user("alice", "Admin")), Change("revoke", "alice"), get("admin", user("alice", "Admin"))],
        [get("admin", user("bob", "Admin")), Change("expire"), get("admin", user("bob", "Admin"))],
        [get("bots", headers("other")), Change("remove-other"), get("bots", headers("other"))],
        [get("bots", headers("other")), Change("strict"), get("bots", headers("other"))],
        [Change("strict"), get("bots", headers("wrong"), user("alice", "Bots")), get("admin", headers("wrong"))],
        [Change("strict"), get("admin", headers("bot")), get("admin", headers("other")), get("admin")],
        [Change("strict"), get("admin"), get("admin", headers("bot")), get("sentry", headers("other"))],
        [get("admin", headers("wrong"), user("alice", "Admin")), Change("strict"), get("admin", headers("wrong"))],
        [get("ops", user("bob", "Ops")), Change("persona", "bob"), get("ops", user("bob", "Ops"))],
        [get("admin", target="/public/x"), Change("churn"), get("admin", target="/public/../x")],
        [get("grafana", user("alice", "Admin"), user("bob", "Grafana", "header"))],  # another app's token: absent
        [get("admin", user("alice", "Admin"), target="/ops/x"), get("admin", user("alice", "Admin ops"), target="/x")],
        [
            get("admin", user("alice", "Admin ops"), target="/x/../ops/x"),
            get("admin", user("bob", "Admin ops"), target="/ops/x"),
        ],
        [get("admin", user("mallory", "Admin"), user("alice", "Admin", "header"))],  # the first good one decides
        [
            get("admin", jwt_of("bot", "Admin")),
            get("sentry", jwt_of("bot", "Sentry")),
            get("admin", jwt_of("other", "Admin")),
        ],
    ]
    for steps in corpus:
        await asyncio.to_thread(run, steps)
    assert origin.received, "the corpus reached no origin"

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,  # the same sequences on every run
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(sequences)
    def search(steps: list[Step]) -> None:
        run(steps)

    await asyncio.to_thread(search)
