"""``fakeedge audit``: does an origin fail open? A battery of requests, straight at it and through the edge.

An attacker who reaches the origin's address (the "IP bypass" of spec §11) skips the edge: the
origin's own JWT check is all that stands (spec §2.6: "checking that the header exists is not
enough"). Each :data:`CASES` row sends one thing a correct origin refuses, or one thing it must
accept (the controls), and judges the answer. A refused control makes the run inconclusive,
never a pass: an origin that refuses everything proves nothing.

The battery drives an in-process :class:`~fakeedge.edge.Edge` (its keys, clock and certs faults);
the CLI, the test helper (``await edge.audit(...)``) and the control API (``POST
/cdn-cgi/fakeedge/audit``) all call :func:`run_audit`. It rotates the edge's signing key four
times (the previous key stays in certs for its grace period).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, assert_never
from urllib.parse import urlsplit
from xml.sax.saxutils import escape, quoteattr

import aiohttp

from . import headers as h
from .edge import Edge
from .faults import CertsFaultMode, certs_fault
from .mint import TAMPERED_EMAIL, mint
from .policy import AppIndex, Facts, Identity, decide

__all__ = [
    "CASES",
    "Accept",
    "Attempt",
    "Case",
    "Report",
    "Row",
    "format_junit",
    "format_report",
    "format_table",
    "run_audit",
]

Expect = Literal["refuse", "accept", "identity"]
Verdict = Literal["pass", "FAIL", "inconclusive", "warn", "skipped"]
Carrier = Literal["header", "cookie", "none", "edge"]


@dataclass(frozen=True, slots=True)
class Case:
    """One row of the battery: what is sent, what a correct origin does, and what to fix if it does not."""

    name: str
    sent: str  # what the row sends, for the docs and the table
    expect: Expect
    fix: str  # one line: why it matters and what to fix, shown when the row fails


def _case(name: str, sent: str, expect: Expect, fix: str) -> tuple[str, Case]:
    return name, Case(name, sent, expect, fix)


# The rows, in the order they run. docs/audit.md lists them from here (tests/test_docs.py checks).
CASES: dict[str, Case] = dict(
    [
        _case(
            "valid", "a valid user token in Cf-Access-Jwt-Assertion, with the matching email header (control)",
            "accept", "the origin refuses what the edge sends: check the path, the AUD and the team domain it expects",
        ),
        _case(
            "aud_string", "valid, with aud a string instead of a one-element array (control)",
            "accept", "aud may be a string or an array (service tokens carry a string): compare by membership",
        ),
        _case(
            "no_assertion", "no token at all",
            "refuse", "the origin serves anyone who reaches its address: require and verify Cf-Access-Jwt-Assertion",
        ),
        _case(
            "email_header_only", "Cf-Access-Authenticated-User-Email alone, no token",
            "refuse", "trusted the email header: anyone who reaches the origin can send it; verify the JWT instead",
        ),
        _case(
            "email_header_disagrees", "a valid token for the user and an email header naming someone else",
            "identity", "acted on the email header, not the token: take the identity from the verified JWT's email",
        ),
        _case(
            "expired", "exp one hour ago",
            "refuse", "accepted an expired token: verify exp",
        ),
        _case(
            "not_yet_valid", "nbf and iat one hour from now",
            "refuse", "accepted a token not valid yet: verify nbf",
        ),
        _case(
            "wrong_aud", "aud of no app on this edge",
            "refuse", "accepted a token for another audience: check aud against this app's AUD",
        ),
        _case(
            "other_app", "a valid token issued for another app of this team",
            "refuse", "accepted a token issued for another app: check aud against this app's AUD",
        ),
        _case(
            "wrong_iss", "a token of another team (iss https://not-<team>.cloudflareaccess.com)",
            "refuse", "accepted another team's token: check iss against your team domain",
        ),
        _case(
            "foreign_key", "the current kid, signed by a key that is in no certs document",
            "refuse", "accepted a forged signature: verify the RS256 signature with the key the kid names",
        ),
        _case(
            "unknown_kid", "signed by the current key, with a kid no key in certs has",
            "refuse", "accepted a kid that is in no certs document: select the key by kid, refuse unknown kids",
        ),
        _case(
            "no_kid", "signed by the current key, no kid in the header",
            "refuse", "accepted a token without a kid (a genuine signature; jose and Hono try the keys): Access always sends one",
        ),
        _case(
            "alg_none", 'alg "none" and an empty signature',
            "refuse", 'accepted an unsigned token: pass algorithms=["RS256"] to the verifier',
        ),
        _case(
            "hs256_public_key", "HS256 with the public key's PEM as the HMAC secret",
            "refuse", 'accepted HS256 signed with the public key (algorithm confusion): allow RS256 only',
        ),
        _case(
            "tampered", "signed, then the email in the payload changed",
            "refuse", "accepted a payload that does not match its signature: verify the signature",
        ),
        _case(
            "service_token", "a valid service-token token (sub empty, common_name set) where users are expected",
            "refuse", "accepted a service token as a user: require a non-empty sub and email, or check common_name",
        ),
        _case(
            "edge_no_credentials", "through the edge, no credentials",
            "refuse", "the edge lets anonymous requests reach this path: cover it with an Access app (no Bypass)",
        ),
        _case(
            "edge_signed_in", "through the edge, signed in (control)",
            "accept", "the origin refuses what the edge forwards: is this the origin the ingress rule names?",
        ),
        _case(
            "rotated_key", "valid, signed by a freshly rotated key that is in certs (control)",
            "accept", "the origin does not refetch certs for a new kid: rotation would lock every user out",
        ),
        _case(
            "certs_failing", "valid, signed by a key the origin has not fetched, while certs answers 500",
            "refuse", "accepted a token whose key it could not fetch: refuse when the certs fetch fails",
        ),
        _case(
            "certs_empty", "valid, signed by a key the origin has not fetched, while certs has no keys",
            "refuse", "accepted a token whose key is in no certs document: refuse when the kid is not found",
        ),
        _case(
            "certs_slow", "valid, signed by a key the origin has not fetched, while certs stalls",
            "refuse", "accepted a token whose key it could not fetch in time: refuse on a certs timeout",
        ),
    ]
)  # fmt: skip

TOKEN_CASES = (
    "expired", "not_yet_valid", "wrong_aud", "other_app", "wrong_iss", "foreign_key", "unknown_kid",
    "no_kid", "alg_none", "hs256_public_key", "tampered", "service_token",
)  # fmt: skip
# accepted, these are a warning, not a failure: the signature is genuine, by a key in certs (spec §10: jose
# and Hono try the published keys when a token has no kid)
WARN_WHEN_ACCEPTED = frozenset({"no_kid"})
FAULT_CASES: dict[str, CertsFaultMode] = {"certs_failing": "failing", "certs_empty": "empty", "certs_slow": "slow"}
EXCERPT = 48
BODY_LIMIT = 64 * 1024  # read this much of an answer: enough to find an email, never a whole download
ATTACKER_EMAIL = TAMPERED_EMAIL
DEFAULT_TIMEOUT = 10.0
DEFAULT_ROTATION_WAIT = 35.0  # PyJWKClient and jose wait 30 s between refetches by default

Accept = Callable[[int], bool] | Collection[int]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One request of a row and what came back."""

    carrier: Carrier  # how the token travelled: header, cookie, none (no token), edge (through the edge)
    status: int | None  # None: no answer (refused connection, timeout)
    excerpt: str
    accepted: bool
    error: str | None = None

    def __str__(self) -> str:
        answer = (self.error or "no answer") if self.status is None else f"{self.status} {self.excerpt}".rstrip()
        return answer if self.carrier in ("none", "edge") else f"{self.carrier}: {answer}"


@dataclass(slots=True)
class Row:
    """A case's outcome: its attempts, the verdict and one line on why."""

    case: str
    expected: str
    verdict: Verdict
    why: str
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def did(self) -> str:
        return "; ".join(map(str, self.attempts)) or "-"

    def to_json(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "sent": CASES[self.case].sent if self.case in CASES else "",
            "expected": self.expected,
            "verdict": self.verdict,
            "why": self.why,
            "attempts": [
                {
                    "carrier": a.carrier,
                    "status": a.status,
                    "excerpt": a.excerpt,
                    "accepted": a.accepted,
                    "error": a.error,
                }
                for a in self.attempts
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Row:
        attempts = [Attempt(**a) for a in data.get("attempts", [])]
        return cls(data["case"], data["expected"], data["verdict"], data["why"], attempts)


class _Summary:
    """The verdict over rows: shared by :class:`Report` and the run that fills one in."""

    origin: str
    app: str
    aud: str
    email: str
    rows: list[Row]
    inconclusive: list[str]

    @property
    def failures(self) -> list[Row]:
        """The rows where the origin accepted what it must refuse."""
        return [r for r in self.rows if r.verdict == "FAIL"]

    @property
    def ok(self) -> bool:
        """True when nothing was wrongly accepted and every control was accepted."""
        return not self.failures and not self.inconclusive

    @property
    def outcome(self) -> Literal["ok", "fail", "inconclusive"]:
        """``fail`` when something was wrongly accepted, else ``inconclusive`` when a control was refused."""
        return "fail" if self.failures else "inconclusive" if self.inconclusive else "ok"

    def row(self, case: str) -> Row:
        """The row of ``case`` (a name in :data:`CASES`).

        Raises:
            KeyError: no such row.
        """
        for r in self.rows:
            if r.case == case:
                return r
        raise KeyError(case)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "outcome": self.outcome,
            "origin": self.origin,
            "app": self.app,
            "aud": self.aud,
            "email": self.email,
            "inconclusive": list(self.inconclusive),
            "rows": [r.to_json() for r in self.rows],
        }


@dataclass
class _Draft(_Summary):
    origin: str
    app: str
    aud: str
    email: str
    rows: list[Row] = field(default_factory=list)
    inconclusive: list[str] = field(default_factory=list)


class Report(_Summary, str):
    """What :func:`run_audit` found; also a ``str``: the table.

    Being the table itself is what makes ``assert report.ok, report`` show it whole: pytest cuts a
    message that is not a string to a 240-character repr.

    Attributes:
        origin: the URL the direct requests went to.
        app: the app whose tokens were sent; ``aud`` its AUD; ``email`` the user of the valid ones.
        rows: one per case, in battery order (:data:`CASES`).
        inconclusive: why the run proves nothing, first cause first (empty when conclusive).
    """

    def __new__(
        cls, origin: str, app: str, aud: str, email: str, rows: list[Row], inconclusive: list[str] | None = None
    ) -> Report:
        draft = _Draft(origin, app, aud, email, list(rows), list(inconclusive or []))
        self = super().__new__(cls, format_table(draft))
        self.origin, self.app, self.aud, self.email = origin, app, aud, email
        self.rows, self.inconclusive = draft.rows, draft.inconclusive
        return self

    def __repr__(self) -> str:
        return f"<fakeedge audit report: {self.outcome}, {len(self.failures)} failed, {self.origin} as {self.app!r}>"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Report:
        """A report from :meth:`to_json`'s document (what the control API answers)."""
        return cls(
            data["origin"],
            data["app"],
            data["aud"],
            data["email"],
            [Row.from_json(r) for r in data["rows"]],
            list(data.get("inconclusive", [])),
        )


# --- formats ---------------------------------------------------------------------------------------


def format_table(report: _Summary) -> str:
    """The report as a text table with a summary line last."""
    head = ("case", "expected", "origin did", "verdict", "why / fix")
    body = [(r.case, r.expected, _clip(r.did, 60), r.verdict, r.why) for r in report.rows]
    widths = [max(len(line[i]) for line in (head, *body)) for i in range(4)]
    lines = [
        f"fakeedge audit: {report.origin} as app {report.app!r} (aud {report.aud[:12]}...), user {report.email}",
        "",
    ]
    for line in (head, *body):
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line[:4])) + "  " + line[4])
    lines.append("")
    passed = sum(r.verdict == "pass" for r in report.rows)
    counts = f"{passed} passed, {len(report.failures)} failed, " + ", ".join(
        f"{sum(r.verdict == v for r in report.rows)} {v}" for v in ("warn", "inconclusive", "skipped")
    )
    match report.outcome:
        case "fail":
            lines.append(f"FAIL: the origin accepted what it must refuse ({counts})")
        case "inconclusive":
            lines.append(f"INCONCLUSIVE: {'; '.join(report.inconclusive)} ({counts})")
        case "ok":
            lines.append(f"ok: nothing was wrongly accepted and every control passed ({counts})")
        case _:
            assert_never(report.outcome)
    return "\n".join(lines)


def format_junit(report: _Summary) -> str:
    """The report as JUnit XML: a test case per row (FAIL a failure, inconclusive an error)."""
    cases = []
    for r in report.rows:
        inner = ""
        message = quoteattr(f"{r.why} (origin did: {r.did})")
        match r.verdict:
            case "FAIL":
                inner = f"<failure message={message}>{escape(r.did)}</failure>"
            case "inconclusive":
                inner = f"<error message={message}>{escape(r.did)}</error>"
            case "skipped":
                inner = f"<skipped message={quoteattr(r.why)}/>"
            case "pass" | "warn":
                inner = f"<system-out>{escape(r.verdict + ': ' + r.did + ' - ' + r.why)}</system-out>"
            case _:
                assert_never(r.verdict)
        cases.append(f'  <testcase classname="fakeedge.audit" name={quoteattr(r.case)}>{inner}</testcase>')
    errors = sum(r.verdict == "inconclusive" for r in report.rows)
    skipped = sum(r.verdict == "skipped" for r in report.rows)
    suite = quoteattr(f"fakeedge audit {report.origin} ({report.app})")
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<testsuite name={suite} tests="{len(report.rows)}" failures="{len(report.failures)}" '
        f'errors="{errors}" skipped="{skipped}">\n' + "\n".join(cases) + "\n</testsuite>\n"
    )


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


_SPACE = re.compile(r"\s+")


def _excerpt(body: bytes) -> str:
    text = body[: EXCERPT * 4].decode("utf-8", "replace")
    text = "".join(c if c.isprintable() else " " for c in _SPACE.sub(" ", text)).strip()
    return _clip(text, EXCERPT)


# --- running -------------------------------------------------------------------------------------


def accept_test(accept: Accept | None) -> Callable[[int], bool]:
    """What counts as "accepted": by default any 2xx; else the given statuses, or a callable on the status."""
    if accept is None:
        return lambda status: 200 <= status < 300
    if callable(accept):
        return accept
    statuses = frozenset(accept)
    return lambda status: status in statuses


def parse_accept_status(text: str) -> frozenset[int]:
    """``--accept-status``: ``200,204`` or ``200-299,302``.

    Raises:
        ValueError: not statuses or ranges of 100-599.
    """
    statuses: set[int] = set()
    for part in text.split(","):
        low, dash, high = part.strip().partition("-")
        try:
            first, last = int(low), int(high if dash else low)
        except ValueError:
            raise ValueError(f"expected statuses such as 200,204 or 200-299, got {text!r}") from None
        if not 100 <= first <= last <= 599:
            raise ValueError(f"expected statuses from 100 to 599 (low-high), got {part.strip()!r}")
        statuses.update(range(first, last + 1))
    return frozenset(statuses)


@dataclass
class _Run:
    edge: Edge
    origin: str  # scheme://host:port/path?query
    app_name: str
    host: str
    path: str
    email: str
    accepted: Callable[[int], bool]
    timeout: float
    stall: float
    rotation_wait: float
    edge_url: str | None
    service_tokens_expected: str | None  # the policy that admits service tokens, if any
    session: aiohttp.ClientSession
    report: _Draft
    control_refused: bool = False

    # -- tokens --

    def token(self, variant: str = "valid", **kwargs: Any) -> str:
        return mint(self.edge, app=self.app_name, email=self.email, variant=variant, **kwargs)

    def service_token(self) -> str:
        tokens = self.edge.config.service_tokens
        if tokens:
            return mint(self.edge, app=self.app_name, service_token=tokens[0].client_id)
        # no service token configured: the same shape from a user token (spec §2.3)
        return self.token(
            "aud_string",
            claims={"email": None, "nbf": None, "country": None, "identity_nonce": None, "sub": "",
                    "common_name": "0123456789abcdef0123456789abcdef.access"},
        )  # fmt: skip

    # -- requests --

    async def send(
        self, carrier: Carrier, token: str | None = None, *, email: str | None = None, timeout: float | None = None
    ) -> tuple[Attempt, bytes]:
        headers: dict[str, str] = {}
        url = self.origin
        if carrier == "header" and token is not None:
            headers[h.JWT_ASSERTION] = token
        elif carrier == "cookie" and token is not None:
            headers["Cookie"] = f"{h.CF_AUTHORIZATION}={token}"
        elif carrier == "edge":
            assert self.edge_url is not None
            url = self.edge_url + self.path
            headers["Host"] = self.host
            if token is not None:
                headers["Cookie"] = f"{h.CF_AUTHORIZATION}={token}"
        if email is not None:
            headers[h.AUTHENTICATED_USER_EMAIL] = email
        try:
            async with self.session.get(
                url,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout or self.timeout),
            ) as resp:
                body = await resp.content.read(BODY_LIMIT)
                status = resp.status
        except TimeoutError:
            return Attempt(carrier, None, "", False, f"no answer in {timeout or self.timeout:g}s"), b""
        except aiohttp.ClientError as exc:
            return Attempt(carrier, None, "", False, f"no answer ({type(exc).__name__}: {exc})"), b""
        return Attempt(carrier, status, _excerpt(body), self.accepted(status)), body

    def add(self, case: str, verdict: Verdict, why: str | None, attempts: list[Attempt]) -> Row:
        spec = CASES[case]
        expected = {"refuse": "refuse", "accept": "accept", "identity": "token's user"}[spec.expect]
        row = Row(case, expected, verdict, why if why is not None else spec.sent, attempts)
        self.report.rows.append(row)
        return row

    def skip(self, case: str, why: str) -> None:
        self.add(case, "skipped", why, [])

    # -- rows --

    async def control(self, case: str, token: str) -> bool:
        attempt, _ = await self.send("header", token, email=self.email)
        if attempt.accepted:
            self.add(case, "pass", None, [attempt])
            return True
        self.unproven(case, self.refusal_reason(attempt), [attempt], control=True)
        return False

    def unproven(self, case: str, reason: str, attempts: list[Attempt], *, control: bool = False) -> None:
        """An inconclusive row; the run's reasons keep the first cause, not its echoes."""
        if self.control_refused:
            self.add(case, "inconclusive", "refused, but so was a control", attempts)
            return
        self.add(case, "inconclusive", reason, attempts)
        self.report.inconclusive.append(f"control {case!r} refused: {reason}" if control else f"{case}: {reason}")
        self.control_refused |= control

    @property
    def wait(self) -> float:
        """How long to retry the rotation rows: not at all once a control was refused."""
        return 0.0 if self.control_refused else self.rotation_wait

    def refusal_reason(self, attempt: Attempt) -> str:
        if attempt.status is None:
            return f"origin down or wrong URL: {attempt.error}"
        if attempt.status == 404:
            return f"404: wrong path? ({urlsplit(self.origin).path or '/'})"
        if attempt.status in (401, 403):
            return (
                f"{attempt.status} to a valid token: does the origin expect aud {self.report.aud} "
                f"and iss {self.edge.team_domain}, with certs from {self.edge.team_domain}/cdn-cgi/access/certs?"
            )
        if 300 <= attempt.status < 400:
            return f"{attempt.status}: the origin redirects a valid token (pass --accept-status if that is its yes)"
        return f"{attempt.status} to a valid token (pass --accept-status if that is its yes)"

    async def refuse(
        self, case: str, token: str | None, *, carriers: tuple[Carrier, ...], email: str | None = None
    ) -> None:
        attempts = [(await self.send(c, token, email=email))[0] for c in carriers]
        wrong = [a for a in attempts if a.accepted]
        if wrong:
            where = " and ".join(a.carrier for a in wrong if a.carrier not in ("none", "edge"))
            verdict: Verdict = "warn" if case in WARN_WHEN_ACCEPTED else "FAIL"
            self.add(case, verdict, CASES[case].fix + (f" (in the {where})" if where else ""), attempts)
        elif self.control_refused:
            self.add(case, "inconclusive", "refused, but so was a control", attempts)
        else:
            self.add(case, "pass", None, attempts)

    async def email_disagreement(self) -> None:
        attempt, body = await self.send("header", self.token(), email=ATTACKER_EMAIL)
        text = body.decode("utf-8", "replace").lower()
        if not attempt.accepted and self.control_refused:
            self.unproven("email_header_disagrees", "refused", [attempt])
        elif not attempt.accepted:
            self.add("email_header_disagrees", "pass", "refused the mismatch", [attempt])
        elif ATTACKER_EMAIL in text:
            self.add("email_header_disagrees", "FAIL", CASES["email_header_disagrees"].fix, [attempt])
        elif self.email.lower() in text:
            self.add("email_header_disagrees", "pass", "answered as the token's user", [attempt])
        else:
            self.add(
                "email_header_disagrees",
                "warn",
                "cannot tell: the answer names neither address; audit a path that shows the user",
                [attempt],
            )

    async def through_edge(self) -> None:
        if self.edge_url is None:
            for case in ("edge_no_credentials", "edge_signed_in"):
                self.skip(case, "the edge has no plain-HTTP listener")
            return
        route = self.edge.route(self.host, self.path)
        if _base(route.service) != _base(self.origin):
            why = f"the edge sends {self.host}{self.path} to {route.service}, not to {_base(self.origin)}"
            for case in ("edge_no_credentials", "edge_signed_in"):
                self.skip(case, why)
            return
        match = AppIndex(self.edge.config.apps).match(self.host, self.path)
        anonymous, _ = await self.send("edge")
        if anonymous.accepted:
            if match is None:
                why = f"no Access app covers {self.host}{self.path}: anyone reaches the origin through the edge"
            else:
                why = f"app {match.app.name!r} lets anonymous requests through (a Bypass policy?)"
            self.add("edge_no_credentials", "FAIL", why, [anonymous])
        else:
            self.add("edge_no_credentials", "pass", None, [anonymous])
        signed_in, _ = await self.send("edge", self.token())
        if signed_in.accepted:
            self.add("edge_signed_in", "pass", None, [signed_in])
        elif signed_in.status is not None and (300 <= signed_in.status < 400 or signed_in.status == 403):
            self.add(
                "edge_signed_in", "skipped", f"the edge itself refused {self.email} ({signed_in.status})", [signed_in]
            )
        else:
            self.unproven("edge_signed_in", self.refusal_reason(signed_in), [signed_in], control=True)

    async def rotated_key(self) -> None:
        self.edge.rotate_keys()
        token = self.token()
        deadline = time.monotonic() + self.wait
        attempts = 0
        while True:
            attempt, _ = await self.send("header", token, email=self.email)
            attempts += 1
            if attempt.accepted or time.monotonic() >= deadline:
                break
            await asyncio.sleep(1)  # the origin may wait between certs refetches (PyJWKClient, jose: 30 s)
        if attempt.accepted:
            note = (
                None if attempts == 1 else f"accepted after {attempts - 1} retries: the origin delays refetching certs"
            )
            self.add("rotated_key", "pass", note, [attempt])
            return
        reason = (
            f"a token signed by a new key in certs was still refused after {self.rotation_wait:g}s: "
            "the origin does not refetch certs for an unknown kid (check its cooldown)"
        )
        self.unproven("rotated_key", reason, [attempt], control=True)

    async def certs_fault_case(self, case: str, mode: CertsFaultMode) -> None:
        """Rotate, break certs, send a token signed with the key the origin has not seen (spec §3, §11)."""
        self.edge.rotate_keys()
        token = self.token()
        fault = certs_fault(mode, now=self.edge.clock.now(), delay=self.stall)
        self.edge.set_certs_fault(fault)
        deadline = time.monotonic() + self.wait
        try:
            while True:
                # no email header: an origin that trusts it must not pass this row for the wrong reason
                attempt, _ = await self.send("header", token)
                if attempt.accepted or fault.served or time.monotonic() >= deadline:
                    break
                await asyncio.sleep(1)  # the origin has not tried certs yet: wait out its refetch cooldown
        finally:
            self.edge.set_certs_fault(None)
        if attempt.accepted:
            self.add(case, "FAIL", CASES[case].fix, [attempt])
        elif not fault.served:
            reason = "the origin never fetched certs for the new kid, so its failure handling went untested"
            self.unproven(case, reason, [attempt])
        elif attempt.status is None and mode == "slow":
            self.add(case, "warn", "no answer while certs stalled: give the certs fetch a timeout", [attempt])
        else:
            self.add(case, "pass", None, [attempt])


def _base(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme, 0)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"


def default_email(edge: Edge, app_name: str) -> str:
    """A user the app's policies admit (the first such persona), else ``audit@<team>.test``."""
    app = edge.app(app_name)
    config = edge.config
    for user in config.users:
        who = Identity.for_email(user.email, user, default_country=config.default_country)
        verdict = decide(app, Facts(_LOOPBACK, who.country), who)
        if verdict.outcome == "allow":
            return user.email
    return f"audit@{config.team}.test"


_LOOPBACK = ipaddress.ip_address("127.0.0.1")  # the address the edge sees for a local sign-in


async def run_audit(
    edge: Edge,
    origin_url: str,
    *,
    app: str,
    path: str | None = None,
    email: str | None = None,
    accept: Accept | None = None,
    edge_url: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    stall: float | None = None,
    rotation_wait: float = DEFAULT_ROTATION_WAIT,
) -> Report:
    """Run the battery against ``origin_url`` with tokens of ``app`` signed by ``edge``.

    Args:
        edge: the edge whose keys sign the tokens, whose certs the origin fetches.
        origin_url: the origin's address, as an attacker who bypassed the edge would use it.
        app: the app whose AUD the origin checks.
        path: the path to probe (default: ``origin_url``'s, else ``/``); a page that names the
            signed-in user makes the email-disagreement row conclusive.
        email: the user of the valid tokens (default: a persona the app admits).
        accept: what counts as accepted: statuses, or a callable on the status (default 2xx).
        edge_url: ``http://127.0.0.1:<port>`` of the edge's plain listener, for the rows that go
            through the edge (default: the edge's lowest plain port, if any).
        timeout: seconds to wait for each answer.
        stall: how long certs stalls in ``certs_slow`` (default ``timeout + 5``).
        rotation_wait: how long to keep retrying the rotation rows while the origin waits out
            its certs refetch cooldown (PyJWKClient and jose wait 30 s by default).

    Raises:
        UnknownName: no such app.
        ValueError: the origin URL is not http(s), or a number is out of range.
    """
    target = edge.app(app)
    parts = urlsplit(origin_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected the origin's URL, such as http://127.0.0.1:3002/api/me, got {origin_url!r}")
    if path is not None and not path.startswith("/"):
        raise ValueError(f"path must start with '/', got {path!r}")
    for name, value in (("timeout", timeout), ("rotation_wait", rotation_wait)):
        if not 0 <= value <= 3600:
            raise ValueError(f"{name}: expected 0 to 3600 seconds, got {value!r}")
    probe = path if path is not None else (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    origin = f"{parts.scheme}://{parts.netloc}{probe}"
    if edge_url is None:
        plain = sorted(edge.ports - edge.tls_ports)
        edge_url = f"http://127.0.0.1:{plain[0]}" if plain else None
    host_name = _concrete(target.destinations[0].host)
    service_policy = next((p.name for p in target.policies if p.decision == "non_identity"), None)
    who = email or default_email(edge, app)
    draft = _Draft(origin, app, target.aud, who)
    connector = aiohttp.TCPConnector(force_close=True)  # each case on a fresh connection, as separate clients
    async with aiohttp.ClientSession(connector=connector) as session:
        run = _Run(
            edge, origin, app, host_name, probe.split("?", 1)[0] if path is None else path, who,
            accept_test(accept), timeout, timeout + 5 if stall is None else stall, rotation_wait,
            edge_url, service_policy, session, draft,
        )  # fmt: skip
        await _battery(run)
    return Report(draft.origin, draft.app, draft.aud, draft.email, draft.rows, draft.inconclusive)


def _concrete(host: str) -> str:
    first, dot, rest = host.partition(".")
    return ("app" if first == "*" else first.replace("*", "")) + dot + rest if "*" in first else host


async def _battery(run: _Run) -> None:
    await run.control("valid", run.token())
    await run.control("aud_string", run.token("aud_string"))
    await run.refuse("no_assertion", None, carriers=("none",))
    await run.refuse("email_header_only", None, carriers=("none",), email=run.email)
    await run.email_disagreement()
    for case, token in _token_cases(run):
        if token is None:
            continue
        await run.refuse(case, token, carriers=("header", "cookie"))
    await run.through_edge()
    await run.rotated_key()
    for case, mode in FAULT_CASES.items():
        await run.certs_fault_case(case, mode)
    order = list(CASES)
    run.report.rows.sort(key=lambda r: order.index(r.case))


def _token_cases(run: _Run) -> Iterator[tuple[str, str | None]]:
    for case in TOKEN_CASES:
        match case:
            case "other_app":
                others = [a for a in run.edge.config.apps if a.name != run.app_name and a.aud != run.report.aud]
                if not others:
                    run.skip(case, "the config has no other app (wrong_aud covers a foreign aud)")
                    yield case, None
                else:
                    yield case, mint(run.edge, app=others[0].name, email=run.email)
            case "service_token":
                if run.service_tokens_expected is not None:
                    run.skip(case, f"the app admits service tokens (policy {run.service_tokens_expected!r})")
                    yield case, None
                else:
                    yield case, run.service_token()
            case _:
                yield case, run.token(case)


def format_report(report: Report, fmt: Literal["table", "json"]) -> str:
    """The report as ``table`` text or ``json``."""
    if fmt == "json":
        return json.dumps(report.to_json(), indent=2)
    return str(report)
