"""The request journal: every request the edge answered, what it decided and why, in a bounded ring.

The edge appends one :class:`Record` per request when ``Edge.recorder`` is set: the pytest
fixture sets it (``edge.requests``), and ``fakeedge serve`` keeps the last ``journal`` requests
(default 1000; ``journal: 0`` turns it off) for the inspector page and ``GET
/cdn-cgi/fakeedge/requests``. A record holds references to what the request already had (its
headers, the verdict); the reason in words, the header diff and the masked JSON are worked out
only when someone reads them, so recording costs a request next to nothing.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import itertools
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, NamedTuple
from urllib.parse import parse_qsl, quote

from multidict import CIMultiDict, CIMultiDictProxy

from . import headers as h
from .config import App
from .explain import verdict_reason
from .policy import Facts, Identity, IPAddress, Verdict

if TYPE_CHECKING:
    from .config import ServiceToken

__all__ = [
    "AnswerKind",
    "Judged",
    "Record",
    "RequestLog",
    "Why",
    "jwt_claims",
    "mask_header",
    "mask_url",
    "mask_value",
]

RECORD_LIMIT = 10_000  # the oldest records go first beyond this
# What answered a request (Record.kind, and the access log's decision when no policy was asked);
# "control" and "favicon" answers are left out of the journal.
AnswerKind = Literal[
    "app",
    "route",
    "unprotected",
    "team",
    "control",
    "cdn-cgi",
    "oauth",
    "preflight",
    "metadata",
    "bad-request",
    "favicon",
    "client-closed",
]
EMPTY: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())

# Headers the edge sets for the origin: "added" in the journal even when a client sent the same
# name (the client's copy is then "removed")
EDGE_SET = h.EDGE_SET
# Query parameters that carry one-time values or tokens: masked wherever a URL is shown
SECRET_PARAMS = frozenset({"nonce", "chain", "code", "token", "access_token", "refresh_token", "client_secret", "csrf"})
_JWT = re.compile(r"^([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)\.[A-Za-z0-9_-]+$")
_SECRET_IN_JSON = re.compile(r'("cf-access-client-secret"\s*:\s*")((?:[^"\\]|\\.)*)(")', re.I)


class Judged(NamedTuple):
    """What the access check knew when it decided (set by ``web_access.check`` for the journal)."""

    verdict: Verdict | None  # None: strict service-token auth refused before any policy
    who: Identity | None
    ip: IPAddress
    country: str
    service_token: str | None  # client id of the service token that authenticated
    bad_service_token: bool = False  # service-token headers sent, but malformed, unknown or wrong
    strict: bool = False


@dataclass(slots=True)
class Why:
    """The facts a reason is written from; :meth:`text` writes it when someone asks."""

    app: App | None = None
    judged: Judged | None = None
    note: str | None = None  # a reason that is no policy's: a bad request, an edge page, an ingress status
    failure: str | None = None  # the origin failure of a 502/504

    def text(self, *, short: bool = False) -> str:
        """The reason in words; ``short`` for the access log (which names app and policy itself)."""
        judged = self.judged
        if (
            judged is not None
            and not self.note
            and not self.failure
            and not judged.bad_service_token
            and judged.verdict is not None
            and self.app is not None
        ):
            return _verdict_reason(self.app, judged, short)  # the hot path's one part: no list, no join
        parts: list[str] = []
        if judged is not None and self.app is not None and judged.verdict is not None:
            if judged.bad_service_token:
                parts.append(
                    "bad service token"
                    if short
                    else "service-token headers sent but not valid (malformed, unknown client id or wrong secret)"
                )
            parts.append(_verdict_reason(self.app, judged, short))
        if self.note:
            parts.append(self.note)
        if self.failure:
            if short:
                return f"origin failed: {self.failure}"
            parts.append(f"then the origin failed: {self.failure}")
        return "; ".join(parts)


# The access log writes a reason per request; the verdicts an edge keeps per session recur, and
# so do their reasons: written once per verdict object (kept here, so that its id stays its own)
_REASONS: dict[tuple[int, bool], tuple[Verdict, str]] = {}
REASON_CACHE_LIMIT = 4096


def _verdict_reason(app: App, judged: Judged, short: bool) -> str:
    verdict = judged.verdict
    assert verdict is not None
    # a deny or forbidden verdict's reason also names who and what failed on the facts
    fixed = verdict.outcome not in ("deny", "forbidden")
    key = (id(verdict), short)
    cached = _REASONS.get(key) if fixed else None
    if cached is not None and cached[0] is verdict:
        return cached[1]
    facts = Facts(judged.ip, judged.country, judged.service_token)
    text = verdict_reason(app, verdict, facts, judged.who, short=short)
    if fixed:
        if len(_REASONS) >= REASON_CACHE_LIMIT:
            _REASONS.clear()
        _REASONS[key] = (verdict, text)
    return text


# A record's facts, in this order (Record.__init__'s arguments, ``why`` left out): method, host,
# path, app, ray, at, seq, status, kind, client, latency_ms, client_headers, cookies_set, location,
# sent, claims, assertion, tokens, grant
Facts_ = tuple[
    str,
    str,
    str,
    "str | None",
    str,
    float,
    int,
    int,
    AnswerKind,
    str,
    float,
    CIMultiDictProxy[str],
    tuple[str, ...],
    "str | None",
    "CIMultiDict[str] | None",
    "Mapping[str, Any] | None",
    "str | None",
    "Callable[[str], ServiceToken] | None",
    "str | None",
]
# Why's fields, in order: app, judged, note, failure
WhyFacts = tuple["App | None", "Judged | None", "str | None", "str | None"]


class Record:
    """One request the edge answered: what it decided and why, and what the origin received (read-only).

    Attributes:
        method: the HTTP method.
        host: the host the client asked for (lower-case, no port).
        path: path and query as the client sent them.
        headers: the request headers sent to the origin (case-insensitive lookup); empty when the
            request was not forwarded.
        app: the name of the Access app that covered the request, or None.
        policy: the name of the policy that decided, or None.
        decision: the verdict, ``allow``, ``service`` (Service Auth), ``bypass``, ``deny``,
            ``login`` or ``forbidden``; None when no policy was asked (no app, the team domain).
        claims: the ``Cf-Access-Jwt-Assertion``'s claims (read-only), or None.
        ray: the Ray ID, also in the ``CF-Ray`` header and the client's response.
        at: the edge clock's time.
        seq: the journal's number for it, from 1 up (``GET requests?since=<seq>``).
        status: the status the client got.
        forwarded: whether the request reached an origin.
        kind: what answered: ``app`` (an Access app), ``route`` (no app), ``unprotected`` (no app,
            blocked by ``deny_unmatched_requests``), ``team`` (the team domain), ``cdn-cgi``, ``oauth`` (managed OAuth's endpoints), ``preflight``, ``metadata``,
            ``bad-request``, or ``client-closed`` (status 499: the client left before the answer).
        client: the connecting address.
        identity: who the edge took the caller for: an email, ``service token <name>``, or None.
        latency_ms: time to the answer (for a stream, to its end).
        client_headers: the request headers as the client sent them.
        cookies_set: the ``Set-Cookie`` headers of the answer.
        location: the answer's ``Location``, if any.
        why: what :attr:`reason` is written from.
        grant: the managed-OAuth grant id the request came through (an ``oauth:`` token), or None.

    Recording costs a request little: a record keeps references to what the request already had,
    and works out headers, claims, identity and reason only when they are read.
    """

    __slots__ = ("_facts", "_why")

    def __init__(
        self,
        method: str,
        host: str,
        path: str,
        app: str | None,
        ray: str,
        at: float,
        seq: int = 0,
        status: int = 0,
        kind: AnswerKind = "app",
        client: str = "",
        latency_ms: float = 0.0,
        client_headers: CIMultiDictProxy[str] = EMPTY,
        cookies_set: tuple[str, ...] = (),
        location: str | None = None,
        why: Why | None = None,
        sent: CIMultiDict[str] | None = None,
        claims: Mapping[str, Any] | None = None,
        assertion: str | None = None,
        tokens: Callable[[str], ServiceToken] | None = None,
        grant: str | None = None,
    ) -> None:
        # one tuple, in the order of Facts, rather than twenty attributes: see :func:`recorded`
        self._facts: Facts_ = (
            method,
            host,
            path,
            app,
            ray,
            at,
            seq,
            status,
            kind,
            client,
            latency_ms,
            client_headers,
            cookies_set,
            location,
            sent,  # the headers the origin got; None when not forwarded
            claims,  # of the edge's verified credential, if it had one
            assertion,
            tokens,
            grant,
        )
        self._why: Why | WhyFacts = why if why is not None else Why()

    @property
    def method(self) -> str:
        return self._facts[0]

    @property
    def host(self) -> str:
        return self._facts[1]

    @property
    def path(self) -> str:
        return self._facts[2]

    @property
    def app(self) -> str | None:
        return self._facts[3]

    @property
    def ray(self) -> str:
        return self._facts[4]

    @property
    def at(self) -> float:
        return self._facts[5]

    @property
    def seq(self) -> int:
        return self._facts[6]

    @property
    def status(self) -> int:
        return self._facts[7]

    @property
    def kind(self) -> AnswerKind:
        return self._facts[8]

    @property
    def client(self) -> str:
        return self._facts[9]

    @property
    def latency_ms(self) -> float:
        return self._facts[10]

    @property
    def client_headers(self) -> CIMultiDictProxy[str]:
        return self._facts[11]

    @property
    def cookies_set(self) -> tuple[str, ...]:
        return self._facts[12]

    @property
    def location(self) -> str | None:
        return self._facts[13]

    @property
    def grant(self) -> str | None:
        return self._facts[18]

    @property
    def why(self) -> Why:
        why = self._why
        if isinstance(why, Why):
            return why
        made = self._why = Why(*why)  # once, so that the record keeps one
        return made

    def __repr__(self) -> str:
        return f"<Record {self.seq} {self.method} {self.host}{self.path} {self.status} {self.decision or self.kind}>"

    @property
    def forwarded(self) -> bool:
        return self._facts[14] is not None

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        sent = self._facts[14]
        return CIMultiDictProxy(sent) if sent is not None else EMPTY

    @property
    def policy(self) -> str | None:
        judged = self.why.judged
        verdict = judged.verdict if judged is not None else None
        return verdict.policy.name if verdict is not None and verdict.policy is not None else None

    @property
    def decision(self) -> str | None:
        judged = self.why.judged
        return judged.verdict.outcome if judged is not None and judged.verdict is not None else None

    @property
    def claims(self) -> Mapping[str, Any] | None:
        claims, assertion = self._facts[15:17]
        if claims is not None:
            return MappingProxyType(claims)  # the edge's own, shared with its cache
        return jwt_claims(assertion) if assertion else None

    @property
    def identity(self) -> str | None:
        judged = self.why.judged
        if judged is None:
            return None
        if judged.who is not None:
            return judged.who.email
        tokens = self._facts[17]
        if judged.service_token is not None and tokens is not None:
            try:
                return f"service token {tokens(judged.service_token).name}"
            except KeyError:  # gone from a reloaded config
                return f"service token {judged.service_token}"
        return None

    @property
    def email(self) -> str | None:
        """``Cf-Access-Authenticated-User-Email``, as the origin got it."""
        return self.headers.get(h.AUTHENTICATED_USER_EMAIL)

    @property
    def assertion(self) -> str | None:
        """``Cf-Access-Jwt-Assertion``, as the origin got it."""
        return self.headers.get(h.JWT_ASSERTION)

    @property
    def reason(self) -> str:
        """Why the edge answered as it did, in words: the rule of the policy that matched or what
        failed, the origin failure of a 502/504, the check a 400 failed."""
        return self.why.text()

    @property
    def short_reason(self) -> str:
        """The access log's form of :attr:`reason`."""
        return self.why.text(short=True)

    @property
    def removed(self) -> list[tuple[str, str]]:
        """Client headers the origin did not get as sent: spoofable identity and edge headers,
        hop-by-hop headers, a stripped ``CF_Binding`` cookie. Empty when not forwarded."""
        if not self.forwarded:
            return []
        sent = {(k.lower(), v) for k, v in self.headers.items()}
        return [
            (k, v)
            for k, v in self.client_headers.items()
            if k.lower() in EDGE_SET or spoofable(k) or (k.lower(), v) not in sent
        ]

    @property
    def added(self) -> list[tuple[str, str]]:
        """Headers the origin got that the client did not send: the edge's own (spec §2.6, §8)."""
        if not self.forwarded:
            return []
        sent = {(k.lower(), v) for k, v in self.client_headers.items()}
        return [(k, v) for k, v in self.headers.items() if k.lower() in EDGE_SET or (k.lower(), v) not in sent]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict with secrets masked (service-token secrets, JWT signatures, cookie
        values, one-time URL parameters): safe to show on a screen or paste in a bug report.

        ``headers`` (what the origin received) maps lower-cased names to values, repeated headers
        joined with ``, ``; ``request_headers``, ``removed`` and ``added`` are ``[name, value]`` pairs.
        """
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            low = name.lower()
            value = mask_header(name, value)
            headers[low] = f"{headers[low]}, {value}" if low in headers else value
        return {
            "seq": self.seq,
            "at": self.at,
            "ray": self.ray,
            "method": self.method,
            "host": self.host,
            "path": mask_url(self.path),
            "status": self.status,
            "kind": self.kind,
            "app": self.app,
            "policy": self.policy,
            "decision": self.decision,
            "reason": self.reason,
            "latency_ms": round(self.latency_ms, 3),
            "client": self.client,
            "identity": self.identity,
            "forwarded": self.forwarded,
            "request_headers": [[k, mask_header(k, v)] for k, v in self.client_headers.items()],
            "removed": [{"name": k, "value": mask_header(k, v), "spoofed": spoofable(k)} for k, v in self.removed],
            "added": [[k, mask_header(k, v)] for k, v in self.added],
            "headers": headers,
            "claims": dict(self.claims) if self.claims is not None else None,
            "cookies_set": [mask_header("Set-Cookie", c) for c in self.cookies_set],
            "location": mask_url(self.location) if self.location is not None else None,
            "grant": self.grant,
        }


def recorded(facts: Facts_, why: WhyFacts) -> Record:
    """A :class:`Record` of the request's facts as they are (the edge's hot path): one tuple
    kept, no attribute written per fact and no :class:`Why` made until someone reads it."""
    record = _new_record(Record)
    record._facts = facts
    record._why = why
    return record


_new_record = object.__new__


class RequestLog:
    """The journal: every request the edge answered, in a ring of the last ``limit``.

    Iterating, indexing (``log[-1]``), ``len()`` and :attr:`last` cover the requests that reached
    an origin, as before the journal; :meth:`all` and :meth:`since` cover every request, refusals
    included. :meth:`clear` empties both.
    """

    def __init__(self, limit: int = RECORD_LIMIT) -> None:
        if limit < 1:
            raise ValueError(f"a journal keeps at least one request, got {limit}")
        self.limit = limit
        self._all: collections.deque[Record] = collections.deque(maxlen=limit)
        self._forwarded: collections.deque[Record] = collections.deque(maxlen=limit)
        self._seq = itertools.count(1)
        self._listeners: list[Callable[[Record], None]] = []

    def next_seq(self) -> int:
        """The number of the next record (the journal numbers them from 1 up, never reused)."""
        return next(self._seq)

    def append(self, record: Record) -> None:
        """Add ``record`` (its ``seq`` from :meth:`next_seq`), dropping the oldest beyond the limit."""
        self._all.append(record)
        if record.forwarded:
            self._forwarded.append(record)
        for listener in self._listeners:
            listener(record)

    def add(self, record: Record, forwarded: bool) -> None:
        """:meth:`append`, told whether ``record`` reached an origin (the edge's hot path)."""
        self._all.append(record)
        if forwarded:
            self._forwarded.append(record)
        if self._listeners:
            for listener in self._listeners:
                listener(record)

    def subscribe(self, listener: Callable[[Record], None]) -> Callable[[], None]:
        """Call ``listener`` with each new record; returns the function that stops it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def all(self) -> list[Record]:
        """Every request kept, oldest first, refusals and edge pages included."""
        return list(self._all)

    def since(self, seq: int) -> list[Record]:
        """The records numbered above ``seq``, oldest first."""
        kept = list(self._all)  # one C call: safe while an edge on another thread appends
        if not kept or kept[-1].seq <= seq:
            return []
        return [r for r in kept if r.seq > seq]

    def find(self, ray: str) -> Record | None:
        """The record of a Ray ID, if it is still kept."""
        return next((r for r in reversed(list(self._all)) if r.ray == ray), None)

    @property
    def last(self) -> Record:
        """The latest request that reached an origin.

        Raises:
            AssertionError: the origin has received nothing through the edge.
        """
        if not self._forwarded:
            raise AssertionError("the origin received nothing through the edge")
        return self._forwarded[-1]

    def clear(self) -> None:
        self._all.clear()
        self._forwarded.clear()

    def to_json(self) -> list[dict[str, Any]]:
        """The requests that reached an origin, as :meth:`Record.to_json` shows them."""
        return [r.to_json() for r in self._forwarded]

    def __len__(self) -> int:
        return len(self._forwarded)

    def __iter__(self) -> Iterator[Record]:
        return iter(list(self._forwarded))

    def __getitem__(self, index: int) -> Record:
        return self._forwarded[index]


# --- masking -------------------------------------------------------------------------------------


def spoofable(name: str) -> bool:
    """Whether the edge strips a client header of this name as a spoofed identity or edge header."""
    low = name.lower().replace("_", "-")
    return low in h.SPOOFABLE_EXACT or low.startswith(h.SPOOFABLE_PREFIX)


def mask_value(value: str) -> str:
    """A secret shown as its length and a short fingerprint (the same value, the same fingerprint)."""
    if not value:
        return value
    jwt = _JWT.match(value)
    if jwt:
        # header and payload are no secret (the claims are shown anyway); without its signature
        # the token is worthless
        return f"{jwt.group(1)}.<signature masked>"
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"<masked {len(value)} chars #{digest}>"


def mask_header(name: str, value: str) -> str:
    """A header value fit to show: secrets, tokens and cookie values masked."""
    low = name.lower()
    if low == h.CLIENT_SECRET.lower():
        return mask_value(value)
    if low in ("authorization", "proxy-authorization"):
        scheme, sep, rest = value.partition(" ")
        return f"{scheme} {mask_value(rest)}" if sep else mask_value(value)
    if low == "cookie":
        return "; ".join(_mask_cookie(part.strip()) for part in value.split(";"))
    if low == "set-cookie":
        first, sep, attributes = value.partition(";")
        return _mask_cookie(first) + sep + attributes
    if low == "location":
        return mask_url(value)
    if "client-secret" in value.lower():
        # an app's single service-token header: {"cf-access-client-id": ..., "cf-access-client-secret": ...}
        return _SECRET_IN_JSON.sub(lambda m: m.group(1) + mask_value(m.group(2)) + m.group(3), value)
    if _JWT.match(value):
        return mask_value(value)  # Cf-Access-Jwt-Assertion, Cf-Access-Token, any bearer JWT
    return value


def _mask_cookie(pair: str) -> str:
    name, sep, value = pair.partition("=")
    return f"{name}{sep}{mask_value(value.strip(chr(34)))}" if sep else pair


def mask_url(url: str) -> str:
    """A path or URL with one-time values and token signatures in its query masked."""
    base, sep, query = url.partition("?")
    if not sep or not query:
        return url
    out = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key.lower() in SECRET_PARAMS or _JWT.match(value):
            value = mask_value(value)
        out.append(f"{quote(key, safe='')}={quote(value, safe='/:@!$()*+,;~<>#.-_ ')}")
    return base + "?" + "&".join(out)


def jwt_claims(token: str) -> dict[str, Any] | None:
    """A JWT's payload, decoded without checking anything (the edge signed it or already verified it)."""
    try:
        payload = token.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return None
    return data if isinstance(data, dict) else None
