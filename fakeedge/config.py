"""The configuration file: YAML in, frozen dataclasses out.

Nothing outside this module touches the raw dicts. Every mistake raises :class:`ConfigError`
naming the file, the key path and what would have been valid.
"""

from __future__ import annotations

import difflib
import hashlib
import ipaddress
import math
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import SplitResult, urlsplit

from .errors import ConfigError

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

# Selectors and whether they are about identity (decided at login) or not (every request), spec §6.3.
IDENTITY_RULES = frozenset(
    {"email", "email_domain", "email_list", "github-organization", "oidc", "login_method", "auth_method"}
)
NON_IDENTITY_RULES = frozenset({"everyone", "ip", "ip_list", "geo", "service_token", "any_valid_service_token"})
RULE_KINDS = sorted(IDENTITY_RULES | NON_IDENTITY_RULES | {"group"})

# cloudflared's originRequest keys (spec §9.1); only these two change what fakeedge does.
ORIGIN_REQUEST_HONOURED = frozenset({"httpHostHeader", "connectTimeout"})
ORIGIN_REQUEST_KNOWN = ORIGIN_REQUEST_HONOURED | frozenset(
    {
        "tlsTimeout", "tcpKeepAlive", "noHappyEyeballs", "keepAliveConnections", "keepAliveTimeout",
        "originServerName", "matchSNItoHost", "caPool", "noTLSVerify", "disableChunkedEncoding",
        "bastionMode", "proxyAddress", "proxyPort", "proxyType", "ipRules", "http2Origin", "access",
    }
)  # fmt: skip

SUB_NAMESPACE = uuid.UUID("6f1e8a3c-2b7d-5c4e-9a10-f4e5d6c7b8a9")


@dataclass(frozen=True, slots=True)
class Rule:
    """One include/require/exclude entry, e.g. ``{email_domain: {domain: acme.test}}``.

    ``value`` is already parsed: a lower-cased string, a tuple of networks, a ``(name, value)``
    pair for ``oidc``, or the resolved :class:`AccessGroup` for ``group``.
    """

    kind: str
    value: Any

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


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    decision: Decision
    include: tuple[Rule, ...]
    exclude: tuple[Rule, ...] = ()
    require: tuple[Rule, ...] = ()
    session_duration: int | None = None  # seconds; overrides the app's (spec §1.6)


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
    name: str
    id: str
    client_id: str
    client_secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class IngressRule:
    """A cloudflared ingress rule (spec §9.1): first match wins, the last one matches everything."""

    hostname: str | None
    path: re.Pattern[str] | None
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
        return self.path is None or self.path.search(path) is not None


DEFAULT_BRAND_NAME = "fakeedge · Cloudflare Access"
JOURNAL_DEFAULT = 1000
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
    strict_service_token_auth: bool = False
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
    if isinstance(text, int | float):
        return _bounded(float(text), text)
    if not isinstance(text, str):
        raise ValueError(f"expected a duration such as 30s, 15m or 24h, got {text!r}")
    return _bounded(_parse_duration_text(text), text)


MAX_DURATION = 100 * 365 * 86400.0


def _bounded(seconds: float, given: object) -> float:
    # NaN, infinities and astronomic values would break every expiry computed from them
    if not math.isfinite(seconds) or abs(seconds) > MAX_DURATION:
        raise ValueError(f"expected a duration within a hundred years, got {given!r}")
    return seconds


def _parse_duration_text(text: str) -> float:
    text = text.strip()
    if text in ("0", "immediate"):
        return 0.0
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"expected a duration such as 30s, 15m or 24h, got {text!r}")
    return total


class _Reader:
    """Walks the raw YAML, keeping the key path for error messages."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(self.source, key, message)

    def mapping(self, value: Any, key: str, allowed: Sequence[str]) -> dict[str, Any]:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a mapping, got {_kind(value)}")
        for name in value:
            if name not in allowed:
                hint = difflib.get_close_matches(str(name), allowed, n=1)
                did = f"; did you mean '{hint[0]}'?" if hint else ""
                raise self.fail(_join(key, str(name)), f"unknown key '{name}'{did} valid: {', '.join(allowed)}")
        return value

    def seq(self, value: Any, key: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(key, f"expected a list, got {_kind(value)}")
        return value

    def text(self, value: Any, key: str, *, required: bool = False, default: str | None = None) -> Any:
        if value is None:
            if required:
                raise self.fail(key, "is required (a string)")
            return default
        if not isinstance(value, str | int) or isinstance(value, bool) or str(value) == "":
            raise self.fail(key, f"expected a non-empty string, got {_kind(value)}")
        return str(value)

    def flag(self, value: Any, key: str, default: bool) -> bool:
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.fail(key, f"expected true or false, got {_kind(value)}")
        return value

    def duration(self, value: Any, key: str, default: float | None) -> float | None:
        if value is None:
            return default
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise self.fail(key, str(exc)) from None

    def convert(self, value: Any, key: str, fn: Callable[[Any], T]) -> T:
        try:
            return fn(value)
        except ValueError as exc:
            raise self.fail(key, str(exc)) from None


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


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
            return f"{type(value).__name__} {value!r}"


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
    try:
        port = int(port_text) if port_text else default_port
    except ValueError:
        raise ValueError(f"expected HOST:PORT such as 127.0.0.1:8787, got {text!r}") from None
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
        raise ValueError(f"expected host[/path], got {text!r}")
    host = host.split(":", 1)[0]
    if not host:
        raise ValueError(f"expected host[/path], got {text!r}")
    labels = host.split(".")
    for label in labels:
        if label.count("*") > 1 or ("*" in label and label is not labels[0]):
            raise ValueError(f"a wildcard may only appear once, in the first label: {host!r}")
    path = "/" + path if slash else ""
    if path in ("/", "/*"):
        path = ""
    return Destination(host, path)


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
            raise ValueError(f"expected http_status:<100-999>, got {value!r}")
        return value
    parts = _split_url(value)
    if parts is None or parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
        raise ValueError(f"expected http://host:port, https://host:port or http_status:<code>, got {value!r}")
    if parts.path not in ("", "/") or parts.query:
        # cloudflared refuses a service URL with a path (spec §9.1)
        raise ValueError(f"a service URL cannot have a path, got {value!r}")
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return f"{scheme}://{parts.netloc}"


# --- the loader ------------------------------------------------------------------------------

TOP_KEYS = (
    "team", "team_domain", "listen", "keys_dir", "users", "allow_any_email", "one_time_pin",
    "default_country", "service_tokens", "apps", "groups", "email_lists", "ip_lists", "ingress",
    "strict_service_token_auth", "logout_delay", "origin_timeout", "tls_listen", "ingress_file",
    "branding", "admin_token", "journal",
)  # fmt: skip
BRANDING_KEYS = ("name", "logo_url", "background_color", "header_color", "button_color", "description")
APP_KEYS = (
    "name", "domain", "domains", "destinations", "aud", "session_duration", "policies",
    "same_site_cookie_attribute", "http_only_cookie_attribute", "path_cookie_attribute",
    "enable_binding_cookie", "service_auth_401_redirect", "read_service_tokens_from_header",
    "options_preflight_bypass", "cors_headers", "custom_deny_url", "custom_non_identity_deny_url",
    "custom_deny_message", "type",
)  # fmt: skip
POLICY_KEYS = ("name", "decision", "include", "exclude", "require", "session_duration", "precedence")
USER_KEYS = ("email", "name", "groups", "github_orgs", "country", "amr", "idp", "custom")
TOKEN_KEYS = ("name", "id", "client_id", "client_secret")
INGRESS_KEYS = ("hostname", "path", "service", "originRequest")
CORS_KEYS = (
    "allow_all_origins", "allowed_origins", "allow_all_methods", "allowed_methods", "allow_all_headers",
    "allowed_headers", "allow_credentials", "max_age",
)  # fmt: skip


def load_config(path: str | Path) -> Config:
    """Read and validate a fakeedge YAML file.

    Raises:
        ConfigError: the file is missing, is not YAML, or holds a wrong value.
    """
    import yaml

    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read the file ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(source, "", f"not UTF-8 text (byte {exc.start})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(source, "", f"{where}{problem}") from None
    return parse_config(raw, source=source, base_dir=path.resolve().parent)


def parse_config(raw: Any, *, source: str = "<config>", base_dir: Path | None = None) -> Config:
    """Validate an already-parsed config mapping (the pytest plugin passes dicts here)."""
    r = _Reader(source)
    top = r.mapping(raw, "", TOP_KEYS)
    base_dir = base_dir or Path.cwd()
    team = r.text(top.get("team"), "team", required=True)
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", team):
        raise r.fail("team", f"expected lower-case letters, digits and '-', got {team!r}")

    team_domain = r.text(top.get("team_domain"), "team_domain")
    if team_domain is not None:
        parts = _split_url(team_domain)
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/"):
            raise r.fail(
                "team_domain", f"expected a URL such as https://{team}.cloudflareaccess.com, got {team_domain!r}"
            )
        team_domain = f"{parts.scheme}://{parts.netloc.lower()}"

    listen = None
    if top.get("listen") is not False:  # `listen: off` (YAML reads a boolean): TLS only
        listen = r.convert(r.text(top.get("listen"), "listen", default="127.0.0.1:8787"), "listen", parse_host_port)
    tls_listen = None
    if top.get("tls_listen") is not None:
        tls_listen = r.convert(
            r.text(top.get("tls_listen"), "tls_listen"), "tls_listen", lambda t: parse_host_port(t, default_port=8443)
        )
    if listen is None and tls_listen is None:
        raise r.fail("listen", "is off, so tls_listen is required (such as 127.0.0.1:8443); fakeedge would not listen")
    keys_dir = Path(r.text(top.get("keys_dir"), "keys_dir", default="keys"))
    if not keys_dir.is_absolute():
        keys_dir = base_dir / keys_dir

    users = tuple(_user(r, u, f"users[{i}]") for i, u in enumerate(r.seq(top.get("users"), "users")))
    seen: set[str] = set()
    for i, u in enumerate(users):
        if u.email.lower() in seen:
            raise r.fail(f"users[{i}].email", f"duplicate persona {u.email!r}")
        seen.add(u.email.lower())

    tokens = tuple(
        _service_token(r, t, f"service_tokens[{i}]", team)
        for i, t in enumerate(r.seq(top.get("service_tokens"), "service_tokens"))
    )
    for i, t in enumerate(tokens):
        if any(o.client_id == t.client_id or o.name == t.name for o in tokens[:i]):
            raise r.fail(f"service_tokens[{i}]", f"duplicate service token {t.name!r} / {t.client_id!r}")

    lists = _Lists(
        emails={
            str(k): tuple(str(e).lower() for e in r.seq(v, f"email_lists.{k}"))
            for k, v in r.mapping(top.get("email_lists"), "email_lists", list(top.get("email_lists") or {})).items()
        },
        ips={
            str(k): tuple(
                r.convert(str(e), f"email_lists.{k}[{j}]", _network) for j, e in enumerate(r.seq(v, f"ip_lists.{k}"))
            )
            for k, v in r.mapping(top.get("ip_lists"), "ip_lists", list(top.get("ip_lists") or {})).items()
        },
        tokens=tokens,
        groups={},
    )
    for i, g in enumerate(r.seq(top.get("groups"), "groups")):
        key = f"groups[{i}]"
        gm = r.mapping(g, key, ("id", "name", "include", "exclude", "require"))
        name = r.text(gm.get("name"), f"{key}.name", required=True)
        gid = r.text(gm.get("id"), f"{key}.id", default=name)
        group = AccessGroup(
            id=gid,
            name=name,
            include=_rules(r, gm.get("include"), f"{key}.include", lists, required=True),
            exclude=_rules(r, gm.get("exclude"), f"{key}.exclude", lists),
            require=_rules(r, gm.get("require"), f"{key}.require", lists),
        )
        lists.groups[gid] = lists.groups[name] = group

    apps = tuple(_app(r, a, f"apps[{i}]", team, lists) for i, a in enumerate(r.seq(top.get("apps"), "apps")))
    for i, app in enumerate(apps):
        for other in apps[:i]:
            if other.aud == app.aud:
                raise r.fail(f"apps[{i}].aud", f"the AUD is already used by app {other.name!r}")
            if other.name == app.name:
                raise r.fail(f"apps[{i}].name", f"duplicate app name {app.name!r}")

    if top.get("ingress_file") is not None:
        if top.get("ingress") is not None:
            raise r.fail("ingress_file", "cannot be combined with ingress; keep the rules in one place")
        ingress, not_emulated = _ingress_file(r, top.get("ingress_file"), base_dir)
    else:
        ingress, not_emulated = _ingress(r, top.get("ingress"))
    return Config(
        source=source,
        team=team,
        admin_token=r.convert(top.get("admin_token"), "admin_token", _admin_token),
        team_domain=team_domain,
        listen=listen,
        keys_dir=keys_dir,
        users=users,
        service_tokens=tokens,
        apps=apps,
        ingress=ingress,
        allow_any_email=r.flag(top.get("allow_any_email"), "allow_any_email", True),
        one_time_pin=r.flag(top.get("one_time_pin"), "one_time_pin", False),
        default_country=_country(r, top.get("default_country"), "default_country") or "US",
        strict_service_token_auth=r.flag(top.get("strict_service_token_auth"), "strict_service_token_auth", False),
        logout_delay=r.duration(top.get("logout_delay"), "logout_delay", 0.0) or 0.0,
        origin_timeout=_positive(r, top.get("origin_timeout"), "origin_timeout", 100.0),
        not_emulated=not_emulated,
        tls_listen=tls_listen,
        branding=_branding(r, top.get("branding")),
        journal=r.convert(top.get("journal"), "journal", _journal),
    )


def _positive(r: _Reader, value: Any, key: str, default: float) -> float:
    seconds = r.duration(value, key, default)
    if seconds is None or seconds <= 0:
        raise r.fail(key, f"expected a duration above zero such as 30s, got {value!r}")
    return seconds


_COLOR = re.compile(r"#[0-9A-Fa-f]{3}(?:[0-9A-Fa-f]{3})?")


def _branding(r: _Reader, raw: Any) -> Branding:
    if raw is None:
        return Branding()
    m = r.mapping(raw, "branding", BRANDING_KEYS)
    colors: dict[str, str] = {}
    for name in ("background_color", "header_color", "button_color"):
        value = r.text(m.get(name), f"branding.{name}")
        if value is not None:
            if not _COLOR.fullmatch(value):
                raise r.fail(f"branding.{name}", f"expected a colour such as #8a43e1, got {value!r}")
            colors[name] = value
    logo = r.text(m.get("logo_url"), "branding.logo_url")
    if logo is not None and not logo.startswith(("https://", "http://", "/", "data:image/")):
        raise r.fail("branding.logo_url", f"expected an http(s) URL, a path or a data:image URL, got {logo!r}")
    return Branding(
        name=r.text(m.get("name"), "branding.name", default=DEFAULT_BRAND_NAME),
        logo_url=logo,
        description=r.text(m.get("description"), "branding.description"),
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


def _country(r: _Reader, value: Any, key: str) -> str | None:
    text = r.text(value, key)
    if text is None:
        return None
    if not re.fullmatch(r"[A-Za-z]{2}", text):
        raise r.fail(key, f"expected an ISO 3166 alpha-2 country code such as US, got {text!r}")
    return str(text).upper()


def _strings(r: _Reader, value: Any, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    return tuple(r.text(v, f"{key}[{i}]", required=True) for i, v in enumerate(r.seq(value, key)))


def _user(r: _Reader, raw: Any, key: str) -> User:
    m = r.mapping(raw, key, USER_KEYS)
    email = r.text(m.get("email"), f"{key}.email", required=True)
    if "@" not in email:
        raise r.fail(f"{key}.email", f"expected an email address, got {email!r}")
    custom = m.get("custom")
    if custom is not None and not isinstance(custom, dict):
        raise r.fail(f"{key}.custom", f"expected a mapping of extra claims, got {_kind(custom)}")
    return User(
        email=email,
        name=r.text(m.get("name"), f"{key}.name", default=email.split("@")[0]),
        groups=_strings(r, m.get("groups"), f"{key}.groups"),
        github_orgs=_strings(r, m.get("github_orgs"), f"{key}.github_orgs"),
        country=_country(r, m.get("country"), f"{key}.country"),
        amr=_strings(r, m.get("amr"), f"{key}.amr") or ("pwd",),
        idp=r.text(m.get("idp"), f"{key}.idp", default="fakeedge"),
        custom=custom,
    )


def _service_token(r: _Reader, raw: Any, key: str, team: str) -> ServiceToken:
    m = r.mapping(raw, key, TOKEN_KEYS)
    name = r.text(m.get("name"), f"{key}.name", required=True)
    client_id = r.text(m.get("client_id"), f"{key}.client_id", required=True)
    secret = r.text(m.get("client_secret"), f"{key}.client_secret", required=True)
    token_id = r.text(m.get("id"), f"{key}.id", default=str(uuid.uuid5(SUB_NAMESPACE, f"{team}:token:{name}")))
    return ServiceToken(name=name, id=token_id, client_id=client_id, client_secret=secret)


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"expected an IP address or CIDR such as 192.0.2.0/24, got {text!r}") from None


def _rules(r: _Reader, raw: Any, key: str, lists: _Lists, *, required: bool = False) -> tuple[Rule, ...]:
    items = r.seq(raw, key)
    if required and not items:
        raise r.fail(key, "needs at least one rule (include is an OR over its rules)")
    return tuple(_rule(r, item, f"{key}[{i}]", lists) for i, item in enumerate(items))


def _rule(r: _Reader, raw: Any, key: str, lists: _Lists) -> Rule:
    if not isinstance(raw, dict) or len(raw) != 1:
        raise r.fail(key, f"expected one rule such as {{email: {{email: a@b.test}}}}, got {_kind(raw)}")
    ((kind, body),) = raw.items()
    if kind not in RULE_KINDS:
        hint = difflib.get_close_matches(str(kind), RULE_KINDS, n=1)
        did = f"; did you mean '{hint[0]}'?" if hint else ""
        raise r.fail(key, f"unknown rule '{kind}'{did} valid: {', '.join(RULE_KINDS)}")
    k = f"{key}.{kind}"

    def one(field_name: str, *extra: str) -> Any:
        m = r.mapping(body, k, (field_name, *extra))
        return r.text(m.get(field_name), f"{k}.{field_name}", required=True)

    match kind:
        case "email":
            return Rule(kind, one("email").lower())
        case "email_domain":
            return Rule(kind, one("domain").lower().lstrip("@"))
        case "email_list":
            name = one("id")
            if name not in lists.emails:
                raise r.fail(f"{k}.id", f"no email list {name!r}; defined: {', '.join(lists.emails) or 'none'}")
            return Rule(kind, frozenset(lists.emails[name]))
        case "everyone" | "any_valid_service_token":
            r.mapping(body, k, ())
            return Rule(kind, None)
        case "ip":
            return Rule(kind, (r.convert(one("ip"), f"{k}.ip", _network),))
        case "ip_list":
            name = one("id")
            if name not in lists.ips:
                raise r.fail(f"{k}.id", f"no ip list {name!r}; defined: {', '.join(lists.ips) or 'none'}")
            return Rule(kind, lists.ips[name])
        case "geo":
            return Rule(kind, _country(r, one("country_code"), f"{k}.country_code"))
        case "service_token":
            wanted = one("token_id")
            token = next((t for t in lists.tokens if wanted in (t.name, t.id)), None)
            if token is None:
                names = ", ".join(t.name for t in lists.tokens) or "none defined"
                raise r.fail(f"{k}.token_id", f"no service token {wanted!r}; known: {names}")
            return Rule(kind, token.client_id)
        case "github-organization":
            m = r.mapping(body, k, ("name", "team", "identity_provider_id"))
            return Rule(kind, r.text(m.get("name"), f"{k}.name", required=True).lower())
        case "oidc":
            m = r.mapping(body, k, ("claim_name", "claim_value", "identity_provider_id"))
            name = r.text(m.get("claim_name"), f"{k}.claim_name", required=True)
            return Rule(kind, (name, r.text(m.get("claim_value"), f"{k}.claim_value", required=True)))
        case "login_method":
            return Rule(kind, one("id"))
        case "auth_method":
            return Rule(kind, one("auth_method"))
        case "group":
            ref = one("id")
            if ref not in lists.groups:
                raise r.fail(f"{k}.id", f"no Access group {ref!r}; defined: {', '.join(lists.groups) or 'none'}")
            return Rule(kind, lists.groups[ref])
    raise AssertionError(kind)  # pragma: no cover - RULE_KINDS is closed


def _policy(r: _Reader, raw: Any, key: str, lists: _Lists) -> Policy:
    m = r.mapping(raw, key, POLICY_KEYS)
    name = r.text(m.get("name"), f"{key}.name", default=key)
    decision_text = r.text(m.get("decision"), f"{key}.decision", required=True)
    decision = DECISIONS.get(decision_text.lower())
    if decision is None:
        raise r.fail(
            f"{key}.decision",
            f"unknown decision {decision_text!r}; valid: allow, deny, bypass, non_identity "
            "(or the dashboard's Allow, Block, Bypass, Service Auth)",
        )
    policy = Policy(
        name=name,
        decision=decision,
        include=_rules(r, m.get("include"), f"{key}.include", lists, required=True),
        exclude=_rules(r, m.get("exclude"), f"{key}.exclude", lists),
        require=_rules(r, m.get("require"), f"{key}.require", lists),
        session_duration=_int_or_none(r.duration(m.get("session_duration"), f"{key}.session_duration", None)),
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


def _int_or_none(value: float | None) -> int | None:
    return None if value is None else int(value)


def _app(r: _Reader, raw: Any, key: str, team: str, lists: _Lists) -> App:
    m = r.mapping(raw, key, APP_KEYS)
    name = r.text(m.get("name"), f"{key}.name", required=True)
    texts: list[tuple[str, str]] = []
    if m.get("domain") is not None:
        texts.append((f"{key}.domain", r.text(m.get("domain"), f"{key}.domain")))
    for field_name in ("domains", "destinations"):
        for i, d in enumerate(r.seq(m.get(field_name), f"{key}.{field_name}")):
            dk = f"{key}.{field_name}[{i}]"
            if isinstance(d, dict):
                dm = r.mapping(d, dk, ("type", "uri"))
                if dm.get("type", "public") != "public":
                    raise r.fail(f"{dk}.type", f"only 'public' destinations are emulated, got {dm.get('type')!r}")
                texts.append((f"{dk}.uri", r.text(dm.get("uri"), f"{dk}.uri", required=True)))
            else:
                texts.append((dk, r.text(d, dk, required=True)))
    if not texts:
        raise r.fail(f"{key}.domain", "is required (host[/path] such as admin.acme.test)")
    destinations = tuple(dict.fromkeys(r.convert(t, k, parse_destination) for k, t in texts))

    aud = r.text(m.get("aud"), f"{key}.aud", default=default_aud(team, name))
    if not _AUD.fullmatch(aud):
        raise r.fail(f"{key}.aud", f"expected 64 lower-case hex characters, got {aud!r}")
    if m.get("type", "self_hosted") != "self_hosted":
        raise r.fail(f"{key}.type", f"only self_hosted apps are emulated, got {m.get('type')!r}")

    same_site = r.text(m.get("same_site_cookie_attribute"), f"{key}.same_site_cookie_attribute")
    if same_site is not None and same_site.lower() not in ("none", "lax", "strict"):
        raise r.fail(f"{key}.same_site_cookie_attribute", f"expected none, lax or strict, got {same_site!r}")

    cors = None
    if m.get("cors_headers") is not None:
        ck = f"{key}.cors_headers"
        c = r.mapping(m.get("cors_headers"), ck, CORS_KEYS)
        max_age = c.get("max_age")
        if max_age is not None and (not isinstance(max_age, int) or isinstance(max_age, bool) or max_age < 0):
            raise r.fail(f"{ck}.max_age", f"expected seconds as a whole number, got {_kind(max_age)}")
        cors = CorsHeaders(
            allow_all_origins=r.flag(c.get("allow_all_origins"), f"{ck}.allow_all_origins", False),
            allowed_origins=_strings(r, c.get("allowed_origins"), f"{ck}.allowed_origins"),
            allow_all_methods=r.flag(c.get("allow_all_methods"), f"{ck}.allow_all_methods", False),
            allowed_methods=tuple(s.upper() for s in _strings(r, c.get("allowed_methods"), f"{ck}.allowed_methods")),
            allow_all_headers=r.flag(c.get("allow_all_headers"), f"{ck}.allow_all_headers", False),
            allowed_headers=tuple(s.lower() for s in _strings(r, c.get("allowed_headers"), f"{ck}.allowed_headers")),
            allow_credentials=r.flag(c.get("allow_credentials"), f"{ck}.allow_credentials", False),
            max_age=max_age,
        )
    bypass_options = r.flag(m.get("options_preflight_bypass"), f"{key}.options_preflight_bypass", False)
    if cors is not None and bypass_options:
        raise r.fail(
            f"{key}.options_preflight_bypass",
            "cannot be combined with cors_headers: either Access answers preflights or the origin does (spec §7.4)",
        )

    return App(
        name=name,
        destinations=destinations,
        aud=aud,
        policies=tuple(
            _policy(r, p, f"{key}.policies[{i}]", lists)
            for i, p in enumerate(r.seq(m.get("policies"), f"{key}.policies"))
        ),
        session_duration=int(r.duration(m.get("session_duration"), f"{key}.session_duration", 86400.0) or 0),
        same_site_cookie_attribute=same_site.lower() if same_site else None,
        http_only_cookie_attribute=r.flag(
            m.get("http_only_cookie_attribute"), f"{key}.http_only_cookie_attribute", True
        ),
        path_cookie_attribute=r.flag(m.get("path_cookie_attribute"), f"{key}.path_cookie_attribute", False),
        enable_binding_cookie=r.flag(m.get("enable_binding_cookie"), f"{key}.enable_binding_cookie", False),
        service_auth_401_redirect=r.flag(m.get("service_auth_401_redirect"), f"{key}.service_auth_401_redirect", False),
        read_service_tokens_from_header=r.text(
            m.get("read_service_tokens_from_header"), f"{key}.read_service_tokens_from_header"
        ),
        options_preflight_bypass=bypass_options,
        cors_headers=cors,
        custom_deny_url=r.text(m.get("custom_deny_url"), f"{key}.custom_deny_url"),
        custom_non_identity_deny_url=r.text(
            m.get("custom_non_identity_deny_url"), f"{key}.custom_non_identity_deny_url"
        ),
        custom_deny_message=r.text(m.get("custom_deny_message"), f"{key}.custom_deny_message"),
    )


def _ingress(r: _Reader, raw: Any) -> tuple[tuple[IngressRule, ...], tuple[str, ...]]:
    items = r.seq(raw, "ingress")
    if not items:
        return (IngressRule(None, None, "http_status:404"),), ()
    rules: list[IngressRule] = []
    not_emulated: list[str] = []
    for i, item in enumerate(items):
        key = f"ingress[{i}]"
        m = r.mapping(item, key, INGRESS_KEYS)
        hostname = r.text(m.get("hostname"), f"{key}.hostname")
        if hostname is not None:
            hostname = hostname.lower()
            if ":" in hostname:
                raise r.fail(
                    f"{key}.hostname", f"a hostname cannot have a port (cloudflared refuses it), got {hostname!r}"
                )
            if "*" in hostname[1:]:
                raise r.fail(f"{key}.hostname", f"'*' may only be the first character, got {hostname!r}")
        path_text = r.text(m.get("path"), f"{key}.path")
        try:
            path = re.compile(path_text) if path_text is not None else None
        except re.error as exc:
            raise r.fail(f"{key}.path", f"not a valid regular expression ({exc})") from None
        service = r.convert(r.text(m.get("service"), f"{key}.service", required=True), f"{key}.service", _origin_url)
        origin = r.mapping(m.get("originRequest"), f"{key}.originRequest", sorted(ORIGIN_REQUEST_KNOWN))
        for name in origin:
            if name not in ORIGIN_REQUEST_HONOURED:
                not_emulated.append(f"{key}.originRequest.{name}")
        connect = r.duration(origin.get("connectTimeout"), f"{key}.originRequest.connectTimeout", 30.0) or 30.0
        host_header = r.text(origin.get("httpHostHeader"), f"{key}.originRequest.httpHostHeader")
        rule = IngressRule(hostname, path, service, host_header, connect)
        catch_all = hostname in (None, "*") and path is None
        last = i == len(items) - 1
        if last and not catch_all:
            raise r.fail(
                key, "the last ingress rule must match all URLs (no hostname, no path), e.g. service: http_status:404"
            )
        if catch_all and not last:
            raise r.fail(key, "only the last ingress rule may match all URLs; rules after it would never be used")
        rules.append(rule)
    return tuple(rules), tuple(not_emulated)


# cloudflared services that are not HTTP (spec §9.1): routed locally to a 502, with a note
_NOT_HTTP_SERVICE = re.compile(r"(unix|unix\+tls):|(tcp|ssh|rdp|smb)://|(hello_world|bastion|socks-proxy)$")
_TUNNEL_KEYS = ("tunnel", "credentials-file")


def _ingress_file(r: _Reader, value: Any, base_dir: Path) -> tuple[tuple[IngressRule, ...], tuple[str, ...]]:
    """A cloudflared ``config.yml`` read as is: its ``ingress`` (and ``originRequest`` defaults) route.

    Errors about the file's content name the file, not the fakeedge config.
    """
    import yaml

    name = r.text(value, "ingress_file")
    path = Path(name) if Path(name).is_absolute() else base_dir / name
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise r.fail("ingress_file", f"cannot read {source} ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise r.fail("ingress_file", f"{source} is not UTF-8 text (byte {exc.start})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise ConfigError(source, "", f"{where}{getattr(exc, 'problem', None) or 'invalid YAML'}") from None
    fr = _Reader(source)
    if not isinstance(raw, dict):
        raise fr.fail("", f"expected a cloudflared config (a mapping with ingress), got {_kind(raw)}")
    notes: list[str] = []
    if any(key in raw for key in _TUNNEL_KEYS):
        notes.append(f"{source}: tunnel and credentials-file (fakeedge runs no tunnel; it routes by ingress)")
    notes += [f"{source}: {key}" for key in raw if key not in (*_TUNNEL_KEYS, "ingress", "originRequest")]
    defaults = fr.mapping(raw.get("originRequest"), "originRequest", sorted(ORIGIN_REQUEST_KNOWN))
    notes += [f"{source}: originRequest.{key}" for key in defaults if key not in ORIGIN_REQUEST_HONOURED]
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
                notes.append(f"{source}: ingress[{i}].service {service} (answered with 502)")
                item["service"] = "http_status:502"
        rules.append(item)
    ingress, not_emulated = _ingress(fr, rules)
    return ingress, (*notes, *(f"{source}: {key}" for key in not_emulated))
