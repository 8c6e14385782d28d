"""Sign-ins without a browser, as cookies a browser or an HTTP tool can load (issue 11).

``POST /cdn-cgi/fakeedge/login`` and ``fakeedge login`` start a real session of the running edge
(revocable by logout, ``sessions/revoke`` and ``reset()``) or take a service token's app JWT, and
hand back the cookies the SSO flow would have set: as a Playwright ``storageState`` document, a
Netscape cookie jar (curl ``-b``, wget ``--load-cookies``) or the value of a ``Cookie:`` header.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Literal

from . import headers as h
from .config import App
from .edge import Edge
from .policy import Facts, Identity, decide
from .web_access import binding_value, cookie_path

FORMATS = ("storage-state", "netscape", "cookie")
Format = Literal["storage-state", "netscape", "cookie"]


@dataclass(frozen=True, slots=True)
class Cookie:
    """One cookie as a browser would hold it (host-only: ``domain`` is a host name, no port)."""

    name: str
    value: str
    domain: str
    path: str
    expires: float
    secure: bool
    http_only: bool
    same_site: str  # "Strict", "Lax" or "None"


@dataclass(frozen=True, slots=True)
class Login:
    """The cookies of one sign-in, and the session they belong to (None for a service token)."""

    cookies: tuple[Cookie, ...]
    hosts: tuple[str, ...]  # the app's hosts, each holding the app cookies
    session_nonce: str | None
    expires: float


def login_cookies(edge: Edge, app_name: str, *, email: str | None = None, service_token: str | None = None) -> Login:
    """Sign ``email`` into ``app_name`` as the SSO page would (a session of this edge), or turn
    ``service_token`` into the app cookie a browser keeps after a service-token request.

    Raises:
        ValueError: an unknown app, persona or service token, or a caller the app's policies refuse.
    """
    if (email is None) == (service_token is None):
        raise ValueError("give email or service_token, not both")
    app = edge.app(app_name)
    hosts = list(dict.fromkeys(d.host.lower() for d in app.destinations if "*" not in d.host))
    if not hosts:
        raise ValueError(f"app {app.name!r} has only wildcard domains: no host to set its cookies on")
    # secure cookies only when every listener speaks TLS: a browser sends a Secure cookie over https only
    secure = bool(edge.tls_ports) and not (edge.ports - edge.tls_ports)
    loopback = ipaddress.ip_address("127.0.0.1")
    country = edge.config.default_country
    if email is not None:
        user = edge.config.user(email)
        if user is None and not edge.config.allow_any_email:
            raise ValueError(f"{email} is not one of the configured users (and allow_any_email is false)")
        identity = Identity.for_email(email, user, default_country=country)
        verdict = decide(app, Facts(loopback, identity.country), identity)
        if verdict.outcome not in ("allow", "bypass"):
            raise ValueError(f"{email} may not sign in to {app.name!r}: its policies answer {verdict.outcome}")
        session = edge.login(identity)
        jwt, exp = edge.app_jwt(session, app, verdict.policy)
        team = _cookie(h.CF_AUTHORIZATION, edge.org_token(session), edge.team_hostname, "/", session.exp, secure)
        app_cookies = _app_cookies(app, hosts, jwt, exp, secure)
        return Login((team, *app_cookies), tuple(hosts), session.nonce, exp)
    assert service_token is not None
    token = edge.service_token_named(service_token)
    if not app.has_identity_policy:
        # spec §5: a service token's JWT stands in for a session only where an Allow policy exists
        raise ValueError(
            f"app {app.name!r} has no Allow policy, and Cloudflare takes a service token's cookie only "
            "where one exists (spec §5); send its CF-Access-Client-Id and CF-Access-Client-Secret headers instead"
        )
    verdict = decide(app, Facts(loopback, country, token.client_id), None)
    if verdict.outcome != "service":
        raise ValueError(f"service token {token.name!r} is not admitted to {app.name!r} by a Service Auth policy")
    jwt, exp = edge.service_jwt(token, app)
    return Login(tuple(_app_cookies(app, hosts, jwt, exp, secure)), tuple(hosts), None, exp)


def _app_cookies(app: App, hosts: list[str], jwt: str, exp: float, secure: bool) -> list[Cookie]:
    """What the callback sets on each app host (spec §1.5): ``CF_Authorization``, and
    ``CF_Binding`` when the app enables the binding cookie; with the app's cookie settings."""
    path = cookie_path(app) if app.path_cookie_attribute else "/"
    same_site = app.same_site_cookie_attribute or "none"
    out = []
    for host in hosts:
        out.append(_cookie(h.CF_AUTHORIZATION, jwt, host, path, exp, secure, app.http_only_cookie_attribute, same_site))
        if app.enable_binding_cookie:
            out.append(
                _cookie(
                    h.CF_BINDING, binding_value(jwt), host, path, exp, secure, app.http_only_cookie_attribute, same_site
                )
            )
    return out


def _cookie(
    name: str,
    value: str,
    host: str,
    path: str,
    expires: float,
    secure: bool,
    http_only: bool = True,
    same_site: str = "none",
) -> Cookie:
    # as cookie_header does: over plain HTTP, SameSite=None without Secure is refused, so Lax
    same = same_site.capitalize()
    if same == "None" and not secure:
        same = "Lax"
    return Cookie(name, value, host.strip("[]").lower(), path, expires, secure, http_only, same)


def storage_state(login: Login) -> dict[str, Any]:
    """A Playwright ``storageState`` document (``browser.new_context(storage_state=...)``)."""
    return {
        "cookies": [
            {
                "name": c.name,
                "value": c.value,
                "domain": c.domain,
                "path": c.path,
                "expires": c.expires,
                "httpOnly": c.http_only,
                "secure": c.secure,
                "sameSite": c.same_site,
            }
            for c in login.cookies
        ],
        "origins": [],
    }


def netscape_jar(login: Login) -> str:
    """A Netscape cookie jar, as curl (``-b FILE``) and wget (``--load-cookies FILE``) read it.

    Host-only cookies (the include-subdomains field FALSE); an HttpOnly one's line starts with
    ``#HttpOnly_``, the prefix curl writes and reads.
    """
    lines = ["# Netscape HTTP Cookie File", "# fakeedge login: a session of the running edge", ""]
    for c in login.cookies:
        domain = f"#HttpOnly_{c.domain}" if c.http_only else c.domain
        secure = "TRUE" if c.secure else "FALSE"
        lines.append("\t".join([domain, "FALSE", c.path, secure, str(int(c.expires)), c.name, c.value]))
    return "\n".join(lines) + "\n"


def cookie_line(login: Login, app_host: str | None = None) -> str:
    """The ``Cookie:`` header value an HTTP client sends to the app (its first host, or ``app_host``)."""
    host = (app_host or login.hosts[0]).lower()
    return "; ".join(f"{c.name}={c.value}" for c in login.cookies if c.domain == host)
