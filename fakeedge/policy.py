"""Which app covers a request, and what its policies decide. Pure: no I/O, no clock, no aiohttp."""

from __future__ import annotations

import heapq
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, assert_never

from .config import App, Destination, IdentityRuleKind, IngressRule, Policy, Rule, User

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


# --- request hosts and paths, normalised once ---------------------------------------------------

_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_PORT = re.compile(r"[0-9]{1,5}")


def split_host(host: str) -> tuple[str, str] | None:
    """``Admin.Acme.test.:8787`` -> (``admin.acme.test``, ``8787``); None when it is no host at all.

    Only letters, digits, ``-``, ``_`` and dots, an IPv4 address, or a bracketed IPv6 literal pass,
    with an optional all-ASCII-digit port: anything else (``?``, ``#``, ``/``, ``@``, spaces) could
    change the meaning of a URL the edge builds from it.
    """
    host = host.lower()
    if host.startswith("["):
        end = host.find("]")
        name, rest = host[: end + 1], host[end + 1 :]
        if "%" in name:
            # a zone id (RFC 6874) may hold spaces, quotes, '?', '#'... and ipaddress takes it
            return None
        try:
            ipaddress.IPv6Address(name[1:-1])
        except ValueError:
            return None
        if rest and not rest.startswith(":"):
            return None
        port = rest[1:]
    else:
        name, _, port = host.partition(":")
        if name.endswith("."):
            name = name[:-1]  # the root's empty label; "acme.test.." has an empty label of its own
        if not _HOSTNAME.fullmatch(name):
            return None
    if port and not _PORT.fullmatch(port):
        return None
    return name, port


# RFC 3986 §2.3 and §2.2: what Cloudflare's URL normalisation decodes, and what it keeps as it is
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_RESERVED = frozenset(":/?#[]@!$&'()*+,;=")
_HEX = frozenset("0123456789abcdefABCDEF")
_PLAIN_PATH = re.compile(r"(?:/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)*/?")  # already normal: most requests


def normalize_path(raw: str) -> str:
    """A raw request path as Cloudflare normalises it before Access matches apps (spec §14.1).

    The zone default (``type: cloudflare``) applied to the path as the client sent it, query
    excluded: percent escapes of unreserved characters (``A-Z a-z 0-9 - . _ ~``) are decoded and
    every other escape upper-cased, so ``%2F`` stays data and never becomes a separator; ``\\``
    becomes ``/``; any other byte that is neither unreserved nor reserved (space, ``"``, controls,
    non-ASCII, a ``%`` that starts no escape) is percent-encoded; repeated slashes are merged and
    dot segments removed (RFC 3986 §5.2.4). ``/%68ello//pa\\th`` is ``/hello/pa/th``.

    The result is idempotent and holds only unreserved and reserved characters and ``%XX``
    escapes, so it is safe inside a quoted-string or a URL.
    """
    if _PLAIN_PATH.fullmatch(raw) and raw:
        return raw
    chars: list[str] = []
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if c == "%" and i + 2 < n and raw[i + 1] in _HEX and raw[i + 2] in _HEX:
            decoded = chr(int(raw[i + 1 : i + 3], 16))
            chars.append(decoded if decoded in _UNRESERVED else "%" + raw[i + 1 : i + 3].upper())
            i += 3
            continue
        if c == "\\":
            chars.append("/")
        elif c in _UNRESERVED or c in _RESERVED:
            chars.append(c)
        else:
            chars.extend(f"%{b:02X}" for b in _utf8(c))
        i += 1
    segments = "".join(chars).split("/")
    if segments[0]:
        segments.insert(0, "")  # a relative path is read from the root
    out: list[str] = []
    for segment in segments[1:]:
        if segment in ("", "."):
            continue  # "//" merged (Cloudflare), "." dropped (RFC 3986)
        if segment == "..":
            if out:
                out.pop()
            continue
        out.append(segment)
    tail = "/" if segments[-1] in ("", ".", "..") and out else ""
    return "/" + "/".join(out) + tail


def _utf8(c: str) -> bytes:
    try:
        return c.encode("utf-8", "surrogateescape")  # a raw byte >= 0x80 the HTTP parser let through
    except UnicodeEncodeError:
        return c.encode("utf-8", "surrogatepass")


# --- app matching (spec §7.2) ------------------------------------------------------------------


def _path_matcher(path: str) -> re.Pattern[str] | None:
    """None covers every path. ``/alpha/*`` covers ``/alpha/one`` but not ``/alpha``.

    ``path`` is normalised as request paths are, so ``/café`` in a config matches the
    ``/caf%C3%A9`` a browser sends, and ``%2f`` in a config stays data as it does in a request.
    """
    if not path:
        return None
    path = normalize_path(path)
    if "*" not in path:
        # a plain path covers itself and everything below it
        return re.compile(re.escape(path) + r"(?:/.*)?\Z", re.S)
    # "/a*/b*/c*/d" as "/a.*/b.*/c.*/d" backtracked through every split of the path: 8,000
    # characters of "/b/c" took 44 s. Each middle literal is taken at its first occurrence and
    # kept (an atomic group): a later one never leaves more room for the rest, so the answer is
    # the same, in linear time. Only the last ".*" backtracks, over one literal.
    first, *middle, last = (re.escape(part) for part in path.split("*"))
    body = first + "".join(f"(?>.*?{part})" for part in middle) + ".*" + last
    tail = "" if path.endswith("*") else r"(?:/.*)?"
    return re.compile(body + tail + r"\Z", re.S)


@dataclass(frozen=True, slots=True)
class _Entry:
    app: App
    destination: Destination
    host: re.Pattern[str] | None  # None: exact host, looked up in the index
    path: re.Pattern[str] | None
    rank: tuple[int, int]  # higher is more specific: (host kind, literal path length)

    def covers_path(self, path: str) -> bool:
        return self.path is None or self.path.match(path) is not None


@dataclass(frozen=True, slots=True)
class AppMatch:
    app: App
    destination: Destination
    losers: tuple[Destination, ...] = ()  # broader destinations that also covered the request


MATCH_CACHE_LIMIT = 512  # (host, path) pairs whose app AppIndex keeps


class AppIndex:
    """Finds the most specific app for (host, path): an exact-host dict first, wildcards after.

    Lookups cost the same for 10 or 1,000 apps on exact hosts; wildcard destinations are grouped by
    their fixed suffix (``acme.test`` for ``*.acme.test``) so they are also found by dict lookups.
    """

    def __init__(self, apps: Iterable[App]) -> None:
        self._exact: dict[str, list[_Entry]] = {}
        self._wild: dict[str, list[_Entry]] = {}  # keyed by the part after the first label
        # (host, path) -> match: a request's answer depends on this index only, and clients ask
        # for the same few pages again and again (issue 16); bounded, emptied when full
        self._found: dict[tuple[str, str], AppMatch | None] = {}
        for app in apps:
            for dest in app.destinations:
                first, _, rest = dest.host.partition(".")
                literal_path = len(normalize_path(dest.path).replace("*", "")) if dest.path else 0
                if "*" not in first:
                    self._exact.setdefault(dest.host, []).append(
                        _Entry(app, dest, None, _path_matcher(dest.path), (3, literal_path))
                    )
                    continue
                # one label only, never several (spec §7.2), of hostname characters only
                label = "[a-z0-9_-]+" if first == "*" else "[a-z0-9_-]*".join(re.escape(p) for p in first.split("*"))
                kind = 1 if first == "*" else 2
                entry = _Entry(app, dest, re.compile(label + r"\Z"), _path_matcher(dest.path), (kind, literal_path))
                self._wild.setdefault(rest, []).append(entry)
        for entries in (*self._exact.values(), *self._wild.values()):
            entries.sort(key=lambda e: e.rank, reverse=True)

    def match(self, host: str, path: str) -> AppMatch | None:
        """The app covering ``host`` (lower-case, no port) and ``path``, most specific first."""
        key = (host, path)
        found = self._found.get(key)
        if found is not None or key in self._found:
            return found
        found = self._lookup(host, path)
        if len(self._found) >= MATCH_CACHE_LIMIT:
            self._found.clear()
        self._found[key] = found
        return found

    def _lookup(self, host: str, path: str) -> AppMatch | None:
        candidates = self._candidates(host)
        best: _Entry | None = None
        losers: list[Destination] = []
        for entry in candidates:
            if entry.covers_path(path):
                if best is None or entry.rank > best.rank:
                    if best is not None:
                        losers.append(best.destination)
                    best = entry
                else:
                    losers.append(entry.destination)
        if best is None:
            return None
        return AppMatch(best.app, best.destination, tuple(losers))

    def _candidates(self, host: str) -> list[_Entry]:
        exact = self._exact.get(host, [])
        first, _, rest = host.partition(".")
        wild = [e for e in self._wild.get(rest, ()) if e.host is not None and e.host.match(first)]
        return exact + wild if wild else exact

    def apps_for_host(self, host: str) -> list[App]:
        """Every app with a destination on ``host``, whatever its path."""
        return list(dict.fromkeys(e.app for e in self._candidates(host)))


class IngressIndex:
    """cloudflared's ingress rules (spec §9.1): first match wins, the last one matches everything.

    Rules on an exact hostname are found by dict lookup and merged, in order, with the few that
    can match any host (wildcards, no hostname), so 1,000 rules cost about what 10 do.
    """

    def __init__(self, rules: tuple[IngressRule, ...]) -> None:
        self._rules = rules
        self._exact: dict[str, list[int]] = {}
        self._other: list[int] = []
        self._by_host: dict[str, list[int]] = {}  # exact host -> its rules merged with _other, in order
        for index, rule in enumerate(rules):
            if rule.hostname is None or rule.hostname.startswith("*"):
                self._other.append(index)
            else:
                self._exact.setdefault(rule.hostname, []).append(index)

    def route(self, host: str, path: str) -> tuple[int, IngressRule]:
        """The first rule matching (host, path), and its index in the config."""
        exact = self._exact.get(host)
        for index in self._merged(host, exact) if exact else self._other:
            rule = self._rules[index]
            if rule.matches(host, path):
                return index, rule
        return len(self._rules) - 1, self._rules[-1]

    def _merged(self, host: str, exact: list[int]) -> list[int]:
        merged = self._by_host.get(host)
        if merged is None:
            merged = self._by_host[host] = list(heapq.merge(exact, self._other))
        return merged


# --- identities and request facts ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Identity:
    """Who signed in, with the attributes identity rules look at (decided at login)."""

    email: str
    name: str = ""
    groups: tuple[str, ...] = ()
    github_orgs: tuple[str, ...] = ()
    country: str = "US"
    amr: tuple[str, ...] = ("pwd",)
    idp: str = "fakeedge"
    user: User | None = None

    @classmethod
    def for_email(cls, email: str, user: User | None, *, default_country: str, idp: str | None = None) -> Identity:
        """The identity of a sign-in: a persona's attributes, or none for another address."""
        if user is None:
            return cls(email=email, name=email.split("@")[0], country=default_country, idp=idp or "fakeedge")
        return cls(
            email=user.email,
            name=user.name,
            groups=user.groups,
            github_orgs=user.github_orgs,
            country=user.country or default_country,
            amr=user.amr,
            idp=idp or user.idp,
            user=user,
        )


@dataclass(frozen=True, slots=True)
class Facts:
    """What the edge knows about a request without any login (checked on every request)."""

    ip: IPAddress
    country: str
    service_token: str | None = None  # client_id of a service token whose secret was right


# --- policy evaluation (spec §6) ---------------------------------------------------------------

Outcome = Literal["service", "bypass", "allow", "deny", "login", "forbidden"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the policies decided, and which policy and rule decided it (for logs and ``explain``).

    ``service``: a Service Auth policy admits the request; ``bypass``: no Access at all;
    ``allow``/``deny``: an identity was judged; ``login``: some Allow policy could pass once the
    user signs in; ``forbidden``: nothing can pass on these non-identity facts.
    """

    outcome: Outcome
    policy: Policy | None = None
    rule: Rule | None = None


def _check(rule: Rule, facts: Facts, who: Identity | None) -> bool | None:
    """One rule; None when it depends on an identity that is not known yet."""
    match rule.kind:
        case "everyone":
            return True
        case "ip" | "ip_list":
            return any(facts.ip in net for net in rule.value)
        case "geo":
            return bool(facts.country == rule.value)
        case "service_token":
            return bool(facts.service_token == rule.value)
        case "any_valid_service_token":
            return facts.service_token is not None
        case "group":
            return _match(rule.value.include, rule.value.require, rule.value.exclude, facts, who)[0]
        case _:
            identity_kind: IdentityRuleKind = rule.kind  # the rest: decided by who signed in
    if who is None:
        return None
    if rule.identity_provider_id is not None and who.idp != rule.identity_provider_id:
        return False  # an IdP group or claim counts only from that IdP (github-organization, oidc)
    match identity_kind:
        case "email":
            return bool(who.email.lower() == rule.value)
        case "email_domain":
            return bool(who.email.lower().rpartition("@")[2] == rule.value)
        case "email_list":
            return bool(who.email.lower() in rule.value)
        case "github-organization":
            return any(rule.value == o.lower() for o in who.github_orgs)
        case "oidc":
            name, value = rule.value
            if name == "groups":
                return bool(value in who.groups)
            custom = who.user.custom if who.user is not None else None
            claim = (custom or {}).get(name)
            return bool(value in claim if isinstance(claim, list) else claim == value)
        case "login_method":
            return bool(who.idp == rule.value)
        case "auth_method":
            return bool(rule.value in who.amr)
        case _:
            assert_never(identity_kind)


def _match(
    include: tuple[Rule, ...], require: tuple[Rule, ...], exclude: tuple[Rule, ...], facts: Facts, who: Identity | None
) -> tuple[bool | None, Rule | None]:
    """include = OR, require = AND over every value, exclude = NOT (spec §6.2), in Kleene logic."""
    inc: bool | None = False
    hit: Rule | None = None
    for rule in include:
        v = _check(rule, facts, who)
        if v:
            inc, hit = True, rule
            break
        if v is None:
            inc = None
    if inc is False:
        return False, None
    req: bool | None = True
    for rule in require:
        v = _check(rule, facts, who)
        if v is False:
            return False, rule
        if v is None:
            req = None
    exc: bool | None = False
    for rule in exclude:
        v = _check(rule, facts, who)
        if v:
            return False, rule
        if v is None:
            exc = None
    if inc and req and exc is False:
        return True, hit
    return None, hit


def decide(app: App, facts: Facts, who: Identity | None) -> Verdict:
    """Evaluate ``app``'s policies for one request, in Cloudflare's order (spec §6.4).

    Bypass and Service Auth policies run first, then Allow and Block from top to bottom; the first
    match decides, and nothing matching means deny. With ``who=None`` the answer says whether a
    login could help (``login``) or the non-identity facts already rule the request out.
    """
    for policy in app.policies:
        if policy.decision in ("bypass", "non_identity"):
            matched, rule = _match(policy.include, policy.require, policy.exclude, facts, None)
            if matched:
                return Verdict("bypass" if policy.decision == "bypass" else "service", policy, rule)
    for policy in app.policies:
        if policy.decision not in ("allow", "deny"):
            continue
        matched, rule = _match(policy.include, policy.require, policy.exclude, facts, who)
        if who is None:
            if matched is not False and policy.decision == "allow":
                return Verdict("login", policy, rule)  # Allow always means a login first (spec §6.1)
            if matched and policy.decision == "deny":
                return Verdict("forbidden", policy, rule)  # refused on non-identity facts alone
        elif matched:
            return Verdict("allow" if policy.decision == "allow" else "deny", policy, rule)
    if who is None:
        return Verdict("forbidden")
    return Verdict("deny")


def match_policy(policy: Policy, facts: Facts, who: Identity | None) -> tuple[bool | None, Rule | None]:
    """One policy's rules for ``explain`` and the journal: matched (None: needs a login), and the rule.

    The rule is the include rule that matched, the require rule that failed or the exclude rule
    that matched; None when no include rule matched.
    """
    return _match(policy.include, policy.require, policy.exclude, facts, who)
