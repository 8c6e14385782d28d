"""The configuration file: YAML in, frozen dataclasses out.

Nothing outside this module touches the raw dicts. Every mistake raises :class:`ConfigError`
naming the file, the key path and what would have been valid. Which keys each mapping may hold
(and what they mean, for docs/config-reference.md) is declared once, in :mod:`fakeedge.options`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import difflib
import functools
import hashlib
import ipaddress
import itertools
import math
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, assert_never, get_args
from urllib.parse import SplitResult, urlsplit

import re2  # type: ignore[import-untyped]

from .errors import ConfigError, one_line
from .options import Derived, keys, option, section

__all__ = [
    "AccessGroup",
    "App",
    "Branding",
    "Config",
    "ConfigError",
    "CorsHeaders",
    "Decision",
    "Destination",
    "DynamicClientRegistration",
    "IdentityRuleKind",
    "IngressPath",
    "IngressRule",
    "MfaConfig",
    "NonIdentityRuleKind",
    "OAuthConfiguration",
    "Policy",
    "Rule",
    "RuleKind",
    "SameSite",
    "ServiceToken",
    "User",
    "default_aud",
    "load_config",
    "parse_config",
    "parse_destination",
    "parse_duration",
    "parse_host_port",
    "sub_for",
]

Decision = Literal["allow", "deny", "bypass", "non_identity"]
SameSite = Literal["none", "lax", "strict"]

# Dashboard action names are aliases of the API decisions (spec §6.1).
DECISIONS: dict[str, Decision] = {
    "allow": "allow",
    "deny": "deny",
    "block": "deny",
    "bypass": "bypass",
    "non_identity": "non_identity",
    "service auth": "non_identity",
    "service_auth": "non_identity",
}

# Selectors and whether they are about identity (decided at login) or not (every request), spec §6.3;
# declared with their fields in fakeedge.options, as every config key is; these types name the same
# sets for mypy, and tests/test_options.py checks they agree with the declaration.
IdentityRuleKind = Literal[
    "email", "email_domain", "email_list", "github-organization", "oidc", "login_method", "auth_method"
]
NonIdentityRuleKind = Literal["everyone", "ip", "ip_list", "geo", "service_token", "any_valid_service_token"]
RuleKind = Literal[IdentityRuleKind, NonIdentityRuleKind, "group"]
IDENTITY_RULES: frozenset[IdentityRuleKind] = frozenset(get_args(IdentityRuleKind))
NON_IDENTITY_RULES: frozenset[NonIdentityRuleKind] = frozenset(get_args(NonIdentityRuleKind))
RULE_KINDS: list[RuleKind] = sorted([*IDENTITY_RULES, *NON_IDENTITY_RULES, "group"])

# cloudflared's originRequest keys (spec §9.1); only those declared honoured change what fakeedge does.
ORIGIN_REQUEST_HONOURED = frozenset(o.key for o in section("originRequest").options if o.honoured)

SUB_NAMESPACE = uuid.UUID("6f1e8a3c-2b7d-5c4e-9a10-f4e5d6c7b8a9")


@dataclass(frozen=True, slots=True)
class Rule:
    """One include/require/exclude entry, e.g. ``{email_domain: {domain: acme.test}}``.

    ``value`` is already parsed: a lower-cased string, a tuple of networks, a ``(name, value)``
    pair for ``oidc``, or the resolved :class:`AccessGroup` for ``group``.
    """

    kind: RuleKind
    value: Any
    # github-organization and oidc: only sign-ins through this identity provider (the persona's idp)
    identity_provider_id: str | None = None

    @property
    def is_identity(self) -> bool:
        if self.kind == "group":
            group: AccessGroup = self.value
            return group.is_identity
        return self.kind in IDENTITY_RULES


@dataclass(frozen=True, slots=True)
class AccessGroup:
    """A reusable rule group (Cloudflare's Access group), referenced by ``{group: {id: ...}}``."""

    id: str
    name: str
    include: tuple[Rule, ...]
    exclude: tuple[Rule, ...] = ()
    require: tuple[Rule, ...] = ()

    @property
    def is_identity(self) -> bool:
        return any(r.is_identity for r in (*self.include, *self.exclude, *self.require))


AUTHENTICATORS: tuple[str, ...] = tuple(option("mfa_config", "allowed_authenticators").default)


@dataclass(frozen=True, slots=True)
class MfaConfig:
    """Independent MFA settings (spec §14.5) at the organisation, an app or a policy (API names)."""

    mfa_disabled: bool = False  # an app or policy opting out of the organisation's MFA
    allowed_authenticators: tuple[str, ...] = AUTHENTICATORS
    session_duration: int | None = None  # seconds an MFA stays good; None: the next level's, else 24 h


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    decision: Decision
    include: tuple[Rule, ...]
    exclude: tuple[Rule, ...] = ()
    require: tuple[Rule, ...] = ()
    session_duration: int | None = None  # seconds; overrides the app's (spec §1.6)
    id: str = ""  # a reusable policy's id (spec §14.6); "" for one written inside an app
    precedence: int | None = None  # as given; the app's policies are sorted by it (spec §6.4)
    purpose_justification_required: bool = False  # an Allow policy asks why, once per session (§14.5)
    purpose_justification_prompt: str | None = None
    mfa_config: MfaConfig | None = None
    approval_required: bool = False  # temporary authentication: an approver grants each session (§14.5)
    approval_groups: tuple[tuple[str, ...], ...] = ()  # always (): the config refuses approval_groups for now


@dataclass(frozen=True, slots=True)
class Destination:
    """One ``host[/path]`` an app covers, normalised: host lower-case, no port, no scheme."""

    host: str
    path: str  # "" for the whole host

    def __str__(self) -> str:
        return self.host + self.path


@dataclass(frozen=True, slots=True)
class CorsHeaders:
    allow_all_origins: bool = False
    allowed_origins: tuple[str, ...] = ()
    allow_all_methods: bool = False
    allowed_methods: tuple[str, ...] = ()
    allow_all_headers: bool = False
    allowed_headers: tuple[str, ...] = ()
    allow_credentials: bool = False
    max_age: int | None = None


@dataclass(frozen=True, slots=True)
class DynamicClientRegistration:
    """``oauth_configuration.dynamic_client_registration`` (spec §14.2): which redirect URIs may register."""

    enabled: bool = True
    allow_any_on_localhost: bool = False
    allow_any_on_loopback: bool = False
    allowed_uris: tuple[str, ...] = ()  # http(s) entries may end in "/*"; custom schemes match exactly


@dataclass(frozen=True, slots=True)
class OAuthConfiguration:
    """An app's managed OAuth (spec §14.2), under Cloudflare's API names."""

    enabled: bool = False
    dynamic_client_registration: DynamicClientRegistration = field(default_factory=DynamicClientRegistration)
    access_token_lifetime: int = 15 * 60  # grant.access_token_lifetime
    session_duration: int | None = None  # grant.session_duration: refresh tokens; None = the app's


@dataclass(frozen=True, slots=True)
class App:
    name: str
    destinations: tuple[Destination, ...]
    aud: str
    policies: tuple[Policy, ...]
    session_duration: int = 24 * 3600
    same_site_cookie_attribute: SameSite | None = None
    http_only_cookie_attribute: bool = True
    path_cookie_attribute: bool = False
    enable_binding_cookie: bool = False
    service_auth_401_redirect: bool = False
    read_service_tokens_from_header: str | None = None
    options_preflight_bypass: bool = False
    cors_headers: CorsHeaders | None = None
    custom_deny_url: str | None = None
    custom_non_identity_deny_url: str | None = None
    custom_deny_message: str | None = None
    oauth_configuration: OAuthConfiguration | None = None
    # spec §14.6: True sets the cookie on every concrete domain after login, False lazily;
    # None (no saved setting) keeps the old rule: eager when the app has at most five domains
    eager_redirect_cookie: bool | None = None
    mfa_config: MfaConfig | None = None

    @property
    def domain(self) -> str:
        """The primary ``host[/path]``, as Cloudflare reports it in ``cf-access-domain``."""
        return str(self.destinations[0])

    @property
    def has_identity_policy(self) -> bool:
        """True when some Allow policy lets a person in; otherwise only Service Auth can."""
        return any(p.decision == "allow" for p in self.policies)


@dataclass(frozen=True, slots=True)
class User:
    """A persona offered on the SSO page; a typed address matching ``email`` gets these attributes."""

    email: str
    name: str = ""
    groups: tuple[str, ...] = ()
    github_orgs: tuple[str, ...] = ()
    country: str | None = None
    amr: tuple[str, ...] = ("pwd",)
    idp: str = "fakeedge"
    custom: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ServiceToken:
    """A service token (spec §5, §14.3): its current secret, older secrets still in their rotation
    grace (each with its own expiry), its own expiry, and whether it is disabled."""

    name: str
    id: str
    client_id: str
    client_secret: str = field(repr=False)
    previous_client_secrets: tuple[tuple[str, float], ...] = field(default=(), repr=False)  # (secret, expires_at)
    expires_at: float | None = None  # epoch seconds on the edge clock; None: never
    disabled: bool = False

    def secrets_at(self, now: float) -> tuple[str, ...]:
        """The secrets that authenticate at ``now``: none when disabled or expired (spec §14.3)."""
        if self.disabled or (self.expires_at is not None and now >= self.expires_at):
            return ()
        return (self.client_secret, *(s for s, until in self.previous_client_secrets if now < until))


@dataclass(frozen=True, slots=True)
class IngressPath:
    """An ingress rule's ``path``, matched as cloudflared matches it: Go's regexp, which is RE2.

    RE2 runs in time linear in the path whatever the pattern; Python's ``re`` backtracks, so a
    pattern Cloudflare handles, such as ``^/(a+)+$``, would let one hostile path hold the edge for
    minutes. RE2 also refuses what Go refuses (backreferences, lookaround), as cloudflared does.
    """

    pattern: str
    compiled: Any = field(compare=False, repr=False)

    @classmethod
    def compile(cls, pattern: str) -> IngressPath:
        """Compile ``pattern``; raises ``ValueError`` with RE2's reason when it is not valid."""
        options = re2.Options()
        options.log_errors = False  # the error is the config's one line, not a line on stderr
        try:
            return cls(pattern, re2.compile(pattern, options))
        except re2.error as exc:
            raw = exc.args[0] if exc.args else "invalid"
            reason = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
            if reason.endswith("\\Z"):
                reason += "; Go's end of text is \\z"  # Python's spelling, refused by cloudflared too
            raise ValueError(reason) from None

    def search(self, path: str) -> bool:
        """Whether the pattern matches anywhere in ``path`` (cloudflared: ``MatchString``)."""
        return self.compiled.search(path) is not None


@dataclass(frozen=True, slots=True)
class IngressRule:
    """A cloudflared ingress rule (spec §9.1): first match wins, the last one matches everything."""

    hostname: str | None
    path: IngressPath | None
    service: str  # origin base URL ("http://127.0.0.1:3000") or "http_status:404"
    http_host_header: str | None = None
    connect_timeout: float = 30.0

    @property
    def status(self) -> int | None:
        if self.service.startswith("http_status:"):
            return int(self.service.partition(":")[2])
        return None

    def matches(self, host: str, path: str) -> bool:
        if self.hostname is not None:
            if self.hostname.startswith("*"):
                # cloudflared: a leading "*" is a suffix match of any depth, unlike Access (spec §9.1)
                if not host.endswith(self.hostname[1:]):
                    return False
            elif host != self.hostname:
                return False
        return self.path is None or self.path.search(path)


# defaults declared in fakeedge.options, named here for the dataclasses and the parser
DEFAULT_BRAND_NAME: str = option("branding", "name").default
JOURNAL_DEFAULT: int = option("top", "journal").default
JOURNAL_MAX = 1_000_000


@dataclass(frozen=True, slots=True)
class Branding:
    """The login and block pages' look, as Cloudflare's Custom Pages settings set it."""

    name: str = DEFAULT_BRAND_NAME
    logo_url: str | None = None
    background_color: str | None = None
    header_color: str | None = None
    button_color: str = "#f38020"
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Config:
    source: str
    team: str
    team_domain: str | None
    listen: tuple[str, int] | None  # None: `listen: off`, TLS only
    keys_dir: Path
    users: tuple[User, ...]
    service_tokens: tuple[ServiceToken, ...]
    apps: tuple[App, ...]
    ingress: tuple[IngressRule, ...]
    allow_any_email: bool = True
    one_time_pin: bool = False
    default_country: str = "US"
    # spec §14.3: the default, and not switchable, for organisations created since 2026-10-05
    strict_service_token_auth: bool = True
    deny_unmatched_requests: bool = False  # "Require Access protection" (spec §14.4)
    deny_unmatched_requests_exempted_zone_names: tuple[str, ...] = ()
    mfa_config: MfaConfig = field(default_factory=MfaConfig)  # the organisation's (spec §14.5)
    mfa_required_for_all_apps: bool = False
    admin_token: str | None = field(default=None, repr=False)  # opens /cdn-cgi/fakeedge/ beyond loopback
    logout_delay: float = 0.0
    origin_timeout: float = 100.0
    not_emulated: tuple[str, ...] = ()
    branding: Branding = field(default_factory=Branding)
    tls_listen: tuple[str, int] | None = None
    journal: int = JOURNAL_DEFAULT  # requests the inspector keeps (fakeedge.record); 0: none

    def user(self, email: str) -> User | None:
        wanted = email.lower()
        return next((u for u in self.users if u.email.lower() == wanted), None)


def sub_for(team: str, email: str) -> str:
    """The stable JWT ``sub`` of an email: the same user across restarts (spec §2.2, UUIDv5)."""
    return str(uuid.uuid5(SUB_NAMESPACE, f"{team}:{email.lower()}"))


def default_aud(team: str, app_name: str) -> str:
    """The AUD tag of an app that sets none: stable for a team and app name, 64 hex digits."""
    return hashlib.sha256(f"fakeedge:{team}:{app_name}".encode()).hexdigest()


# --- parsing helpers -------------------------------------------------------------------------

T = TypeVar("T")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}
_AUD = re.compile(r"[0-9a-f]{64}")


def parse_duration(text: str | int | float) -> float:
    """Parse a Go duration such as ``24h``, ``2h45m`` or ``300ms`` (spec §1.6) into seconds.

    Raises:
        ValueError: the text is not a duration, or not a finite one within a century.
    """
    if isinstance(text, bool):
        raise ValueError("expected a duration such as 30s, 15m or 24h")
    if isinstance(text, int) and abs(text) > MAX_DURATION:
        return _bounded(math.inf, text)  # float() of a huge int would raise OverflowError
    if isinstance(text, int | float):
        return _bounded(float(text), text)
    if not isinstance(text, str):
        raise ValueError(f"expected a duration such as 30s, 15m or 24h, got {_show(text)}")
    return _bounded(_parse_duration_text(text), text)


MAX_DURATION = 100 * 365 * 86400.0
MAX_DURATION_TEXT = 256  # characters: '2h45m' and friends, with room for any honest spelling


def _bounded(seconds: float, given: object) -> float:
    # NaN, infinities and astronomic values would break every expiry computed from them
    if not math.isfinite(seconds) or abs(seconds) > MAX_DURATION:
        raise ValueError(f"expected a duration within a hundred years, got {_show(given)}")
    return seconds


def _parse_duration_text(text: str) -> float:
    text = text.strip()
    if text in ("0", "immediate"):
        return 0.0
    pos, total = 0, 0.0
    # match() at the position, not finditer(): a search retried at every offset of a long run of
    # digits is quadratic (20,000 digits took 18 s, reachable through the control API's clock)
    while len(text) <= MAX_DURATION_TEXT and (m := _DURATION.match(text, pos)):
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"expected a duration such as 30s, 15m or 24h, got {_show(text)}")
    return total


class _Reader:
    """Walks the raw YAML, keeping the key path for error messages and collecting the errors.

    Errors of independent parts (top-level keys, list items) are collected with :meth:`collecting`
    so that one run reports them all; the caller raises :meth:`raise_collected` at the end.
    """

    def __init__(self, source: str, errors: list[ConfigError] | None = None) -> None:
        self.source = source
        self.errors: list[ConfigError] = [] if errors is None else errors

    def sub(self, source: str) -> _Reader:
        """A reader for another file (an ``ingress_file``) that adds to the same errors."""
        return _Reader(source, self.errors)

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(self.source, key, message)

    def skip(self) -> ConfigError:
        """An error already reported: a reference to an item that failed (no second line for it)."""
        return _Reported(self.source, "", "")

    @contextlib.contextmanager
    def collecting(self) -> Iterator[None]:
        """Record a ConfigError raised in the block and go on with the next part."""
        try:
            yield
        except ConfigError as exc:
            self.errors.extend(exc.errors)

    def raise_collected(self) -> None:
        if self.errors:
            raise ConfigError.combine(self.errors)

    def mapping(self, value: Any, key: str, section_id: str, *, leave_out: str = "") -> dict[Any, Any]:
        """A mapping of the declared section ``section_id`` (fakeedge.options): any other key is an error."""
        return self.names(value, key, [k for k in keys(section_id) if k != leave_out])

    def names(self, value: Any, key: str, allowed: Sequence[str]) -> dict[Any, Any]:
        """A mapping whose keys must be among ``allowed`` (names the config itself defines, for lists)."""
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a mapping, got {_kind(value)}")
        unknown = [name for name in value if name not in allowed]
        if unknown:
            raise ConfigError.combine([self.fail(_join(key, name), _unknown_key(name, allowed)) for name in unknown])
        return value

    def seq(self, value: Any, key: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(key, f"expected a list, got {_kind(value)}")
        return value

    def text(
        self,
        value: Any,
        key: str,
        *,
        required: bool = False,
        default: str | None = None,
        multiline: bool = False,
    ) -> Any:
        if value is None:
            if required:
                raise self.fail(key, "is required (a string)")
            return default
        if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > _MAX_INT_BITS:
            raise self.fail(key, f"expected a non-empty string, got {_kind(value)}")
        if not isinstance(value, str | int) or isinstance(value, bool) or str(value) == "":
            raise self.fail(key, f"expected a non-empty string, got {_kind(value)}")
        text = str(value)
        bad = (_CONTROL_MULTILINE if multiline else _CONTROL).search(text)
        if bad:
            # control characters would rewrite log lines and terminals; names never need them
            raise self.fail(key, f"expected text without control characters, got {_show(text)}")
        return text

    def flag(self, value: Any, key: str, default: bool) -> bool:
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.fail(key, f"expected true or false, got {_kind(value)}")
        return value

    def flag_of(self, m: dict[Any, Any], key: str, section_id: str, name: str) -> bool:
        """The boolean ``name`` of the mapping ``m`` at ``key``, else the default fakeedge.options declares."""
        return self.flag(m.get(name), _join(key, name), _flag_default(section_id, name))

    def duration_of(self, m: dict[Any, Any], key: str, section_id: str, name: str) -> float | None:
        """The duration ``name`` of the mapping ``m`` at ``key``, else the default fakeedge.options declares."""
        return self.duration(m.get(name), _join(key, name), _duration_default(section_id, name))

    def duration(self, value: Any, key: str, default: float | None) -> float | None:
        """A Go duration; never negative (a negative session or timeout has no meaning)."""
        if value is None:
            return default
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise self.fail(key, str(exc)) from None
        if seconds < 0:
            raise self.fail(key, f"expected a duration of zero or more such as 30s, got {_show(value)}")
        return seconds

    def convert(self, value: Any, key: str, fn: Callable[[Any], T]) -> T:
        try:
            return fn(value)
        except ValueError as exc:
            raise self.fail(key, str(exc)) from None


class _Reported(ConfigError):
    """Stands for an error already on the list: it adds no line of its own."""

    def __init__(self, source: str, key: str, message: str) -> None:
        super().__init__(source, key, message)
        self.errors = ()


_MAX_INT_BITS = 256  # 77 digits: more than any count, port or duration a config holds
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_MULTILINE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")  # \t and \n allowed
_SHOWN = 60  # characters of a value quoted in a message; the rest is cut


def _show(value: Any) -> str:
    """``repr(value)`` for a message, cut after 60 characters with an ellipsis."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > _MAX_INT_BITS:
        return f"a {value.bit_length()}-bit number"
    if isinstance(value, str):
        if len(value) <= _SHOWN:
            return repr(value)
        quoted = repr(value[:_SHOWN])
        return f"{quoted[:-1]}…{quoted[-1]}"
    text = repr(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "…"


def _cut(path: str, limit: int = 160) -> str:
    """A file name for a message: paths are longer than values, but not without bound."""
    return path if len(path) <= limit else path[:limit] + "…"


def _name(key: Any) -> str:
    """A mapping key as it appears in a key path: one line of text, cut like values."""
    text = one_line(str(key)) if not isinstance(key, int) or key.bit_length() <= _MAX_INT_BITS else _show(key)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "…"


def _names(names: Iterable[Any], none: str = "none") -> str:
    """Names for a "defined: a, b" list in a message, each cut like a key."""
    return ", ".join(_name(n) for n in names) or none


def _unknown_key(name: Any, allowed: Sequence[str]) -> str:
    hint = difflib.get_close_matches(_name(name), allowed, n=1)
    did = f"; did you mean '{hint[0]}'?" if hint else ""
    # the key path already shows the name; a long one is not shown twice (the line stays readable)
    if len(str(name)) > _SHOWN:  # cut in the key path already
        return f"unknown key{did or ';'} valid: {', '.join(allowed)}"
    return f"unknown key '{_name(name)}'{did} valid: {', '.join(allowed)}"


def _join(key: str, name: Any) -> str:
    return f"{key}.{_name(name)}" if key else _name(name)


def _kind(value: Any) -> str:
    match value:
        case bool():
            return f"a boolean ({str(value).lower()})"
        case dict():
            return "a mapping"
        case list():
            return "a list"
        case None:
            return "nothing"
        case _:
            return f"{type(value).__name__} {_show(value)}"


def parse_host_port(text: str, *, default_port: int = 8787) -> tuple[str, int]:
    """``127.0.0.1:8787``, ``[::1]:0``, ``:8787`` or ``localhost`` -> (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.lstrip(":")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    host = host or "127.0.0.1"
    if port_text and not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5):
        raise ValueError(f"expected HOST:PORT such as 127.0.0.1:8787, got {_show(text)}")
    port = int(port_text) if port_text else default_port
    if host.isdigit():
        raise ValueError(f"expected HOST:PORT such as 127.0.0.1:8787 (a port alone is :{host}), got {_show(text)}")
    if not _is_host(host.lower()):
        raise ValueError(f"expected HOST:PORT such as 127.0.0.1:8787, got {_show(text)}")
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 0-65535")
    return host, port


def parse_destination(text: str) -> Destination:
    """``admin.acme.test/api/*`` -> Destination(host, path). Ports are dropped (spec §7.2)."""
    text = text.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    host, slash, path = text.partition("/")
    host = host.lower().rstrip(".")
    if host.startswith("[") or host.count(":") > 1:
        raise ValueError(f"expected host[/path], got {_show(text)}")
    host = host.split(":", 1)[0]
    if not host:
        raise ValueError(f"expected host[/path], got {_show(text)}")
    labels = host.split(".")
    for label in labels:
        if label.count("*") > 1 or ("*" in label and label is not labels[0]):
            raise ValueError(f"a wildcard may only appear once, in the first label: {_show(host)}")
    if not _is_host(host, wildcard=True):
        raise ValueError(f"expected host[/path] such as admin.acme.test/api, got {_show(text)}")
    path = "/" + path if slash else ""
    if path in ("/", "/*"):
        path = ""
    return Destination(host, path)


_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")


def _is_host(host: str, *, wildcard: bool = False) -> bool:
    """A DNS name (RFC 1123 labels; ``_`` too, as DNS allows) or an IP address.

    With ``wildcard``, the first label may hold one ``*`` (``*.acme.test``, ``pr-*.acme.test``).
    """
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    if len(host) > 253:
        return False
    labels = host.split(".")
    if wildcard and labels[0].count("*") == 1:
        labels[0] = labels[0].replace("*", "a")
    return all(_LABEL.fullmatch(label) for label in labels)


def _split_url(value: str) -> SplitResult | None:
    """``urlsplit`` that answers None for what it cannot parse, ports included."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is no number or out of range
    except ValueError:
        return None
    return parts


def _origin_url(value: str) -> str:
    if value.startswith("http_status:"):
        code = value.partition(":")[2]
        if not code.isdigit() or not 100 <= int(code) <= 999:
            raise ValueError(f"expected http_status:<100-999>, got {_show(value)}")
        return value
    parts = _split_url(value)
    if (
        parts is None
        or parts.scheme not in ("http", "https", "ws", "wss")
        or not parts.hostname
        or not _is_host(parts.hostname)
        or parts.port == 0
    ):
        raise ValueError(f"expected http://host:port, https://host:port or http_status:<code>, got {_show(value)}")
    if parts.path not in ("", "/") or parts.query:
        # cloudflared refuses a service URL with a path (spec §9.1)
        raise ValueError(f"a service URL cannot have a path, got {_show(value)}")
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return f"{scheme}://{parts.netloc}"


# --- the loader ------------------------------------------------------------------------------

# The keys of the top level, an app and a user, in the order errors list them (others import
# them); every mapping's keys are declared in fakeedge.options and read from there.
TOP_KEYS = keys("top")
APP_KEYS = keys("app")
USER_KEYS = keys("user")


MAX_CONFIG_BYTES = 1 << 20  # a config with hundreds of apps is tens of kilobytes
MAX_YAML_VALUES = 100_000  # counted with aliases expanded: bounds "billion laughs" and cycles
MAX_YAML_DEPTH = 40
_CLOUDFLARED_KEYS = ("tunnel", "credentials-file", "originRequest")


def load_config(path: str | Path) -> Config:
    """Read and validate a fakeedge YAML file.

    Raises:
        ConfigError: the file is missing, is not YAML, or holds wrong values; one error per
            wrong part (``errors``), each naming the file and the key.
    """
    path = Path(path)
    source = str(path)
    text = _read_text(path, source, lambda why: ConfigError(source, "", f"cannot read the file ({why})"))
    raw = _load_yaml(text, source)
    return parse_config(raw, source=source, base_dir=path.resolve().parent)


def _read_text(path: Path, source: str, fail: Callable[[str], ConfigError]) -> str:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise fail(exc.strerror or type(exc).__name__) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(source, "", f"larger than {MAX_CONFIG_BYTES >> 20} MiB: not a config file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(source, f"line {line}", f"not UTF-8 text (byte {exc.start})") from None


def _load_yaml(text: str, source: str) -> Any:
    """YAML as PyYAML's safe loader reads it, minus what makes a config ambiguous or a bomb.

    A key written twice in one mapping is an error (YAML 1.2 forbids it; PyYAML keeps the last),
    and the document may hold at most ``MAX_YAML_VALUES`` values with aliases expanded.

    Raises:
        ConfigError: not YAML, a duplicate key, a number no key could take, or too big.
    """
    import yaml

    loader = None
    try:
        loader = _loader_class()(text)  # its reader refuses control characters here already
        node = loader.get_single_node()
        if node is None:
            return None
        _check_nodes(loader, node, source)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f"line {mark.line + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "invalid YAML"
        key = _yaml_error_key(text)
        if key:
            raise ConfigError(source, key, f"{line}: {problem}" if line else problem) from None
        raise ConfigError(source, line, problem) from None
    except yaml.reader.ReaderError as exc:
        at = text[: exc.position].count("\n") + 1
        char = exc.character if isinstance(exc.character, int) else ord(exc.character[:1] or "\0")
        raise ConfigError(source, f"line {at}", f"character U+{char:04X} is not allowed in YAML") from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, "", f"invalid YAML ({type(exc).__name__})") from None
    except _TooDeep as exc:
        raise ConfigError(source, exc.key, f"nested more than {MAX_YAML_DEPTH} levels deep") from None
    finally:
        if loader is not None:
            loader.dispose()


class _TooDeep(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


@functools.cache
def _loader_class() -> Any:
    """PyYAML's SafeLoader that stops composing past ``MAX_YAML_DEPTH`` levels.

    Its composer recurses per level and its scanner rechecks every open level per token, so
    ``[[[[...`` would cost a RecursionError at best and quadratic time at worst.
    """
    import yaml

    class Loader(yaml.SafeLoader):
        depth = 0
        top_key = ""

        def compose_node(self, parent: Any, index: Any) -> Any:
            self.depth += 1
            try:
                if self.depth == 2 and isinstance(index, yaml.ScalarNode):
                    self.top_key = _name(index.value)  # a value at the top: name its key in errors
                if self.depth > MAX_YAML_DEPTH + 1:
                    raise _TooDeep(self.top_key)
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    return Loader


def _yaml_error_key(text: str) -> str:
    """The key path at which YAML that does not parse goes wrong ("" when at the top).

    Replays the parser's events up to the error, keeping the path the way the walk above does.
    """
    import yaml

    frames: list[list[Any]] = []  # ["map", key, expecting a key] or ["seq", index, None]

    def node_done() -> None:
        if frames and frames[-1][0] == "seq":
            frames[-1][1] += 1
        elif frames:
            frames[-1][2] = not frames[-1][2]

    loader = yaml.SafeLoader(text)
    try:
        for _ in range(MAX_YAML_VALUES * 2):
            event = loader.get_event()  # type: ignore[no-untyped-call]
            if isinstance(event, yaml.StreamEndEvent):
                break
            in_key = bool(frames) and frames[-1][0] == "map" and frames[-1][2]
            if isinstance(event, yaml.ScalarEvent | yaml.AliasEvent):
                if in_key:
                    frames[-1][1] = event.value if isinstance(event, yaml.ScalarEvent) else "*"
                node_done()
            elif isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
                if in_key:
                    frames[-1][1] = "?"
                mapping = isinstance(event, yaml.MappingStartEvent)
                frames.append(["map", None, True] if mapping else ["seq", 0, None])
            elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
                frames.pop()
                node_done()
    except yaml.YAMLError:
        pass
    finally:
        loader.dispose()
    key = ""
    for kind, name, expecting_key in frames:
        if kind == "seq":
            key += f"[{name}]"
        elif expecting_key:
            break  # between keys: the error is about this mapping
        else:
            key = _join(key, name)
    return _cut(key, 80)


_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:timestamp")


def _check_nodes(loader: Any, root: Any, source: str) -> None:
    """Walk the composed YAML (aliases expanded, bounded) for duplicate keys and bad scalars."""
    import yaml

    errors: list[tuple[int, ConfigError]] = []
    stack: list[tuple[Any, str, int]] = [(root, "", 0)]
    seen_values = 0
    while stack:
        node, key, depth = stack.pop()
        seen_values += 1
        if seen_values > MAX_YAML_VALUES:
            # the top-level key: the full path through an alias bomb is noise
            where = re.split(r"[.\[]", key, maxsplit=1)[0]
            raise ConfigError(
                source, where, f"more than {MAX_YAML_VALUES} values once aliases are expanded (an alias bomb?)"
            )
        if depth > MAX_YAML_DEPTH:
            raise ConfigError(
                source, re.split(r"[.\[]", key, maxsplit=1)[0], f"nested more than {MAX_YAML_DEPTH} levels deep"
            )
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    stack.append((value_node, key, depth + 1))  # `<<: *defaults` may be overridden
                    continue
                name = _scalar_key(loader, key_node)
                sub = _join(key, key_node.value if isinstance(key_node, yaml.ScalarNode) else "?")
                if name is not None and name in first_line:
                    here = key_node.start_mark.line + 1
                    message = f"written twice (lines {first_line[name]} and {here}); YAML would keep only the last"
                    errors.append((here, ConfigError(source, sub, message)))
                elif name is not None:
                    first_line[name] = key_node.start_mark.line + 1
                stack.append((value_node, sub, depth + 1))
        elif isinstance(node, yaml.SequenceNode):
            stack += [(item, f"{key}[{i}]", depth + 1) for i, item in enumerate(node.value)]
        elif node.tag in _NUMBER_TAGS:
            digits = sum(c.isdigit() for c in node.value)
            try:
                if digits > 40 and node.tag == "tag:yaml.org,2002:int":
                    raise ValueError
                loader.construct_object(node)
            except (ValueError, OverflowError):
                kind = node.tag.rpartition(":")[2]
                errors.append((line, ConfigError(source, key, f"not a usable {kind}: {_show(node.value)}")))
    if errors:
        raise ConfigError.combine([e for _, e in sorted(errors, key=lambda item: item[0])])


def _scalar_key(loader: Any, node: Any) -> Any:
    """The value a scalar mapping key stands for (``1`` and ``0x1`` are one key), else None."""
    import yaml

    if not isinstance(node, yaml.ScalarNode):
        return None
    try:
        key = loader.construct_object(node)
        hash(key)
    except (yaml.YAMLError, ValueError, TypeError, OverflowError):
        return None
    return (type(key) is str, key)


def parse_config(raw: Any, *, source: str = "<config>", base_dir: Path | None = None) -> Config:
    """Validate an already-parsed config mapping (the pytest plugin passes dicts here).

    Raises:
        ConfigError: one or more wrong values; ``errors`` holds one per wrong part (a top-level
            key, a list item), each naming the key path.
    """
    r = _Reader(source)
    if raw is not None and not isinstance(raw, dict):
        raise r.fail("", f"expected a mapping of settings such as 'team: acme', got {_kind(raw)}")
    raw = raw or {}
    if "team" not in raw and (cloudflared := next((k for k in _CLOUDFLARED_KEYS if k in raw), None)):
        raise r.fail(
            cloudflared,
            "this is a cloudflared config.yml, not a fakeedge config: route by it from a fakeedge config "
            f"with 'team: <your team>' and 'ingress_file: {Path(source).name}'",
        )
    for name in raw:
        if name in _CLOUDFLARED_KEYS:
            r.errors.append(
                r.fail(name, f"unknown key '{name}'; to route by a cloudflared config.yml, name it in ingress_file:")
            )
        elif name not in TOP_KEYS:
            r.errors.append(r.fail(_join("", name), _unknown_key(name, TOP_KEYS)))
    top = {name: value for name, value in raw.items() if name in TOP_KEYS}
    base_dir = base_dir or Path.cwd()

    team = ""
    with r.collecting():
        team = r.text(top.get("team"), "team", required=True)
        if not re.fullmatch(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", team):
            # the team is the first label of <team>.cloudflareaccess.com
            raise r.fail("team", f"expected lower-case letters, digits and '-' (at most 63), got {_show(team)}")
    team_domain = None
    with r.collecting():
        team_domain = _team_domain(r, top.get("team_domain"), team)
    listen: tuple[str, int] | None = ("127.0.0.1", 8787)
    tls_listen = None
    with r.collecting():
        listen, tls_listen = _listeners(r, top)
    keys_dir = base_dir / "keys"
    with r.collecting():
        # an absolute keys_dir wins over base_dir in the join
        keys_dir = base_dir / r.text(top.get("keys_dir"), "keys_dir", default=option("top", "keys_dir").default)

    lists = _Lists(emails={}, ips={}, tokens=(), groups={}, broken=set(), policies={})
    users = _users(r, top.get("users"))
    lists.tokens = _service_tokens(r, top.get("service_tokens"), team, lists)
    with r.collecting():
        lists.emails = _named_lists(r, top.get("email_lists"), "email_lists", _email_entry, lists)
    with r.collecting():
        lists.ips = _named_lists(r, top.get("ip_lists"), "ip_lists", _ip_entry, lists)
    _groups(r, top.get("groups"), lists)
    _reusable_policies(r, top.get("policies"), team, lists)
    apps = _apps(r, top.get("apps"), team, lists)

    ingress: tuple[IngressRule, ...] = ()
    not_emulated: tuple[str, ...] = ()
    with r.collecting():
        if top.get("ingress_file") is not None:
            if top.get("ingress") is not None:
                raise r.fail("ingress_file", "cannot be combined with ingress; keep the rules in one place")
            ingress, not_emulated = _ingress_file(r, top.get("ingress_file"), base_dir)
        else:
            ingress, not_emulated = _ingress(r, top.get("ingress"))

    def get(fn: Callable[[], T], default: T) -> T:
        with r.collecting():
            return fn()
        return default  # only a placeholder: the error collected is raised below

    def top_flag(name: str) -> bool:
        return get(lambda: r.flag_of(top, "", "top", name), False)

    settings = Config(
        source=source,
        team=team,
        admin_token=get(lambda: r.convert(top.get("admin_token"), "admin_token", _admin_token), None),
        team_domain=team_domain,
        listen=listen,
        keys_dir=keys_dir,
        users=users,
        service_tokens=lists.tokens,
        apps=apps,
        ingress=ingress,
        allow_any_email=top_flag("allow_any_email"),
        one_time_pin=top_flag("one_time_pin"),
        default_country=get(lambda: _country(r, top.get("default_country"), "default_country"), None)
        or option("top", "default_country").default,
        strict_service_token_auth=top_flag("strict_service_token_auth"),
        deny_unmatched_requests=top_flag("deny_unmatched_requests"),
        deny_unmatched_requests_exempted_zone_names=get(
            lambda: _zone_names(r, top.get("deny_unmatched_requests_exempted_zone_names")), ()
        ),
        mfa_config=get(lambda: _mfa(r, top.get("mfa_config"), "mfa_config", org=True), None) or MfaConfig(),
        mfa_required_for_all_apps=top_flag("mfa_required_for_all_apps"),
        logout_delay=get(lambda: r.duration_of(top, "", "top", "logout_delay") or 0.0, 0.0),
        origin_timeout=get(lambda: _positive(r, top, "", "top", "origin_timeout"), 1.0),
        not_emulated=not_emulated,
        tls_listen=tls_listen,
        branding=get(lambda: _branding(r, top.get("branding")), Branding()),
        journal=get(lambda: r.convert(top.get("journal"), "journal", _journal), JOURNAL_DEFAULT),
    )
    r.raise_collected()
    return settings


def _team_domain(r: _Reader, value: Any, team: str) -> str | None:
    team_domain = r.text(value, "team_domain")
    if team_domain is None:
        return None
    parts = _split_url(team_domain)
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or not _is_host(parts.hostname)
        or parts.port == 0
        or parts.path.strip("/")
    ):
        raise r.fail(
            "team_domain",
            f"expected a URL such as https://{team or 'acme'}.cloudflareaccess.com, got {_show(team_domain)}",
        )
    return f"{parts.scheme}://{parts.netloc.lower()}"


def _listeners(r: _Reader, top: dict[Any, Any]) -> tuple[tuple[str, int] | None, tuple[str, int] | None]:
    listen = None
    if top.get("listen") is not False:  # `listen: off` (YAML reads a boolean): TLS only
        listen = r.convert(
            r.text(top.get("listen"), "listen", default=option("top", "listen").default), "listen", parse_host_port
        )
    tls_listen = None
    if top.get("tls_listen") is not None:
        tls_listen = r.convert(
            r.text(top.get("tls_listen"), "tls_listen"), "tls_listen", lambda t: parse_host_port(t, default_port=8443)
        )
    if listen is None and tls_listen is None:
        raise r.fail("listen", "is off, so tls_listen is required (such as 127.0.0.1:8443); fakeedge would not listen")
    return listen, tls_listen


def _users(r: _Reader, raw: Any) -> tuple[User, ...]:
    users: list[tuple[int, User]] = []
    with r.collecting():
        for i, item in enumerate(r.seq(raw, "users")):
            with r.collecting():
                users.append((i, _user(r, item, f"users[{i}]")))
    seen: set[str] = set()
    for i, u in users:
        if u.email.lower() in seen:
            r.errors.append(r.fail(f"users[{i}].email", f"duplicate persona {_show(u.email)}"))
        seen.add(u.email.lower())
    return tuple(u for _, u in users)


def _service_tokens(r: _Reader, raw: Any, team: str, lists: _Lists) -> tuple[ServiceToken, ...]:
    tokens: list[tuple[int, ServiceToken]] = []
    try:
        items = r.seq(raw, "service_tokens")
    except ConfigError as exc:
        r.errors.extend(exc.errors)
        lists.broken.add(("token", None))
        return ()
    for i, item in enumerate(items):
        try:
            tokens.append((i, _service_token(r, item, f"service_tokens[{i}]", team)))
        except ConfigError as exc:
            r.errors.extend(exc.errors)
            if isinstance(item, dict):
                lists.broken |= {("token", item.get(k)) for k in ("name", "id") if isinstance(item.get(k), str)}
    for n, (i, t) in enumerate(tokens):
        for _, other in tokens[:n]:
            for what, mine, theirs in (("name", t.name, other.name), ("id", t.id, other.id)):
                if mine == theirs:
                    r.errors.append(
                        r.fail(f"service_tokens[{i}].{what}", f"duplicate service token {what} {_show(mine)}")
                    )
            if t.client_id == other.client_id:
                r.errors.append(
                    r.fail(f"service_tokens[{i}].client_id", f"the client_id is already used by {_show(other.name)}")
                )
    return tuple(t for _, t in tokens)


def _email_entry(r: _Reader, value: Any, key: str) -> str:
    email: str = r.text(value, key, required=True)
    if "@" not in email:
        raise r.fail(key, f"expected an email address, got {_show(email)}")
    return email.lower()


def _ip_entry(r: _Reader, value: Any, key: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return r.convert(r.text(value, key, required=True), key, _network)


def _named_lists(
    r: _Reader, raw: Any, key: str, entry: Callable[[_Reader, Any, str], T], lists: _Lists
) -> dict[str, tuple[T, ...]]:
    """``email_lists`` / ``ip_lists``: name -> entries; a list with an error is left out (and marked)."""
    m = r.names(raw, key, list(raw) if isinstance(raw, dict) else [])
    out: dict[str, tuple[T, ...]] = {}
    for name, values in m.items():
        lk = _join(key, name)
        try:
            out[str(name)] = tuple(entry(r, v, f"{lk}[{j}]") for j, v in enumerate(r.seq(values, lk)))
        except ConfigError as exc:
            r.errors.extend(exc.errors)
            lists.broken.add((key, str(name)))
    return out


def _groups(r: _Reader, raw: Any, lists: _Lists) -> None:
    try:
        items = r.seq(raw, "groups")
    except ConfigError as exc:
        r.errors.extend(exc.errors)
        lists.broken.add(("group", None))
        return
    for i, g in enumerate(items):
        key = f"groups[{i}]"
        try:
            gm = r.mapping(g, key, "group")
            name = r.text(gm.get("name"), f"{key}.name", required=True)
            gid = r.text(gm.get("id"), f"{key}.id", default=name)
            for ref, what in ((gid, "id"), (name, "name")):
                if ref in lists.groups:
                    raise r.fail(f"{key}.{what}", f"duplicate Access group {_show(ref)}")
            group = AccessGroup(
                id=gid,
                name=name,
                include=_rules(r, gm.get("include"), f"{key}.include", lists, required=True),
                exclude=_rules(r, gm.get("exclude"), f"{key}.exclude", lists),
                require=_rules(r, gm.get("require"), f"{key}.require", lists),
            )
        except ConfigError as exc:
            r.errors.extend(exc.errors)
            if isinstance(g, dict):
                lists.broken |= {("group", g.get(k)) for k in ("id", "name") if isinstance(g.get(k), str)}
            continue
        lists.groups[gid] = lists.groups[name] = group


def _reusable_policies(r: _Reader, raw: Any, team: str, lists: _Lists) -> None:
    """Top-level ``policies``: defined once, referenced by apps by id or name (spec §14.6)."""
    try:
        items = r.seq(raw, "policies")
    except ConfigError as exc:
        r.errors.extend(exc.errors)
        lists.broken.add(("policy", None))
        return
    for i, item in enumerate(items):
        key = f"policies[{i}]"
        try:
            if isinstance(item, dict) and item.get("name") is None:
                raise r.fail(f"{key}.name", "is required: apps refer to a reusable policy by its name or id")
            policy = _policy(r, item, key, lists)
            if policy.precedence is not None:
                raise r.fail(f"{key}.precedence", "belongs to an app's reference to the policy, not to the policy")
            pid = policy.id or str(uuid.uuid5(SUB_NAMESPACE, f"{team}:policy:{policy.name}"))
            for ref, what in ((policy.name, "name"), (pid, "id")):
                if ref in lists.policies:
                    raise r.fail(f"{key}.{what}", f"duplicate reusable policy {_show(ref)}")
        except ConfigError as exc:
            r.errors.extend(exc.errors)
            if isinstance(item, dict):
                lists.broken |= {("policy", item.get(k)) for k in ("id", "name") if isinstance(item.get(k), str)}
            continue
        lists.policies[pid] = lists.policies[policy.name] = dataclasses.replace(policy, id=pid)


def _policy_ref(r: _Reader, raw: Any, key: str, lists: _Lists) -> Policy:
    """An app's ``{id|name, precedence}`` (or bare id/name) naming a reusable policy (spec §14.6)."""
    m = {"id": raw} if isinstance(raw, str) else r.mapping(raw, key, "policy_reference")
    field_name = "id" if m.get("id") is not None else "name"
    ref = r.text(m.get(field_name), f"{key}.{field_name}", required=True)
    policy = lists.policies.get(ref)
    if policy is None:
        if lists.is_broken("policy", ref):
            raise r.skip()
        names = [p.name for p in dict.fromkeys(lists.policies.values())]
        raise r.fail(f"{key}.{field_name}", f"no reusable policy {_show(ref)}; defined: {_names(names)}")
    return dataclasses.replace(policy, precedence=_precedence(r, m.get("precedence"), f"{key}.precedence"))


def _is_policy_ref(raw: Any) -> bool:
    """A reference names a policy and says nothing of what it decides (no decision, no rules)."""
    if isinstance(raw, str):
        return True
    return isinstance(raw, dict) and "decision" not in raw and "include" not in raw and ("id" in raw or "name" in raw)


def _precedence(r: _Reader, value: Any, key: str) -> int | None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 1_000_000):
        raise r.fail(key, f"expected a whole number from 1, got {_kind(value)}")
    return value


def _apps(r: _Reader, raw: Any, team: str, lists: _Lists) -> tuple[App, ...]:
    apps: list[tuple[int, App]] = []
    with r.collecting():
        for i, item in enumerate(r.seq(raw, "apps")):
            with r.collecting():
                apps.append((i, _app(r, item, f"apps[{i}]", team, lists)))
    for n, (i, app) in enumerate(apps):
        for _, other in apps[:n]:
            if other.name == app.name:
                r.errors.append(r.fail(f"apps[{i}].name", f"duplicate app name {_show(app.name)}"))
            elif other.aud == app.aud:
                r.errors.append(r.fail(f"apps[{i}].aud", f"the AUD is already used by app {_show(other.name)}"))
    return tuple(app for _, app in apps)


def _positive(r: _Reader, m: dict[Any, Any], key: str, section_id: str, name: str) -> float:
    """A duration above zero; its default from fakeedge.options."""
    seconds = r.duration_of(m, key, section_id, name)
    if seconds is None or seconds <= 0:
        raise r.fail(_join(key, name), f"expected a duration above zero such as 30s, got {_show(m.get(name))}")
    return seconds


def _flag_default(section_id: str, name: str) -> bool:
    default = option(section_id, name).default
    if not isinstance(default, bool):  # pragma: no cover - a mistake in fakeedge.options
        raise TypeError(f"{section_id}.{name}: the declared default is not a boolean")
    return default


def _duration_default(section_id: str, name: str) -> float | None:
    default = option(section_id, name).default
    if default is None:
        return None
    if not isinstance(default, str) or isinstance(default, Derived):  # pragma: no cover - as above
        raise TypeError(f"{section_id}.{name}: the declared default is not a duration")
    return parse_duration(default)


_COLOR = re.compile(r"#[0-9A-Fa-f]{3}(?:[0-9A-Fa-f]{3})?")


def _branding(r: _Reader, raw: Any) -> Branding:
    if raw is None:
        return Branding()
    m = r.mapping(raw, "branding", "branding")
    colors: dict[str, str] = {}
    for name in ("background_color", "header_color", "button_color"):
        value = r.text(m.get(name), f"branding.{name}")
        if value is not None:
            if not _COLOR.fullmatch(value):
                raise r.fail(f"branding.{name}", f"expected a colour such as #8a43e1, got {_show(value)}")
            colors[name] = value
    logo = r.text(m.get("logo_url"), "branding.logo_url")
    if logo is not None and not logo.startswith(("https://", "http://", "/", "data:image/")):
        raise r.fail("branding.logo_url", f"expected an http(s) URL, a path or a data:image URL, got {_show(logo)}")
    return Branding(
        name=r.text(m.get("name"), "branding.name", default=DEFAULT_BRAND_NAME),
        logo_url=logo,
        description=r.text(m.get("description"), "branding.description", multiline=True),
        **colors,
    )


def _journal(value: Any) -> int:
    if value is None:
        return JOURNAL_DEFAULT
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= JOURNAL_MAX:
        raise ValueError(f"expected how many requests to keep, 0 to {JOURNAL_MAX:,} (0: none), got {_kind(value)}")
    return value


def _admin_token(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) < 16:
        # whoever holds it can mint tokens that origins trust
        raise ValueError(f"expected a secret of at least 16 characters, got {_kind(value)}")
    return value


@dataclass
class _Lists:
    emails: dict[str, tuple[str, ...]]
    ips: dict[str, tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]]
    tokens: tuple[ServiceToken, ...]
    groups: dict[str, AccessGroup]
    # (kind, name) of items that failed, already reported: a reference to them adds no second
    # error; (kind, None) when the whole section failed
    broken: set[tuple[str, Any]]
    policies: dict[str, Policy]  # the reusable ones, by id and by name (spec §14.6)

    def is_broken(self, kind: str, name: Any) -> bool:
        return (kind, name) in self.broken or (kind, None) in self.broken


def _country(r: _Reader, value: Any, key: str) -> str | None:
    text = r.text(value, key)
    if text is None:
        return None
    if not re.fullmatch(r"[A-Za-z]{2}", text):
        raise r.fail(key, f"expected an ISO 3166 alpha-2 country code such as US, got {_show(text)}")
    return str(text).upper()


def _strings(r: _Reader, value: Any, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    return tuple(r.text(v, f"{key}[{i}]", required=True) for i, v in enumerate(r.seq(value, key)))


def _user(r: _Reader, raw: Any, key: str) -> User:
    m = r.mapping(raw, key, "user")
    email = r.text(m.get("email"), f"{key}.email", required=True)
    if "@" not in email:
        raise r.fail(f"{key}.email", f"expected an email address, got {_show(email)}")
    custom = m.get("custom")
    if custom is not None and not isinstance(custom, dict):
        raise r.fail(f"{key}.custom", f"expected a mapping of extra claims, got {_kind(custom)}")
    if custom is not None:
        _check_claims(r, custom, f"{key}.custom")
    return User(
        email=email,
        name=r.text(m.get("name"), f"{key}.name", default=email.split("@")[0]),
        groups=_strings(r, m.get("groups"), f"{key}.groups"),
        github_orgs=_strings(r, m.get("github_orgs"), f"{key}.github_orgs"),
        country=_country(r, m.get("country"), f"{key}.country"),
        amr=_strings(r, m.get("amr"), f"{key}.amr") or tuple(option("user", "amr").default),
        idp=r.text(m.get("idp"), f"{key}.idp", default=option("user", "idp").default),
        custom=custom,
    )


def _check_claims(r: _Reader, value: Any, key: str) -> None:
    """Extra claims go into JWTs as JSON: string keys, finite numbers, no other types."""
    if isinstance(value, dict):
        for name, item in value.items():
            if not isinstance(name, str):
                raise r.fail(_join(key, name), f"a claim name must be a string, got {_kind(name)}")
            _check_claims(r, item, _join(key, name))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_claims(r, item, f"{key}[{i}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise r.fail(key, f"expected a JSON value, got {_kind(value)}")
    elif isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        raise r.fail(key, f"expected a JSON number within 64 bits, got {_kind(value)}")
    elif not isinstance(value, str | int | float | bool) and value is not None:
        raise r.fail(key, f"expected a JSON value (text, number, true/false, null, list, mapping), got {_kind(value)}")


def _service_token(r: _Reader, raw: Any, key: str, team: str) -> ServiceToken:
    m = r.mapping(raw, key, "service_token")
    name = r.text(m.get("name"), f"{key}.name", required=True)
    client_id = r.text(m.get("client_id"), f"{key}.client_id", required=True)
    secret = r.text(m.get("client_secret"), f"{key}.client_secret", required=True)
    token_id = r.text(m.get("id"), f"{key}.id", default=str(uuid.uuid5(SUB_NAMESPACE, f"{team}:token:{name}")))
    previous: list[tuple[str, float]] = []
    for i, item in enumerate(r.seq(m.get("previous_client_secrets"), f"{key}.previous_client_secrets")):
        pk = f"{key}.previous_client_secrets[{i}]"
        pm = r.mapping(item, pk, "previous_client_secret")
        old = r.text(pm.get("client_secret"), f"{pk}.client_secret", required=True)
        until = _timestamp(r, pm.get("expires_at"), f"{pk}.expires_at")
        if until is None:
            raise r.fail(f"{pk}.expires_at", "is required: a rotated secret works until its grace ends (spec §14.3)")
        previous.append((old, until))
    return ServiceToken(
        name=name,
        id=token_id,
        client_id=client_id,
        client_secret=secret,
        previous_client_secrets=tuple(previous),
        expires_at=_timestamp(r, m.get("expires_at"), f"{key}.expires_at"),
        disabled=r.flag_of(m, key, "service_token", "disabled"),
    )


def _mfa(r: _Reader, raw: Any, key: str, *, org: bool = False) -> MfaConfig | None:
    """``mfa_config`` (spec §14.5); the organisation's has no ``mfa_disabled``."""
    if raw is None:
        return None
    m = r.mapping(raw, key, "mfa_config", leave_out="mfa_disabled" if org else "")
    kinds = _strings(r, m.get("allowed_authenticators"), f"{key}.allowed_authenticators") or AUTHENTICATORS
    for i, kind in enumerate(kinds):
        if kind not in AUTHENTICATORS:
            raise r.fail(
                f"{key}.allowed_authenticators[{i}]",
                f"unknown authenticator {_show(kind)}; valid: {', '.join(AUTHENTICATORS)}",
            )
    duration = r.duration_of(m, key, "mfa_config", "session_duration")
    return MfaConfig(
        mfa_disabled=r.flag_of(m, key, "mfa_config", "mfa_disabled"),
        allowed_authenticators=tuple(dict.fromkeys(kinds)),
        session_duration=_int_or_none(duration),
    )


def _timestamp(r: _Reader, value: Any, key: str) -> float | None:
    """An RFC 3339 time (YAML may already have read it as a datetime) as epoch seconds."""
    if value is None:
        return None
    when: dt.datetime | None = None
    if isinstance(value, dt.datetime):
        when = value
    elif isinstance(value, str):
        with contextlib.suppress(ValueError):
            when = dt.datetime.fromisoformat(value.strip())
    if when is None or (isinstance(value, str) and "T" not in value.upper()):
        raise r.fail(key, f"expected an RFC 3339 time such as 2026-12-01T00:00:00Z, got {_show(value)}")
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)  # YAML reads a trailing Z as UTC but leaves no tzinfo
    return when.timestamp()


def _zone_names(r: _Reader, raw: Any) -> tuple[str, ...]:
    key = "deny_unmatched_requests_exempted_zone_names"
    names = []
    for i, name in enumerate(_strings(r, raw, key)):
        host = name.strip().lower().rstrip(".")
        if not _is_host(host):
            raise r.fail(f"{key}[{i}]", f"expected a zone name such as acme.test, got {_show(name)}")
        names.append(host)
    return tuple(names)


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"expected an IP address or CIDR such as 192.0.2.0/24, got {_show(text)}") from None


def _rules(r: _Reader, raw: Any, key: str, lists: _Lists, *, required: bool = False) -> tuple[Rule, ...]:
    items = r.seq(raw, key)
    if required and not items:
        raise r.fail(key, "needs at least one rule (include is an OR over its rules)")
    rules: list[Rule] = []
    failed = False
    for i, item in enumerate(items):
        try:
            rules.append(_rule(r, item, f"{key}[{i}]", lists))
        except ConfigError as exc:
            r.errors.extend(exc.errors)
            failed = True
    if failed:
        raise r.skip()
    return tuple(rules)


def _rule(r: _Reader, raw: Any, key: str, lists: _Lists) -> Rule:
    if not isinstance(raw, dict) or len(raw) != 1:
        raise r.fail(key, f"expected one rule such as {{email: {{email: a@b.test}}}}, got {_kind(raw)}")
    ((kind, body),) = raw.items()
    if kind not in RULE_KINDS:
        hint = difflib.get_close_matches(_name(kind), RULE_KINDS, n=1)
        did = f"; did you mean '{hint[0]}'?" if hint else ""
        raise r.fail(key, f"unknown rule '{_name(kind)}'{did} valid: {', '.join(RULE_KINDS)}")
    rule_kind: RuleKind = kind
    k = f"{key}.{kind}"

    fields = f"rule.{kind}"

    def one(field_name: str) -> Any:
        m = r.mapping(body, k, fields)
        return r.text(m.get(field_name), f"{k}.{field_name}", required=True)

    match rule_kind:
        case "email":
            return Rule(kind, one("email").lower())
        case "email_domain":
            domain = one("domain").lower().lstrip("@")
            if not _is_host(domain):
                raise r.fail(f"{k}.domain", f"expected a domain such as acme.test, got {_show(domain)}")
            return Rule(kind, domain)
        case "email_list":
            name = one("id")
            if name not in lists.emails:
                if lists.is_broken("email_lists", name):
                    raise r.skip()
                raise r.fail(f"{k}.id", f"no email list {_show(name)}; defined: {_names(lists.emails)}")
            return Rule(kind, frozenset(lists.emails[name]))
        case "everyone" | "any_valid_service_token":
            r.mapping(body, k, fields)
            return Rule(kind, None)
        case "ip":
            return Rule(kind, (r.convert(one("ip"), f"{k}.ip", _network),))
        case "ip_list":
            name = one("id")
            if name not in lists.ips:
                if lists.is_broken("ip_lists", name):
                    raise r.skip()
                raise r.fail(f"{k}.id", f"no ip list {_show(name)}; defined: {_names(lists.ips)}")
            return Rule(kind, lists.ips[name])
        case "geo":
            return Rule(kind, _country(r, one("country_code"), f"{k}.country_code"))
        case "service_token":
            wanted = one("token_id")
            token = next((t for t in lists.tokens if wanted in (t.name, t.id)), None)
            if token is None:
                if lists.is_broken("token", wanted):
                    raise r.skip()
                known = _names([t.name for t in lists.tokens], none="none defined")
                raise r.fail(f"{k}.token_id", f"no service token {_show(wanted)}; known: {known}")
            return Rule(kind, token.client_id)
        case "github-organization":
            m = r.mapping(body, k, fields)
            _refuse_unsupported(r, m, k, f"rule.{kind}")
            name = r.text(m.get("name"), f"{k}.name", required=True).lower()
            return Rule(kind, name, r.text(m.get("identity_provider_id"), f"{k}.identity_provider_id"))
        case "oidc":
            m = r.mapping(body, k, fields)
            name = r.text(m.get("claim_name"), f"{k}.claim_name", required=True)
            claim = (name, r.text(m.get("claim_value"), f"{k}.claim_value", required=True))
            return Rule(kind, claim, r.text(m.get("identity_provider_id"), f"{k}.identity_provider_id"))
        case "login_method":
            return Rule(kind, one("id"))
        case "auth_method":
            return Rule(kind, one("auth_method"))
        case "group":
            ref = one("id")
            if ref not in lists.groups:
                if lists.is_broken("group", ref):
                    raise r.skip()
                raise r.fail(f"{k}.id", f"no Access group {_show(ref)}; defined: {_names(lists.groups)}")
            return Rule(kind, lists.groups[ref])
        case _:
            assert_never(rule_kind)


def _policy(r: _Reader, raw: Any, key: str, lists: _Lists) -> Policy:
    m = r.mapping(raw, key, "policy")
    _refuse_unsupported(r, m, key, "policy")
    name = r.text(m.get("name"), f"{key}.name", default=key)
    precedence = _precedence(r, m.get("precedence"), f"{key}.precedence")
    decision_text = r.text(m.get("decision"), f"{key}.decision", required=True)
    decision = DECISIONS.get(decision_text.lower())
    if decision is None:
        raise r.fail(
            f"{key}.decision",
            f"unknown decision {_show(decision_text)}; valid: allow, deny, bypass, non_identity "
            "(or the dashboard's Allow, Block, Bypass, Service Auth)",
        )
    policy = Policy(
        name=name,
        decision=decision,
        include=_rules(r, m.get("include"), f"{key}.include", lists, required=True),
        exclude=_rules(r, m.get("exclude"), f"{key}.exclude", lists),
        require=_rules(r, m.get("require"), f"{key}.require", lists),
        session_duration=_int_or_none(r.duration_of(m, key, "policy", "session_duration")),
        id=r.text(m.get("id"), f"{key}.id", default=""),
        precedence=precedence,
        purpose_justification_required=r.flag_of(m, key, "policy", "purpose_justification_required"),
        purpose_justification_prompt=r.text(
            m.get("purpose_justification_prompt"), f"{key}.purpose_justification_prompt"
        ),
        mfa_config=_mfa(r, m.get("mfa_config"), f"{key}.mfa_config"),
        approval_required=r.flag_of(m, key, "policy", "approval_required"),
    )
    rules = (*policy.include, *policy.exclude, *policy.require)
    if decision in ("bypass", "non_identity"):
        for _i, rule in enumerate(rules):
            if rule.is_identity:
                raise r.fail(f"{key}", f"a {decision} policy cannot use the identity rule '{rule.kind}' (spec §6.1)")
    if decision != "non_identity":
        for rule in rules:
            if rule.kind in ("service_token", "any_valid_service_token"):
                raise r.fail(
                    f"{key}.decision",
                    f"'{rule.kind}' rules only work in a non_identity (Service Auth) policy; "
                    "under Allow the token is ignored (spec §5)",
                )
    return policy


def _refuse_unsupported(r: _Reader, m: dict[Any, Any], key: str, section_id: str) -> None:
    """A declared key fakeedge cannot honour yet is an error, not silently ignored (issue 17)."""
    for o in section(section_id).options:
        if o.refused is not None and m.get(o.key) is not None:
            raise r.fail(f"{key}.{o.key}", f"is not supported yet: {o.refused}")


def _policies(r: _Reader, raw: Any, key: str, lists: _Lists) -> tuple[Policy, ...]:
    policies: list[Policy] = []
    failed = False
    for i, item in enumerate(r.seq(raw, f"{key}.policies")):
        pk = f"{key}.policies[{i}]"
        try:
            policies.append(_policy_ref(r, item, pk, lists) if _is_policy_ref(item) else _policy(r, item, pk, lists))
        except ConfigError as exc:
            r.errors.extend(exc.errors)
            failed = True
    if failed:
        raise r.skip()
    # spec §6.4: an app's policies run in precedence order (unique per app); one without a
    # precedence has its 1-based place in the list
    ranked = sorted(
        ((p.precedence if p.precedence is not None else n + 1, n, p) for n, p in enumerate(policies)),
        key=lambda x: x[0],
    )
    for (rank, _, _), (other, n, _) in itertools.pairwise(ranked):
        if rank == other:
            raise r.fail(f"{key}.policies[{n}].precedence", f"precedence {rank} is taken by another policy of the app")
    return tuple(p for _, _, p in ranked)


def _int_or_none(value: float | None) -> int | None:
    return None if value is None else int(value)


def _app(r: _Reader, raw: Any, key: str, team: str, lists: _Lists) -> App:
    m = r.mapping(raw, key, "app")
    name = r.text(m.get("name"), f"{key}.name", required=True)
    texts: list[tuple[str, str]] = []
    if m.get("domain") is not None:
        texts.append((f"{key}.domain", r.text(m.get("domain"), f"{key}.domain")))
    # self_hosted_domains: the API's older name for the same list (spec §14.6, issue 13)
    for field_name in ("domains", "self_hosted_domains", "destinations"):
        for i, d in enumerate(r.seq(m.get(field_name), f"{key}.{field_name}")):
            dk = f"{key}.{field_name}[{i}]"
            if isinstance(d, dict):
                dm = r.mapping(d, dk, "destination")
                if dm.get("type", "public") != "public":
                    raise r.fail(f"{dk}.type", f"only 'public' destinations are emulated, got {_show(dm.get('type'))}")
                texts.append((f"{dk}.uri", r.text(dm.get("uri"), f"{dk}.uri", required=True)))
            else:
                texts.append((dk, r.text(d, dk, required=True)))
    if not texts:
        raise r.fail(f"{key}.domain", "is required (host[/path] such as admin.acme.test)")
    destinations = tuple(dict.fromkeys(r.convert(t, k, parse_destination) for k, t in texts))

    aud = r.text(m.get("aud"), f"{key}.aud", default=default_aud(team, name))
    if not _AUD.fullmatch(aud):
        raise r.fail(f"{key}.aud", f"expected 64 lower-case hex characters, got {_show(aud)}")
    if m.get("type", "self_hosted") != "self_hosted":
        raise r.fail(f"{key}.type", f"only self_hosted apps are emulated, got {_show(m.get('type'))}")

    same_site = r.text(m.get("same_site_cookie_attribute"), f"{key}.same_site_cookie_attribute")
    if same_site is not None and same_site.lower() not in ("none", "lax", "strict"):
        raise r.fail(f"{key}.same_site_cookie_attribute", f"expected none, lax or strict, got {_show(same_site)}")

    cors = None
    if m.get("cors_headers") is not None:
        ck = f"{key}.cors_headers"
        c = r.mapping(m.get("cors_headers"), ck, "cors_headers")
        max_age = c.get("max_age")
        if max_age is not None and (not isinstance(max_age, int) or isinstance(max_age, bool) or max_age < 0):
            raise r.fail(f"{ck}.max_age", f"expected seconds as a whole number, got {_kind(max_age)}")
        cors = CorsHeaders(
            allow_all_origins=r.flag_of(c, ck, "cors_headers", "allow_all_origins"),
            allowed_origins=_strings(r, c.get("allowed_origins"), f"{ck}.allowed_origins"),
            allow_all_methods=r.flag_of(c, ck, "cors_headers", "allow_all_methods"),
            allowed_methods=tuple(s.upper() for s in _strings(r, c.get("allowed_methods"), f"{ck}.allowed_methods")),
            allow_all_headers=r.flag_of(c, ck, "cors_headers", "allow_all_headers"),
            allowed_headers=tuple(s.lower() for s in _strings(r, c.get("allowed_headers"), f"{ck}.allowed_headers")),
            allow_credentials=r.flag_of(c, ck, "cors_headers", "allow_credentials"),
            max_age=max_age,
        )
    bypass_options = r.flag_of(m, key, "app", "options_preflight_bypass")
    if cors is not None and bypass_options:
        raise r.fail(
            f"{key}.options_preflight_bypass",
            "cannot be combined with cors_headers: either Access answers preflights or the origin does (spec §7.4)",
        )

    return App(
        name=name,
        destinations=destinations,
        aud=aud,
        policies=_policies(r, m.get("policies"), key, lists),
        session_duration=int(r.duration_of(m, key, "app", "session_duration") or 0),
        same_site_cookie_attribute=same_site.lower() if same_site else None,
        http_only_cookie_attribute=r.flag_of(m, key, "app", "http_only_cookie_attribute"),
        path_cookie_attribute=r.flag_of(m, key, "app", "path_cookie_attribute"),
        enable_binding_cookie=r.flag_of(m, key, "app", "enable_binding_cookie"),
        service_auth_401_redirect=r.flag_of(m, key, "app", "service_auth_401_redirect"),
        read_service_tokens_from_header=_header_name(
            r, m.get("read_service_tokens_from_header"), f"{key}.read_service_tokens_from_header"
        ),
        options_preflight_bypass=bypass_options,
        cors_headers=cors,
        custom_deny_url=_redirect_url(r, m.get("custom_deny_url"), f"{key}.custom_deny_url"),
        custom_non_identity_deny_url=_redirect_url(
            r, m.get("custom_non_identity_deny_url"), f"{key}.custom_non_identity_deny_url"
        ),
        custom_deny_message=r.text(m.get("custom_deny_message"), f"{key}.custom_deny_message", multiline=True),
        oauth_configuration=_oauth(r, m.get("oauth_configuration"), f"{key}.oauth_configuration"),
        mfa_config=_mfa(r, m.get("mfa_config"), f"{key}.mfa_config"),
        eager_redirect_cookie=(
            None
            if m.get("eager_redirect_cookie") is None
            else r.flag(m.get("eager_redirect_cookie"), f"{key}.eager_redirect_cookie", False)
        ),
    )


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 §5.6.2: a header field name


def _header_name(r: _Reader, value: Any, key: str) -> str | None:
    name: str | None = r.text(value, key)
    if name is not None and not _TOKEN.fullmatch(name):
        raise r.fail(key, f"expected a header name such as Authorization, got {_show(name)}")
    return name


def _redirect_url(r: _Reader, value: Any, key: str) -> str | None:
    url: str | None = r.text(value, key)
    if url is None:
        return None
    parts = _split_url(url)
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or not _is_host(parts.hostname):
        raise r.fail(key, f"expected an http(s) URL such as https://intranet.acme.test/denied, got {_show(url)}")
    return url


def _oauth(r: _Reader, raw: Any, key: str) -> OAuthConfiguration | None:
    if raw is None:
        return None
    m = r.mapping(raw, key, "oauth_configuration")
    dk = f"{key}.dynamic_client_registration"
    d = r.mapping(m.get("dynamic_client_registration"), dk, "dynamic_client_registration")
    uris = _strings(r, d.get("allowed_uris"), f"{dk}.allowed_uris")
    for i, uri in enumerate(uris):
        problem = allowed_uri_problem(uri)
        if problem:
            raise r.fail(f"{dk}.allowed_uris[{i}]", f"{problem}, got {_show(uri)}")
    gk = f"{key}.grant"
    g = r.mapping(m.get("grant"), gk, "grant")
    lifetime = r.duration_of(g, gk, "grant", "access_token_lifetime") or 0.0
    if lifetime <= 0:
        raise r.fail(
            f"{gk}.access_token_lifetime", f"expected a positive duration, got {g.get('access_token_lifetime')!r}"
        )
    refresh = r.duration_of(g, gk, "grant", "session_duration")
    if refresh is not None and refresh <= 0:
        raise r.fail(f"{gk}.session_duration", f"expected a positive duration, got {g.get('session_duration')!r}")
    return OAuthConfiguration(
        enabled=r.flag_of(m, key, "oauth_configuration", "enabled"),
        dynamic_client_registration=DynamicClientRegistration(
            enabled=r.flag_of(d, dk, "dynamic_client_registration", "enabled"),
            allow_any_on_localhost=r.flag_of(d, dk, "dynamic_client_registration", "allow_any_on_localhost"),
            allow_any_on_loopback=r.flag_of(d, dk, "dynamic_client_registration", "allow_any_on_loopback"),
            allowed_uris=uris,
        ),
        access_token_lifetime=max(1, int(lifetime)),
        session_duration=_int_or_none(refresh),
    )


def allowed_uri_problem(uri: str) -> str | None:
    """Why ``uri`` cannot be an ``allowed_uris`` entry (spec §14.2), or None when it can.

    http(s) entries are URLs that may end in ``/*``; other (custom) schemes match exactly and
    cannot contain wildcards, credentials or fragments.
    """
    scheme, colon, rest = uri.partition(":")
    if not colon or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        return "expected an absolute URI such as https://app.example.com/callback or myapp://callback"
    if "#" in uri:
        return "a redirect URI cannot contain a fragment"
    star = uri.find("*")
    if scheme.lower() in ("http", "https"):
        if star != -1 and (star != len(uri) - 1 or not uri.endswith("/*")):
            return "a wildcard is only allowed as a final /*"
        parts = urlsplit(uri.removesuffix("*"))
        if not parts.hostname or parts.username is not None or parts.password is not None:
            return "expected an http(s) URL with a host and no credentials"
        return None
    if star != -1:
        return "a custom-scheme URI cannot contain wildcards"
    if rest.startswith("//") and "@" in rest[2:].split("/", 1)[0]:
        return "a custom-scheme URI cannot contain credentials"
    return None


def _ingress(r: _Reader, raw: Any) -> tuple[tuple[IngressRule, ...], tuple[str, ...]]:
    items = r.seq(raw, "ingress")
    if not items:
        return (IngressRule(None, None, "http_status:404"),), ()
    rules: list[IngressRule] = []
    not_emulated: list[str] = []
    failed = False
    for i, item in enumerate(items):
        try:
            rule, notes = _ingress_rule(r, item, i, len(items))
        except ConfigError as exc:
            r.errors.extend(exc.errors)
            failed = True
            continue
        rules.append(rule)
        not_emulated += notes
    if failed:
        raise r.skip()
    return tuple(rules), tuple(not_emulated)


def _ingress_rule(r: _Reader, item: Any, i: int, count: int) -> tuple[IngressRule, list[str]]:
    key = f"ingress[{i}]"
    m = r.mapping(item, key, "ingress")
    hostname = r.text(m.get("hostname"), f"{key}.hostname")
    if hostname is not None:
        hostname = hostname.lower()
        if ":" in hostname:
            raise r.fail(
                f"{key}.hostname", f"a hostname cannot have a port (cloudflared refuses it), got {_show(hostname)}"
            )
        if "*" in hostname[1:]:
            raise r.fail(f"{key}.hostname", f"'*' may only be the first character, got {_show(hostname)}")
        # cloudflared: "*" alone, "*.acme.test" or "*acme.test" (a suffix), else a DNS name
        rest = hostname[1:].lstrip(".") if hostname.startswith("*") else hostname
        if rest and not _is_host(rest):
            raise r.fail(f"{key}.hostname", f"expected a host name such as app.acme.test, got {_show(hostname)}")
    path_text = r.text(m.get("path"), f"{key}.path")
    try:
        path = IngressPath.compile(path_text) if path_text is not None else None
    except ValueError as exc:
        raise r.fail(f"{key}.path", f"not a valid regular expression ({one_line(str(exc))[:80]})") from None
    service = r.convert(r.text(m.get("service"), f"{key}.service", required=True), f"{key}.service", _origin_url)
    origin = r.mapping(m.get("originRequest"), f"{key}.originRequest", "originRequest")
    not_emulated = [f"{key}.originRequest.{name}" for name in origin if name not in ORIGIN_REQUEST_HONOURED]
    connect = _positive(r, origin, f"{key}.originRequest", "originRequest", "connectTimeout")
    host_header = r.text(origin.get("httpHostHeader"), f"{key}.originRequest.httpHostHeader")
    if host_header is not None and not _is_host(host_header.lower().rpartition(":")[0] or host_header.lower()):
        raise r.fail(
            f"{key}.originRequest.httpHostHeader",
            f"expected a host name such as app.acme.test, got {_show(host_header)}",
        )
    rule = IngressRule(hostname, path, service, host_header, connect)
    catch_all = hostname in (None, "*") and path is None
    last = i == count - 1
    if last and not catch_all:
        raise r.fail(
            key, "the last ingress rule must match all URLs (no hostname, no path), e.g. service: http_status:404"
        )
    if catch_all and not last:
        raise r.fail(key, "only the last ingress rule may match all URLs; rules after it would never be used")
    return rule, not_emulated


# cloudflared services that are not HTTP (spec §9.1): routed locally to a 502, with a note
_NOT_HTTP_SERVICE = re.compile(r"(unix|unix\+tls):|(tcp|ssh|rdp|smb)://|(hello_world|bastion|socks-proxy)$")
_TUNNEL_KEYS = ("tunnel", "credentials-file")


def _ingress_file(r: _Reader, value: Any, base_dir: Path) -> tuple[tuple[IngressRule, ...], tuple[str, ...]]:
    """A cloudflared ``config.yml`` read as is: its ``ingress`` (and ``originRequest`` defaults) route.

    Errors about the file's content name the file, not the fakeedge config.
    """
    name = r.text(value, "ingress_file")
    path = Path(name) if Path(name).is_absolute() else base_dir / name
    source = str(path)
    text = _read_text(path, source, lambda why: r.fail("ingress_file", f"cannot read {_cut(source)} ({why})"))
    raw = _load_yaml(text, source)
    fr = r.sub(source)
    if not isinstance(raw, dict):
        raise fr.fail("", f"expected a cloudflared config (a mapping with ingress), got {_kind(raw)}")
    notes: list[str] = []
    if any(key in raw for key in _TUNNEL_KEYS):
        notes.append(f"{source}: tunnel and credentials-file (fakeedge runs no tunnel; it routes by ingress)")
    notes += [f"{source}: {_name(key)}" for key in raw if key not in (*_TUNNEL_KEYS, "ingress", "originRequest")]
    defaults = fr.mapping(raw.get("originRequest"), "originRequest", "originRequest")
    notes += [f"{source}: originRequest.{_name(key)}" for key in defaults if key not in ORIGIN_REQUEST_HONOURED]
    honoured = {k: v for k, v in defaults.items() if k in ORIGIN_REQUEST_HONOURED}
    items = fr.seq(raw.get("ingress"), "ingress")
    if not items:
        raise fr.fail("ingress", "is required: fakeedge routes by the file's ingress rules")
    rules: list[Any] = []
    for i, item in enumerate(items):
        if isinstance(item, dict):
            item = dict(item)
            own = item.get("originRequest")
            if honoured and (own is None or isinstance(own, dict)):
                item["originRequest"] = {**honoured, **(own or {})}  # spec §9.1: top level = defaults
            service = item.get("service")
            if isinstance(service, str) and _NOT_HTTP_SERVICE.match(service):
                notes.append(f"{source}: ingress[{i}].service {one_line(service)} (answered with 502)")
                item["service"] = "http_status:502"
        rules.append(item)
    ingress, not_emulated = _ingress(fr, rules)
    return ingress, (*notes, *(f"{source}: {key}" for key in not_emulated))
